/**
 * The router in front of a server on the network, as the kubernetes runtime
 * will use it: a client authenticates with the router (SNI, TLS, SCRAM
 * against the tenant's verifier), and the router reaches a real PostgreSQL
 * 18 over TLS (verified against that server's own CA) logging in as the
 * database's owner. Sessions are kept and reused, cancel requests cross the
 * network, transaction pooling works, and the server's refusals reach the
 * client as they are.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import postgres from 'postgres';
import { parseVerifier, scramVerifier } from '../../src/auth/scram.js';
import { Router, type RouterBackends, type TenantRoute } from '../../src/router/router.js';
import type { RemoteAddress } from '../../src/router/server-sessions.js';
import { psql } from '../helpers/pgs.js';
import { assertCancels } from '../helpers/router.js';
import { startTlsPostgres, type TlsPostgres } from '../helpers/tls-postgres.js';

const DOMAIN = 'k8s.test';
const PASSWORD = 'client-' + randomBytes(12).toString('hex');

describe('the router in front of a server on the network (TLS and SCRAM to it, as to a CloudNativePG cluster)', () => {
  let pg: TlsPostgres;
  let router: Router;
  let port: number;
  let dir: string;
  const routes = new Map<string, TenantRoute>([
    ['acme-abc123', { id: 'acme', access: 'enabled', maxConnections: 20 }],
    ['pooled-abc123', { id: 'pooled', access: 'enabled', maxConnections: 20, pool: 'transaction', poolSize: 2 }],
  ]);
  const conn = (label: string, db = 'acme', password = PASSWORD) => ({ url: `host=${label}.${DOMAIN} hostaddr=127.0.0.1 port=${port} user=postgres dbname=${db} sslmode=require connect_timeout=10`, password });
  const q = (label: string, sql: string, db?: string, password?: string) => {
    const c = conn(label, db, password);
    return psql(c.url, sql, c.password);
  };

  before(async () => {
    pg = await startTlsPostgres({ servername: 'acme-rw.pgs.svc', database: 'acme', ownerPassword: randomBytes(16).toString('hex') });
    dir = mkdtempSync(path.join(tmpdir(), 'pgs-remote-router-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', `/CN=*.${DOMAIN}`, '-addext', `subjectAltName=DNS:*.${DOMAIN}`, '-keyout', 'router.key', '-out', 'router.crt'], { cwd: dir, stdio: 'pipe' });
    const verifier = parseVerifier(scramVerifier(PASSWORD));
    const address: RemoteAddress = { kind: 'remote', host: pg.host, port: pg.port, servername: pg.servername, ca: pg.ca, user: 'app', password: pg.ownerPassword };
    const backends: RouterBackends = {
      lookup: (label) => routes.get(label),
      // Only the tenant's login role stands for the owner on the server.
      verifier: async (_id, role) => ({ verifier: role === 'postgres' ? verifier : undefined, live: true }),
      backend: async () => ({ address, woke: false }),
    };
    router = new Router(backends, { domain: DOMAIN, cert: readFileSync(path.join(dir, 'router.crt')), key: readFileSync(path.join(dir, 'router.key')), authSecret: randomBytes(32) });
    port = (await router.listen(0, '127.0.0.1')).port;
  });
  after(async () => {
    await router?.close();
    await pg?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('a client logs in with the tenant\'s password and works as the database\'s owner, over TLS end to end', async () => {
    const r = await q('acme-abc123', "CREATE TABLE notes(n int); INSERT INTO notes SELECT generate_series(1, 50); SELECT current_user || ' ' || current_database() || ' ' || (SELECT count(*) FROM notes) || ' ' || (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.split('\n').pop(), 'app acme 50 true');
  });

  it('a wrong password is refused by the router; the server is never asked', async () => {
    const r = await q('acme-abc123', 'SELECT 1', 'acme', 'not-the-password');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /password authentication failed for user "postgres"/);
  });

  it('the server\'s own refusal reaches the client as it is (no such database)', async () => {
    const r = await q('acme-abc123', 'SELECT 1', 'nope');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /database "nope" does not exist/);
  });

  it('a session the router logged in to is kept and given to the next client, reset; start-up parameters apply', async () => {
    const first = await q('acme-abc123', 'CREATE TEMP TABLE mine(x int); SELECT pg_backend_pid()');
    const second = await q('acme-abc123', "SELECT pg_backend_pid() || ' ' || (SELECT count(*) FROM pg_tables WHERE tablename = 'mine')");
    assert.equal(second.stdout.split(' ')[0], first.stdout.split('\n').pop(), 'the same backend');
    assert.equal(second.stdout.split(' ')[1], '0', 'the first client\'s temp table is gone');
    const sql = postgres({ host: '127.0.0.1', port, username: 'postgres', password: PASSWORD, database: 'acme', max: 1, ssl: { servername: `acme-abc123.${DOMAIN}`, rejectUnauthorized: false }, connection: { application_name: 'remote-app' } });
    try {
      const [row] = await sql<{ name: string }[]>`SELECT current_setting('application_name') AS name`;
      assert.equal(row?.name, 'remote-app');
      // A cancel request crosses the network to the server's own postmaster.
      await assertCancels(sql);
    } finally {
      await sql.end();
    }
  });

  it('transaction pooling: many clients on two server sessions', async () => {
    const clients = Array.from({ length: 8 }, () => postgres({ host: '127.0.0.1', port, username: 'postgres', password: PASSWORD, database: 'acme', max: 1, ssl: { servername: `pooled-abc123.${DOMAIN}`, rejectUnauthorized: false } }));
    try {
      const sums = await Promise.all(clients.map(async (sql, i) => {
        let total = 0;
        for (let k = 0; k < 5; k++) total += Number((await sql<{ v: number }[]>`SELECT ${i * 10 + k}::int AS v`)[0]?.v);
        return total;
      }));
      assert.deepEqual(sums, clients.map((_, i) => 5 * i * 10 + 10));
      const [backends] = await (clients[0] as postgres.Sql)<{ n: string }[]>`SELECT count(*) AS n FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend'`;
      assert.ok(Number(backends?.n) <= 2 + 2, `at most the pool's two sessions (and the kept ones) at the server: ${backends?.n}`);
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  });
});
