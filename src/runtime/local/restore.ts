/**
 * New data folders from old data: from a backup folder (materialize), from
 * another tenant's server (clone), and the swap of an in-place restore's
 * folder with the tenant's (replaceData, and settleRestore for one a dead
 * daemon left). A folder made here is unfinished (marked like a create's)
 * until the caller says otherwise, and nothing is left behind on failure.
 */
import { promises as fs } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { PgsError } from '../../core/errors.js';
import { fsyncDir, pathExists } from '../../core/files.js';
import { MANIFEST_FILE, checkTarMembers, parseManifest, verifyTree } from '../../backup/manifest.js';
import { cleanRestoredFolder } from '../restored-folder.js';
import type { MaterializedFolder } from '../runtime.js';
import { ARCHIVE_CONF, RECOVERY_CONF, TEMPLATE_MARKER, socketDirOf } from '../server-config.js';
import { runCommand } from './commands.js';
import type { LocalFolders } from './folders.js';
import { PARTIAL_PREFIX, PRERESTORE_PREFIX, RESTORE_PREFIX, TENANT_META_FILE, ownerKey, type LocalLayout } from './layout.js';
import type { Ownership } from './ownership.js';
import type { PhysicalBackups } from './physical-backup.js';

/** The files of a folder's own server that a copy must not keep: its pid file, its settings and recovery state, its socket's lock files. */
export function serverLeftovers(dir: string, names: { top: string[]; socketDir: string[] }): string[] {
  const locks = (at: string, listed: string[]) => listed.filter((n) => n.startsWith('.s.PGSQL.')).map((n) => path.join(at, n));
  const stale = ['postmaster.pid', 'postmaster.opts', 'recovery.signal', 'standby.signal', ARCHIVE_CONF, RECOVERY_CONF].map((n) => path.join(dir, n));
  // In the socket's folder, and in the top level where an older pgs had it.
  return [...stale, ...locks(dir, names.top), ...locks(socketDirOf(dir), names.socketDir)];
}

/** Deletes what belonged to the server a folder was copied from (see serverLeftovers). */
export async function removeServerLeftovers(dir: string): Promise<void> {
  const list = (at: string) => fs.readdir(at).catch(() => [] as string[]);
  for (const file of serverLeftovers(dir, { top: await list(dir), socketDir: await list(socketDirOf(dir)) })) await fs.rm(file, { force: true });
}

type Stop = (id: string) => Promise<void>;

export class LocalRestores {
  constructor(
    private readonly layout: LocalLayout,
    private readonly folders: LocalFolders,
    private readonly owners: Ownership,
    private readonly backups: PhysicalBackups,
  ) {}

  async materialize(key: string, backupDir: string, backupName: string, options: { finished: boolean }): Promise<MaterializedFolder> {
    const dest = this.layout.tenantDir(key);
    if (await pathExists(dest)) throw new PgsError('TENANT_EXISTS', `a data folder for ${key} exists already (${dest})`);
    const manifest = parseManifest(await fs.readFile(path.join(backupDir, MANIFEST_FILE), 'utf8'), `the manifest of backup ${backupName}`);
    const owner = await this.owners.ownerFor(ownerKey(key));
    await this.folders.mkdirOwned(dest, owner);
    try {
      if (!options.finished) await this.folders.writeOwnedFile(dest, TEMPLATE_MARKER, 'restore\n');
      await checkTarMembers(path.join(backupDir, 'base.tar'), backupName); // before tar makes anything of an untrusted file
      try {
        // Read here, unpacked by tar as the tenant's uid: the backup's files need not be readable by
        // that uid, and an imported (untrusted) tar never writes anything as root.
        await runCommand('tar', ['-xf', '-', '-C', dest, '--no-same-owner', '--no-same-permissions'], { stdinFile: path.join(backupDir, 'base.tar'), as: owner });
      } catch (err) {
        throw new PgsError('BACKUP_DAMAGED', `backup ${backupName} could not be unpacked: ${(err as Error).message.split('\n').slice(-1)[0] ?? ''}`);
      }
      await verifyTree(dest, manifest, backupName);
      await removeServerLeftovers(dest);
      const dropped = await cleanRestoredFolder(dest, this.layout.templateDir, this.folders);
      if (!options.finished) await this.folders.writeOwnedFile(dest, TEMPLATE_MARKER, 'restore\n'); // the tar may hold a marker of its own
      else await fs.rm(path.join(dest, TEMPLATE_MARKER), { force: true });
      await runCommand('sync', ['-f', '--', dest]);
      // An online backup's folder has a backup_label: its replay must reach the backup's end. An offline one is a clean shutdown's files.
      return { dropped, online: await pathExists(path.join(dest, 'backup_label')) };
    } catch (err) {
      await this.folders.removeTree(dest).catch(() => undefined);
      throw err;
    }
  }

