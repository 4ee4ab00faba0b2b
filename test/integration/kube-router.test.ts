/**
 * Routing to tenants that are CloudNativePG clusters, end to end but for the
 * cluster itself: a fake API server and operator hold the objects, the
 * cluster's read-write service is a real PostgreSQL 18 with TLS from the
 * cluster's own CA, and a real client connects through the router with SNI.
 * Two routers (two pgs pods) share the state through their watches.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { scramVerifier } from '../../src/auth/scram.js';
import type { Tenant } from '../../src/catalog/schema.js';
import { KubeBackends } from '../../src/daemon/kube-backends.js';
import { KubeClient } from '../../src/runtime/kubernetes/client.js';
import { KubeTenants } from '../../src/runtime/kubernetes/tenants.js';
import { Router } from '../../src/router/router.js';
import pgClient from 'pg';
import { FakeCnpg } from '../helpers/fake-cnpg.js';
import { FakeKube } from '../helpers/fake-kube.js';
import { psql, waitFor } from '../helpers/pgs.js';
import { startTlsPostgres, type TlsPostgres } from '../helpers/tls-postgres.js';

const NS = 'pgs';
const DOMAIN = 'k8s.test';
const PASSWORD = 'client-' + randomBytes(12).toString('hex');
const acme: Tenant = { id: 'acme', suffix: 'q1w2e3', access: 'enabled', wanted: 'running', maxConnections: 20, createdAt: '2026-12-01T00:00:00.000Z' };

describe('routing to CloudNativePG clusters: two pgs pods, a fake API server and operator, a real server behind the read-write service', () => {
  let fake: FakeKube;
  let operator: FakeCnpg;
  let pg: TlsPostgres;
  let dir: string;
  const pods: { client: KubeClient; tenants: KubeTenants; backends: KubeBackends; router: Router; port: number }[] = [];
  const query = (pod: number, sql: string, password = PASSWORD) => psql(`host=acme-q1w2e3.${DOMAIN} hostaddr=127.0.0.1 port=${pods[pod]?.port} user=postgres dbname=acme sslmode=require connect_timeout=15`, sql, password);

  const publish = (server: { host: string; port: number }) => fake.put('discovery.k8s.io', 'v1', 'endpointslices', NS, {
    metadata: { name: 'acme-rw-x1', labels: { 'kubernetes.io/service-name': 'acme-rw' } },
    addressType: 'IPv4', endpoints: [{ addresses: [server.host], conditions: { ready: true } }], ports: [{ name: 'postgres', port: server.port }],
  });

  before(async () => {
    pg = await startTlsPostgres({ servername: `acme-rw.${NS}.svc`, database: 'acme', ownerPassword: randomBytes(16).toString('hex') });
    fake = await new FakeKube().start();
    operator = new FakeCnpg(fake);
    dir = mkdtempSync(path.join(tmpdir(), 'pgs-kube-router-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', `/CN=*.${DOMAIN}`, '-addext', `subjectAltName=DNS:*.${DOMAIN}`, '-keyout', 'router.key', '-out', 'router.crt'], { cwd: dir, stdio: 'pipe' });
    for (let i = 0; i < 2; i++) {
      const client = new KubeClient({ server: fake.url, namespace: NS });
      const tenants = new KubeTenants(client, { namespace: NS, instances: 1 });
      await tenants.start();
      // As the daemon wires it: a failover drops the sessions kept for the old primary.
      const wired: { router?: Router } = {};
      const backends = new KubeBackends(client, tenants, { wakeTimeoutMs: 10_000, onMoved: (id) => wired.router?.dropServerSessions(id) });
      await backends.start();
      const router = new Router(backends, { domain: DOMAIN, cert: readFileSync(path.join(dir, 'router.crt')), key: readFileSync(path.join(dir, 'router.key')), authSecret: randomBytes(32) });
      wired.router = router;
      const { port } = await router.listen(0, '127.0.0.1');
      pods.push({ client, tenants, backends, router, port });
    }
    const first = pods[0] as (typeof pods)[number];
    await first.tenants.create(acme, { ownerPassword: pg.ownerPassword, clientVerifier: scramVerifier(PASSWORD) });
    // The operator's CA secret for the cluster, as CloudNativePG makes it.
    fake.put('', 'v1', 'secrets', NS, { metadata: { name: 'acme-ca', labels: { 'cnpg.io/cluster': 'acme' } }, data: { 'ca.crt': pg.ca.toString('base64') } });
    // The read-write service's EndpointSlice names the local server; TLS still checks the service's name.
    publish(pg);
    await first.tenants.awaitHealthy('acme', 5_000);
    await waitFor('both pods to know acme and its secret', async () => pods.every((p) => p.backends.lookup('acme-q1w2e3') !== undefined), 5_000);
  });
  after(async () => {
    for (const p of pods) {
      await p.router.close();
      p.backends.stop();
      p.tenants.stop();
      p.client.close();
    }
    await operator?.stop();
    await fake?.stop();
    await pg?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('a client reaches its tenant through either pod, with its own password, as the owner', async () => {
    const made = await query(0, "CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2); SELECT current_user || ' ' || count(*) FROM t");
    assert.equal(made.code, 0, made.stderr);
    assert.equal(made.stdout.split('\n').pop(), 'app 2');
    assert.equal((await query(1, 'SELECT count(*) FROM t')).stdout, '2');
    const wrong = await query(1, 'SELECT 1', 'wrong-password');
    assert.match(wrong.stderr, /password authentication failed for user "postgres"/);
  });

  it('a suspended tenant is woken by a connection (through the other pod), once', async () => {
    await (pods[0] as (typeof pods)[number]).tenants.setSuspended('acme', true);
    await waitFor('both pods to see acme hibernated', async () => pods.every((p) => p.tenants.view('acme')?.hibernated === true), 5_000);
    const [a, b] = await Promise.all([query(1, 'SELECT count(*) FROM t'), query(1, 'SELECT count(*) FROM t')]);
    assert.deepEqual([a.stdout, b.stdout], ['2', '2'], a.stderr + b.stderr);
    assert.equal(fake.get('postgresql.cnpg.io', 'v1', 'clusters', NS, 'acme')?.metadata.annotations && (fake.get('postgresql.cnpg.io', 'v1', 'clusters', NS, 'acme')?.metadata.annotations as Record<string, string>)['cnpg.io/hibernation'], 'off');
  });

  it('access disabled through one pod is refused by both at once; enabled again, both serve', async () => {
    await (pods[1] as (typeof pods)[number]).tenants.update('acme', (t) => ({ ...t, access: 'disabled' }));
    await waitFor('both pods to refuse', async () => {
      const results = await Promise.all([query(0, 'SELECT 1'), query(1, 'SELECT 1')]);
      return results.every((r) => /access to tenant acme is disabled|disabled/.test(r.stderr));
    }, 5_000);
    await (pods[0] as (typeof pods)[number]).tenants.update('acme', (t) => ({ ...t, access: 'enabled' }));
    await waitFor('both pods to serve again', async () => (await Promise.all([query(0, 'SELECT 1'), query(1, 'SELECT 1')])).every((r) => r.stdout === '1'), 5_000);
  });

  it('a stopped tenant is refused with the reason; started again, it serves', async () => {
    await (pods[0] as (typeof pods)[number]).tenants.update('acme', (t) => ({ ...t, wanted: 'stopped' }));
    await waitFor('the stop to be seen', async () => /tenant acme is stopped/.test((await query(1, 'SELECT 1')).stderr), 5_000);
    await (pods[0] as (typeof pods)[number]).tenants.update('acme', (t) => ({ ...t, wanted: 'running' }));
    await (pods[0] as (typeof pods)[number]).tenants.awaitHealthy('acme', 5_000);
    assert.equal((await query(0, 'SELECT 1')).stdout, '1');
  });

  for (const pool of ['session', 'transaction'] as const) {
    it(`a failover during traffic (${pool} pooling): new clients reach the new primary, through both pods`, async () => {
      await (pods[0] as (typeof pods)[number]).tenants.update('acme', (t) => ({ ...t, pool }));
      await waitFor('both pods to see the pool mode', async () => pods.every((p) => p.backends.lookup('acme-q1w2e3')?.pool === (pool === 'transaction' ? 'transaction' : undefined)), 5_000);
      const second = await startTlsPostgres({ servername: `acme-rw.${NS}.svc`, database: 'acme', ownerPassword: pg.ownerPassword, ca: pg });
      try {
        let stop = false;
        const seen: string[] = [];
        const traffic = (async () => {
          for (let i = 0; !stop; i++) {
            const r = await query(i % 2, 'SELECT inet_server_port()');
            if (r.code === 0) seen.push(r.stdout);
          }
        })();
        await waitFor('traffic to reach the first primary', async () => seen.includes(String(pg.port)), 10_000);
        // In transaction mode a connected client gets a server session per transaction: after the failover, from the new primary.
        const kept = pool === 'transaction' ? await Promise.all(pods.map(async (p) => {
          const c = new pgClient.Client({ host: '127.0.0.1', port: p.port, user: 'postgres', database: 'acme', password: PASSWORD, ssl: { servername: `acme-q1w2e3.${DOMAIN}`, rejectUnauthorized: false } });
          await c.connect();
          assert.equal((await c.query('SELECT inet_server_port() AS port')).rows[0].port, pg.port);
          return c;
        })) : [];
        operator.failover(NS, 'acme');
        publish(second); // the read-write service now selects the new primary's pod
        await waitFor('new clients to reach the new primary through both pods', async () => {
          const results = await Promise.all([query(0, 'SELECT inet_server_port()'), query(1, 'SELECT inet_server_port()')]);
          return results.every((r) => r.stdout === String(second.port));
        }, 10_000);
        for (const c of kept) {
          await waitFor('a connected client\'s next transactions to go to the new primary', async () => (await c.query('SELECT inet_server_port() AS port')).rows[0].port === second.port, 10_000);
          await c.end();
        }
        stop = true;
        await traffic;
        assert.ok(seen.length >= 2, `queries ran during the failover: ${seen.length}`);
        assert.equal(seen.at(-1), String(second.port));
        // And it stays there: no kept session of the old primary is handed out later.
        for (let i = 0; i < 6; i++) assert.equal((await query(i % 2, 'SELECT inet_server_port()')).stdout, String(second.port));
      } finally {
        publish(pg);
        await second.stop();
      }
    });
  }
});
