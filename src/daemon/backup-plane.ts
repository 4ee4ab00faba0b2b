import type { Log } from '../core/log.js';
import { createHash } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { promises as fs, statSync } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { EventLog } from '../telemetry/events.js';
import type { DaemonMetrics } from '../telemetry/metrics.js';
import { assertTenantId } from '../catalog/ids.js';
import type { Catalog, Tenant } from '../catalog/schema.js';
import { DEFAULT_BACKUP_SCHEDULE } from '../catalog/schema.js';
import { PgsError, errnoCode } from '../core/errors.js';
import { writeAtomic } from '../core/files.js';
import { forEachLimit } from '../core/limit.js';
import { readExport, writeExport } from '../backup/export-file.js';
import { generationDir, newStamp, tenantBackupsDir, writeGenerationMeta, type BackupMeta } from '../backup/layout.js';
import { tenantServerSpec } from '../runtime/server-spec.js';
import { crashPoint, crashPointSet } from '../core/crash.js';
import { RestoreJournals } from './restore-journal.js';
import type { ArchiverStatus, TenantRuntime, TenantServerSpec } from '../runtime/runtime.js';
import { Backups, recover, type BackupList, type RecoverOptions, type RestorePlan } from '../service/backups.js';
import { s3ClientFor } from '../backup/s3.js';
import { Shipper, type Pending } from './shipper.js';
import { receiveUpload, type ImportLimit } from './uploads.js';
import { findTenant, type Pgs } from '../service/pgs.js';
import type { Supervisor } from '../supervisor/supervisor.js';

/**
 * The daemon's backups: scheduled and requested base backups, restores in
 * place and as new tenants, branches, exports and imports. Backups do not
 * take the daemon's queue (a thousand tenants' nightly backups must not hold
 * up a create); a backup holds only its own tenant (no suspend, no wake
 * meanwhile). A restore in place is a change of the tenant and runs on the
 * queue; a restore into a new tenant reserves the new id and takes the queue
 * only to add it to the catalog.
 */
export interface BackupPlaneDeps {
  pgs: Pgs;
  runtime: TenantRuntime;
  supervisor: Supervisor;
  events: EventLog;
  metrics: DaemonMetrics;
  log: Log;
  version: string;
  catalog(): Catalog;
  refresh(): Promise<void>;
  serial<T>(task: () => Promise<T>): Promise<T>;
  endSessions(id: string, why: string): Promise<void>;
  stopping(): boolean;
}

/** A tenant a restore, branch or import made (or remade), with what pgs took from data it did not make (see runtime/neutralize.ts). */
export interface MadeTenant {
  tenant: Tenant;
  neutralized: string[];
  /** Anything else the user should know of it (an archive in the bucket taken over from another host). */
  notes?: string[];
}

/** The bucket as GET /v1/status shows it. */
export interface S3TargetStatus {
  url: string;
  /** Files of every tenant not in the bucket yet (see pendingFor), their bytes, and when the oldest was written. */
  pendingFiles: number;
  pendingBytes: number;
  oldestPendingAt: string | null;
  /** When a file last reached the bucket (since the daemon started). */
  lastCopiedAt: string | null;
  failingSince: string | null;
  error?: string;
}

export type ArchivingState = 'ok' | 'failing' | 'behind' | 'gap' | 'unknown' | 'off';

/** Progress of a long operation, for the API's operations and the CLI. */
export type Progress = (phase: string) => void;

const SCHEDULE_TICK_MS = 30_000;
/** A new tenant's first scheduled backup: after its first minutes of loading data. */
const FIRST_BACKUP_DELAY_MS = 5 * 60_000;
const PARALLEL_BACKUPS = 2;
/** More finished segments than this waiting to be archived: archiving is behind. */
const BEHIND_SEGMENTS = 16;
/** Exports wait this long for their download. */
const EXPORT_KEEP_MS = 24 * 60 * 60_000;
const FLUSH_TIMEOUT_MS = 60_000;

export class BackupPlane {
  readonly backups: Backups;
  private readonly deps: BackupPlaneDeps;
  private readonly lastBackup = new Map<string, BackupMeta>();
  /** Made before the API answers: an import folder older than this is a previous daemon's. */
  private readonly bornAt = Date.now();
  private readonly lastChecked = new Map<string, number>();
  private readonly failures = new Map<string, { at: string; error: string }>();
  private readonly gaps = new Map<string, string>();
  private readonly journals: RestoreJournals;
  /** Base backups being written now, by tenant: their folder and start (what is not in the bucket yet). */
  private readonly inFlight = new Map<string, { dir: string; startedMs: number }>();
  /** Tenants whose restore settleRestores finished: each gets its first backup once the plane has started. */
  private readonly settledRestores: string[] = [];
  /** Ids being made by a restore, branch or import: a create of the same id is refused meanwhile. */
  readonly reserved = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private sweep: Promise<void> | undefined;
  /** Copies the backups tree to S3 when a backup target is set. */
  private shipper: Shipper | undefined;
  private shipperKey = '';
  private targetError: string | undefined;

  constructor(deps: BackupPlaneDeps) {
    this.deps = deps;
    this.backups = new Backups(deps.runtime, this.dataRoot);
    this.journals = new RestoreJournals(this.dataRoot);
  }

  private get dataRoot(): string {
    return this.deps.catalog().settings.dataRoot;
  }

  private get runtime(): TenantRuntime {
    return this.deps.runtime;
  }

