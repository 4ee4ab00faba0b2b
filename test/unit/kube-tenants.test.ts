import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Tenant } from '../../src/catalog/schema.js';
import { KubeClient } from '../../src/runtime/kubernetes/client.js';
import { HIBERNATION, TENANT_ANNOTATION, type BackupTarget } from '../../src/runtime/kubernetes/objects.js';
import { KubeTenants, mergeDiff } from '../../src/runtime/kubernetes/tenants.js';
import { FakeCnpg } from '../helpers/fake-cnpg.js';
import { FakeKube } from '../helpers/fake-kube.js';
import { kubeProblems } from '../helpers/kube-schemas.js';
import { waitFor } from '../helpers/pgs.js';

const NS = 'pgs';
const tenant = (id: string, t: Partial<Tenant> = {}): Tenant => ({
  id, suffix: 'abc123', access: 'enabled', wanted: 'running', maxConnections: 20, createdAt: '2026-12-01T00:00:00.000Z', ...t,
});
const secrets = { ownerPassword: 'o'.repeat(32), clientVerifier: 'SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2Vydg==' };
const backup: BackupTarget = { url: 's3://bucket/pgs', credentialsSecret: 'pgs-s3' };
type Spec = { resources?: unknown; instances: number; imageName?: string; postgresql: { parameters: Record<string, string> } };

