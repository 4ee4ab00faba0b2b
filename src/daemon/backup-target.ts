import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { PgsError } from '../core/errors.js';
import { writeAtomic } from '../core/files.js';
import { s3ClientFor } from '../backup/s3.js';
import type { Backups, RestorePlan } from '../service/backups.js';
import type { BackupPlaneDeps } from './backup-deps.js';
import { Shipper, type Pending } from './shipper.js';

/**
 * The bucket: the copier (daemon/shipper.ts) that follows the settings'
 * backup target, why a target set cannot be used, and what restores fetch
 * from it. Without a target every method is a no-op.
 */
export class BackupTarget {
  private readonly deps: Pick<BackupPlaneDeps, 'catalog' | 'runtime' | 'log'>;
  private readonly backups: Backups;
  /** Copies the backups tree to S3 when a backup target is set. */
  private current: Shipper | undefined;
  private key = '';
  private problem: string | undefined;

  constructor(deps: Pick<BackupPlaneDeps, 'catalog' | 'runtime' | 'log'>, backups: Backups) {
    this.deps = deps;
    this.backups = backups;
  }

  private get dataRoot(): string {
    return this.deps.catalog().settings.dataRoot;
  }

  /** The copier, when a target is set and can be used. */
  get shipper(): Shipper | undefined {
    return this.current;
  }

  /** Why the target the settings name cannot be used (a bad URL, no keys). */
  get error(): string | undefined {
    return this.problem;
  }

  /** Follows the settings' backup target (at start and at each reload). */
  async configure(): Promise<void> {
    const settings = this.deps.catalog().settings;
    const key = JSON.stringify([settings.backupTarget, settings.s3Endpoint, settings.s3Region]);
    if (key === this.key) return;
    this.key = key;
    await this.current?.stop();
    this.current = undefined;
    this.problem = undefined;
    try {
      const client = s3ClientFor(settings, process.env);
      if (!client) return;
      this.current = new Shipper({ client, dataRoot: this.dataRoot, runtime: this.deps.runtime, log: this.deps.log, hostId: await this.hostId() });
      this.current.start();
      this.deps.log.info('backups are copied to S3', { target: client.url });
    } catch (err) {
      this.problem = (err as Error).message;
      this.deps.log.warn('the backup target cannot be used', { target: settings.backupTarget, error: this.problem });
    }
  }

  /** This data root's id, made once: what the owner objects in the bucket name (see Shipper.claim). */
  private async hostId(): Promise<string> {
    const file = path.join(this.dataRoot, 'host-id');
    const known = (await fs.readFile(file, 'utf8').catch(() => '')).trim();
    if (/^[0-9a-f]{16}$/.test(known)) return known;
    const made = randomBytes(8).toString('hex');
    await writeAtomic(file, `${made}\n`, 0o644);
    return made;
  }

  /** Copies everything there is now to S3 (for tests and before a planned shutdown); a no-op without a target. */
  async flush(): Promise<void> {
    await this.current?.flush();
    if (this.current?.failing) throw new PgsError('BACKUP_FAILED', `copying to ${this.current.client.url} fails: ${this.current.failing.error}`);
  }

  /**
   * Before a planned stop, once the servers have stopped (so their last segment
   * is archived here): copies everything not in the bucket yet, retrying until
   * `deadlineMs`. Returns what is still only on this host (empty: nothing).
   */
  async shipBeforeStop(deadlineMs: number, progress?: (left: Pending, error?: string) => void): Promise<{ left: string[]; error?: string; writtenElsewhere?: Record<string, string> }> {
    if (this.problem !== undefined) return { left: ['(every file: the backup target cannot be used)'], error: this.problem };
    if (!this.current) return { left: [] };
    const left = await this.current.drain(deadlineMs, progress);
    // Tenants whose archive another host now writes: their files here are never copied (a start will not either).
    const elsewhere: Record<string, string> = {};
    for (const file of left) {
      const id = file.slice(0, file.indexOf('/'));
      const other = this.current.claimedElsewhere(id);
      if (other) elsewhere[id] = other.host;
    }
    return { left, ...(this.current.failing ? { error: this.current.failing.error } : {}), ...(Object.keys(elsewhere).length > 0 ? { writtenElsewhere: elsewhere } : {}) };
  }

  async stop(): Promise<void> {
    await this.current?.stop();
  }

  /** Brings what the bucket has of the tenant here (a lost data root, a tenant from another host); quiet when S3 is down but something is here. */
  async hydrate(id: string): Promise<void> {
    if (!this.current) return;
    try {
      const fetched = await this.current.hydrate(id);
      if (fetched > 0) this.deps.log.info('fetched backup records from S3', { tenant: id, files: fetched });
    } catch (err) {
      if ((await this.backups.generationNames(id)).length === 0) throw err;
      this.deps.log.warn('could not look at S3; restoring from what is here', { tenant: id, error: (err as Error).message });
    }
  }

  /** The backup's large files, fetched from S3 when only its record is here. */
  async ensureLocal(plan: RestorePlan): Promise<void> {
    if (this.current) await this.current.fetchBackup(plan.backup, plan.backupDir);
  }

  /**
   * A tenant back under its own id: this host is the one that writes its
   * archive in the bucket from now on. Returns what the user should know
   * (another host wrote it before), if anything.
   */
  async takeOver(id: string): Promise<string | undefined> {
    if (!this.current) return undefined;
    const previous = await this.current.claim(id).catch((err: Error) => {
      this.deps.log.warn('could not claim the tenant\'s archive in the bucket; the next copy tries again', { tenant: id, error: err.message });
      return undefined;
    });
    if (previous === undefined) return undefined;
    this.deps.log.warn('took over the tenant\'s archive in the bucket from another host', { tenant: id, host: previous });
    return `this host now writes ${id}'s archive in ${this.current.client.url}: host ${previous}, which wrote it before, stops copying it`;
  }
}