  /** A new folder for `key` with the data of `id`: a copy of a stopped server's files, or a running one's streamed backup. */
  async clone(id: string, key: string, running: boolean): Promise<{ online: boolean }> {
    const dest = this.layout.tenantDir(key);
    if (await pathExists(dest)) throw new PgsError('TENANT_EXISTS', `a data folder for ${key} exists already (${dest})`);
    if (!running) {
      // A stopped server's files are consistent as they are: a copy starts like the original would.
      const partial = path.join(path.dirname(dest), `${PARTIAL_PREFIX}${key}-${randomBytes(4).toString('hex')}`);
      try {
        await this.owners.copyTree(this.layout.tenantDir(id), partial, await this.owners.ownerFor(key));
        await this.unmark(partial);
        await fs.rename(partial, dest);
        await fsyncDir(path.dirname(dest));
      } catch (err) {
        await this.folders.removeTree(partial).catch(() => undefined);
        throw err;
      }
      return { online: false };
    }
    await this.folders.mkdirOwned(dest, await this.owners.ownerFor(key));
    try {
      await this.folders.writeOwnedFile(dest, TEMPLATE_MARKER, 'clone\n');
      await this.backups.streamInto(id, dest);
      await this.unmark(dest);
    } catch (err) {
      await this.folders.removeTree(dest).catch(() => undefined);
      throw err;
    }
    return { online: true };
  }

  /** A copied folder loses its source's server files and catalog record, and is an unfinished create until finishCreate. */
  private async unmark(dir: string): Promise<void> {
    await removeServerLeftovers(dir);
    await fs.rm(path.join(dir, TENANT_META_FILE), { force: true });
    await this.folders.writeOwnedFile(dir, TEMPLATE_MARKER, 'clone\n');
    await runCommand('sync', ['-f', '--', dir]);
  }

  async replaceData(id: string, stagingKey: string, stop: Stop): Promise<{ undo(): Promise<void>; commit(): Promise<void> }> {
    const live = this.layout.tenantDir(id);
    const staged = this.layout.tenantDir(stagingKey);
    const old = this.layout.tenantDir(`${PRERESTORE_PREFIX}${id}`);
    if (stagingKey !== `${RESTORE_PREFIX}${id}`) throw new Error(`the staged data of ${id} must be ${RESTORE_PREFIX}${id}`);
    await this.folders.removeTree(old);
    await fs.rename(live, old);
    await fs.rename(staged, live);
    await fsyncDir(path.dirname(live));
    return {
      undo: async () => {
        await stop(id).catch(() => undefined);
        await this.folders.removeTree(live);
        await fs.rename(old, live);
        await fsyncDir(path.dirname(live));
      },
      commit: () => this.folders.toTrash(old, `${id}-prerestore`),
    };
  }

  async settleRestore(id: string, keep: 'restored' | 'previous', hadFolder: boolean, stop: Stop): Promise<string[]> {
    const live = this.layout.tenantDir(id);
    const old = this.layout.tenantDir(`${PRERESTORE_PREFIX}${id}`);
    const done: string[] = [];
    const trash = async (dir: string, what: string) => {
      await this.folders.toTrash(dir, `${id}-${what}`);
      done.push(`the ${what} folder of ${id} deleted`);
    };
    const restoredHere = hadFolder ? await pathExists(old) : true; // without .prerestore, the folder in place is the one from before
    if (keep === 'restored') {
      if (await pathExists(old)) await trash(old, 'pre-restore');
    } else {
      // The restored server may run (its daemon died under it): stopped before its folder goes.
      if (restoredHere && (await pathExists(live))) {
        await stop(id);
        await trash(live, 'half-restored');
      }
      if (hadFolder && (await pathExists(old))) {
        await fs.rename(old, live);
        done.push(`the folder of ${id} from before the restore put back`);
      }
    }
    await fsyncDir(path.dirname(live));
    return done;
  }
}
