import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Informer, KubeClient, KubeError, RESOURCES, loadConnection, parseKubeconfig, type KubeResource } from '../../src/runtime/kubernetes/client.js';
import { FakeKube } from '../helpers/fake-kube.js';
import { waitFor } from '../helpers/pgs.js';

const NS = 'pgs';
const cluster = (name: string, labels: Record<string, string> = { 'pgs.sysnee.io/tenant': name }) => ({
  apiVersion: 'postgresql.cnpg.io/v1', kind: 'Cluster', metadata: { name, labels, annotations: { 'pgs.sysnee.io/access': 'enabled' } }, spec: { instances: 1 },
});
type Cluster = KubeResource & { spec: { instances: number } };

describe('the Kubernetes API client, against a fake API server over HTTP', () => {
  let fake: FakeKube;
  let client: KubeClient;

  before(async () => {
    fake = await new FakeKube({ token: 'secret-token' }).start();
    client = new KubeClient({ server: fake.url, namespace: NS, token: 'secret-token' });
  });
  after(async () => {
    client.close();
    await fake.stop();
  });

  it('create, get, list by label, merge patch, delete; a second create of a name is AlreadyExists', async () => {
    const made: KubeResource = await client.create(RESOURCES.clusters, cluster('acme'));
    assert.equal(made.metadata.namespace, NS);
    assert.ok(made.metadata.resourceVersion);
    await client.create(RESOURCES.clusters, cluster('other', { team: 'b' }));
    await assert.rejects(client.create(RESOURCES.clusters, cluster('acme')), (e: unknown) => e instanceof KubeError && e.statusCode === 409 && e.reason === 'AlreadyExists');
    assert.equal((await client.get<Cluster>(RESOURCES.clusters, 'acme'))?.spec.instances, 1);
    assert.equal(await client.get(RESOURCES.clusters, 'nobody'), undefined);
    const listed = await client.list(RESOURCES.clusters, 'pgs.sysnee.io/tenant=acme');
    assert.deepEqual(listed.items.map((i) => i.metadata.name), ['acme']);
    assert.equal((await client.list(RESOURCES.clusters)).items.length, 2);
    const patched = await client.patch<Cluster>(RESOURCES.clusters, 'acme', { metadata: { annotations: { 'pgs.sysnee.io/access': 'disabled' } }, spec: { instances: 3 } });
    assert.equal(patched.spec.instances, 3);
    assert.equal(patched.metadata.annotations?.['pgs.sysnee.io/access'], 'disabled');
    assert.deepEqual(patched.metadata.labels, { 'pgs.sysnee.io/tenant': 'acme' }, 'a merge patch keeps what it does not name');
    assert.equal(await client.delete(RESOURCES.clusters, 'other'), true);
    assert.equal(await client.delete(RESOURCES.clusters, 'other'), false);
  });

  it('a patch against an old resourceVersion is a Conflict: of two writers that read the same version, one wins', async () => {
    const read = await client.get(RESOURCES.clusters, 'acme');
    const version = read?.metadata.resourceVersion as string;
    const results = await Promise.allSettled([
      client.patch(RESOURCES.clusters, 'acme', { metadata: { annotations: { writer: 'a' } } }, version),
      client.patch(RESOURCES.clusters, 'acme', { metadata: { annotations: { writer: 'b' } } }, version),
    ]);
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    assert.ok(lost.reason instanceof KubeError && lost.reason.statusCode === 409 && lost.reason.reason === 'Conflict', String(lost.reason));
  });

  it('two informers (two pgs pods) see every change through their watches, across a dropped watch and an expired version', async () => {
    const seen: string[][] = [[], []];
    const informers = [0, 1].map((i) => new Informer<Cluster>(client, RESOURCES.clusters, (name, o) => {
      seen[i]?.push(`${name}:${o ? o.metadata.annotations?.['pgs.sysnee.io/access'] : 'gone'}`);
    }, { retryMs: 50 }));
    await Promise.all(informers.map((i) => i.start()));
    try {
      for (const inf of informers) assert.deepEqual([...inf.cache.keys()], ['acme']);
      await client.patch(RESOURCES.clusters, 'acme', { metadata: { annotations: { 'pgs.sysnee.io/access': 'enabled' } } });
      await waitFor('both to see access enabled', async () => informers.every((i) => i.cache.get('acme')?.metadata.annotations?.['pgs.sysnee.io/access'] === 'enabled'), 5_000);
      // The API server ends the watches; a change made meanwhile still arrives.
      fake.dropWatches();
      await client.create(RESOURCES.clusters, cluster('beta'));
      await waitFor('both to see beta', async () => informers.every((i) => i.cache.has('beta')), 5_000);
      // Watches dropped and the log forgotten: the next watch gets 410, the informers list again.
      fake.dropWatches();
      fake.expire();
      await client.delete(RESOURCES.clusters, 'beta');
      fake.expire();
      await waitFor('both to see beta gone', async () => informers.every((i) => !i.cache.has('beta')), 5_000);
      assert.ok(fake.expiredWatches >= 2, `each informer was told its version expired (${fake.expiredWatches}) and listed again`);
      for (const s of seen) {
        assert.ok(s.includes('acme:enabled'), s.join(' '));
        assert.ok(s.includes('beta:gone'), s.join(' '));
      }
    } finally {
      for (const i of informers) i.stop();
    }
  });

  it('a call the runtime does not declare is refused before it is sent', async () => {
    const before = fake.requests.length;
    await assert.rejects(client.patch(RESOURCES.persistentVolumeClaims, 'data-acme-1', { metadata: {} }), /pgs does not declare "patch" on core\/persistentvolumeclaims/);
    await assert.rejects(client.create(RESOURCES.leases, { metadata: { name: 'x' } }).then(() => client.patch(RESOURCES.leases, 'x', { metadata: {} })), /does not declare "patch" on coordination\.k8s\.io\/leases/);
    assert.equal(fake.requests.length, before + 1, 'only the declared create reached the server');
  });

  it('a wrong token is refused with 401', async () => {
    const stranger = new KubeClient({ server: fake.url, namespace: NS, token: 'wrong' });
    await assert.rejects(stranger.list(RESOURCES.clusters), (e: unknown) => e instanceof KubeError && e.statusCode === 401);
    stranger.close();
  });

  it('an API server that is not there: one clear error', async () => {
    const away = new KubeClient({ server: 'http://127.0.0.1:1', namespace: NS });
    await assert.rejects(away.list(RESOURCES.clusters), /the Kubernetes API at http:\/\/127\.0\.0\.1:1 is not reachable/);
    away.close();
  });
});

