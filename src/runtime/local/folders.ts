/**
 * Making, writing and deleting the folders of the data root with the right
 * owners and modes: the data root and the shared areas are pgs's own, a
 * tenant's folders its uid's (0700), files are written whole and never through
 * a symlink, and a tree is deleted by its owner, then its empty folder by root.
 */
import { spawnSync } from 'node:child_process';
import { constants as fsConstants, promises as fs } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { debuglog } from 'node:util';
import { PgsError } from '../../core/errors.js';
import { fsyncDir, pathExists } from '../../core/files.js';
import type { PgBinaries } from '../binaries.js';
import { socketDirOf } from '../server-config.js';
import type { Identity } from '../tenant-users.js';
import { runCommand, spawnAs } from './commands.js';
import type { LocalLayout } from './layout.js';
import type { Ownership } from './ownership.js';

const debug = debuglog('pgs');

export class LocalFolders {
  private trashing: Promise<void> | undefined;
  private trashAgain = false;

  constructor(private readonly layout: LocalLayout, private readonly owners: Ownership) {}

  private get asRoot(): boolean {
    return this.owners.perTenant;
  }

  /**
   * The data root is pgs's own (as root: root's, 0755), so that the server user
   * cannot swap its folders (pg/, trash/) for symlinks under root's feet.
   */
  async mkdirRoot(): Promise<void> {
    const root = this.layout.dataRoot;
    await fs.mkdir(root, { recursive: true, mode: 0o755 });
    if (!this.asRoot) {
      await fs.chmod(root, 0o700);
      return;
    }
    await fs.chown(root, process.getuid?.() ?? 0, process.getgid?.() ?? 0);
    await fs.chmod(root, 0o755);
  }

  /**
   * A folder that holds tenants' folders (tenants/, spares/, backups/, trash/):
   * pgs's own, so that no tenant can rename or replace another's folder; as
   * root 0711, so that each tenant's uid reaches its own folder by name
   * (its archive, from its server) and lists none.
   */
  async mkdirShared(dir: string, mode = 0o711): Promise<void> {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    if (!this.asRoot) return;
    const stat = await fs.lstat(dir);
    const me = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
    if (stat.uid !== me.uid || stat.gid !== me.gid) await fs.chown(dir, me.uid, me.gid);
    if ((stat.mode & 0o777) !== mode) await fs.chmod(dir, mode);
  }

  /** The folder itself is 0700 and `owner`'s; parents made on the way stay traversable (0755). */
  async mkdirOwned(dir: string, owner: Identity | undefined): Promise<void> {
    await fs.mkdir(path.dirname(dir), { recursive: true, mode: 0o755 });
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    if (this.asRoot && owner) await fs.chown(dir, owner.uid, owner.gid);
    await fs.chmod(dir, 0o700);
  }

  /**
   * A folder under the data root, made at every level below the root that is
   * missing. In a tenant's backups (`backups/<id>/…`, where its server writes
   * WAL and base backups) the new folders are the tenant's uid's, 0700.
   */
  async mkdirOwnedPath(dir: string): Promise<void> {
    const { id, parts } = this.layout.backupsPath(dir);
    await this.mkdirShared(this.layout.backupsDir);
    const top = path.join(this.layout.backupsDir, id);
    // The backups folder's own uid; a new one gets the tenant's (see Ownership.settleOwner).
    const existing = this.asRoot ? await fs.lstat(top).catch(() => undefined) : undefined;
    const owner = existing ? { uid: existing.uid, gid: existing.gid } : await this.owners.ownerFor(id);
    let at = this.layout.backupsDir;
    for (const part of parts) {
      at = path.join(at, part);
      if (await pathExists(at)) continue;
      await this.mkdirOwned(at, owner);
    }
  }

  /**
   * `content` as `dir/name`, 0600, owned by whoever owns `dir` (the tenant's uid):
   * a new file under a random name, opened without following a symlink, handed
   * over through its open handle, then renamed over the old one.
   */
  async writeOwnedFile(dir: string, name: string, content: string): Promise<void> {
    const file = path.join(dir, name);
    const tmp = `${file}.tmp-${randomBytes(8).toString('hex')}`;
    const owner = this.asRoot ? await fs.lstat(dir) : undefined;
    const handle = await fs.open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
    try {
      await handle.writeFile(content);
      await handle.sync();
      if (owner) await handle.chown(owner.uid, owner.gid);
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, file);
  }

