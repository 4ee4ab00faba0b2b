/**
 * The kubernetes runtime as a user meets it: `pgs setup --runtime kubernetes`,
 * `pgs start`, then the README's commands, against a fake API server (a
 * kubeconfig with a bearer token) and a fake operator that gives every new
 * Cluster a real PostgreSQL 18 server with TLS from the cluster's own CA and
 * the owner password from the cluster's Secret. Clients connect with psql
 * through the daemon's router, by SNI host name.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fakeClusterHome, type FakeCnpg } from '../helpers/fake-cnpg.js';
import type { FakeKube } from '../helpers/fake-kube.js';
import type { PgsHome } from '../helpers/pgs.js';
import { PGS_BIN, ROOT, freePort, psql, waitFor } from '../helpers/pgs.js';
import { parse as parseYaml } from 'yaml';

const NS = 'tenants';
const DOMAIN = 'k8s.test';
const CNPG = 'postgresql.cnpg.io';
type Listed = { id: string; hostname: string; state: string; access: string; wakes: number };

/** A GET to a daemon's API on loopback (plain HTTP there; TLS on any other address). */
function apiGet(port: number, urlPath: string, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: urlPath, headers: { authorization: `Bearer ${token}` } }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => { body += c; }).on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

/**
 * The environment deploy/kubernetes gives a pgs pod: the ConfigMap's data and
 * the container's env, with the downward API's fields filled in.
 */
function podEnv(fields: Record<string, string>): Record<string, string> {
  const dir = path.join(ROOT, 'deploy/kubernetes');
  const config = parseYaml(readFileSync(path.join(dir, 'configmap.yaml'), 'utf8')) as { data: Record<string, string> };
  const deployment = parseYaml(readFileSync(path.join(dir, 'deployment.yaml'), 'utf8')) as { spec: { template: { spec: { containers: { env: { name: string; value?: string; valueFrom?: { fieldRef: { fieldPath: string } } }[] }[] } } } };
  const env: Record<string, string> = { ...config.data };
  for (const e of deployment.spec.template.spec.containers[0]?.env ?? []) {
    const value = e.value ?? fields[e.valueFrom?.fieldRef.fieldPath ?? ''];
    assert.ok(value !== undefined, `a value for ${e.name}`);
    env[e.name] = value;
  }
  return env;
}