describe('tenants as CloudNativePG clusters, against a fake API server and operator; two pgs pods', () => {
  let fake: FakeKube;
  let operator: FakeCnpg;
  const clients: KubeClient[] = [];
  let pods: KubeTenants[] = [];
  const cluster = (id: string) => fake.get('postgresql.cnpg.io', 'v1', 'clusters', NS, id) as { metadata: { annotations: Record<string, string> }; spec: Spec } | undefined;

  before(async () => {
    fake = await new FakeKube().start();
    operator = new FakeCnpg(fake);
    pods = [0, 1].map(() => {
      const client = new KubeClient({ server: fake.url, namespace: NS });
      clients.push(client);
      return new KubeTenants(client, { namespace: NS, instances: 1 }, backup);
    });
    await Promise.all(pods.map((p) => p.start()));
  });
  after(async () => {
    for (const p of pods) p.stop();
    for (const c of clients) c.close();
    operator.stop();
    await fake.stop();
  });

  it('create: the objects exist and validate, the cluster becomes healthy, and the other pod sees the tenant', async () => {
    const [a, b] = pods as [KubeTenants, KubeTenants];
    await a.create(tenant('acme', { memoryBytes: 256 * 2 ** 20 }), secrets);
    const view = await a.awaitHealthy('acme', 5_000);
    assert.equal(view.writeHost, 'acme-rw.pgs.svc');
    assert.equal(view.primary, 'acme-1');
    assert.deepEqual(view.tenant, tenant('acme', { memoryBytes: 256 * 2 ** 20 }));
    for (const [group, resource, name] of [['', 'secrets', 'acme-app'], ['barmancloud.cnpg.io', 'objectstores', 'acme-store'], ['postgresql.cnpg.io', 'clusters', 'acme'], ['postgresql.cnpg.io', 'scheduledbackups', 'acme-backup']] as const) {
      const stored = fake.get(group, 'v1', resource, NS, name);
      assert.ok(stored, `${resource}/${name}`);
      const written: Record<string, unknown> = { ...stored };
      delete written.status; // the operator's
      const metadata = { ...(written.metadata as Record<string, unknown>) };
      for (const k of ['uid', 'resourceVersion', 'creationTimestamp']) delete metadata[k];
      assert.deepEqual(kubeProblems({ ...written, metadata } as never), [], `${resource}/${name}`);
    }
    await waitFor('the other pod to see acme healthy', async () => b.view('acme')?.healthy === true, 5_000);
  });

  it('a create of an existing tenant changes nothing; a create the API server refuses leaves nothing behind', async () => {
    const [a] = pods as [KubeTenants];
    const before = cluster('acme')?.metadata.annotations[TENANT_ANNOTATION];
    await assert.rejects(a.create(tenant('acme', { suffix: 'zzzzzz' }), secrets), /tenant acme already exists/);
    assert.equal(cluster('acme')?.metadata.annotations[TENANT_ANNOTATION], before);
    fake.refuse = (method, collection) => (method === 'POST' && collection.includes('/clusters/') ? { code: 422, reason: 'Invalid', message: 'admission webhook denied the request' } : undefined);
    try {
      await assert.rejects(a.create(tenant('broken'), secrets), /admission webhook denied the request/);
    } finally {
      fake.refuse = undefined;
    }
    assert.deepEqual([...fake.objects.keys()].filter((k) => k.includes('broken')), [], 'the Secret and ObjectStore made before were removed');
  });

  it('a cluster that never gets healthy: the wait ends with the operator\'s phase', async () => {
    const [a] = pods as [KubeTenants];
    operator.stuck.add('slow');
    await a.create(tenant('slow'), secrets);
    await assert.rejects(a.awaitHealthy('slow', 300), /the cluster of tenant slow is not serving after 0 s: phase "Setting up primary"/);
    await a.remove('slow', { volumes: true });
  });

  it('suspend hibernates the cluster and suspends its backup schedule; wake brings it back', async () => {
    const [a, b] = pods as [KubeTenants, KubeTenants];
    await a.setSuspended('acme', true);
    assert.equal(cluster('acme')?.metadata.annotations[HIBERNATION], 'on');
    assert.equal((fake.get('postgresql.cnpg.io', 'v1', 'scheduledbackups', NS, 'acme-backup')?.spec as { suspend: boolean }).suspend, true);
    await waitFor('the other pod to see acme hibernated', async () => b.view('acme')?.hibernated === true && b.view('acme')?.healthy === false, 5_000);
    await b.setSuspended('acme', false);
    await a.awaitHealthy('acme', 5_000);
    assert.equal((fake.get('postgresql.cnpg.io', 'v1', 'scheduledbackups', NS, 'acme-backup')?.spec as { suspend: boolean }).suspend, false);
  });

  it('two pods change one tenant at once: both changes land (a conflict is retried on the new version)', async () => {
    const [a, b] = pods as [KubeTenants, KubeTenants];
    await Promise.all([
      a.update('acme', (t) => ({ ...t, access: 'disabled' })),
      b.update('acme', (t) => ({ ...t, autosuspendSeconds: 30 })),
      a.update('acme', (t) => ({ ...t, maxConnections: 40 })),
    ]);
    const record = JSON.parse(cluster('acme')?.metadata.annotations[TENANT_ANNOTATION] ?? '{}') as Tenant;
    assert.equal(record.access, 'disabled');
    assert.equal(record.autosuspendSeconds, 30);
    assert.equal(record.maxConnections, 40);
    assert.equal(cluster('acme')?.spec.postgresql.parameters.max_connections, '40');
    // And a conflict for certain: the first patch is answered 409, the update reads again and lands.
    let refused = 0;
    fake.refuse = (method, collection) => (method === 'PATCH' && collection.includes('/clusters/') && refused++ === 0 ? { code: 409, reason: 'Conflict', message: 'the object has been modified' } : undefined);
    try {
      await a.update('acme', (t) => ({ ...t, poolSize: 7 }));
    } finally {
      fake.refuse = undefined;
    }
    assert.equal(refused, 2, 'one refused patch, one that landed');
    assert.equal((JSON.parse(cluster('acme')?.metadata.annotations[TENANT_ANNOTATION] ?? '{}') as Tenant).poolSize, 7);
    await waitFor('the other pod to see access disabled', async () => b.view('acme')?.tenant?.access === 'disabled', 5_000);
  });

  it('an update touches only what pgs set: a lifted limit goes, a field the operator defaulted stays', async () => {
    const [a] = pods as [KubeTenants];
    fake.mutate('postgresql.cnpg.io', 'v1', 'clusters', NS, 'acme', (c) => ({ ...c, spec: { ...(c.spec as object), imageName: 'ghcr.io/cloudnative-pg/postgresql:18.1' } }));
    assert.ok(cluster('acme')?.spec.resources);
    await a.update('acme', (t) => {
      const lifted = { ...t };
      delete lifted.memoryBytes;
      return lifted;
    });
    assert.equal(cluster('acme')?.spec.resources, undefined);
    assert.equal(cluster('acme')?.spec.imageName, 'ghcr.io/cloudnative-pg/postgresql:18.1');
    assert.deepEqual(mergeDiff({ a: 1, b: { c: 2, d: 3 } }, { a: 1, b: { c: 4 } }), { b: { c: 4, d: null } });
  });

  it('a failover moves the primary; the router\'s address, the read-write service, stays', async () => {
    const [a] = pods as [KubeTenants];
    operator.failover(NS, 'acme');
    await waitFor('the primary to move', async () => a.view('acme')?.primary === 'acme-2', 5_000);
    assert.equal(a.view('acme')?.writeHost, 'acme-rw.pgs.svc');
    assert.equal(a.view('acme')?.healthy, true);
  });

  it('a record someone broke by hand is reported, not taken', async () => {
    const [a] = pods as [KubeTenants];
    fake.mutate('postgresql.cnpg.io', 'v1', 'clusters', NS, 'acme', (c) => ({ ...c, metadata: { ...c.metadata, annotations: { ...(c.metadata.annotations as object), [TENANT_ANNOTATION]: '{"id":"acme"' } } }));
    await waitFor('the broken record to show', async () => a.view('acme')?.problem !== undefined, 5_000);
    assert.match(a.view('acme')?.problem ?? '', /annotation pgs\.sysnee\.io\/tenant of cluster acme is not JSON/);
    await assert.rejects(a.update('acme', (t) => t), /is not JSON/);
  });

  it('remove deletes the objects; the volumes only when asked', async () => {
    const [a, b] = pods as [KubeTenants, KubeTenants];
    await a.create(tenant('keep'), secrets);
    await a.awaitHealthy('keep', 5_000);
    await a.remove('keep', { volumes: false });
    assert.deepEqual([...fake.objects.keys()].filter((k) => k.includes('keep')), ['core/v1/persistentvolumeclaims/pgs/keep-1']);
    const removed = await b.remove('acme', { volumes: true });
    assert.deepEqual(removed.volumesDeleted, ['acme-1']);
    assert.deepEqual([...fake.objects.keys()].filter((k) => k.includes('acme')), []);
    await waitFor('both pods to forget acme', async () => pods.every((p) => p.view('acme') === undefined), 5_000);
    await assert.rejects(a.remove('acme', { volumes: true }), /tenant acme does not exist/);
  });
});