  /** initdb makes the socket's folder; a folder that lacks it (made otherwise, or emptied by hand) gets it, the server's. */
  async ensureSocketDir(dir: string, owner: Identity | undefined): Promise<void> {
    const socketDir = socketDirOf(dir);
    const stat = await fs.lstat(socketDir).catch(() => undefined);
    if (stat?.isDirectory()) return;
    if (stat) throw new PgsError('PG_START_FAILED', `${socketDir} is not a folder: the server's socket goes there`);
    await fs.mkdir(socketDir, { mode: 0o700 });
    if (this.asRoot && owner) await fs.chown(socketDir, owner.uid, owner.gid);
  }

  /**
   * Deletes a folder tree. As root, what is inside is deleted by the folder's
   * owner (a tenant's uid): root never walks a tree another user can change
   * under it (a directory swapped for a symlink mid-walk), and that uid can
   * delete only its own files. Root then removes the emptied folder from its
   * parent, which is root's (tenants/, trash/). A tree the owner cannot empty
   * (a copy that died half-owned) is root's to delete.
   */
  async removeTree(target: string): Promise<void> {
    const stat = await fs.lstat(target).catch(() => undefined);
    if (!stat) return;
    if (this.asRoot && stat.isDirectory() && stat.uid !== 0) {
      const emptied = await runCommand('find', [target, '-mindepth', '1', '-delete'], { as: { uid: stat.uid, gid: stat.gid } }).then(() => true, () => false);
      if (emptied) {
        await fs.rmdir(target).catch(() => fs.rm(target, { recursive: true, force: true }));
        return;
      }
    }
    await fs.rm(target, { recursive: true, force: true });
  }

  /** Deletes a folder tree in the data root (refused outside it). */
  async removeOwned(dir: string): Promise<void> {
    if (this.layout.inside(dir) === undefined) throw new Error(`${dir} is not inside the data folder`);
    await this.removeTree(dir);
  }

  /**
   * Moves `dir` into trash/ at once and deletes it in the background: unlinking
   * 1,300 files takes ~140 ms on ext4 with discard, a rename none.
   */
  async toTrash(dir: string, label: string): Promise<void> {
    await this.mkdirShared(this.layout.trashDir);
    await fs.rename(dir, path.join(this.layout.trashDir, `${label}-${randomBytes(4).toString('hex')}`));
    await fsyncDir(path.dirname(dir));
    this.emptyTrash();
  }

  /**
   * Deletes everything in trash/ in the background, each folder by its owner
   * (removeTree), one at a time; what a daemon that died left is deleted by
   * the next one (prepare).
   */
  emptyTrash(): void {
    if (this.trashing) {
      this.trashAgain = true;
      return;
    }
    const trash = this.layout.trashDir;
    this.trashing = (async () => {
      do {
        this.trashAgain = false;
        for (const name of await fs.readdir(trash).catch(() => [] as string[])) await this.removeTree(path.join(trash, name));
      } while (this.trashAgain);
    })().catch((err: Error) => debug('emptying the trash failed: %s', err.message)).finally(() => {
      this.trashing = undefined;
    });
  }

  /** The server user and the binaries must be reachable: a data folder under /root is not. */
  assertReachable(bin: PgBinaries): void {
    if (!this.asRoot) return;
    const name = this.owners.user.name;
    const as = spawnAs(this.owners.serverIdentity());
    if (spawnSync('test', ['-x', this.layout.tenantsDir], as).status !== 0) {
      throw new PgsError('PATH_TOO_LONG', `the server user ${name} cannot reach ${this.layout.dataRoot} (a parent folder is closed to it): set PGS_DATA to a folder it can traverse and run "pgs setup" again`);
    }
    if (spawnSync('test', ['-x', bin.initdb, '-a', '-x', bin.postgres], as).status !== 0) {
      throw new PgsError('PG_BINARIES_MISSING', `the server user ${name} cannot run ${bin.postgres} (a parent folder is closed to it): let "pgs setup" copy the binaries into the data folder (PGS_PG_BIN unset), or set PGS_PG_BIN to a folder it can reach`);
    }
  }
}