describe('connecting: over TLS with the cluster\'s CA, from a kubeconfig or from inside a pod', () => {
  let dir: string;
  let fake: FakeKube;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'pgs-kube-'));
    // A CA and a server certificate for 127.0.0.1 it signed, made with openssl.
    const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=test-ca', '-keyout', 'ca.key', '-out', 'ca.crt');
    run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', 'server.key', '-out', 'server.csr');
    writeFileSync(path.join(dir, 'ext'), 'subjectAltName=IP:127.0.0.1\n');
    run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'ext', '-out', 'server.crt');
    fake = await new FakeKube({ token: 'sa-token' }).start({ cert: readFileSync(path.join(dir, 'server.crt')), key: readFileSync(path.join(dir, 'server.key')) });
  });
  after(async () => {
    await fake.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a kubeconfig\'s current context: server, CA data, token, namespace; the server is verified with that CA', async () => {
    const ca = readFileSync(path.join(dir, 'ca.crt')).toString('base64');
    const kubeconfig = path.join(dir, 'config');
    writeFileSync(kubeconfig, [
      'apiVersion: v1', 'kind: Config', 'current-context: here',
      'contexts:', '- name: here', '  context: {cluster: c1, user: u1, namespace: tenants}', '- name: elsewhere', '  context: {cluster: c2, user: u1}',
      'clusters:', `- name: c1`, `  cluster: {server: "${fake.url}", certificate-authority-data: ${ca}}`, '- name: c2', '  cluster: {server: "https://192.0.2.1"}',
      'users:', '- name: u1', '  user: {token: sa-token}',
    ].join('\n'));
    const connection = await loadConnection({ env: { KUBECONFIG: kubeconfig } });
    assert.equal(connection.server, fake.url);
    assert.equal(connection.namespace, 'tenants');
    const client = new KubeClient(connection);
    await client.create(RESOURCES.secrets, { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'acme-app' }, stringData: { username: 'app' } });
    assert.ok(fake.get('', 'v1', 'secrets', 'tenants', 'acme-app'));
    client.close();
    // Without the CA the same server is not trusted.
    const blind = new KubeClient({ ...connection, ca: undefined });
    await assert.rejects(blind.list(RESOURCES.secrets), /not reachable: .*(self-signed|unable to (get|verify))/);
    blind.close();
  });

  it('inside a pod: the service account\'s token, CA and namespace', async () => {
    const sa = path.join(dir, 'sa');
    execFileSync('mkdir', ['-p', sa]);
    writeFileSync(path.join(sa, 'token'), 'sa-token\n');
    writeFileSync(path.join(sa, 'ca.crt'), readFileSync(path.join(dir, 'ca.crt')));
    writeFileSync(path.join(sa, 'namespace'), 'pgs\n');
    const port = new URL(fake.url).port;
    const connection = await loadConnection({ env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: port }, serviceAccountDir: sa });
    assert.deepEqual([connection.server, connection.namespace, connection.token], [fake.url, 'pgs', 'sa-token']);
    const client = new KubeClient(connection);
    assert.deepEqual((await client.list(RESOURCES.secrets)).items, []);
    client.close();
  });

  it('what pgs cannot use is said in one line: no kubeconfig, no current context, a credential program it cannot run', async () => {
    await assert.rejects(loadConnection({ env: { KUBECONFIG: path.join(dir, 'missing') } }), /no Kubernetes API to talk to: not in a pod, and no kubeconfig at .*missing \(ENOENT\); set KUBECONFIG/);
    await assert.rejects(parseKubeconfig('apiVersion: v1\nkind: Config\n', 'k'), /kubeconfig k: no current-context/);
    await assert.rejects(parseKubeconfig('current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: "https://x"}}]\nusers: [{name: u, user: {exec: {command: aws}}}]\n', 'k'), /kubeconfig k: user u's exec: apiVersion null is not one pgs speaks/);
    await assert.rejects(loadConnection({ env: { KUBERNETES_SERVICE_HOST: '127.0.0.1' }, serviceAccountDir: path.join(dir, 'none') }), /inside a pod .* the service account's files cannot be read/);
  });
});
