import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgsHome, psql, socketDir, waitFor } from '../helpers/pgs.js';

/**
 * An export is a file that travels: whoever had root on the host it came from
 * could make its tenant anything. Here one is made hostile the way such a
 * person would (a superuser role, the tenant role made superuser, ALTER
 * SYSTEM archive_command, a C function bound to libc's system(), file_fdw
 * with a program, pg_execute_server_program granted, an event trigger, a
 * SECURITY DEFINER function of the superuser, a login setting, a stray file),
 * and imported on another host: none of it survives to its first client.
 */
interface Created { id: string; hostname: string; password: string }
interface Imported { id: string; hostname: string; neutralized?: string[] }

const HACKER_PASSWORD = 'hack-hack-hack-hack';

describe('a hostile export', () => {
  let source: PgsHome;
  let target: PgsHome;
  let port: number;
  let sourcePort: number;
  let evil: Created;
  let marks: string;
  let file: string;

  /** Each statement on its own (ALTER SYSTEM takes no transaction block), as the superuser, over the server's socket. */
  const admin = async (pgs: PgsHome, id: string, database: string, sql: string | string[]) => {
    const dir = socketDir(await pgs.dataRoot(), id);
    let out = '';
    for (const statement of typeof sql === 'string' ? [sql] : sql) {
      const result = await psql(`host=${dir} user=pgs_admin dbname=${database}`, statement, '');
      if (result.code !== 0) throw new Error(`psql as pgs_admin on ${id}/${database}: ${result.stderr}`);
      out = result.stdout;
    }
    return out;
  };
  const routed = (t: { hostname: string; id: string }, user: string, at = port) => `host=${t.hostname} hostaddr=127.0.0.1 port=${at} user=${user} dbname=${t.id} sslmode=require`;

  before(async () => {
    marks = await fs.mkdtemp(path.join(tmpdir(), 'pgs-hostile-'));
    await fs.chmod(marks, 0o777); // the server's uid could write a mark here if anything ran
    source = await PgsHome.make();
    target = await PgsHome.make();
    sourcePort = await source.setup();
    port = await target.setup();
    evil = await source.json<Created>(['create', 'evil']);
    await admin(source, 'evil', 'pgs_admin', [
      `CREATE ROLE hacker SUPERUSER REPLICATION BYPASSRLS LOGIN PASSWORD '${HACKER_PASSWORD}'`,
      'ALTER ROLE postgres SUPERUSER',
      `ALTER SYSTEM SET archive_command = 'id >> ${marks}/archive; exit 1'`,
      "ALTER SYSTEM SET shared_preload_libraries = 'auto_explain'",
      'GRANT pg_execute_server_program TO postgres',
      'GRANT pgs_admin TO hacker',
      "ALTER ROLE postgres SET session_preload_libraries = 'auto_explain'",
      'ALTER ROLE pgs_admin SET search_path = public',
      "ALTER ROLE postgres SET work_mem = '8MB'", // a setting any user may make: kept
      'GRANT CONNECT ON DATABASE pgs_admin TO PUBLIC',
    ]);
    const dataDir = path.join(await source.dataRoot(), 'tenants', 'evil');
    await admin(source, 'evil', 'evil', [
      // PostgreSQL loads only libraries with its magic block: a superuser binds C functions to its own modules' code.
      "CREATE FUNCTION public.handler() RETURNS fdw_handler LANGUAGE c AS '$libdir/file_fdw', 'file_fdw_handler'",
      "CREATE FUNCTION public.sys(text) RETURNS text LANGUAGE internal AS 'pg_read_file_off_len'",
      'CREATE EXTENSION file_fdw',
      'CREATE SERVER files FOREIGN DATA WRAPPER file_fdw',
      `CREATE FOREIGN TABLE public.run (line text) SERVER files OPTIONS (program 'id > ${marks}/fdw')`,
      'GRANT SELECT ON public.run TO PUBLIC',
      "CREATE FUNCTION public.on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'ddl'; END $$",
      'CREATE EVENT TRIGGER on_ddl ON ddl_command_start EXECUTE FUNCTION public.on_ddl()',
      'CREATE FUNCTION public.whoami() RETURNS text LANGUAGE sql SECURITY DEFINER AS $$ SELECT current_user::text $$',
      'CREATE TABLE public.keep (id int PRIMARY KEY, note text)',
      "INSERT INTO public.keep SELECT g, 'row ' || g FROM generate_series(1, 300) g",
      `COPY (SELECT 'shared_preload_libraries = ''auto_explain''') TO '${dataDir}/extra.conf'`,
    ]);
    // The hostile state is real on the source: its tenant is a superuser there.
    assert.equal((await psql(routed(evil, 'postgres', sourcePort), 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user', evil.password)).stdout, 't');
    file = path.join(source.home, 'evil.pgs');
    await source.ok(['export', 'evil', '-o', file]);
  });
  after(async () => {
    await source.destroy();
    await target.destroy();
    await fs.rm(marks, { recursive: true, force: true });
  });

  it('imports, listing what it took away', async () => {
    const imported = await target.json<Imported>(['import', file, '--as', 'victim']);
    const taken = imported.neutralized ?? [];
    for (const expected of [
      /role hacker: SUPERUSER, REPLICATION, BYPASSRLS removed/,
      /role postgres: SUPERUSER removed/,
      /postgresql\.auto\.conf emptied \(ALTER SYSTEM settings archive_command, shared_preload_libraries\)/,
      /file extra\.conf deleted/,
      /role postgres: membership in pg_execute_server_program revoked/,
      /role hacker: membership in pgs_admin revoked/,
      /role postgres: setting session_preload_libraries removed/,
      /role pgs_admin: setting search_path removed/,
      /database pgs_admin: access of PUBLIC revoked/,
      /event trigger on_ddl dropped/,
      /extension file_fdw dropped/,
      /function public\.handler\(\) dropped \(language c, \$libdir\/file_fdw\)/,
      /function public\.sys\(text\) dropped \(language internal\)/,
      /function public\.whoami\(\): owner pgs_admin changed to postgres/,
      /objects of pgs_admin given to postgres \(.*table public\.keep/,
    ]) assert.ok(taken.some((line) => expected.test(line)), `${String(expected)} in ${JSON.stringify(taken, null, 1)}`);
    assert.ok(!taken.some((line) => /work_mem|pg_monitor/.test(line)), `what a tenant may have stays: ${JSON.stringify(taken)}`);
  });

  it('no login is a superuser, and through the router nothing reaches the host', async () => {
    const victim = { id: 'victim', hostname: (await target.json<Imported[]>(['list'])).find((t) => t.id === 'victim')?.hostname ?? '' };
    for (const [user, password] of [['hacker', HACKER_PASSWORD], ['postgres', evil.password]] as const) {
      const conn = routed(victim, user);
      assert.equal((await psql(conn, 'SELECT rolsuper::text || rolreplication::text || rolbypassrls::text FROM pg_roles WHERE rolname = current_user', password)).stdout, 'falsefalsefalse');
      const copy = await psql(conn, `COPY (SELECT 1) TO PROGRAM 'id > ${marks}/copy-${user}'`, password);
      assert.notEqual(copy.code, 0);
      assert.match(copy.stderr, /permission denied to COPY to or from an external program/);
      assert.match((await psql(conn, 'SET ROLE pgs_admin', password)).stderr, /permission denied to set role "pgs_admin"/);
      assert.match((await psql(conn, "SELECT public.sys('/etc/passwd')", password)).stderr, /function public\.sys\(unknown\) does not exist/);
      assert.match((await psql(conn, 'SELECT * FROM public.run', password)).stderr, /relation "public\.run" does not exist/);
      assert.notEqual((await psql(`host=${victim.hostname} hostaddr=127.0.0.1 port=${port} user=${user} dbname=pgs_admin sslmode=require`, 'SELECT 1', password)).code, 0);
    }
    const conn = routed(victim, 'postgres');
    const ask = async (sql: string) => {
      const result = await psql(conn, sql, evil.password);
      assert.equal(result.code, 0, result.stderr);
      return result.stdout;
    };
    assert.equal(await ask('SELECT public.whoami()'), 'postgres');
    assert.equal(await ask('SELECT count(*) FROM public.keep'), '300');
    assert.equal(await ask('SHOW work_mem'), '8MB');
    assert.equal(await admin(target, 'victim', 'pgs_admin', "SELECT count(*) FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE c LIKE 'session_preload%'"), '0');
    // DDL fires no trigger any more (an event trigger's NOTICE would be on stderr).
    const ddl = await psql(conn, 'CREATE TABLE public.after_import (id int)', evil.password);
    assert.equal(ddl.code, 0, ddl.stderr);
    assert.doesNotMatch(ddl.stderr, /NOTICE/);
  });

  it('its server runs pgs\'s configuration: no archive command runs, WAL goes to pgs\'s archive', async () => {
    assert.equal(await admin(target, 'victim', 'pgs_admin', 'SHOW archive_command'), '');
    // pgs's own library (query statistics, from its pgs.conf), not the export's auto_explain.
    assert.equal(await admin(target, 'victim', 'pgs_admin', 'SHOW shared_preload_libraries'), 'pg_stat_statements');
    // pg_stat_statements was made again from this host's files: in pgs's own schema in pgs_admin, where the tenant's database had it.
    assert.equal(await admin(target, 'victim', 'pgs_admin', "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'"), 'pgs_stats');
    assert.equal(await admin(target, 'victim', 'victim', "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'"), 'public');
    const queries = await target.api<{ items: unknown[] }>('GET', '/v1/tenants/victim/queries');
    assert.equal(queries.status, 200, queries.text);
    assert.equal(await admin(target, 'victim', 'pgs_admin', "SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%auto.conf' OR sourcefile LIKE '%extra.conf'"), '0');
    const before = Number(await admin(target, 'victim', 'pgs_admin', 'SELECT archived_count FROM pg_stat_archiver'));
    await admin(target, 'victim', 'pgs_admin', ['SELECT pg_current_xact_id()', 'SELECT pg_switch_wal()']);
    await waitFor('the segment to be archived by pgs', async () => Number(await admin(target, 'victim', 'pgs_admin', 'SELECT archived_count FROM pg_stat_archiver')) > before, 30_000);
    assert.equal(await admin(target, 'victim', 'pgs_admin', 'SELECT failed_count FROM pg_stat_archiver'), '0');
    await sleep(1_000);
    assert.deepEqual(await fs.readdir(marks), [], 'nothing ran on the host');
  });
});
