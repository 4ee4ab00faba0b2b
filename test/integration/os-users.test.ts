import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgsHome, psql } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string }
interface Listed { id: string; pid: number; state: string }

const isRoot = process.getuid?.() === 0;
const FIRST_UID = 1_900_000_000;

async function uidOf(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
}

/** Runs `command` as `uid` (group of the same number, no other groups); true when it succeeded. */
function runsAs(uid: number, command: string, args: string[]): { ok: boolean; stderr: string } {
  const result = spawnSync(command, args, { uid, gid: uid, encoding: 'utf8' });
  return { ok: result.status === 0, stderr: result.stderr };
}

/** As root, every tenant's server runs under a uid of its own that owns its files: one server taken over cannot read another's. */
describe('one OS user per tenant', { skip: isRoot ? false : 'switching users needs root' }, () => {
  let pgs: PgsHome;
  let port: number;
  let dataRoot: string;
  const t: Record<string, Created> = {};
  const pidOf = async (id: string) => (await pgs.json<Listed[]>(['list'])).find((x) => x.id === id)?.pid ?? 0;
  const query = async (id: string, password: string, sql: string) => {
    const hostname = (await pgs.json<{ id: string; hostname: string }[]>(['list'])).find((x) => x.id === id)?.hostname ?? '';
    const result = await psql(`host=${hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=${id} sslmode=require`, sql, password);
    assert.equal(result.code, 0, result.stderr);
    return result.stdout;
  };

  before(async () => {
    pgs = await PgsHome.make({ PGS_RUNNING_SPARES: '1' });
    port = await pgs.setup();
    dataRoot = await pgs.dataRoot();
    t.alpha = await pgs.json<Created>(['create', 'alpha', '--autosuspend', 'off']);
    t.beta = await pgs.json<Created>(['create', 'beta', '--autosuspend', 'off']);
    await query('alpha', t.alpha.password, 'CREATE TABLE secret (v text); INSERT INTO secret VALUES (\'alpha only\')');
  });
  after(async () => {
    await pgs.destroy();
  });

  it('each server runs as a uid of its own, which owns its folder (0700) and has no /etc/passwd entry', async () => {
    const [a, b] = [await uidOf(await pidOf('alpha')), await uidOf(await pidOf('beta'))];
    assert.notEqual(a, b);
    for (const [id, uid] of [['alpha', a], ['beta', b]] as const) {
      assert.ok(uid >= FIRST_UID, `${id} runs as ${uid}`);
      const folder = await fs.stat(path.join(dataRoot, 'tenants', id));
      assert.equal(folder.uid, uid);
      assert.equal(folder.gid, uid);
      assert.equal(folder.mode & 0o777, 0o700);
      // Its workers and sessions too.
      const children = (await fs.readFile(`/proc/${await pidOf(id)}/task/${await pidOf(id)}/children`, 'utf8')).trim().split(/\s+/).map(Number);
      assert.ok(children.length >= 3);
      for (const child of children) assert.equal(await uidOf(child), uid);
      const passwd = await fs.readFile('/etc/passwd', 'utf8');
      assert.ok(!passwd.split('\n').some((line) => line.split(':')[2] === String(uid)), `uid ${uid} is in /etc/passwd`);
    }
  });

  it('tenant beta\'s server user cannot read a file in alpha\'s folder or backups, nor list the tenants', async () => {
    const a = await uidOf(await pidOf('alpha'));
    const b = await uidOf(await pidOf('beta'));
    await pgs.ok(['backup', 'alpha']);
    const file = path.join(dataRoot, 'tenants', 'alpha', 'PG_VERSION');
    const backups = path.join(dataRoot, 'backups', 'alpha');
    // Alpha's own uid reads them: the refusals below are about who asks.
    assert.ok(runsAs(a, 'cat', [file]).ok);
    assert.ok(runsAs(a, 'ls', [backups]).ok);
    const read = runsAs(b, 'cat', [file]);
    assert.equal(read.ok, false);
    assert.match(read.stderr, /Permission denied/);
    assert.match(runsAs(b, 'ls', [backups]).stderr, /Permission denied/);
    assert.match(runsAs(b, 'ls', [path.join(dataRoot, 'tenants')]).stderr, /Permission denied/);
    assert.match(runsAs(b, 'ls', [path.join(dataRoot, 'tenants', 'alpha')]).stderr, /Permission denied/);
    // And alpha's backups are alpha's uid's.
    assert.equal((await fs.stat(backups)).uid, a);
  });

  it('a tenant made from another\'s backups replays them and then runs as a uid of its own', async () => {
    const a = await uidOf(await pidOf('alpha'));
    // Written after alpha's backup: only its WAL archive, which only alpha's uid can read, has it.
    await query('alpha', t.alpha?.password ?? '', 'INSERT INTO secret VALUES (\'archived\')');
    await pgs.ok(['restore', 'alpha', '--as', 'gamma']);
    await pgs.ok(['branch', 'alpha', 'delta', '--at', new Date().toISOString()]);
    for (const id of ['gamma', 'delta']) {
      const uid = await uidOf(await pidOf(id));
      assert.ok(uid >= FIRST_UID && uid !== a, `${id} runs as ${uid}`);
      assert.equal((await fs.stat(path.join(dataRoot, 'tenants', id))).uid, uid);
      assert.equal((await fs.stat(path.join(dataRoot, 'backups', id))).uid, uid);
      assert.equal(await query(id, t.alpha?.password ?? '', 'SELECT string_agg(v, \',\' ORDER BY v) FROM secret'), 'alpha only,archived');
      // Its archive works as its own uid: a backup of it takes and lists.
      await pgs.ok(['backup', id]);
    }
    // Alpha's backups are still alpha's alone.
    assert.equal((await fs.stat(path.join(dataRoot, 'backups', 'alpha'))).uid, a);
  });

  it('pgs status says so', async () => {
    assert.match(await pgs.ok(['status']), /server users\s+a uid of its own per tenant \(from 1900000000/);
    assert.equal((await pgs.json<{ serverUsers: { perTenant: boolean } }>(['status'])).serverUsers.perTenant, true);
  });

  it('a removed tenant\'s backups keep its uid; restoring it gives the uid back, and a new tenant never gets it', async () => {
    const uid = await uidOf(await pidOf('gamma'));
    await pgs.ok(['remove', 'gamma', '--yes']);
    const epsilon = await pgs.json<Created>(['create', 'epsilon']);
    assert.notEqual(await uidOf(await pidOf('epsilon')), uid);
    assert.ok(epsilon.password);
    await pgs.ok(['restore', 'gamma']);
    assert.equal(await uidOf(await pidOf('gamma')), uid);
    assert.equal(await query('gamma', t.alpha?.password ?? '', 'SELECT count(*) FROM secret'), '2');
  });

  it('a folder an earlier pgs made (the shared server user\'s) gets a uid of its own at its next start', async () => {
    await pgs.ok(['stop', 'beta']);
    const user = (JSON.parse(await pgs.catalogText()) as { settings: { serverUser: string } }).settings.serverUser;
    const shared = spawnSync('id', ['-u', user], { encoding: 'utf8' }).stdout.trim();
    assert.match(shared, /^\d+$/, `the server user ${user} exists`);
    for (const dir of [path.join(dataRoot, 'tenants', 'beta'), path.join(dataRoot, 'backups', 'beta')]) {
      assert.equal(spawnSync('chown', ['-R', `${shared}:${shared}`, dir]).status, 0);
    }
    await pgs.ok(['start', 'beta']);
    const uid = await uidOf(await pidOf('beta'));
    assert.ok(uid >= FIRST_UID, `beta runs as ${uid}`);
    for (const dir of [path.join(dataRoot, 'tenants', 'beta'), path.join(dataRoot, 'tenants', 'beta', 'base'), path.join(dataRoot, 'backups', 'beta')]) {
      assert.equal((await fs.stat(dir)).uid, uid, dir);
    }
    assert.equal(await query('beta', t.beta?.password ?? '', 'SELECT 1'), '1');
  });
});
