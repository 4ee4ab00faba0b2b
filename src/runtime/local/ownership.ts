/**
 * Which uid owns a tenant's files (see tenant-users.ts and docs/design.md, "One
 * OS user per tenant"): as root, each tenant's own; otherwise everything is pgs's
 * own user's and nothing here changes an owner.
 */
import { promises as fs } from 'node:fs';
import { PgsError } from '../../core/errors.js';
import { tenantBackupsDir } from '../../backup/layout.js';
import type { ServerUser } from '../system-user.js';
import { UidAllocator, isTenantUid, type Identity } from '../tenant-users.js';
import { runCommand } from './commands.js';
import type { LocalLayout } from './layout.js';

export class Ownership {
  private readonly uids: UidAllocator;

  constructor(private readonly layout: LocalLayout, readonly user: ServerUser) {
    this.uids = new UidAllocator(layout.dataRoot);
  }

  /** pgs runs as root: every tenant's files get a uid of their own. */
  get perTenant(): boolean {
    return this.user.switchTo;
  }

  /** A uid no folder of the data root is owned by (as root). */
  newUid(): Promise<Identity> {
    return this.uids.next();
  }

  /** The user that builds the template (initdb cannot run as root); undefined when pgs is not root. */
  serverIdentity(): Identity | undefined {
    return this.user.switchTo ? { uid: this.user.uid, gid: this.user.gid } : undefined;
  }

  /** Who works in `dir`: its owner, as root (undefined otherwise: pgs's own user). Never root. */
  async identityOf(dir: string): Promise<Identity | undefined> {
    if (!this.user.switchTo) return undefined;
    const stat = await fs.lstat(dir);
    if (stat.uid === 0) throw new PgsError('SYSTEM_USER', `${dir} is owned by root: a server never runs as root`);
    return { uid: stat.uid, gid: stat.gid };
  }

  /** The uid of a tenant's backups folder, when it has one of its own. */
  async backupsOwner(id: string): Promise<Identity | undefined> {
    if (!this.user.switchTo) return undefined;
    const stat = await fs.lstat(tenantBackupsDir(this.layout.dataRoot, id)).catch(() => undefined);
    return stat?.isDirectory() && isTenantUid(stat.uid) ? { uid: stat.uid, gid: stat.gid } : undefined;
  }

  /**
   * The uid tenant `id`'s files are, or a new folder of it gets: its backups'
   * when it has some (they outlive a removed tenant), else its folder's (`folder`
   * when the caller has looked already), else a new one.
   */
  async ownerFor(id: string, folder?: { uid: number; gid: number }): Promise<Identity | undefined> {
    if (!this.user.switchTo) return undefined;
    const backups = await this.backupsOwner(id);
    if (backups) return backups;
    const own = folder ?? (await fs.lstat(this.layout.tenantDir(id)).catch(() => undefined));
    return own && isTenantUid(own.uid) ? { uid: own.uid, gid: own.gid } : this.uids.next();
  }

  /**
   * As root, before a start: the tenant's files are its own uid's. That is the
   * uid of its backups when it has some (they stay when a tenant is removed, and
   * one restored or created under that name again reads and extends them), else
   * its folder's. A folder still owned by the shared server user (made by an
   * older pgs) gets a uid of its own here, its backups too.
   */
  async settleOwner(id: string): Promise<Identity | undefined> {
    if (!this.user.switchTo) return undefined;
    const dir = this.layout.tenantDir(id);
    const folder = await fs.lstat(dir);
    const wanted = (await this.ownerFor(id, folder)) as Identity;
    if (folder.uid !== wanted.uid || folder.gid !== wanted.gid) await this.chownTree(dir, wanted);
    const backups = tenantBackupsDir(this.layout.dataRoot, id);
    const held = await fs.lstat(backups).catch(() => undefined);
    if (held?.isDirectory() && (held.uid !== wanted.uid || held.gid !== wanted.gid)) await this.chownTree(backups, wanted);
    return wanted;
  }

  /** The owner of the first WAL folder a recovery reads that is not `owner`'s (another tenant's archive: a restore --as, a branch --at). */
  async walLender(walDirs: string[], owner: Identity): Promise<Identity | undefined> {
    for (const dir of walDirs) {
      const stat = await fs.lstat(dir).catch(() => undefined);
      if (stat && stat.uid !== owner.uid) return { uid: stat.uid, gid: stat.gid };
    }
    return undefined;
  }

  /** `chown -R -h`: follows no symlink. */
  async chownTree(dir: string, owner: Identity): Promise<void> {
    await runCommand('chown', ['-R', '-h', '--', `${owner.uid}:${owner.gid}`, dir]);
  }

  /**
   * A copy of `from` as `to` (which must not exist), owned by `owner`: copied by
   * root into a folder only root can enter (from's owner runs nothing meanwhile:
   * the template's never does, a tenant's server is stopped), then handed over.
   * `cp` opens nothing through a symlink and `chown -R` follows none.
   */
  async copyTree(from: string, to: string, owner: Identity | undefined): Promise<void> {
    await fs.mkdir(to, { mode: 0o700 });
    await runCommand('cp', ['-a', '--reflink=auto', '--', `${from}/.`, `${to}/`]);
    if (owner) await this.chownTree(to, owner);
    await fs.chmod(to, 0o700);
  }

  /** Makes a file pgs wrote into a folder (a WAL segment fetched from S3) its folder owner's. */
  async adoptFile(file: string, folder: string): Promise<void> {
    if (!this.user.switchTo) return;
    const stat = await fs.lstat(folder);
    await fs.lchown(file, stat.uid, stat.gid);
  }
}
