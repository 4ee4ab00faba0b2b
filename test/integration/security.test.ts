import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgsHome, psql } from '../helpers/pgs.js';

interface Created { password: string }
interface Listed { id: string; pid: number }

describe('a tenant is not a superuser and cannot reach the host', () => {
  let pgs: PgsHome;
  let url: string;
  let password: string;
  const asTenant = (sql: string) => psql(url, sql, password);

  before(async () => {
    pgs = await PgsHome.make();
    await pgs.setup();
    password = (await pgs.json<Created>(['create', 'sec'])).password;
    url = (await pgs.ok(['url', 'sec', '--local'])).trim();
  });
  after(async () => {
    await pgs.destroy();
  });

  it('logs in as postgres: owner of its database, CREATEDB and CREATEROLE, not superuser', async () => {
    const result = await asTenant(
      "SELECT r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolreplication, r.rolbypassrls, pg_get_userbyid(d.datdba) FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()",
    );
    assert.equal(result.stdout, 'f|t|t|f|f|postgres');
  });

  const refusals: [string, string, RegExp][] = [
    ['COPY ... FROM PROGRAM', "CREATE TEMP TABLE x(t text); COPY x FROM PROGRAM 'id'", /permission denied|must be superuser|pg_execute_server_program/],
    ['COPY ... TO a server file', "COPY (SELECT 1) TO '/tmp/pgs-owned'", /permission denied|pg_write_server_files/],
    ['pg_read_file', "SELECT pg_read_file('/etc/passwd')", /permission denied/],
    ['pg_ls_dir', "SELECT pg_ls_dir('/')", /permission denied/],
    ['server-side lo_import', "SELECT lo_import('/etc/passwd')", /permission denied|must be superuser/],
    ['an untrusted language', 'CREATE EXTENSION plperlu', /must be superuser|permission denied/],
    ['granting itself server programs', 'GRANT pg_execute_server_program TO postgres', /permission denied/],
    ['making itself superuser', 'ALTER ROLE postgres SUPERUSER', /permission denied|must be superuser/],
    ['making a superuser', 'CREATE ROLE boss SUPERUSER LOGIN', /permission denied|must be superuser/],
    ['ALTER SYSTEM', "ALTER SYSTEM SET log_statement = 'all'", /permission denied|must be superuser/],
    ['another database', 'SELECT 1', /database "template1" is not currently accepting connections/],
    ["pgs's own database", 'SELECT 1', /permission denied for database "pgs_admin"/],
  ];
  for (const [what, sql, message] of refusals) {
    it(`is refused: ${what}`, async () => {
      const target = what === 'another database' ? url.replace('/sec?', '/template1?') : what === "pgs's own database" ? url.replace('/sec?', '/pgs_admin?') : url;
      const result = await psql(target, sql, password);
      assert.notEqual(result.code, 0, `${what} must fail, got: ${result.stdout}`);
      assert.match(result.stderr, message);
    });
  }

  it('its server runs as an unprivileged user', async () => {
    const [tenant] = await pgs.json<Listed[]>(['list']);
    assert.ok(tenant);
    const status = await fs.readFile(`/proc/${tenant.pid}/status`, 'utf8');
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
    assert.notEqual(uid, 0, 'the server must not run as root');
    if (process.getuid?.() !== 0) assert.equal(uid, process.getuid?.());
  });

  it('keeps files private: home and tenant data 0700, catalog, key, tokens and log 0600', async () => {
    const mode = async (file: string) => (await fs.stat(file)).mode & 0o777;
    const dataRoot = await pgs.dataRoot();
    assert.equal(await mode(pgs.home), 0o700);
    assert.equal(await mode(path.join(pgs.home, 'catalog.json')), 0o600);
    assert.equal(await mode(path.join(pgs.home, 'certs', 'server.key')), 0o600);
    assert.equal(await mode(path.join(pgs.home, 'daemon.sock')), 0o600);
    await pgs.ok(['token', 'create', 'probe']);
    assert.equal(await mode(path.join(pgs.home, 'tokens.json')), 0o600);
    if (process.getuid?.() === 0) {
      // The data root is root's (0755), and so are the folders that hold tenants' folders (0711: each
      // tenant's uid reaches its own by name, lists none, and can swap none); a tenant's folder is its uid's.
      const root = await fs.stat(dataRoot);
      assert.equal(root.mode & 0o777, 0o755);
      assert.equal(root.uid, 0);
      for (const area of ['tenants', 'backups', 'spares', 'trash']) {
        assert.equal(await mode(path.join(dataRoot, area)), 0o711, area);
        assert.equal((await fs.stat(path.join(dataRoot, area))).uid, 0, area);
      }
      assert.notEqual((await fs.stat(path.join(dataRoot, 'tenants', 'sec'))).uid, 0);
    } else {
      assert.equal(await mode(dataRoot), 0o700);
    }
    assert.equal(await mode(path.join(dataRoot, 'tenants', 'sec')), 0o700);
    assert.equal(await mode(path.join(dataRoot, 'logs', 'sec.log')), 0o600);
  });

  it('listens on no TCP port', async () => {
    const [tenant] = await pgs.json<Listed[]>(['list']);
    const opts = await fs.readFile(path.join(await pgs.dataRoot(), 'tenants', 'sec', 'postmaster.pid'), 'utf8');
    assert.equal(opts.split('\n')[5], '', `listen address line must be empty (pid ${tenant?.pid})`);
  });
});
