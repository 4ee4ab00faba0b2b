import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import postgres from 'postgres';
import { PgsHome, psql, waitFor } from '../helpers/pgs.js';
import { assertCancels } from '../helpers/router.js';

interface Created { id: string; hostname: string; password: string }
interface Listed { id: string; pid: number; state: string; wakes: number }

/**
 * Server sessions the router keeps and hands to the next client: real
 * servers, real clients. A client must never see what an earlier client left
 * in the session it gets.
 */
describe('server sessions kept for reuse', () => {
  let pgs: PgsHome;
  let port: number;
  let shop: Created;

  const client = (extra: Partial<pg.ClientConfig> = {}, who: Created = shop) => new pg.Client({
    host: '127.0.0.1', port, user: 'postgres', database: who.id, password: who.password, ssl: { servername: who.hostname, rejectUnauthorized: false }, ...extra,
  });
  /** Runs `fn` on a new client and ends it; returns what fn returned and the backend's pid. */
  async function session<T>(fn: (c: pg.Client) => Promise<T>, extra: Partial<pg.ClientConfig> = {}, who: Created = shop): Promise<{ pid: number; value: T }> {
    const c = client(extra, who);
    await c.connect();
    try {
      const pid = Number((await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid);
      return { pid, value: await fn(c) };
    } finally {
      await c.end();
    }
  }
  /** The session with backend `pid` was reset and waits in the pool (its last query was DISCARD ALL, and it is idle). */
  async function pooled(pid: number, who: Created = shop): Promise<void> {
    const url = (await pgs.ok(['url', who.id, '--local'])).trim();
    await waitFor(`session ${pid} to be reset and kept`, async () => {
      const r = await psql(url, `SELECT state || ':' || query FROM pg_stat_activity WHERE pid = ${pid}`, '');
      return r.stdout === 'idle:DISCARD ALL';
    }, 10_000);
  }

  before(async () => {
    pgs = await PgsHome.make();
    port = await pgs.setup();
    shop = await pgs.json<Created>(['create', 'shop', '--autosuspend', 'off']);
    await session((c) => c.query('CREATE TABLE ledger (n int)'));
  });
  after(async () => {
    await pgs.destroy();
  });

  it('the next client gets the same backend, with nothing of the last client\'s state in it', async () => {
    const first = await session(async (c) => {
      await c.query('CREATE TEMP TABLE scratch (v text)');
      await c.query("SET statement_timeout = '7s'");
      await c.query('SET search_path = pg_temp, public');
      await c.query('PREPARE sneaky AS SELECT 42');
      await c.query({ name: 'protocol_level', text: 'SELECT $1::int + 1', values: [1] });
      await c.query('SELECT pg_advisory_lock(4242)');
      await c.query('LISTEN gossip');
      await c.query("SELECT set_config('app.user_id', '17', false)");
      await c.query('DECLARE held CURSOR WITH HOLD FOR SELECT 1');
    }, { application_name: 'first' });
    await pooled(first.pid);
    const second = await session(async (c) => {
      const q = async (sql: string) => Object.values((await c.query(sql)).rows[0] ?? {})[0];
      return {
        temp: await q("SELECT to_regclass('scratch')::text"),
        timeout: await q('SHOW statement_timeout'),
        searchPath: await q('SHOW search_path'),
        prepared: await q('SELECT count(*)::int FROM pg_prepared_statements'),
        locks: await q("SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory'"),
        listening: await q('SELECT count(*)::int FROM pg_listening_channels()'),
        setting: await q("SELECT current_setting('app.user_id', true)"),
        cursors: await q('SELECT count(*)::int FROM pg_cursors'),
        application: await q('SHOW application_name'),
      };
    }, { application_name: 'second' });
    assert.equal(second.pid, first.pid, 'the backend was reused');
    assert.deepEqual(second.value, {
      temp: null, timeout: '0', searchPath: '"$user", public', prepared: 0, locks: 0, listening: 0, setting: '', cursors: 0, application: 'second',
    });
  });

  it('a client\'s start-up parameters are set on the session it gets, and it is told them as PostgreSQL would', async () => {
    const c = client({ application_name: 'reporting', options: '-c search_path=audit,public --statement-timeout=3s' });
    const told: Record<string, string> = {};
    (c as unknown as { connection: { on(e: string, f: (m: { parameterName: string; parameterValue: string }) => void): void } })
      .connection.on('parameterStatus', (m) => { told[m.parameterName] = m.parameterValue; });
    await c.connect();
    try {
      // What a server's own start-up tells a client, with this client's values.
      assert.equal(told.application_name, 'reporting');
      assert.match(told.server_version ?? '', /^18\./);
      for (const name of ['client_encoding', 'DateStyle', 'TimeZone', 'integer_datetimes', 'standard_conforming_strings', 'is_superuser', 'session_authorization']) {
        assert.ok(told[name] !== undefined, `${name} in ${JSON.stringify(told)}`);
      }
      assert.equal(told.is_superuser, 'off');
      const row = (await c.query("SELECT current_setting('application_name') AS app, current_setting('search_path') AS path, current_setting('statement_timeout') AS timeout")).rows[0];
      assert.deepEqual(row, { app: 'reporting', path: 'audit,public', timeout: '3s' });
    } finally {
      await c.end();
    }
    // psql (libpq) with the same through the router
    const r = await psql(`host=${shop.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=shop sslmode=require application_name=viapsql options='-c DateStyle=German'`, 'SHOW DateStyle; SHOW application_name', shop.password);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'German, DMY\nviapsql');
  });

  it('a start-up parameter PostgreSQL refuses is refused as PostgreSQL refuses it', async () => {
    const r = await psql(`host=${shop.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=shop sslmode=require options='-c no_such_setting=1'`, 'SELECT 1', shop.password);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /FATAL: {2}unrecognized configuration parameter "no_such_setting"/);
    const bad = await psql(`host=${shop.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=nosuchdb sslmode=require`, 'SELECT 1', shop.password);
    assert.match(bad.stderr, /FATAL: {2}database "nosuchdb" does not exist/);
  });

  it('a client that leaves mid-transaction: its work is rolled back before the session is reused', async () => {
    const c = client();
    await c.connect();
    const pid = Number((await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid);
    await c.query('BEGIN');
    await c.query('INSERT INTO ledger VALUES (1)');
    await c.query('SELECT pg_advisory_xact_lock(7)');
    // Gone without a word: the socket closes under the open transaction.
    (c as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    c.on('error', () => undefined);
    await pooled(pid);
    const next = await session(async (s) => ({
      rows: Number((await s.query('SELECT count(*) AS n FROM ledger')).rows[0].n),
      inTransaction: (await s.query("SELECT now() = statement_timestamp() AS fresh")).rows[0].fresh as boolean,
    }));
    assert.equal(next.pid, pid);
    assert.deepEqual(next.value, { rows: 0, inTransaction: true });
  });

  it('a client that leaves in the middle of a query does not hand its session on', async () => {
    const c = client();
    await c.connect();
    c.on('error', () => undefined);
    const pid = Number((await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid);
    void c.query('SELECT pg_sleep(30)').catch(() => undefined);
    await new Promise((r) => setTimeout(r, 200));
    (c as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    const url = (await pgs.ok(['url', 'shop', '--local'])).trim();
    await waitFor(`backend ${pid} to go`, async () => (await psql(url, `SELECT count(*) FROM pg_stat_activity WHERE pid = ${pid}`, '')).stdout === '0', 10_000);
    const next = await session(async () => undefined);
    assert.notEqual(next.pid, pid);
  });

  it('a cancel reaches the query of the client that sent it, on a reused session', async () => {
    const warm = await session(async () => undefined);
    await pooled(warm.pid);
    const sql = postgres({ host: '127.0.0.1', port, user: 'postgres', database: 'shop', password: shop.password, ssl: { servername: shop.hostname, rejectUnauthorized: false }, max: 1 });
    try {
      assert.equal(Number((await sql`SELECT pg_backend_pid() AS pid`)[0]?.pid), warm.pid);
      await assertCancels(sql);
    } finally {
      await sql.end();
    }
  });

  it('kept sessions die with their server; clients get a fresh one after its restart', async () => {
    const before = await session(async () => undefined);
    await pooled(before.pid);
    await pgs.killServer('shop');
    const after = await session(async (c) => Number((await c.query('SELECT 1 AS one')).rows[0].one));
    assert.notEqual(after.pid, before.pid);
    assert.equal(after.value, 1);
  });

  it('a tenant whose only sessions are kept ones is still suspended when idle, and wakes for the next client', async () => {
    const sleepy = await pgs.json<Created>(['create', 'sleepy', '--autosuspend', '2s']);
    const first = await session(async () => undefined, {}, sleepy);
    const state = async () => (await pgs.json<Listed[]>(['list'])).find((t) => t.id === 'sleepy');
    await waitFor('sleepy to be suspended', async () => (await state())?.state === 'suspended', 30_000);
    const woken = await session(async (c) => Number((await c.query('SELECT 2 AS two')).rows[0].two), {}, sleepy);
    assert.equal(woken.value, 2);
    assert.notEqual(woken.pid, first.pid);
  });
});
