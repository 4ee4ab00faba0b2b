import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { KubeClient } from '../../src/runtime/kubernetes/client.js';
import { ACTIVITY_ANNOTATION, PodActivity, lastActivity } from '../../src/runtime/kubernetes/activity.js';
import { FakeKube } from '../helpers/fake-kube.js';
import { kubeProblems } from '../helpers/kube-schemas.js';

describe('when each tenant last had a client, over every pgs pod (a Lease per pod)', () => {
  let fake: FakeKube;
  let client: KubeClient;
  const t0 = Date.parse('2026-12-01T00:00:00Z');
  const stored = (name: string) => fake.get('coordination.k8s.io', 'v1', 'leases', 'pgs', name) as { metadata: Record<string, unknown> & { annotations: Record<string, string> }; spec: Record<string, unknown> } | undefined;

  before(async () => {
    fake = await new FakeKube().start();
    client = new KubeClient({ server: fake.url, namespace: 'pgs' });
  });
  after(async () => {
    client.close();
    await fake.stop();
  });

  it('each pod publishes what it served; the leader sees the latest time of each tenant over all pods', async () => {
    const a = new PodActivity(client, 'pod-a', 10_000);
    const b = new PodActivity(client, 'pod-b', 10_000);
    a.note('acme', t0 + 5_000);
    a.note('acme', t0 + 1_000); // an older sighting never moves it back
    a.note('beta', t0 + 2_000);
    b.note('acme', t0 + 8_000);
    await a.publish(t0 + 10_000);
    await b.publish(t0 + 10_000);
    const seen = await lastActivity(client, t0 + 11_000);
    assert.deepEqual(Object.fromEntries(seen.active), { acme: t0 + 8_000, beta: t0 + 2_000 });
    assert.equal(seen.oldestRenewal, t0 + 10_000, 'every live pod has spoken since t0+10 s');
    const lease = stored('pgs-activity-pod-a');
    assert.ok(lease);
    assert.deepEqual(JSON.parse(lease.metadata.annotations[ACTIVITY_ANNOTATION] as string), { acme: (t0 + 5_000) / 1000, beta: (t0 + 2_000) / 1000 });
    const metadata = { ...lease.metadata };
    for (const k of ['uid', 'resourceVersion', 'creationTimestamp', 'namespace']) delete metadata[k];
    assert.deepEqual(kubeProblems({ ...lease, metadata } as never), []);
    // A second publish updates the same Lease.
    a.forget('beta');
    await a.publish(t0 + 20_000);
    assert.deepEqual(Object.keys(JSON.parse(stored('pgs-activity-pod-a')?.metadata.annotations[ACTIVITY_ANNOTATION] as string) as object), ['acme']);
  });

  it('a pod gone for ten times its lease is forgotten and its Lease deleted; a clean stop withdraws at once', async () => {
    // pod-b renewed at t0+10 s with a 30 s lease: stale after 300 s.
    const later = await lastActivity(client, t0 + 10_000 + 301_000);
    assert.equal(stored('pgs-activity-pod-b'), undefined);
    assert.equal(later.active.get('acme'), t0 + 5_000, 'only pod-a\'s sighting is left');
    await new PodActivity(client, 'pod-a', 10_000).withdraw();
    assert.equal(stored('pgs-activity-pod-a'), undefined);
    assert.equal((await lastActivity(client, t0)).active.size, 0);
  });
});