  /** At daemon start: clears what backups cut short left, gives older tenants an archive, learns the last backups. */
  async start(): Promise<void> {
    await this.configure(); // a no-op unless the settings changed since the daemon configured it
    await this.backups.cleanup();
    await this.cleanExports();
    for (const tenant of this.deps.catalog().tenants) {
      if (tenant.generation === undefined) await this.giveArchive(tenant);
      const list = await this.backups.list(tenant.id);
      const last = list[list.length - 1];
      if (last) this.lastBackup.set(tenant.id, last);
    }
    this.timer = setInterval(() => this.tick(), SCHEDULE_TICK_MS);
    this.timer.unref();
    // A restore finished by settleRestores: its new generation's first backup, as after any restore.
    for (const id of this.settledRestores.splice(0)) {
      const tenant = this.deps.catalog().tenants.find((t) => t.id === id);
      if (tenant) this.backupSoon(tenant);
    }
  }

  /** Follows the settings' backup target (at start and at each reload). */
  async configure(): Promise<void> {
    const settings = this.deps.catalog().settings;
    const key = JSON.stringify([settings.backupTarget, settings.s3Endpoint, settings.s3Region]);
    if (key === this.shipperKey) return;
    this.shipperKey = key;
    await this.shipper?.stop();
    this.shipper = undefined;
    this.targetError = undefined;
    try {
      const client = s3ClientFor(settings, process.env);
      if (!client) return;
      this.shipper = new Shipper({ client, dataRoot: this.dataRoot, runtime: this.runtime, log: this.deps.log, hostId: await this.hostId() });
      this.shipper.start();
      this.deps.log.info('backups are copied to S3', { target: client.url });
    } catch (err) {
      this.targetError = (err as Error).message;
      this.deps.log.warn('the backup target cannot be used', { target: settings.backupTarget, error: this.targetError });
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

  /**
   * What of the tenant is not in the bucket yet: the files here the copier has
   * not sent, the segments its server has finished and not archived yet, and
   * a base backup being written. Null without a bucket.
   */
  pendingFor(id: string, status: ArchiverStatus | undefined): Pending | null {
    if (!this.shipper && this.deps.catalog().settings.backupTarget === undefined) return null;
    const shipping = this.shipper?.pending(id) ?? { files: 0, bytes: 0, oldestMs: null };
    let { files, bytes, oldestMs } = shipping;
    const older = (ms: number | null) => {
      if (ms !== null && (oldestMs === null || ms < oldestMs)) oldestMs = ms;
    };
    if (status?.readyFiles) {
      files += status.readyFiles;
      bytes += status.readyBytes ?? 0;
      older(status.oldestReadyAt ? Date.parse(status.oldestReadyAt) : null);
    }
    const flight = this.inFlight.get(id);
    if (flight) {
      files += 1;
      bytes += (() => {
        try {
          return statSync(path.join(flight.dir, 'base.tar')).size;
        } catch {
          return 0;
        }
      })();
      older(flight.startedMs);
    }
    return { files, bytes, oldestMs };
  }

  /** For GET /v1/status: the bucket, and what of every tenant is not in it yet. */
  targetStatus(tenants: readonly { id: string; status: ArchiverStatus | undefined }[]): S3TargetStatus | null {
    const settings = this.deps.catalog().settings;
    if (settings.backupTarget === undefined) return null;
    let files = 0;
    let bytes = 0;
    let oldestMs: number | null = null;
    for (const t of tenants) {
      const p = this.pendingFor(t.id, t.status);
      if (!p) continue;
      files += p.files;
      bytes += p.bytes;
      if (p.oldestMs !== null && (oldestMs === null || p.oldestMs < oldestMs)) oldestMs = p.oldestMs;
    }
    const failing = this.shipper?.failing;
    return {
      url: this.shipper?.client.url ?? settings.backupTarget,
      pendingFiles: files,
      pendingBytes: bytes,
      oldestPendingAt: oldestMs === null ? null : new Date(oldestMs).toISOString(),
      lastCopiedAt: this.shipper?.lastShippedAt ?? null,
      failingSince: failing?.since ?? null,
      ...(this.targetError ? { error: this.targetError } : failing ? { error: failing.error } : {}),
    };
  }

  /** Copies everything there is now to S3 (for tests and before a planned shutdown); a no-op without a target. */
  async flushShipping(): Promise<void> {
    await this.shipper?.flush();
    if (this.shipper?.failing) throw new PgsError('BACKUP_FAILED', `copying to ${this.shipper.client.url} fails: ${this.shipper.failing.error}`);
  }

  /**
   * Before a planned stop, once the servers have stopped (so their last segment
   * is archived here): copies everything not in the bucket yet, retrying until
   * `deadlineMs`. Returns what is still only on this host (empty: nothing).
   */
  async shipBeforeStop(deadlineMs: number, progress?: (left: Pending, error?: string) => void): Promise<{ left: string[]; error?: string; writtenElsewhere?: Record<string, string> }> {
    if (this.targetError !== undefined) return { left: ['(every file: the backup target cannot be used)'], error: this.targetError };
    if (!this.shipper) return { left: [] };
    const left = await this.shipper.drain(deadlineMs, progress);
    // Tenants whose archive another host now writes: their files here are never copied (a start will not either).
    const elsewhere: Record<string, string> = {};
    for (const file of left) {
      const id = file.slice(0, file.indexOf('/'));
      const other = this.shipper.claimedElsewhere(id);
      if (other) elsewhere[id] = other.host;
    }
    return { left, ...(this.shipper.failing ? { error: this.shipper.failing.error } : {}), ...(Object.keys(elsewhere).length > 0 ? { writtenElsewhere: elsewhere } : {}) };
  }

  /** Stops taking backups (a sweep in progress ends first); the copier keeps going until `stopShipping`. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.sweep;
  }

  async stopShipping(): Promise<void> {
    await this.shipper?.stop();
  }

  /** Brings what the bucket has of the tenant here (a lost data root, a tenant from another host); quiet when S3 is down but something is here. */
  private async hydrate(id: string): Promise<void> {
    if (!this.shipper) return;
    try {
      const fetched = await this.shipper.hydrate(id);
      if (fetched > 0) this.deps.log.info('fetched backup records from S3', { tenant: id, files: fetched });
    } catch (err) {
      if ((await this.backups.generationNames(id)).length === 0) throw err;
      this.deps.log.warn('could not look at S3; restoring from what is here', { tenant: id, error: (err as Error).message });
    }
  }

  /** The backup's large files, fetched from S3 when only its record is here. */
  private async ensureLocal(plan: RestorePlan): Promise<void> {
    if (this.shipper) await this.shipper.fetchBackup(plan.backup, plan.backupDir);
  }

  /** A tenant made before continuous archiving: its first generation, and its server archives from now on. */
  private async giveArchive(tenant: Tenant): Promise<void> {
    const generation = newStamp();
    const next = { ...tenant, generation };
    await writeGenerationMeta(this.runtime, this.dataRoot, next);
    await this.deps.serial(() => this.deps.pgs.patch(tenant.id, { generation }));
    await this.deps.refresh();
    await this.runtime.configureArchive(tenantServerSpec(this.dataRoot, next));
    this.deps.log.info('continuous archiving on', { tenant: tenant.id, generation });
  }

  // --- what the API shows ---

  lastBackupAt(id: string): string | null {
    return this.lastBackup.get(id)?.finishedAt ?? null;
  }

  archiving(tenant: Tenant, status: ArchiverStatus | undefined): { state: ArchivingState; error?: string } {
    if (tenant.generation === undefined) return { state: 'off' };
    if (this.targetError !== undefined) return { state: 'failing', error: `the backup target cannot be used: ${this.targetError}` };
    const owner = this.shipper?.claimedElsewhere(tenant.id);
    if (owner) return { state: 'failing', error: `host ${owner.host} writes this tenant's archive in ${this.shipper?.client.url ?? 'S3'} since ${owner.at} (it restored it there): this host copies nothing of it; "pgs restore ${tenant.id} --as <new-id>" gives a copy an archive of its own` };
    const pending = this.pendingFor(tenant.id, status);
    const shipping = this.shipper?.failing;
    // A target that is down hurts only a tenant that has something to copy.
    if (shipping && pending !== null && pending.files > 0) return { state: 'failing', error: `copying to ${this.shipper?.client.url ?? 'S3'} fails since ${shipping.since}: ${shipping.error}; ${pending.files} files wait, the local archive keeps everything` };
    const uncopied = this.shipper?.pending(tenant.id).files ?? 0;
    if (uncopied > BEHIND_SEGMENTS) return { state: 'behind', error: `${uncopied} files wait to be copied to ${this.shipper?.client.url ?? 'S3'}` };
    const gap = this.gaps.get(tenant.id);
    if (gap !== undefined) return { state: 'gap', error: `the WAL archive misses segment ${gap}: a restore cannot reach past it; the next backup starts a whole range again` };
    const failure = this.failures.get(tenant.id);
    if (!status) return failure ? { state: 'unknown', error: `last backup failed at ${failure.at}: ${failure.error}` } : { state: 'unknown' };
    if (status.lastFailedAt !== null && (status.lastArchivedAt === null || status.lastFailedAt > status.lastArchivedAt)) {
      return { state: 'failing', error: `archiving WAL segment ${status.lastFailedWal ?? '?'} fails since ${status.lastFailedAt} (see pgs logs ${tenant.id}); ${status.pending} segments wait` };
    }
    if (status.pending > BEHIND_SEGMENTS) return { state: 'behind', error: `${status.pending} WAL segments wait to be archived` };
    if (failure) return { state: 'ok', error: `last backup failed at ${failure.at}: ${failure.error}` };
    return { state: 'ok' };
  }

  async list(id: string): Promise<BackupList & { lastFailure: { at: string; error: string } | null }> {
    assertTenantId(id);
    const tenant = this.deps.catalog().tenants.find((t) => t.id === id);
    if ((await this.backups.generationNames(id)).length === 0) await this.hydrate(id);
    const list = await this.backups.describe(id, tenant?.generation);
    if (!tenant && list.backups.length === 0) throw new PgsError('TENANT_NOT_FOUND', `no tenant ${id}, and no backups of one (see "pgs list")`);
    return { ...list, lastFailure: this.failures.get(id) ?? null };
  }

  /** After a removal: an archive without a single backup cannot restore anything; it goes with the tenant. */
  async forgetIfEmpty(id: string): Promise<void> {
    if ((await this.backups.list(id)).length > 0) return;
    if ((await this.backups.generationNames(id)).length === 0) return;
    await this.shipper?.forget([id]).catch(() => undefined);
    await this.runtime.removeOwned(tenantBackupsDir(this.dataRoot, id));
    this.lastBackup.delete(id);
  }

  /** Deletes every backup and the WAL archive of a removed tenant (never of one that exists). */
  async deleteAll(id: string): Promise<void> {
    assertTenantId(id);
    if (this.deps.catalog().tenants.some((t) => t.id === id) || this.reserved.has(id)) {
      throw new PgsError('INVALID_STATE', `tenant ${id} exists: its backups go with retention ("pgs config ${id} --retain N"), or when it is removed and they are deleted`);
    }
    if ((await this.backups.generationNames(id)).length === 0) await this.hydrate(id);
    if ((await this.backups.generationNames(id)).length === 0) throw new PgsError('BACKUP_NOT_FOUND', `there are no backups of ${id}`);
    await this.shipper?.forget([id]);
    await this.runtime.removeOwned(tenantBackupsDir(this.dataRoot, id));
    this.lastBackup.delete(id);
    this.failures.delete(id);
    this.gaps.delete(id);
    this.deps.log.info('backups deleted', { tenant: id });
  }

  // --- backups ---

  /** Takes a backup now: online when the server runs; from its files, without waking it, when not. */
  backupNow(id: string, reason: string, progress?: Progress): Promise<BackupMeta> {
    assertTenantId(id);
    findTenant(this.deps.catalog(), id);
    return this.deps.supervisor.hold(id, async () => {
      const tenant = findTenant(this.deps.catalog(), id);
      progress?.(`backing up ${id}`);
      return this.take(tenant, reason);
    });
  }

  /** Must run inside a hold of the tenant. */
  private async take(tenant: Tenant, reason: string, note?: string): Promise<BackupMeta> {
    const started = performance.now();
    try {
      const meta = await this.backups.take(tenant, reason, (dir) => this.inFlight.set(tenant.id, { dir, startedMs: Date.now() }), note).finally(() => this.inFlight.delete(tenant.id));
      this.lastBackup.set(tenant.id, meta);
      this.failures.delete(tenant.id);
      this.deps.metrics.backups.inc({ result: 'ok' });
      this.deps.metrics.backupDuration.observe((performance.now() - started) / 1000);
      this.deps.events.emit('backup', tenant.id, { backup: meta.id, kind: meta.kind, reason });
      this.deps.log.info('backup taken', { tenant: tenant.id, backup: meta.id, kind: meta.kind, reason, bytes: meta.bytes, ms: Math.round(performance.now() - started) });
      await this.afterBackup(tenant);
      return meta;
    } catch (err) {
      const error = (err as Error).message;
      this.failures.set(tenant.id, { at: new Date().toISOString(), error });
      this.deps.metrics.backups.inc({ result: 'failed' });
      this.deps.events.emit('backup-failed', tenant.id, { reason: error });
      this.deps.log.warn('backup failed', { tenant: tenant.id, reason, error });
      throw err;
    }
  }

  /** Retention, and a look for gaps in the archive, after each backup. */
  private async afterBackup(tenant: Tenant): Promise<void> {
    try {
      const pruned = await this.backups.prune(tenant);
      if (pruned.backups.length > 0) this.deps.log.info('old backups deleted', { tenant: tenant.id, backups: pruned.backups });
      await this.checkGaps(tenant);
      if (this.shipper) {
        if (pruned.removed.length > 0) await this.shipper.forget(pruned.removed).catch((err: Error) => this.deps.log.warn('could not delete old backups from S3', { tenant: tenant.id, error: err.message }));
        this.shipper.kick();
      }
    } catch (err) {
      this.deps.log.warn('retention failed', { tenant: tenant.id, error: (err as Error).message });
    }
  }

  private async checkGaps(tenant: Tenant): Promise<void> {
    const list = await this.backups.describe(tenant.id, tenant.generation);
    const current = list.ranges.find((r) => r.generation === tenant.generation);
    const before = this.gaps.get(tenant.id);
    if (current?.gap !== undefined) {
      this.gaps.set(tenant.id, current.gap);
      if (before !== current.gap) this.deps.log.warn('gap in the WAL archive', { tenant: tenant.id, segment: current.gap });
    } else {
      this.gaps.delete(tenant.id);
    }
  }

  /** Runs the backups that are due, a few at a time, in the background. */
  tick(): void {
    if (this.sweep || this.deps.stopping()) return;
    const now = Date.now();
    const due = this.deps.catalog().tenants.filter((t) => this.isDue(t, now));
    if (due.length === 0) return;
    this.sweep = forEachLimit(due, PARALLEL_BACKUPS, async (tenant) => {
      if (this.deps.stopping()) return;
      await this.deps.supervisor.hold(tenant.id, async () => {
        const current = this.deps.catalog().tenants.find((t) => t.id === tenant.id);
        if (!current || !this.isDue(current, Date.now())) return;
        const last = this.lastBackup.get(current.id);
        // Nothing written since the last backup (a tenant asleep for days): nothing to back up.
        if (last && last.generation === current.generation && (await this.runtime.walPosition(current.id).catch(() => '')) === last.afterLsn) {
          this.lastChecked.set(current.id, Date.now());
          this.deps.metrics.backups.inc({ result: 'skipped' });
          return;
        }
        await this.take(current, 'scheduled');
      }).catch(() => undefined);
    }).finally(() => { this.sweep = undefined; });
  }

  private isDue(tenant: Tenant, now: number): boolean {
    // A tenant past its hard disk limit runs as a standby: nothing can change until its quota is raised.
    return !this.reserved.has(tenant.id) && tenant.diskState !== 'standby' && backupDue(tenant, this.lastBackup.get(tenant.id), this.lastChecked.get(tenant.id), now);
  }

  // --- restores ---

  /**
   * Restores the tenant in place: keeps a backup of its current state first
   * (listed and restorable), then puts the restored data in place of its
   * data and starts it. Its logins stay as they are now.
   */
  restoreInPlace(id: string, choice: { backup?: string; time?: Date }, progress?: Progress): Promise<MadeTenant> {
    assertTenantId(id);
    return this.deps.serial(async () => {
      const tenant = findTenant(this.deps.catalog(), id);
      await this.hydrate(id);
      await this.backups.plan(id, choice, tenant.generation); // refused here, before anything changes
      return this.deps.supervisor.hold(id, async () => {
        await this.deps.endSessions(id, `tenant ${id} is being restored`);
        // Its data folder is gone (a lost disk, the catalog kept elsewhere): nothing to keep, restore into place.
        if ((await this.runtime.folderState(id)) === 'none') return this.restoreMissing(tenant, choice, progress);
        const spec = tenantServerSpec(this.dataRoot, tenant);
        let running = (await this.runtime.status(id, { fresh: true })).state === 'running';
        if (!running) {
          progress?.('starting the current server to keep its state');
          running = await this.runtime.start(spec).then(() => true, (err: Error) => {
            this.deps.log.warn('the current server does not start; its files are kept as they are', { tenant: id, error: err.message });
            return false;
          });
        }
        let verifier: string | null = null;
        let extraWal: string | undefined;
        progress?.('backing up the current state');
        await this.take(tenant, 'pre-restore', preRestoreNote(choice));
        if (running) {
          verifier = await this.runtime.tenantVerifier(id);
          await this.runtime.flushArchive(id, FLUSH_TIMEOUT_MS).catch((err: Error) => this.deps.log.warn('could not archive the last WAL before the restore', { tenant: id, error: err.message }));
          await this.deps.endSessions(id, `tenant ${id} is being restored`);
          await this.runtime.stop(id);
        } else {
          extraWal = path.join(this.dataRoot, 'backups', id, `.pgwal-${newStamp()}`);
          await this.runtime.copyWal(id, extraWal);
        }
        try {
          const plan = await this.backups.plan(id, choice, tenant.generation);
          const next: Tenant = { ...tenant, generation: newStamp() };
          const nextSpec = tenantServerSpec(this.dataRoot, next);
          const staging = `.restore-${id}`;
          progress?.(`fetching backup ${plan.backup.id}`);
          await this.ensureLocal(plan);
          crashPoint('restore:download');
          progress?.(`unpacking and checking backup ${plan.backup.id}`);
          const folder = await this.runtime.materialize(staging, plan.backupDir, plan.backup.id, { finished: true });
          crashPoint('restore:extract');
          // From here to the catalog's commit a dead daemon's successor settles the restore (settleRestores).
          await this.journals.write({ format: 1, tenant: id, generation: next.generation as string, hadFolder: true, backup: plan.backup.id, target: plan.target, startedAt: new Date().toISOString() });
          const swap = await this.runtime.replaceData(id, staging);
          crashPoint('restore:swap');
          let neutralized: string[];
          try {
            progress?.(plan.target === 'immediate' ? 'starting the restored server' : `replaying WAL to ${plan.target}`);
            const taken = await recover(this.runtime, nextSpec, plan, {
              extraWal, folder, ...this.recoverCrashPoints(id),
              beforeOpen: async () => {
                await this.runtime.renameDatabase(id, plan.backup.tenant);
                if (verifier !== null) await this.runtime.setPassword(id, verifier);
              },
            });
            neutralized = [...folder.dropped, ...taken];
            await writeGenerationMeta(this.runtime, this.dataRoot, next, { tenant: plan.backup.tenant, backup: plan.backup.id, target: plan.target });
            await this.deps.pgs.patch(id, { generation: next.generation }); // the commit: last in this block
          } catch (err) {
            await swap.undo();
            await this.forgetGeneration(id, next.generation as string);
            await this.journals.remove(id);
            throw err;
          }
          crashPoint('restore:commit');
          await this.deps.refresh();
          await swap.commit();
          await this.journals.remove(id);
          if (tenant.wanted !== 'running') await this.runtime.stop(id);
          else await this.deps.supervisor.noteRunning(id);
          this.gaps.delete(id);
          this.emitRestored(id, plan, neutralized);
          const restored = findTenant(this.deps.catalog(), id);
          this.backupSoon(restored);
          return { tenant: restored, neutralized };
        } finally {
          if (extraWal !== undefined) await this.runtime.removeOwned(extraWal).catch(() => undefined);
        }
      });
    });
  }

  /** Restores a tenant whose data folder is gone into its place; its catalog entry stays as it is. Inside its hold. */
  private async restoreMissing(tenant: Tenant, choice: { backup?: string; time?: Date }, progress?: Progress): Promise<MadeTenant> {
    const id = tenant.id;
    const plan = await this.backups.plan(id, choice, tenant.generation);
    const next: Tenant = { ...tenant, generation: newStamp() };
    progress?.(`fetching backup ${plan.backup.id}`);
    await this.ensureLocal(plan);
    progress?.(`unpacking and checking backup ${plan.backup.id}`);
    await this.journals.write({ format: 1, tenant: id, generation: next.generation as string, hadFolder: false, backup: plan.backup.id, target: plan.target, startedAt: new Date().toISOString() });
    let neutralized: string[];
    try {
      const folder = await this.runtime.materialize(id, plan.backupDir, plan.backup.id, { finished: true });
      progress?.(plan.target === 'immediate' ? 'starting the restored server' : `replaying WAL to ${plan.target}`);
      const taken = await recover(this.runtime, tenantServerSpec(this.dataRoot, next), plan, { folder, ...this.recoverCrashPoints(id), beforeOpen: () => this.runtime.renameDatabase(id, plan.backup.tenant) });
      neutralized = [...folder.dropped, ...taken];
      await writeGenerationMeta(this.runtime, this.dataRoot, next, { tenant: plan.backup.tenant, backup: plan.backup.id, target: plan.target });
      await this.runtime.writeMeta(id, next);
      await this.deps.pgs.patch(id, { generation: next.generation }); // the commit: last in this block
    } catch (err) {
      await this.runtime.remove(id).catch(() => undefined);
      await this.forgetGeneration(id, next.generation as string);
      await this.journals.remove(id);
      throw err;
    }
    crashPoint('restore:commit');
    await this.journals.remove(id);
    await this.deps.refresh();
    if (tenant.wanted !== 'running') await this.runtime.stop(id);
    else await this.deps.supervisor.noteRunning(id);
    this.emitRestored(id, plan, neutralized);
    const restored = findTenant(this.deps.catalog(), id);
    this.backupSoon(restored);
    return { tenant: restored, neutralized };
  }

  /**
   * A new tenant `newId` from `source`'s backups (the source may be a removed
   * tenant whose backups remain): at a time, from a backup, or at the latest
   * point. The source is not touched.
   */
  async restoreAs(source: string, newId: string, choice: { backup?: string; time?: Date }, reason: string, progress?: Progress): Promise<MadeTenant> {
    assertTenantId(source);
    assertTenantId(newId);
    const src = this.deps.catalog().tenants.find((t) => t.id === source);
    await this.hydrate(source);
    await this.backups.plan(source, choice, src?.generation); // refused here, before anything is made
    const release = await this.reserve(newId);
    let extraWal: string | undefined;
    try {
      if (src && choice.backup === undefined) {
        // Everything the source wrote up to now must be in reach: archived, or copied from a stopped server.
        await this.deps.supervisor.hold(source, async () => {
          if ((await this.runtime.status(source, { fresh: true })).state === 'running') {
            await this.runtime.flushArchive(source, FLUSH_TIMEOUT_MS).catch((err: Error) => this.deps.log.warn('could not archive the last WAL', { tenant: source, error: err.message }));
          } else {
            extraWal = path.join(this.dataRoot, 'backups', source, `.pgwal-${newStamp()}`);
            await this.runtime.copyWal(source, extraWal);
          }
        });
      }
      const plan = await this.backups.plan(source, choice, src?.generation);
      progress?.(`fetching backup ${plan.backup.id}`);
      await this.ensureLocal(plan);
      return await this.makeFrom(newId, plan, plan.backup.tenantEntry, reason, extraWal, progress);
    } finally {
      if (extraWal !== undefined) await this.runtime.removeOwned(extraWal).catch(() => undefined);
      release();
    }
  }

  /**
   * A new tenant with `source`'s data now or as it was at `at`. Now: a running source's
   * BASE_BACKUP is streamed straight into the new folder (the source keeps running); a suspended
   * or stopped one's files are copied (reflinks where the file system has them) without waking it.
   */
  async branch(source: string, newId: string, at: Date | undefined, progress?: Progress): Promise<MadeTenant> {
    assertTenantId(source);
    assertTenantId(newId);
    const src = findTenant(this.deps.catalog(), source);
    if (at !== undefined) return this.restoreAs(source, newId, { time: at }, 'branch', progress);
    const release = await this.reserve(newId);
    try {
      const now = new Date().toISOString();
      return await this.makeTenant(newId, src, 'branch', { tenant: source, backup: 'clone', target: now }, async (spec) => {
        progress?.(`copying ${source}`);
        // Held: not suspended while its backup streams, not woken while its files are copied.
        const { online } = await this.deps.supervisor.hold(source, () => this.runtime.clone(source, newId));
        progress?.('starting the new server');
        if (online) return recover(this.runtime, spec, { walDir: '', target: 'immediate' }, { beforeOpen: () => this.runtime.renameDatabase(newId, source) });
        await this.runtime.start(spec);
        await this.runtime.renameDatabase(newId, source);
        return [];
      });
    } finally {
      release();
    }
  }

  /** Makes tenant `newId` from a plan (its folder, its server replayed, its catalog entry); nothing remains if it fails. */
  private makeFrom(newId: string, plan: RestorePlan, from: Tenant, reason: string, extraWal: string | undefined, progress?: Progress): Promise<MadeTenant> {
    return this.makeTenant(newId, from, reason, { tenant: plan.backup.tenant, backup: plan.backup.id, target: plan.target }, async (spec) => {
      progress?.(`unpacking and checking backup ${plan.backup.id}`);
      const folder = await this.runtime.materialize(newId, plan.backupDir, plan.backup.id, { finished: false });
      progress?.(plan.target === 'immediate' ? 'starting the new server' : `replaying WAL to ${plan.target}`);
      const taken = await recover(this.runtime, spec, plan, { extraWal, folder, beforeOpen: () => this.runtime.renameDatabase(newId, plan.backup.tenant) });
      return [...folder.dropped, ...taken];
    });
  }

  /**
   * Makes tenant `newId` with `from`'s settings: `build` makes its folder and starts its server,
   * then its database gets its name, its generation a record, and the catalog the tenant.
   * Nothing remains if any step fails.
   */
  private async makeTenant(newId: string, from: Tenant, reason: string, origin: { tenant: string; backup: string; target: string }, build: (spec: TenantServerSpec) => Promise<string[]>): Promise<MadeTenant> {
    // Its settings come along: how clients share it, its limits, its backups. Access too when it comes back
    // under its own id (a disabled tenant stays disabled); a copy under a new id starts enabled.
    const entry: Omit<Tenant, 'suffix' | 'createdAt'> = {
      id: newId,
      access: from.id === newId ? from.access : 'enabled',
      wanted: 'running',
      maxConnections: from.maxConnections,
      generation: newStamp(),
      ...(from.autosuspendSeconds !== undefined ? { autosuspendSeconds: from.autosuspendSeconds } : {}),
      ...(from.rpoSeconds !== undefined ? { rpoSeconds: from.rpoSeconds } : {}),
      ...(from.backupSchedule !== undefined ? { backupSchedule: from.backupSchedule } : {}),
      ...(from.backupRetain !== undefined ? { backupRetain: from.backupRetain } : {}),
      ...(from.pool !== undefined ? { pool: from.pool } : {}),
      ...(from.poolSize !== undefined ? { poolSize: from.poolSize } : {}),
      ...(from.maxClientConnections !== undefined ? { maxClientConnections: from.maxClientConnections } : {}),
      // Its allow-list too, under any id: a copy is reached from no more addresses than its source.
      ...(from.allow !== undefined ? { allow: [...from.allow] } : {}),
      ...(from.memoryBytes !== undefined ? { memoryBytes: from.memoryBytes } : {}),
      ...(from.cpus !== undefined ? { cpus: from.cpus } : {}),
      ...(from.diskBytes !== undefined ? { diskBytes: from.diskBytes } : {}),
    };
    const spec = tenantServerSpec(this.dataRoot, { ...entry, suffix: 'aaaaaa', createdAt: new Date().toISOString() });
    try {
      const neutralized = await build(spec);
      await writeGenerationMeta(this.runtime, this.dataRoot, entry, origin);
      const tenant = await this.deps.serial(async () => {
        if (this.deps.stopping()) throw new PgsError('DAEMON_STOPPING', 'the daemon is stopping');
        // Back under its own id (a lost host, a removed tenant, a move): its host name too, so clients
        // keep their connection strings. A host-name label holds the id, so no other tenant can have it.
        const made = await this.deps.pgs.insert(from.id === newId ? { ...entry, suffix: from.suffix } : entry);
        await this.deps.refresh();
        await this.deps.supervisor.noteRunning(newId);
        return made;
      });
      this.deps.events.emit('created', newId, { reason, from: origin.tenant, backup: origin.backup, target: origin.target, ...(neutralized.length > 0 ? { neutralized } : {}) });
      this.deps.log.info('tenant made from another', { tenant: newId, reason, from: origin.tenant, backup: origin.backup, target: origin.target, ...(neutralized.length > 0 ? { neutralized } : {}) });
      const notes: string[] = [];
      if (from.id === newId && this.shipper) {
        // Back under its own id: this host is the one that writes its archive in the bucket from now on.
        const previous = await this.shipper.claim(newId).catch((err: Error) => {
          this.deps.log.warn('could not claim the tenant\'s archive in the bucket; the next copy tries again', { tenant: newId, error: err.message });
          return undefined;
        });
        if (previous !== undefined) {
          notes.push(`this host now writes ${newId}'s archive in ${this.shipper.client.url}: host ${previous}, which wrote it before, stops copying it`);
          this.deps.log.warn('took over the tenant\'s archive in the bucket from another host', { tenant: newId, host: previous });
        }
      }
      this.backupSoon(tenant); // its restorable window starts now, not at the first scheduled backup
      return { tenant, neutralized, ...(notes.length > 0 ? { notes } : {}) };
    } catch (err) {
      if (!this.deps.catalog().tenants.some((t) => t.id === newId)) await this.runtime.remove(newId).catch(() => undefined);
      throw err;
    }
  }

  /** Crash points inside the restored server's start, for the kill -9 tests (core/crash.ts). */
  private recoverCrashPoints(id: string): Pick<RecoverOptions, 'afterStart' | 'whileStarting'> {
    return {
      afterStart: () => crashPoint('restore:promote'),
      whileStarting: () => {
        if (!crashPointSet('restore:replay')) return;
        // Once the recovering server has written its pid file, the daemon dies under it.
        const pidFile = path.join(this.runtime.dataDir(id), 'postmaster.pid');
        const look = () => void fs.access(pidFile).then(() => crashPoint('restore:replay'), () => setTimeout(look, 2));
        look();
      },
    };
  }

  /** A generation no catalog will name (a restore that failed or was undone): its archive here and in the bucket goes. */
  private async forgetGeneration(id: string, generation: string): Promise<void> {
    await this.runtime.removeOwned(generationDir(this.dataRoot, id, generation)).catch(() => undefined);
    await this.shipper?.forget([`${id}/${generation}`]).catch(() => undefined);
  }

  /**
   * At daemon start, before the router listens: every in-place restore that a
   * dead daemon left is finished (the catalog names its generation: only the
   * folder from before goes) or undone (the tenant is as it was before it).
   * What WAL folders restores borrowed (`.pgwal-*`) goes too.
   */
  async settleRestores(): Promise<void> {
    for (const journal of await this.journals.list()) {
      if ('damaged' in journal) {
        this.deps.log.warn('a restore journal that does not parse is kept ("pgs doctor" lists it)', { file: journal.damaged });
        continue;
      }
      const id = journal.tenant;
      const tenant = this.deps.catalog().tenants.find((t) => t.id === id);
      const committed = tenant !== undefined && tenant.generation === journal.generation;
      const done = await this.runtime.settleRestore(id, committed ? 'restored' : 'previous', journal.hadFolder);
      if (!committed) await this.forgetGeneration(id, journal.generation);
      await this.journals.remove(id);
      this.deps.events.emit('restored', id, { backup: journal.backup, target: journal.target, ...(committed ? {} : { undone: true, reason: 'the daemon stopped during the restore' }) });
      this.deps.log.warn(committed ? 'finished a restore that a stopped daemon had committed' : 'undid a restore that a stopped daemon left unfinished', { tenant: id, backup: journal.backup, target: journal.target, done });
      if (committed) this.settledRestores.push(id);
    }
    for (const id of await this.backups.tenantsWithBackups()) {
      for (const name of await fs.readdir(tenantBackupsDir(this.dataRoot, id)).catch(() => [] as string[])) {
        if (name.startsWith('.pgwal-')) await this.runtime.removeOwned(path.join(tenantBackupsDir(this.dataRoot, id), name)).catch(() => undefined);
      }
    }
  }

  private emitRestored(id: string, plan: RestorePlan, neutralized: string[]): void {
    const extra = neutralized.length > 0 ? { neutralized } : {};
    this.deps.events.emit('restored', id, { backup: plan.backup.id, target: plan.target, ...extra });
    this.deps.log.info('restored', { tenant: id, backup: plan.backup.id, target: plan.target, ...extra });
  }

  /** The first backup of a new generation, so that its restorable window starts now. */
  private backupSoon(tenant: Tenant): void {
    void this.backupNow(tenant.id, 'first').catch(() => undefined);
  }

  private assertFree(id: string): void {
    if (this.deps.catalog().tenants.some((t) => t.id === id) || this.reserved.has(id)) throw new PgsError('TENANT_EXISTS', `tenant ${id} already exists`);
  }

  /** Keeps `id` for one restore until the returned function is called. */
  private async reserve(id: string): Promise<() => void> {
    this.assertFree(id);
    const folder = await this.runtime.folderState(id);
    if (folder === 'finished') throw new PgsError('ORPHAN_DATA', `a data folder for ${id} exists that the catalog does not name (${this.runtime.dataDir(id)}): "pgs doctor --fix" adopts it back, or move it away first`);
    this.reserved.add(id);
    if (folder === 'unfinished') await this.runtime.remove(id);
    return () => this.reserved.delete(id);
  }

  // --- moves between hosts ---

  private get exportsDir(): string {
    return path.join(this.dataRoot, 'exports');
  }

  /** A fresh backup of the tenant, written as one self-contained, checksummed file for download. */
  async exportTenant(id: string, progress?: Progress): Promise<{ name: string; bytes: number; sha256: string }> {
    const meta = await this.backupNow(id, 'export', progress);
    await fs.mkdir(this.exportsDir, { recursive: true, mode: 0o700 });
    const name = `${id}-${meta.id}.pgs`;
    progress?.('writing the export file');
    const written = await writeExport(path.join(this.exportsDir, name), this.backups.backupDir(meta), {
      format: 1, pgsVersion: this.deps.version, exportedAt: new Date().toISOString(), tenant: meta.tenantEntry, backup: meta,
    });
    return { name, ...written };
  }

  exportFile(name: string): string {
    if (!/^[a-z][a-z0-9-]*-\d{8}-\d{6}-[0-9a-f]{4}\.pgs$/.test(name)) throw new PgsError('NOT_FOUND', `no export ${name}`);
    return path.join(this.exportsDir, name);
  }

  private async cleanExports(): Promise<void> {
    for (const name of await fs.readdir(this.exportsDir).catch(() => [] as string[])) {
      const file = path.join(this.exportsDir, name);
      const stat = await fs.stat(file).catch(() => undefined);
      if (stat && Date.now() - stat.mtimeMs > EXPORT_KEEP_MS) await fs.rm(file, { force: true });
    }
    // Uploads a daemon before this one left; not those of requests this one has taken already (the API answers before this runs).
    const imports = path.join(this.dataRoot, 'imports');
    for (const name of await fs.readdir(imports).catch(() => [] as string[])) {
      const dir = path.join(imports, name);
      const stat = await fs.stat(dir).catch(() => undefined);
      if (stat && stat.mtimeMs < this.bornAt) await fs.rm(dir, { recursive: true, force: true });
    }
  }

  /** Receives an upload to import into a folder of its own: deleted by `importFile`, or at once when the upload fails. */
  async importUploadFile(body: Readable, limit: ImportLimit): Promise<string> {
    const imports = path.join(this.dataRoot, 'imports');
    await fs.mkdir(imports, { recursive: true, mode: 0o700 });
    const dir = path.join(imports, newStamp());
    await fs.mkdir(dir, { mode: 0o700 });
    const file = path.join(dir, 'upload.pgs');
    try {
      await receiveUpload(body, file, limit);
    } catch (err) {
      await fs.rm(dir, { recursive: true, force: true });
      throw err;
    }
    return file;
  }

  /** Makes a tenant from an export file, checked whole before anything is made. */
  async importFile(file: string, as: string | undefined, progress?: Progress): Promise<MadeTenant> {
    const dir = path.join(path.dirname(file), 'unpacked');
    try {
      await fs.mkdir(dir, { mode: 0o700 });
      progress?.('checking the export file');
      const meta = await readExport(file, dir);
      await fs.rm(file, { force: true });
      const id = as ?? meta.tenant.id;
      assertTenantId(id);
      const release = await this.reserve(id);
      try {
        const plan: RestorePlan = { backup: meta.backup, backupDir: dir, target: 'immediate', walDir: '' }; // the backup carries its WAL
        return await this.makeFrom(id, plan, meta.tenant, 'imported', undefined, progress);
      } finally {
        release();
      }
    } catch (err) {
      if (errnoCode(err) === 'ENOSPC') throw new PgsError('BACKUP_FAILED', 'the disk is full: the import was not made');
      throw err;
    } finally {
      await fs.rm(path.dirname(file), { recursive: true, force: true });
    }
  }
}

/**
 * Whether the scheduler backs the tenant up now: its schedule's period (plus
 * a jitter of up to a tenth of it, fixed per id, so that tenants made
 * together are not backed up together) has passed since its last backup or
 * since it was last found unchanged; a tenant without a backup gets its
 * first once it is FIRST_BACKUP_DELAY_MS old.
 */
export function backupDue(
  tenant: Pick<Tenant, 'id' | 'createdAt' | 'backupSchedule' | 'generation'>,
  last: Pick<BackupMeta, 'finishedAt'> | undefined,
  lastChecked: number | undefined,
  now: number,
): boolean {
  const schedule = tenant.backupSchedule ?? DEFAULT_BACKUP_SCHEDULE;
  if (schedule === 'off' || tenant.generation === undefined) return false;
  const period = schedule === 'hourly' ? 3_600_000 : 86_400_000;
  const fraction = createHash('sha256').update(tenant.id).digest().readUInt32BE(0) / 0xffff_ffff;
  if (!last) return now - Date.parse(tenant.createdAt) >= FIRST_BACKUP_DELAY_MS + fraction * 60_000 && now - (lastChecked ?? 0) >= FIRST_BACKUP_DELAY_MS;
  const since = Math.max(Date.parse(last.finishedAt), lastChecked ?? 0);
  return now - since >= period + fraction * period * 0.1;
}

/** What a pre-restore backup was taken before: the restore's target as it was asked for. */
export function preRestoreNote(choice: { backup?: string; time?: Date }): string {
  if (choice.time !== undefined) return `before restore to ${choice.time.toISOString()}${choice.backup !== undefined ? ` (from backup ${choice.backup})` : ''}`;
  if (choice.backup !== undefined) return `before restore to backup ${choice.backup}`;
  return 'before restore to the latest point';
}
