import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { PgsHome, psql, runCommand, socketDir, waitFor } from '../helpers/pgs.js';
import { libpq18Env } from '../helpers/router.js';

interface Created { id: string; hostname: string; password: string }
interface Status { tenants: { id: string; state: string; wakes?: number }[] }

/**
 * The router checks passwords itself (SCRAM against the role's verifier)
 * before it wakes anything: real servers, real psql, the real daemon.
 */
describe('authentication before wake', () => {
  let pgs: PgsHome;
  let port: number;
  const tenants: Created[] = [];
  const conn = (t: Created, user = 'postgres', extra = '') => `host=${t.hostname} hostaddr=127.0.0.1 port=${port} user=${user} dbname=${t.id} sslmode=require ${extra}`;
  const stateOf = async (id: string) => (await pgs.json<Status>(['status'])).tenants.find((t) => t.id === id);
  const suspended = (id: string) => waitFor(`${id} to be suspended`, async () => (await stateOf(id))?.state === 'suspended');
  const local = async (t: Created, sql: string) => {
    // As pgs's admin role over the server's own socket (root reaches it, as pgs does).
    const host = socketDir(await pgs.dataRoot(), t.id);
    return runCommand('psql', ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', host, '-U', 'pgs_admin', '-d', t.id, '-c', sql], process.env);
  };
  const metric = async (line: RegExp) => Number(line.exec((await pgs.api('GET', '/metrics')).text)?.[1] ?? NaN);

  before(async () => {
    pgs = await PgsHome.make({ PGS_RUNNING_SPARES: '0' });
    port = await pgs.setup();
    for (const id of ['aa', 'bb', 'cc', 'dd', 'ee']) tenants.push(await pgs.json<Created>(['create', id, '--autosuspend', '1s']));
  });
  after(async () => {
    await pgs.destroy();
  });

  it('a wrong password on a suspended tenant: 28P01 as PostgreSQL says it, and the tenant stays suspended', async () => {
    const [aa] = tenants as [Created];
    await suspended('aa');
    const wakes = (await stateOf('aa'))?.wakes ?? 0;
    const wrong = await psql(conn(aa), 'SELECT 1', 'not-the-password', { PGAPPNAME: 'x' });
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /FATAL: {2}password authentication failed for user "postgres"/);
    // A role that does not exist gets the very same answer: no role enumeration.
    const nobody = await psql(conn(aa, 'nobody'), 'SELECT 1', 'whatever');
    assert.match(nobody.stderr, /FATAL: {2}password authentication failed for user "nobody"/);
    const state = await stateOf('aa');
    assert.equal(state?.state, 'suspended');
    assert.equal(state?.wakes, wakes, 'no failed login woke it');
    // The right one wakes it.
    assert.equal((await psql(conn(aa), 'SELECT 42', aa.password)).stdout, '42');
    assert.equal((await stateOf('aa'))?.wakes, wakes + 1);
  });

  it('a storm of wrong passwords over every suspended tenant starts no server, and is counted', async () => {
    for (const t of tenants) await suspended(t.id);
    const failedBefore = await metric(/^pgs_router_authentications_total\{result="failed"\} (\d+)/m);
    const attempts = tenants.flatMap((t) => [0, 1, 2, 3].map(async (i) => psql(conn(t, i % 2 === 0 ? 'postgres' : `role${i}`), 'SELECT 1', `guess-${i}`)));
    const results = await Promise.all(attempts);
    for (const r of results) assert.match(r.stderr, /password authentication failed/);
    const status = await pgs.json<Status>(['status']);
    assert.deepEqual(status.tenants.filter((t) => t.state !== 'suspended').map((t) => t.id), [], 'every tenant still suspended');
    assert.equal(await metric(/^pgs_router_authentications_total\{result="failed"\} (\d+)/m), failedBefore + attempts.length);
  });

  it('repeated failures from one address are slowed down', async () => {
    const [, bb] = tenants as [Created, Created];
    // The failures above count too: this one waits at least 100 ms per recent failure from 127.0.0.1.
    const began = Date.now();
    await psql(conn(bb), 'SELECT 1', 'wrong');
    assert.ok(Date.now() - began >= 500, `a failure after many waited ${Date.now() - began} ms`);
  });

  it('a role created inside the database logs in at once, and later from the copy without waking', async () => {
    const [, , cc] = tenants as [Created, Created, Created];
    assert.equal((await psql(conn(cc), "CREATE ROLE app LOGIN PASSWORD 'app-secret-1'; GRANT CONNECT ON DATABASE cc TO app", cc.password)).code, 0);
    assert.equal((await psql(conn(cc, 'app'), 'SELECT current_user', 'app-secret-1')).stdout, 'app');
    await suspended('cc');
    const wakes = (await stateOf('cc'))?.wakes ?? 0;
    assert.match((await psql(conn(cc, 'app'), 'SELECT 1', 'app-secret-2')).stderr, /password authentication failed for user "app"/);
    assert.equal((await stateOf('cc'))?.wakes, wakes, 'checked against the copy: not woken');
    assert.equal((await psql(conn(cc, 'app'), 'SELECT current_user', 'app-secret-1')).stdout, 'app');
    assert.equal((await stateOf('cc'))?.wakes, wakes + 1);
    // A role that may not log in, and one whose password expired, are refused like a wrong password.
    assert.equal((await psql(conn(cc), "CREATE ROLE nologin PASSWORD 'x-secret-1'; CREATE ROLE old LOGIN PASSWORD 'x-secret-2' VALID UNTIL '2001-01-01'", cc.password)).code, 0);
    assert.match((await psql(conn(cc, 'nologin'), 'SELECT 1', 'x-secret-1')).stderr, /password authentication failed for user "nologin"/);
    assert.match((await psql(conn(cc, 'old'), 'SELECT 1', 'x-secret-2')).stderr, /password authentication failed for user "old"/);
  });

  it('ALTER ROLE … PASSWORD counts at the next login: the new one works, the old one fails', async () => {
    const [, , , dd] = tenants as [Created, Created, Created, Created];
    assert.equal((await psql(conn(dd), "ALTER ROLE postgres PASSWORD 'changed-inside-1'", dd.password)).code, 0);
    assert.match((await psql(conn(dd), 'SELECT 1', dd.password)).stderr, /password authentication failed/);
    assert.equal((await psql(conn(dd), 'SELECT 1', 'changed-inside-1')).stdout, '1');
    // And after a suspend, from the copy taken before the server stopped.
    await suspended('dd');
    assert.match((await psql(conn(dd), 'SELECT 1', dd.password)).stderr, /password authentication failed/);
    assert.equal((await psql(conn(dd), 'SELECT 1', 'changed-inside-1')).stdout, '1');
  });

  it('channel_binding=require works (SCRAM-SHA-256-PLUS, tls-server-end-point), with Debian\'s libpq and libpq 18', async () => {
    const [, , , , ee] = tenants as [Created, Created, Created, Created, Created];
    for (const env of [{}, libpq18Env()]) {
      const r = await psql(conn(ee, 'postgres', 'channel_binding=require'), 'SELECT 1', ee.password, env);
      assert.equal(r.stdout, '1', r.stderr);
      const wrong = await psql(conn(ee, 'postgres', 'channel_binding=require'), 'SELECT 1', 'wrong-password', env);
      assert.match(wrong.stderr, /password authentication failed/);
    }
    // The driver many applications use, with its own SCRAM code.
    const config = { host: '127.0.0.1', port, user: 'postgres', database: 'ee', password: ee.password, enableChannelBinding: true, ssl: { servername: ee.hostname, rejectUnauthorized: false } };
    const client = new pg.Client(config as typeof config & pg.ClientConfig);
    await client.connect();
    try {
      assert.equal((await client.query('SELECT 5 AS n')).rows[0]?.n, 5);
    } finally {
      await client.end();
    }
  });

  it('a tenant cannot use the router\'s password-free path from SQL (dblink, postgres_fdw)', async () => {
    const [aa] = tenants as [Created];
    await pgs.ok(['config', 'aa', '--autosuspend', 'off']);
    assert.equal((await psql(conn(aa), 'SELECT 1', aa.password)).stdout, '1');
    // The tenant cannot install them: neither is a trusted extension.
    for (const ext of ['dblink', 'postgres_fdw']) {
      assert.match((await psql(conn(aa), `CREATE EXTENSION ${ext}`, aa.password)).stderr, /permission denied to create extension/);
    }
    // Installed by the host's admin, they still refuse a connection that used no password.
    assert.equal((await local(aa, 'CREATE EXTENSION dblink; CREATE EXTENSION postgres_fdw; GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO postgres')).code, 0);
    const socket = socketDir(await pgs.dataRoot(), 'aa');
    // As root the server's own uid has no name, so peer authentication refuses it before dblink's own check.
    const refused = /password or GSSAPI delegated credentials required|Peer authentication failed/;
    for (const user of ['pgs_admin', 'postgres']) {
      const r = await psql(conn(aa), `SELECT dblink_connect('host=${socket} user=${user} dbname=aa')`, aa.password);
      assert.match(r.stderr, refused, `dblink as ${user}`);
      const withPassword = await psql(conn(aa), `SELECT dblink_connect('host=${socket} user=${user} dbname=aa password=${aa.password}')`, aa.password);
      assert.match(withPassword.stderr, refused, `dblink as ${user}, password given but unused`);
    }
    const fdw = await psql(conn(aa), `CREATE SERVER self FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '${socket}', dbname 'aa');
      CREATE USER MAPPING FOR postgres SERVER self OPTIONS (user 'pgs_admin', password 'x');
      CREATE FOREIGN TABLE far (rolname name) SERVER self OPTIONS (schema_name 'pg_catalog', table_name 'pg_authid');
      SELECT * FROM far`, aa.password);
    assert.match(fdw.stderr, /password or GSSAPI delegated credentials required|Non-superuser cannot connect if the server does not request a password|Peer authentication failed/);
  });

  it('the copies of login roles are the daemon\'s alone (0700 folder, 0600 files) and hold no password', async () => {
    const dir = path.join(await pgs.dataRoot(), 'logins');
    assert.equal((await fs.stat(dir)).mode & 0o777, 0o700);
    const files = await fs.readdir(dir);
    assert.ok(files.includes('dd.json'), files.join(' '));
    for (const name of files) assert.equal((await fs.stat(path.join(dir, name))).mode & 0o777, 0o600, name);
    const text = await fs.readFile(path.join(dir, 'dd.json'), 'utf8');
    assert.match(text, /SCRAM-SHA-256\$4096:/);
    assert.ok(!text.includes('changed-inside-1'));
  });

  it('the admin role is refused before anything else', async () => {
    const [aa] = tenants as [Created];
    const reserved = await psql(conn(aa, 'pgs_admin'), 'SELECT 1', 'x');
    assert.match(reserved.stderr, /role "pgs_admin" cannot log in through pgs/);
    // A name longer than PostgreSQL keeps (63 bytes) is never checked under one name and logged in under another.
    const long = 'r'.repeat(70);
    assert.match((await psql(conn(aa, long), 'SELECT 1', aa.password)).stderr, /password authentication failed for user "r{70}"/);
  });
});