describe('the kubernetes runtime through the CLI: setup, start and the README\'s commands against a fake API server and operator', () => {
  let fake: FakeKube;
  let operator: FakeCnpg;
  let home: PgsHome;
  let stop: (() => Promise<void>) | undefined;
  let port: number;
  const token = randomBytes(16).toString('hex');
  const cluster = (id: string) => fake.get(CNPG, 'v1', 'clusters', NS, id) as { metadata: { annotations: Record<string, string> }; spec: Record<string, unknown> } | undefined;
  const hostOf = async (id: string) => (await home.json<Listed[]>(['list'])).find((t) => t.id === id)?.hostname ?? '';
  const query = async (id: string, sql: string, password: string) =>
    psql(`host=${await hostOf(id)} hostaddr=127.0.0.1 port=${port} user=postgres dbname=${id} sslmode=require connect_timeout=20`, sql, password);

  before(async () => {
    ({ fake, operator, home, stop } = await fakeClusterHome({ token, namespace: 'default', env: { PGS_ACTIVITY_INTERVAL: '1' } }));
    port = await freePort();
  });
  after(async () => {
    await stop?.();
  });

  it('setup is refused, and writes nothing, where CloudNativePG is not installed', async () => {
    fake.uninstalled.add(CNPG);
    const refused = await home.run(['setup', '--runtime', 'kubernetes', '--namespace', NS]);
    fake.uninstalled.delete(CNPG);
    assert.equal(refused.code, 1, refused.stdout);
    assert.match(refused.stderr, /has no postgresql\.cnpg\.io\/v1 clusters: install the CloudNativePG operator first/);
    assert.equal(refused.stderr.trim().split('\n').length, 1, refused.stderr);
    assert.equal(existsSync(path.join(home.home, 'catalog.json')), false);
    const misplaced = await home.run(['setup', '--instances', '2']);
    assert.match(misplaced.stderr, /settings of the kubernetes runtime: add --runtime kubernetes/);
  });

  it('setup --runtime kubernetes checks the API server and keeps namespace, instances and storage class', async () => {
    const out = await home.ok(['setup', '--runtime', 'kubernetes', '--namespace', NS, '--instances', '2', '--storage-class', 'fast', '--domain', DOMAIN, '--port', String(port), '--api-listen', 'off']);
    assert.match(out, /checked the Kubernetes API at http:\/\/127\.0\.0\.1:\d+: CloudNativePG answers in namespace tenants/);
    assert.match(out, /runtime\s+kubernetes: a CloudNativePG Cluster per tenant in namespace tenants, 2 instances each, storage class fast/);
    const settings = (JSON.parse(await home.catalogText()) as { settings: Record<string, unknown> }).settings;
    assert.deepEqual([settings.runtime, settings.namespace, settings.instances, settings.storageClass], ['kubernetes', NS, 2, 'fast']);
  });

  it('create makes a Cluster that serves; psql reaches it through the router with the tenant\'s password', async () => {
    const created = await home.run(['create', 'acme', '--password', 'acme-password-1', '--memory', '256MiB']);
    assert.equal(created.code, 0, created.stderr);
    const made = cluster('acme');
    assert.ok(made, 'the Cluster exists');
    assert.equal(made.spec.instances, 2);
    assert.deepEqual(made.spec.storage, { size: '1Gi', storageClass: 'fast' });
    assert.equal((made.spec.resources as { limits: Record<string, string> }).limits.memory, '256Mi');
    const rows = await query('acme', "CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2); SELECT current_user || ' ' || count(*) FROM t", 'acme-password-1');
    assert.equal(rows.code, 0, rows.stderr);
    assert.equal(rows.stdout.split('\n').pop(), 'app 2');
    const listed = (await home.json<Listed[]>(['list'])).find((t) => t.id === 'acme');
    assert.equal(listed?.state, 'running');
    assert.match(listed?.hostname ?? '', /^acme-[a-z0-9]+\.k8s\.test$/);
    assert.match(await home.ok(['status']), /kubernetes: CloudNativePG clusters in namespace tenants/);
    assert.match(await home.ok(['url', 'acme']), /^postgresql:\/\/postgres@acme-[a-z0-9]+\.k8s\.test:\d+\/acme\?sslmode=require$/m);
    // The dashboard and the metrics are served as on one host.
    const metrics = await home.api<string>('GET', '/metrics');
    assert.equal(metrics.status, 200);
    assert.match(String(metrics.body), /^pgs_tenants\{state="running"\} 1$/m);
    assert.equal((await home.api('GET', '/')).status, 200);
  });

  it('a second create of the same id, an init script, and a cluster that never serves are refused, leaving nothing behind', async () => {
    assert.match((await home.run(['create', 'acme'])).stderr, /tenant acme already exists/);
    const script = path.join(home.home, 'init.sql');
    writeFileSync(script, 'CREATE TABLE x(y int);');
    assert.match((await home.run(['create', 'scripted', '--init', script])).stderr, /init script .* not available on the kubernetes runtime/);
    assert.equal(cluster('scripted'), undefined);
    operator.stuck.add('stuck');
    const stuck = await home.run(['create', 'stuck']);
    assert.notEqual(stuck.code, 0);
    assert.match(stuck.stderr, /the cluster of tenant stuck is not serving after 20 s: phase "Setting up primary"/);
    assert.equal(cluster('stuck'), undefined);
    assert.equal(fake.get('', 'v1', 'secrets', NS, 'stuck-app'), undefined);
  });

  it('disable-access closes and refuses; passwd changes the login; config changes the Cluster and refuses a smaller volume', async () => {
    await home.ok(['disable-access', 'acme']);
    assert.match((await query('acme', 'SELECT 1', 'acme-password-1')).stderr, /disabled/);
    await home.ok(['enable-access', 'acme']);
    assert.equal((await query('acme', 'SELECT count(*) FROM t', 'acme-password-1')).stdout, '2');
    await home.ok(['passwd', 'acme', '--password', 'acme-password-2']);
    assert.match((await query('acme', 'SELECT 1', 'acme-password-1')).stderr, /password authentication failed/);
    assert.equal((await query('acme', 'SELECT count(*) FROM t', 'acme-password-2')).stdout, '2');
    await home.ok(['config', 'acme', '--disk', '5GiB', '--cpus', '0.5']);
    const spec = cluster('acme')?.spec as { storage: { size: string }; resources: { limits: Record<string, string> } };
    assert.equal(spec.storage.size, '5Gi');
    assert.equal(spec.resources.limits.cpu, '500m');
    const shrink = await home.run(['config', 'acme', '--disk', '2GiB']);
    assert.match(shrink.stderr, /a volume cannot shrink/);
    assert.equal((cluster('acme')?.spec as { storage: { size: string } }).storage.size, '5Gi');
  });

  it('stop hibernates the cluster and refuses clients with the reason; start brings the data back', async () => {
    await home.ok(['stop', 'acme']);
    assert.equal(cluster('acme')?.metadata.annotations['cnpg.io/hibernation'], 'on');
    assert.match((await query('acme', 'SELECT 1', 'acme-password-2')).stderr, /tenant acme is stopped/);
    await home.ok(['start', 'acme']);
    assert.equal((await query('acme', 'SELECT count(*) FROM t', 'acme-password-2')).stdout, '2');
  });

  it('an idle tenant is suspended by the leader and woken by its next client', async () => {
    await home.ok(['config', 'acme', '--autosuspend', '2s']);
    await waitFor('acme to be suspended as idle', async () => (await home.json<Listed[]>(['list'])).find((t) => t.id === 'acme')?.state === 'suspended', 20_000);
    assert.equal(cluster('acme')?.metadata.annotations['cnpg.io/hibernation'], 'on');
    assert.equal((await query('acme', 'SELECT count(*) FROM t', 'acme-password-2')).stdout, '2');
    await home.ok(['config', 'acme', '--autosuspend', 'off']);
  });

  it('what the runtime cannot do, or needs set up first, says so in one line', async () => {
    const backup = await home.run(['backup', 'acme']);
    assert.equal(backup.code, 1);
    assert.match(backup.stderr.trim(), /^pgs backup: no backup target is set: pgs setup --backup-target s3:\/\/BUCKET\/PREFIX \(with the Secret pgs-s3 in namespace tenants: [^\n]+\)$/);
    const exported = await home.run(['export', 'acme']);
    assert.equal(exported.code, 1);
    assert.match(exported.stderr.trim(), /^pgs export: pgs export is not available on the kubernetes runtime yet: pg_dump through the tenant's connection string$/);
    const logs = await home.run(['logs', 'acme']);
    assert.match(logs.stderr, /kubectl -n tenants logs -l cnpg\.io\/cluster=acme/);
  });

  it('a second pod, started with the environment deploy/kubernetes gives, serves the same tenants and honours the same API tokens', async () => {
    const env = podEnv({ 'metadata.namespace': NS, 'metadata.name': 'pgs-7d4b9-x2x9q' });
    // Every setting the manifests give is one pgs reads.
    const bundleDir = path.join(ROOT, 'dist/bundle');
    const bundle = readdirSync(bundleDir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.js')).map((f) => readFileSync(path.join(bundleDir, f), 'utf8')).join('\n');
    for (const name of Object.keys(env)) assert.ok(bundle.includes(name), `pgs reads ${name}`);
    const dir = mkdtempSync(path.join(tmpdir(), 'pgs-pod-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', `/CN=*.${DOMAIN}`, '-addext', `subjectAltName=DNS:*.${DOMAIN},DNS:localhost`, '-keyout', 'tls.key', '-out', 'tls.crt'], { cwd: dir, stdio: 'pipe' });
    const podPort = await freePort();
    const apiPort = await freePort();
    const pod: ChildProcess = spawn(process.execPath, [PGS_BIN, 'start', '--foreground'], {
      env: {
        PATH: process.env.PATH, KUBECONFIG: home.env.KUBECONFIG, ...env,
        // Where this test can put them: a home, the certificate, free ports, the test's domain.
        PGS_HOME: path.join(dir, 'home'), PGS_CERT_FILE: path.join(dir, 'tls.crt'), PGS_KEY_FILE: path.join(dir, 'tls.key'),
        PGS_PORT: String(podPort), PGS_API_LISTEN: `127.0.0.1:${apiPort}`, PGS_DOMAIN: DOMAIN,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    pod.stderr?.setEncoding('utf8').on('data', (c: string) => { log += c; });
    try {
      await waitFor('the second pod to start', async () => log.includes('daemon started') || pod.exitCode !== null, 30_000);
      assert.equal(pod.exitCode, null, log);
      assert.match(log, /"runtime":"kubernetes","namespace":"tenants","pod":"pgs-7d4b9-x2x9q"/);
      // A client through the second pod reaches acme.
      const host = await hostOf('acme');
      const through = await psql(`host=${host} hostaddr=127.0.0.1 port=${podPort} user=postgres dbname=acme sslmode=require connect_timeout=20`, 'SELECT count(*) FROM t', 'acme-password-2');
      assert.equal(through.stdout, '2', through.stderr);
      // A token made through the first pod is honoured by the second; revoked, by neither.
      const made = JSON.parse(await home.ok(['token', 'create', 'deploy', '--scope', 'read', '--json'])) as { token: string };
      assert.ok(fake.get('', 'v1', 'secrets', NS, 'pgs-tokens'), 'the tokens are in a Secret');
      await waitFor('the second pod to honour the token', async () => (await apiGet(apiPort, '/v1/tenants', made.token)).status === 200, 10_000);
      assert.match((await apiGet(apiPort, '/v1/tenants', made.token)).body, /"id":"acme"/);
      await home.ok(['token', 'revoke', 'deploy']);
      await waitFor('the second pod to refuse the revoked token', async () => (await apiGet(apiPort, '/v1/tenants', made.token)).status === 401, 10_000);
    } finally {
      pod.kill('SIGTERM');
      await waitFor('the second pod to stop', async () => pod.exitCode !== null || pod.signalCode !== null, 30_000);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('remove deletes the Cluster, its Secret and its volumes; the router forgets it', async () => {
    const host = await hostOf('acme');
    await home.ok(['remove', 'acme', '--yes']);
    assert.equal(cluster('acme'), undefined);
    assert.equal(fake.get('', 'v1', 'secrets', NS, 'acme-app'), undefined);
    assert.equal([...fake.objects.keys()].filter((k) => k.includes('/persistentvolumeclaims/')).length, 0);
    const gone = await psql(`host=${host} hostaddr=127.0.0.1 port=${port} user=postgres dbname=acme sslmode=require connect_timeout=5`, 'SELECT 1', 'acme-password-2');
    assert.match(gone.stderr, /unknown|no tenant|does not exist/);
    assert.equal((await home.json<Listed[]>(['list'])).length, 0);
  });

  it('pgs stop stops only the daemon: the clusters are the cluster\'s', async () => {
    await home.ok(['create', 'keep', '--password', 'keep-password']);
    assert.match(await home.ok(['stop']), /Stopped the daemon; the tenants' clusters keep running/);
    assert.equal(cluster('keep')?.metadata.annotations['cnpg.io/hibernation'], 'off');
    assert.match((await home.run(['list'])).stderr, /^pgs list: on the kubernetes runtime the tenants live in the cluster and only the daemon reads them: start it with "pgs start"$/m);
  });
});

describe('the README\'s Kubernetes commands, as written, against the fake API server and operator', () => {
  let fake: FakeKube;
  let home: PgsHome;
  let stop: (() => Promise<void>) | undefined;

  before(async () => {
    ({ fake, home, stop } = await fakeClusterHome());
  });
  after(async () => {
    await stop?.();
  });

  it('each pgs line of the section works, and does what its comment says', async () => {
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('### Tenants on Kubernetes'), readme.indexOf('\n### ', readme.indexOf('### Tenants on Kubernetes') + 10));
    const block = [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] ?? '').find((b) => b.startsWith('pgs setup'));
    assert.ok(block, 'a block of pgs commands');
    const lines = block.split('\n').map((l) => l.replace(/\s+#.*$/, '').trim()).filter(Boolean);
    assert.deepEqual(lines.map((l) => l.split(' ')[1]), ['setup', 'create', 'list', 'config', 'stop', 'start', 'remove']);
    const port = await freePort();
    for (const line of lines) {
      // Only where this run listens is changed: a free port, no API on TCP.
      const args = line.split(' ').slice(1);
      if (args[0] === 'setup') args.push('--port', String(port), '--api-listen', 'off');
      const result = await home.run(args);
      assert.equal(result.code, 0, `${line}: ${result.stderr}`);
      const cluster = fake.get(CNPG, 'v1', 'clusters', 'pgs', 'acme') as { metadata: { annotations: Record<string, string> }; spec: { instances: number; resources?: { limits: Record<string, string> }; storage: { size: string } } } | undefined;
      switch (args[0]) {
        case 'create':
          assert.equal(cluster?.spec.instances, 2);
          assert.match(result.stdout, /acme-[a-z0-9]{6}\.db\.example\.com/);
          break;
        case 'list':
          assert.match(result.stdout, /acme\s+acme-[a-z0-9]{6}\.db\.example\.com\s+enabled\s+running/);
          break;
        case 'config':
          assert.deepEqual([cluster?.spec.resources?.limits.memory, cluster?.spec.storage.size], ['1Gi', '10Gi']);
          break;
        case 'stop':
          assert.equal(cluster?.metadata.annotations['cnpg.io/hibernation'], 'on');
          break;
        case 'start':
          assert.equal(cluster?.metadata.annotations['cnpg.io/hibernation'], 'off');
          break;
        case 'remove':
          assert.equal(cluster, undefined);
          break;
      }
    }
  });
});
