/**
 * Cold spares: finished, fsynced copies of the template waiting in spares/, so
 * that a create renames one into place instead of copying 30 MB. The pool is
 * topped up by a detached shell that outlives the process that started it.
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { errnoCode } from '../../core/errors.js';
import { fsyncDir } from '../../core/files.js';
import { TEMPLATE_MARKER } from '../server-config.js';
import type { Identity } from '../tenant-users.js';
import { serverEnv } from './commands.js';
import type { LocalFolders } from './folders.js';
import { PARTIAL_PREFIX, WARM_PREFIX, type LocalLayout } from './layout.js';
import type { Ownership } from './ownership.js';
import { templateMarker } from './template.js';

/** A spare copy still unfinished after this long belongs to a refill that died. */
export const SPARE_COPY_STALE_MS = 10 * 60_000;

/**
 * The shell line that makes one spare: `$1` the template, `$2` spares/, `$3` the
 * spare's name, `$4` its owner (uid:gid, or empty). Copied into a folder only
 * root can enter, handed over with `chown -R -h` (no symlink followed), synced, renamed.
 */
export function spareCopyScript(): string {
  return 'set -e; umask 077; mkdir -- "$2/.tmp-$3"; cp -a --reflink=auto -- "$1/." "$2/.tmp-$3/"; ' +
    'if [ -n "$4" ]; then chown -R -h -- "$4" "$2/.tmp-$3"; fi; sync -f -- "$2/.tmp-$3"; mv -- "$2/.tmp-$3" "$2/$3"; sync -- "$2"';
}

export class ColdSpares {
  constructor(
    private readonly layout: LocalLayout,
    private readonly folders: LocalFolders,
    private readonly owners: Ownership,
    private readonly count: number,
  ) {}

  /**
   * Moves a spare to `dest`. Taking one is a rename, so a create does not wait
   * for a copy; two creates cannot take the same spare (the loser's rename fails
   * with ENOENT). False when none is ready.
   */
  async take(dest: string): Promise<boolean> {
    const dir = this.layout.sparesDir;
    let names: string[];
    try {
      names = await fs.readdir(dir);
    } catch {
      return false;
    }
    const marker = templateMarker();
    for (const name of names) {
      if (name.startsWith('.')) continue;
      const spare = path.join(dir, name);
      const made = await fs.readFile(path.join(spare, TEMPLATE_MARKER), 'utf8').catch(() => '');
      if (made.trim() !== marker) continue;
      try {
        await fs.rename(spare, dest);
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') continue;
        throw err;
      }
      await fsyncDir(path.dirname(dest));
      await fsyncDir(dir);
      return true;
    }
    return false;
  }

  /** Tops the pool up to its count (copies of an older template go, as do copies a dead refill left). */
  async refill(): Promise<void> {
    if (this.count <= 0) return;
    const dir = this.layout.sparesDir;
    await this.folders.mkdirShared(dir);
    const marker = templateMarker();
    let have = 0;
    for (const name of await fs.readdir(dir)) {
      const spare = path.join(dir, name);
      if (name.startsWith(WARM_PREFIX)) continue; // running spares, or ones kept for the next daemon
      if (name.startsWith(PARTIAL_PREFIX)) {
        const stat = await fs.stat(spare).catch(() => undefined);
        if (stat && Date.now() - stat.mtimeMs < SPARE_COPY_STALE_MS) have++;
        else await this.folders.removeTree(spare);
        continue;
      }
      const made = await fs.readFile(path.join(spare, TEMPLATE_MARKER), 'utf8').catch(() => '');
      if (made.trim() === marker) have++;
      else await this.folders.removeTree(spare);
    }
    for (let i = have; i < this.count; i++) {
      // As root: the template is the server user's, the copy its future tenant's uid.
      const owner: Identity | undefined = this.owners.perTenant ? await this.owners.newUid() : undefined;
      const child = spawn('/bin/sh', ['-c', spareCopyScript(), 'pgs-spare', this.layout.templateDir, dir, randomBytes(6).toString('hex'), owner ? `${owner.uid}:${owner.gid}` : ''], {
        detached: true,
        stdio: 'ignore',
        env: serverEnv(),
      });
      child.on('error', () => undefined);
      child.unref();
    }
  }
}
