import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { KubeClient } from '../../src/runtime/kubernetes/client.js';
import { LeaderLease } from '../../src/runtime/kubernetes/lease.js';
import { FakeKube } from '../helpers/fake-kube.js';
import { kubeProblems } from '../helpers/kube-schemas.js';

describe('one pgs pod leads at a time (a Lease)', () => {
  let fake: FakeKube;
  let client: KubeClient;
  let clock = Date.parse('2026-12-01T00:00:00Z');
  const lease = (identity: string, onChange?: (leader: boolean) => void) => new LeaderLease(client, { name: 'pgs-leader', identity, durationMs: 15_000, now: () => clock, ...(onChange ? { onChange } : {}) });
  const stored = () => fake.get('coordination.k8s.io', 'v1', 'leases', 'pgs', 'pgs-leader') as { spec: { holderIdentity: string; leaseTransitions: number } } | undefined;

  before(async () => {
    fake = await new FakeKube().start();
    client = new KubeClient({ server: fake.url, namespace: 'pgs' });
  });
  after(async () => {
    client.close();
    await fake.stop();
  });

  it('of two pods trying at once, exactly one gets it; the Lease is a valid object', async () => {
    const [a, b] = [lease('pod-a'), lease('pod-b')];
    const got = await Promise.all([a.attempt(), b.attempt()]);
    assert.equal(got.filter(Boolean).length, 1, JSON.stringify(got));
    const written = { ...(stored() as object) } as Record<string, unknown>;
    const metadata = { ...(written.metadata as Record<string, unknown>) };
    for (const k of ['uid', 'resourceVersion', 'creationTimestamp', 'namespace']) delete metadata[k];
    assert.deepEqual(kubeProblems({ ...written, metadata } as never), []);
  });

  it('the holder renews; the other waits until the lease expires, then takes it (a transition)', async () => {
    const holder = stored()?.spec.holderIdentity as string;
    const other = holder === 'pod-a' ? 'pod-b' : 'pod-a';
    clock += 10_000;
    assert.equal(await lease(holder).attempt(), true, 'renewed');
    clock += 10_000;
    assert.equal(await lease(other).attempt(), false, 'renewed 10 s ago: not expired');
    clock += 6_000;
    assert.equal(await lease(other).attempt(), true, 'not renewed for 16 s: taken');
    assert.equal(stored()?.spec.holderIdentity, other);
    assert.equal(stored()?.spec.leaseTransitions, 1);
    assert.equal(await lease(holder).attempt(), false, 'the old holder does not take it back');
  });

  it('a leader that stops gives the lease up: the next pod takes it at once; leadership is reported both ways', async () => {
    const holder = stored()?.spec.holderIdentity as string;
    const changes: boolean[] = [];
    const leader = lease(holder, (l) => changes.push(l));
    await leader.start();
    assert.equal(leader.isLeader, true);
    await leader.stop();
    assert.deepEqual(changes, [true, false]);
    assert.equal(await lease('pod-c').attempt(), true, 'no wait for the expiry');
  });

  it('a leader that cannot reach the API server steps down', async () => {
    const changes: boolean[] = [];
    const away = new LeaderLease(new KubeClient({ server: 'http://127.0.0.1:1', namespace: 'pgs' }), { name: 'pgs-leader', identity: 'pod-c', onChange: (l) => changes.push(l) });
    await away.start();
    assert.equal(away.isLeader, false);
    await away.stop();
    assert.deepEqual(changes, []);
  });
});
