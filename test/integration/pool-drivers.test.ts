import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import postgres from 'postgres';
import { PgsHome, ROOT, runCommand } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string }

/**
 * Session settings under transaction pooling, with real drivers at their
 * default settings: pgjdbc (Debian's, run by the JDK's source launcher),
 * psycopg 3, node-postgres and postgres.js. The drivers' own start-up SETs
 * work, and clients sharing one server session each see their own settings.
 */
describe('transaction pooling: drivers and their session settings', () => {
  let pgs: PgsHome;
  let port: number;
  let shop: Created;
  const label = (): string => shop.hostname.split('.')[0] as string;

  const config = (extra: Partial<pg.ClientConfig> = {}): pg.ClientConfig => ({
    host: '127.0.0.1', port, user: 'postgres', database: shop.id, password: shop.password, ssl: { servername: shop.hostname, rejectUnauthorized: false }, ...extra,
  });
  const poolSize = (n: number): Promise<string> => pgs.ok(['config', shop.id, '--pool-size', String(n)]);
  const java = (test: 'executions' | 'settings') => runCommand('java', ['-cp', '/usr/share/java/postgresql.jar', path.join(ROOT, 'test', 'integration', 'PgjdbcPool.java'), String(port), label(), shop.id, shop.password, test], process.env);

  before(async () => {
    pgs = await PgsHome.make({ PGS_POOL_TIMEOUT: '20s' });
    port = await pgs.setup();
    shop = await pgs.json<Created>(['create', 'shop', '--autosuspend', 'off', '--max-connections', '30']);
    await pgs.ok(['config', 'shop', '--pool', 'transaction', '--pool-size', '2']);
    const c = new pg.Client(config());
    await c.connect();
    await c.query('CREATE SCHEMA alpha; CREATE TABLE alpha.t (v text); INSERT INTO alpha.t VALUES (\'alpha\'); CREATE TABLE public.t (v text); INSERT INTO public.t VALUES (\'public\')');
    await c.end();
  });
  after(async () => {
    await pgs.destroy();
  });

  it('pgjdbc at its defaults: 20 connections x 30 prepared executions on a pool of 2, all succeed', async () => {
    const run = await java('executions');
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout.trim(), 'ok 600', run.stderr);
  });

  it('pgjdbc: two connections on one server session each see their own settings', async () => {
    await poolSize(1);
    try {
      const run = await java('settings');
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout.trim(), 'ok', run.stderr);
    } finally {
      await poolSize(2);
    }
  });

  it('psycopg 3 at its defaults: its settings follow it, and prepared statements past prepare_threshold work', async () => {
    await poolSize(1);
    const script = [
      'import psycopg, sys',
      `dsn = "host=${shop.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=shop sslmode=require password=" + sys.argv[1]`,
      'a = psycopg.connect(dsn, autocommit=True)',
      'b = psycopg.connect(dsn, autocommit=True, options="-c statement_timeout=9s")',
      'show = lambda c, n: c.execute("SELECT current_setting(%s)", (n,)).fetchone()[0]',
      'pid = lambda c: c.execute("SELECT pg_backend_pid()").fetchone()[0]',
      'assert pid(a) == pid(b)',
      'a.execute("SET application_name = \'py-a\'")',
      'a.execute("SET search_path = alpha, public")',
      'a.execute("SET TIME ZONE \'Europe/Paris\'")',
      'a.execute("SET lock_timeout = \'4s\'")',
      'b.execute("SET SESSION application_name TO \'py-b\'")',
      'b.execute("SET TimeZone = \'UTC\'")',
      'for i in range(12):',
      '    assert a.execute("SELECT v FROM t").fetchone()[0] == "alpha"',
      '    assert b.execute("SELECT v FROM t").fetchone()[0] == "public"',
      '    got = [show(a, n) for n in ("application_name", "TimeZone", "lock_timeout", "statement_timeout")]',
      '    assert got == ["py-a", "Europe/Paris", "4s", "0"], got',
      '    got = [show(b, n) for n in ("application_name", "TimeZone", "lock_timeout", "statement_timeout")]',
      '    assert got == ["py-b", "UTC", "0", "9s"], got',
      '    assert a.info.parameter_status("application_name") == "py-a"',
      'try:',
      '    a.execute("SET lock_timeout = \'soon\'")',
      '    raise SystemExit("a bad value was taken")',
      'except psycopg.errors.InvalidParameterValue:',
      '    pass',
      'assert show(a, "lock_timeout") == "4s"',
      'a.execute("RESET lock_timeout")',
      'assert show(a, "lock_timeout") == "0"',
      'b.execute("SET statement_timeout = 1000")',
      'assert show(b, "statement_timeout") == "1s"',
      '# RESET goes back to the start-up value, as on a server of its own',
      'b.execute("RESET statement_timeout")',
      'assert show(b, "statement_timeout") == "9s"',
      'for i in range(8):',
      '    assert b.execute("SELECT %s::int + 1", (i,)).fetchone()[0] == i + 1',
      '    assert a.execute("SELECT %s::int + 2", (i,)).fetchone()[0] == i + 2',
      'assert b.prepare_threshold == 5',
      'print("ok")',
    ].join('\n');
    try {
      const python = await runCommand('/usr/bin/python3', ['-c', script, shop.password], process.env);
      assert.equal(python.code, 0, python.stderr);
      assert.equal(python.stdout.trim(), 'ok');
    } finally {
      await poolSize(2);
    }
  });

  it('node-postgres: settings per client on one server session; SET in a transaction block lasts until it ends; DISCARD ALL clears', async () => {
    await poolSize(1);
    const a = new pg.Client(config({ application_name: 'node-a' }));
    const b = new pg.Client(config());
    await a.connect();
    await b.connect();
    const show = async (c: pg.Client, name: string): Promise<string> => (await c.query('SELECT current_setting($1) AS v', [name])).rows[0].v as string;
    try {
      await a.query("SET search_path = alpha, public; SET work_mem = '5MB'");
      await b.query("SET application_name = 'node-b'");
      await b.query('SET extra_float_digits TO 0');
      for (let i = 0; i < 5; i++) {
        const [ra, rb] = await Promise.all([
          a.query("SELECT current_setting('application_name') AS app, current_setting('work_mem') AS wm, current_setting('extra_float_digits') AS efd, (SELECT v FROM t) AS v, pg_backend_pid() AS pid"),
          b.query("SELECT current_setting('application_name') AS app, current_setting('work_mem') AS wm, current_setting('extra_float_digits') AS efd, (SELECT v FROM t) AS v, pg_backend_pid() AS pid"),
        ]);
        assert.deepEqual([ra.rows[0].app, ra.rows[0].wm, ra.rows[0].efd, ra.rows[0].v], ['node-a', '5MB', '1', 'alpha']);
        assert.deepEqual([rb.rows[0].app, rb.rows[0].wm, rb.rows[0].efd, rb.rows[0].v], ['node-b', '4MB', '0', 'public']);
        assert.equal(ra.rows[0].pid, rb.rows[0].pid);
      }
      // A session-level SET inside a transaction block lasts until the block ends.
      await a.query('BEGIN');
      await a.query("SET work_mem = '6MB'");
      assert.equal(await show(a, 'work_mem'), '6MB');
      await a.query('COMMIT');
      assert.equal(await show(a, 'work_mem'), '5MB');
      assert.equal(await show(b, 'work_mem'), '4MB');
      // A SET mixed with other statements, SET ROLE: refused, as before.
      await assert.rejects(a.query("SET work_mem = '7MB'; SELECT 1"), (err: { code?: string; message: string }) => err.code === '0A000' && /query of its own/.test(err.message));
      await assert.rejects(a.query('SET ROLE postgres'), (err: { code?: string; message: string }) => err.code === '0A000' && /SET ROLE/.test(err.message));
      await a.query('DISCARD ALL');
      assert.deepEqual([await show(a, 'work_mem'), await show(a, 'search_path')], ['4MB', '"$user", public']);
      assert.equal(await show(b, 'extra_float_digits'), '0');
    } finally {
      await a.end();
      await b.end();
      await poolSize(2);
    }
  });

  it('postgres.js (named prepared statements): SET through the extended protocol follows the client', async () => {
    await poolSize(1);
    const opts = { host: '127.0.0.1', port, user: 'postgres', database: shop.id, password: shop.password, ssl: { servername: shop.hostname, rejectUnauthorized: false }, max: 1 };
    const a = postgres(opts);
    const b = postgres(opts);
    try {
      await a`SET statement_timeout = '11s'`;
      await a`SET search_path TO alpha, public`;
      await b`SET statement_timeout = '12s'`;
      for (let i = 0; i < 8; i++) {
        const [ra, rb] = await Promise.all([
          a`SELECT current_setting('statement_timeout') AS st, (SELECT v FROM t) AS v`,
          b`SELECT current_setting('statement_timeout') AS st, (SELECT v FROM t) AS v`,
        ]);
        assert.deepEqual([ra[0]?.st, ra[0]?.v], ['11s', 'alpha']);
        assert.deepEqual([rb[0]?.st, rb[0]?.v], ['12s', 'public']);
      }
      await assert.rejects(a`SET statement_timeout = 'never'`, (err: { code?: string }) => err.code === '22023');
      assert.equal((await a`SELECT current_setting('statement_timeout') AS st`)[0]?.st, '11s');
    } finally {
      await a.end();
      await b.end();
      await poolSize(2);
    }
  });
});
