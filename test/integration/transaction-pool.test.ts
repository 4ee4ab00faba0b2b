import assert from 'node:assert/strict';
import type net from 'node:net';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import postgres from 'postgres';
import { PgsHome, psql, runCommand, waitFor } from '../helpers/pgs.js';
import { assertCancels } from '../helpers/router.js';

interface Created { id: string; hostname: string; password: string }
interface Listed { id: string; pid: number; state: string }

/**
 * Transaction pooling: many clients, few server sessions, real servers and
 * real drivers (pg, postgres.js, psycopg 3 over libpq, pgbench). Every client
 * must see its own session as if it had a server of its own, within the limits
 * the mode documents.
 */
describe('transaction pooling', () => {
  let pgs: PgsHome;
  let port: number;
  let shop: Created;
  let localUrl: string;

  const config = (who: Created = shop, extra: Partial<pg.ClientConfig> = {}): pg.ClientConfig => ({
    host: '127.0.0.1', port, user: 'postgres', database: who.id, password: who.password, ssl: { servername: who.hostname, rejectUnauthorized: false }, ...extra,
  });
  const sqlOf = (options: postgres.Options<Record<string, never>> = {}, who: Created = shop) => postgres({
    host: '127.0.0.1', port, user: 'postgres', database: who.id, password: who.password, ssl: { servername: who.hostname, rejectUnauthorized: false }, ...options,
  });
  /** Backends of the tenant role that are not the router's admin (the pool's server sessions). */
  const backends = async (): Promise<number> => Number((await psql(localUrl, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'postgres' AND backend_type = 'client backend' AND pid <> pg_backend_pid()", '')).stdout);

  before(async () => {
    pgs = await PgsHome.make({ PGS_POOL_TIMEOUT: '3s' });
    port = await pgs.setup();
    shop = await pgs.json<Created>(['create', 'shop', '--autosuspend', 'off', '--max-connections', '30']);
    const shown = await pgs.json<{ pool: string; poolSize: number; maxClientConnections: number | null }>(['config', 'shop', '--pool', 'transaction', '--pool-size', '5', '--json']);
    assert.deepEqual([shown.pool, shown.poolSize, shown.maxClientConnections], ['transaction', 5, null]);
    localUrl = (await pgs.ok(['url', 'shop', '--local'])).trim();
    const c = new pg.Client(config());
    await c.connect();
    await c.query('CREATE TABLE ledger (client int, n int)');
    await c.end();
  });
  after(async () => {
    await pgs.destroy();
  });

  it('200 clients on a pool of 5: no errors, each sees its own rows, at most 5 server sessions', async () => {
    const clients = Array.from({ length: 200 }, () => new pg.Client(config()));
    await Promise.all(clients.map((c) => c.connect()));
    let most = 0;
    const watching = (async () => {
      for (let i = 0; i < 20; i++) {
        most = Math.max(most, await backends());
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    try {
      await Promise.all(clients.map(async (c, id) => {
        for (let round = 0; round < 3; round++) {
          await c.query('BEGIN');
          await c.query('INSERT INTO ledger VALUES ($1, $2)', [id, round]);
          const { rows } = await c.query('SELECT count(*)::int AS n FROM ledger WHERE client = $1', [id]);
          assert.equal(rows[0].n, round + 1, `client ${id} sees its own rows`);
          await c.query('COMMIT');
        }
        // A named prepared statement (node-postgres sends Parse once per connection, then Bind by name).
        for (let i = 0; i < 3; i++) {
          const { rows } = await c.query({ name: 'mine', text: 'SELECT sum(n)::int AS s FROM ledger WHERE client = $1', values: [id] });
          assert.equal(rows[0].s, 3);
        }
      }));
    } finally {
      await watching;
      await Promise.all(clients.map((c) => c.end()));
    }
    assert.ok(most <= 5, `at most 5 server sessions (saw ${most})`);
    const total = await psql(localUrl, 'SELECT count(*) FROM ledger', '');
    assert.equal(total.stdout, '600');
  });

  it('postgres.js with its defaults (named prepared statements) on many clients at once', async () => {
    const sql = sqlOf({ max: 40 });
    try {
      const results = await Promise.all(Array.from({ length: 400 }, (_, i) => sql`SELECT ${i}::int + 1 AS v, current_setting('application_name') AS app`));
      results.forEach((rows, i) => assert.equal(rows[0]?.v, i + 1));
      // A transaction keeps one server session from BEGIN to COMMIT.
      const pids = await sql.begin(async (tx) => {
        const a = await tx`SELECT pg_backend_pid() AS pid`;
        await new Promise((r) => setTimeout(r, 50));
        const b = await tx`SELECT pg_backend_pid() AS pid`;
        return [a[0]?.pid, b[0]?.pid];
      });
      assert.equal(pids[0], pids[1]);
    } finally {
      await sql.end();
    }
  });

  it('psycopg 3 (Python, libpq) at its default settings: repeated queries become named prepared statements', async () => {
    // psycopg prepares a query by name on its 5th execution on a connection (prepare_threshold = 5);
    // 8 connections share the pool of 5, so each statement meets server sessions that lack it.
    const script = [
      'import psycopg, sys',
      `dsn = "host=${shop.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=shop sslmode=require password=" + sys.argv[1]`,
      'conns = [psycopg.connect(dsn, autocommit=True) for _ in range(8)]',
      'assert conns[0].prepare_threshold == 5',
      'for i in range(30):',
      '    for k, c in enumerate(conns):',
      '        row = c.execute("SELECT %s::int * 2 + %s::int", (i, k)).fetchone()',
      '        assert row[0] == i * 2 + k, row',
      '        with c.transaction():',
      '            row = c.execute("SELECT count(*) FROM ledger WHERE n >= %s", (0,), prepare=True).fetchone()',
      '            assert row[0] >= 0, row',
      'for c in conns: c.close()',
      'print("ok")',
    ].join('\n');
    const python = await runCommand('/usr/bin/python3', ['-c', script, shop.password], process.env);
    assert.equal(python.code, 0, python.stderr);
    assert.equal(python.stdout, 'ok');
  });

  it('messages too long to hold stream through: a 3 MB parameter to a named statement, a 3 MB query', async () => {
    const c = new pg.Client(config());
    await c.connect();
    try {
      const blob = Buffer.alloc(3_000_000, 7);
      const named = await c.query({ name: 'big', text: 'SELECT length($1::bytea) AS n, get_byte($1::bytea, length($1::bytea) - 1) AS last', values: [blob] });
      assert.deepEqual([named.rows[0].n, named.rows[0].last], [3_000_000, 7]);
      const again = await c.query({ name: 'big', text: 'SELECT length($1::bytea) AS n, get_byte($1::bytea, length($1::bytea) - 1) AS last', values: [Buffer.alloc(2_000_000, 9)] });
      assert.deepEqual([again.rows[0].n, again.rows[0].last], [2_000_000, 9]);
      const text = 'x'.repeat(3_000_000);
      assert.equal((await c.query(`SELECT length('${text}') AS n`)).rows[0].n, 3_000_000);
      await assert.rejects(c.query(`LISTEN news; SELECT '${text}'`), /LISTEN is not supported/);
      await assert.rejects(c.query({ name: 'huge', text: `SELECT '${text}' AS t` }), (err: { code?: string }) => err.code === '54000');
      assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
    } finally {
      await c.end();
    }
  });

  it('settings the server reports follow the client from one server session to the next; session state that cannot is refused', async () => {
    const a = new pg.Client(config(shop, { application_name: 'alpha' }));
    const b = new pg.Client(config(shop, { application_name: 'beta' }));
    await a.connect();
    await b.connect();
    try {
      await a.query("SET TimeZone = 'Asia/Tokyo'");
      for (let i = 0; i < 10; i++) {
        const [ra, rb] = await Promise.all([
          a.query("SELECT current_setting('application_name') AS app, current_setting('TimeZone') AS tz"),
          b.query("SELECT current_setting('application_name') AS app, current_setting('TimeZone') AS tz"),
        ]);
        assert.deepEqual([ra.rows[0].app, ra.rows[0].tz], ['alpha', 'Asia/Tokyo']);
        assert.equal(rb.rows[0].app, 'beta');
        assert.notEqual(rb.rows[0].tz, 'Asia/Tokyo');
      }
      for (const [statement, what] of [
        ['SET ROLE postgres', /SET ROLE/],
        ['LISTEN news', /LISTEN/],
        ['SELECT pg_advisory_lock(1)', /session advisory lock/],
        ['PREPARE p AS SELECT 1', /PREPARE/],
        ['CREATE TEMP TABLE t (x int)', /temporary table/],
      ] as const) {
        await assert.rejects(a.query(statement), (err: { code?: string; message: string; hint?: string }) => {
          assert.equal(err.code, '0A000', statement);
          assert.match(err.message, what);
          assert.match(err.message, /transaction pooling/);
          assert.match(err.hint ?? '', /--pool session/);
          return true;
        });
      }
      // Within a transaction they work, and the transaction's state is the server's own after a refusal.
      await a.query('BEGIN');
      await a.query("SET LOCAL work_mem = '64MB'");
      assert.equal((await a.query("SELECT current_setting('work_mem') AS w")).rows[0].w, '64MB');
      await a.query('SELECT pg_advisory_xact_lock(7)');
      await assert.rejects(a.query('LISTEN news'), /LISTEN/);
      await assert.rejects(a.query('SELECT 1'), /current transaction is aborted/);
      await a.query('ROLLBACK');
      assert.equal((await a.query('SELECT 1 AS one')).rows[0].one, 1);
    } finally {
      await a.end();
      await b.end();
    }
  });

  it('a client that leaves mid-transaction: its session is rolled back before the next client gets it', async () => {
    const left = new pg.Client(config());
    left.on('error', () => undefined);
    await left.connect();
    await left.query('BEGIN');
    await left.query('INSERT INTO ledger VALUES (-1, -1)');
    (left as unknown as { connection: { stream: net.Socket } }).connection.stream.destroy();
    await waitFor('the session to be given back', async () => Number((await psql(localUrl, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'postgres' AND state = 'idle in transaction'", '')).stdout) === 0, 10_000);
    const next = new pg.Client(config());
    await next.connect();
    try {
      assert.equal((await next.query('SELECT count(*)::int AS n FROM ledger WHERE client = -1')).rows[0].n, 0);
    } finally {
      await next.end();
    }
  });

  it('a cancel reaches the query of the client that sent it', async () => {
    const sql = sqlOf({ max: 1 });
    try {
      await sql`SELECT 1`;
      await assertCancels(sql);
      assert.equal((await sql`SELECT 3 AS three`)[0]?.three, 3);
    } finally {
      await sql.end();
    }
  });

  it('clients beyond the pool wait their turn; past the time-out they are told why (53300)', async () => {
    await pgs.ok(['config', 'shop', '--pool-size', '1']);
    const holder = new pg.Client(config());
    const waiter = new pg.Client(config());
    waiter.on('error', () => undefined); // the connection ends after the FATAL
    await holder.connect();
    await waiter.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1');
      // The pool's one session is held: the waiter's query waits, then fails after PGS_POOL_TIMEOUT (3 s).
      const waiting = waiter.query('SELECT 1');
      await assert.rejects(waiting, (err: { code?: string; message: string }) => err.code === '53300' && /no server session became free within 3 s/.test(err.message));
      await holder.query('COMMIT');
    } finally {
      await holder.end();
      await waiter.end().catch(() => undefined);
      await pgs.ok(['config', 'shop', '--pool-size', '5']);
    }
  });

  it('client connections are limited by --max-client-conn, not by the server\'s max_connections', async () => {
    await pgs.ok(['config', 'shop', '--max-client-conn', '40']);
    const clients = Array.from({ length: 40 }, () => new pg.Client(config()));
    try {
      await Promise.all(clients.map((c) => c.connect()));
      const extra = new pg.Client(config());
      await assert.rejects(extra.connect(), (err: { code?: string; message: string }) => err.code === '53300' && /limit 40/.test(err.message));
    } finally {
      await Promise.all(clients.map((c) => c.end()));
      await pgs.ok(['config', 'shop', '--max-client-conn', 'default']);
    }
  });

  it('kill -9 of the server: a client in a transaction gets an error; the pool refills after the restart', async () => {
    const c = new pg.Client(config());
    c.on('error', () => undefined);
    await c.connect();
    await c.query('BEGIN');
    await pgs.killServer('shop');
    await assert.rejects(c.query('SELECT 1'));
    const sql = sqlOf({ max: 4 });
    try {
      const rows = await Promise.all(Array.from({ length: 20 }, (_, i) => sql`SELECT ${i}::int AS i`));
      rows.forEach((r, i) => assert.equal(r[0]?.i, i));
    } finally {
      await sql.end();
    }
  });

  it('a tenant pooling by transaction is suspended when idle (its idle server sessions closed first) and woken by a query', async () => {
    const sleepy = await pgs.json<Created>(['create', 'sleepy', '--autosuspend', '2s']);
    await pgs.ok(['config', 'sleepy', '--pool', 'transaction']);
    const state = async () => (await pgs.json<Listed[]>(['list'])).find((t) => t.id === 'sleepy');
    const sql = sqlOf({ max: 2 }, sleepy);
    try {
      assert.equal((await sql`SELECT 1 AS one`)[0]?.one, 1);
    } finally {
      await sql.end();
    }
    await waitFor('sleepy to be suspended', async () => (await state())?.state === 'suspended', 30_000);
    const again = sqlOf({ max: 1 }, sleepy);
    try {
      assert.equal((await again`SELECT 2 AS two`)[0]?.two, 2);
    } finally {
      await again.end();
    }
  });
});
