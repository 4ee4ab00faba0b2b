import type { Readable } from 'node:stream';
import type { Progress } from '../api/routes.js';
import { assertTenantId } from '../catalog/ids.js';
import type { Tenant } from '../catalog/schema.js';
import { PgsError } from '../core/errors.js';
import { newStamp, tenantBackupsDir, writeGenerationMeta, type BackupMeta } from '../backup/layout.js';
import { tenantServerSpec } from '../runtime/server-spec.js';
import type { ArchiverStatus, TenantRuntime } from '../runtime/runtime.js';
import { Backups, type BackupList } from '../service/backups.js';
import { archivingState, pendingOf, sumPending, targetStatusOf, type ArchivingState, type S3TargetStatus } from './archiving-state.js';
import type { BackupPlaneDeps, MadeTenant } from './backup-deps.js';
import { BackupSchedule } from './backup-schedule.js';
import { BackupTaking } from './backup-taking.js';
import { BackupTarget } from './backup-target.js';
import { Restores } from './restores.js';
import type { Pending } from './shipper.js';
import { TenantCopies } from './tenant-copies.js';
import { TenantExports } from './tenant-exports.js';
import type { ImportLimit } from './uploads.js';

export type { BackupPlaneDeps, MadeTenant } from './backup-deps.js';
export type { ArchivingState, S3TargetStatus } from './archiving-state.js';
export type { Progress } from '../api/routes.js';
export { backupDue } from './backup-schedule.js';
export { preRestoreNote } from './restores.js';

/**
 * The daemon's backups: scheduled and requested base backups, restores in
 * place and as new tenants, branches, exports and imports. Backups do not
 * take the daemon's queue (a thousand tenants' nightly backups must not hold
 * up a create); a backup holds only its own tenant (no suspend, no wake
 * meanwhile). A restore in place is a change of the tenant and runs on the
 * queue; a restore into a new tenant reserves the new id and takes the queue
 * only to add it to the catalog.
 *
 * This class joins the parts and answers for them: the bucket
 * (backup-target.ts), taking backups (backup-taking.ts), the schedule
 * (backup-schedule.ts), restores in place (restores.ts), new tenants from
 * another's data (tenant-copies.ts), exports and imports (tenant-exports.ts),
 * and what the API shows of the archive (archiving-state.ts).
 */
export class BackupPlane {
  readonly backups: Backups;
  /** Ids being made by a restore, branch or import: a create of the same id is refused meanwhile. */
  readonly reserved: Set<string>;
  private readonly deps: BackupPlaneDeps;
  private readonly target: BackupTarget;
  private readonly taking: BackupTaking;
  private readonly schedule: BackupSchedule;
  private readonly restores: Restores;
  private readonly copies: TenantCopies;
  private readonly exports: TenantExports;

  constructor(deps: BackupPlaneDeps) {
    this.deps = deps;
    this.backups = new Backups(deps.runtime, this.dataRoot);
    this.target = new BackupTarget(deps, this.backups);
    this.taking = new BackupTaking(deps, this.backups, this.target);
    this.restores = new Restores(deps, this.backups, this.target, this.taking);
    this.copies = new TenantCopies(deps, this.backups, this.target, this.taking);
    this.reserved = this.copies.reserved;
    this.schedule = new BackupSchedule(deps, this.taking, this.reserved);
    this.exports = new TenantExports(deps, this.backups, this.taking, this.copies);
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
    await this.exports.clean();
    for (const tenant of this.deps.catalog().tenants) {
      if (tenant.generation === undefined) await this.giveArchive(tenant);
      const list = await this.backups.list(tenant.id);
      const last = list[list.length - 1];
      if (last) this.taking.remember(tenant.id, last);
    }
    this.schedule.start();
    // A restore finished by settleRestores: its new generation's first backup, as after any restore.
    for (const id of this.restores.takeSettled()) {
      const tenant = this.deps.catalog().tenants.find((t) => t.id === id);
      if (tenant) this.taking.backupSoon(tenant);
    }
  }

  /** Follows the settings' backup target (at start and at each reload). */
  configure(): Promise<void> {
    return this.target.configure();
  }

  /** Stops taking backups (a sweep in progress ends first); the copier keeps going until `stopShipping`. */
  stop(): Promise<void> {
    return this.schedule.stop();
  }

  stopShipping(): Promise<void> {
    return this.target.stop();
  }

  /** Copies everything there is now to S3 (for tests and before a planned shutdown); a no-op without a target. */
  flushShipping(): Promise<void> {
    return this.target.flush();
  }

  /** See BackupTarget.shipBeforeStop. */
  shipBeforeStop(deadlineMs: number, progress?: (left: Pending, error?: string) => void): Promise<{ left: string[]; error?: string; writtenElsewhere?: Record<string, string> }> {
    return this.target.shipBeforeStop(deadlineMs, progress);
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

  /**
   * What of the tenant is not in the bucket yet: the files here the copier has
   * not sent, the segments its server has finished and not archived yet, and
   * a base backup being written. Null without a bucket.
   */
  pendingFor(id: string, status: ArchiverStatus | undefined): Pending | null {
    const shipper = this.target.shipper;
    if (!shipper && this.deps.catalog().settings.backupTarget === undefined) return null;
    return pendingOf(shipper?.pending(id) ?? { files: 0, bytes: 0, oldestMs: null }, status, this.taking.inFlightOf(id));
  }

  /** For GET /v1/status: the bucket, and what of every tenant is not in it yet. */
  targetStatus(tenants: readonly { id: string; status: ArchiverStatus | undefined }[]): S3TargetStatus | null {
    const settings = this.deps.catalog().settings;
    if (settings.backupTarget === undefined) return null;
    const pending = sumPending(tenants.map((t) => this.pendingFor(t.id, t.status)));
    const shipper = this.target.shipper;
    return targetStatusOf({ url: shipper?.client.url ?? settings.backupTarget, pending, lastCopiedAt: shipper?.lastShippedAt, failing: shipper?.failing, targetError: this.target.error });
  }

  lastBackupAt(id: string): string | null {
    return this.taking.last(id)?.finishedAt ?? null;
  }

  archiving(tenant: Tenant, status: ArchiverStatus | undefined): { state: ArchivingState; error?: string } {
    const shipper = this.target.shipper;
    return archivingState({
      id: tenant.id,
      generation: tenant.generation,
      targetError: this.target.error,
      url: shipper?.client.url ?? 'S3',
      owner: shipper?.claimedElsewhere(tenant.id),
      pending: this.pendingFor(tenant.id, status),
      shipping: shipper?.failing,
      uncopied: shipper?.pending(tenant.id).files ?? 0,
      gap: this.taking.gap(tenant.id),
      failure: this.taking.failure(tenant.id),
      status,
    });
  }

  async list(id: string): Promise<BackupList & { lastFailure: { at: string; error: string } | null }> {
    assertTenantId(id);
    const tenant = this.deps.catalog().tenants.find((t) => t.id === id);
    if ((await this.backups.generationNames(id)).length === 0) await this.target.hydrate(id);
    const list = await this.backups.describe(id, tenant?.generation);
    if (!tenant && list.backups.length === 0) throw new PgsError('TENANT_NOT_FOUND', `no tenant ${id}, and no backups of one (see "pgs list")`);
    return { ...list, lastFailure: this.taking.failure(id) ?? null };
  }

  // --- an archive that goes ---

  /** After a removal: an archive without a single backup cannot restore anything; it goes with the tenant. */
  async forgetIfEmpty(id: string): Promise<void> {
    if ((await this.backups.list(id)).length > 0) return;
    if ((await this.backups.generationNames(id)).length === 0) return;
    await this.target.shipper?.forget([id]).catch(() => undefined);
    await this.runtime.removeOwned(tenantBackupsDir(this.dataRoot, id));
    this.taking.forget(id, false);
  }

  /** Deletes every backup and the WAL archive of a removed tenant (never of one that exists). */
  async deleteAll(id: string): Promise<void> {
    assertTenantId(id);
    if (this.deps.catalog().tenants.some((t) => t.id === id) || this.reserved.has(id)) {
      throw new PgsError('INVALID_STATE', `tenant ${id} exists: its backups go with retention ("pgs config ${id} --retain N"), or when it is removed and they are deleted`);
    }
    if ((await this.backups.generationNames(id)).length === 0) await this.target.hydrate(id);
    if ((await this.backups.generationNames(id)).length === 0) throw new PgsError('BACKUP_NOT_FOUND', `there are no backups of ${id}`);
    await this.target.shipper?.forget([id]);
    await this.runtime.removeOwned(tenantBackupsDir(this.dataRoot, id));
    this.taking.forget(id, true);
    this.deps.log.info('backups deleted', { tenant: id });
  }

  // --- backups, restores, copies, moves: see their parts ---

  /** Takes a backup now: online when the server runs; from its files, without waking it, when not. */
  backupNow(id: string, reason: string, progress?: Progress): Promise<BackupMeta> {
    return this.taking.backupNow(id, reason, progress);
  }

  /** Runs the backups that are due, a few at a time, in the background. */
  tick(): void {
    this.schedule.tick();
  }

  restoreInPlace(id: string, choice: { backup?: string; time?: Date }, progress?: Progress): Promise<MadeTenant> {
    return this.restores.restoreInPlace(id, choice, progress);
  }

  settleRestores(): Promise<void> {
    return this.restores.settleRestores();
  }

  restoreAs(source: string, newId: string, choice: { backup?: string; time?: Date }, reason: string, progress?: Progress): Promise<MadeTenant> {
    return this.copies.restoreAs(source, newId, choice, reason, progress);
  }

  branch(source: string, newId: string, at: Date | undefined, progress?: Progress): Promise<MadeTenant> {
    return this.copies.branch(source, newId, at, progress);
  }

  exportTenant(id: string, progress?: Progress): Promise<{ name: string; bytes: number; sha256: string }> {
    return this.exports.exportTenant(id, progress);
  }

  exportFile(name: string): string {
    return this.exports.exportFile(name);
  }

  importUploadFile(body: Readable, limit: ImportLimit): Promise<string> {
    return this.exports.importUploadFile(body, limit);
  }

  importFile(file: string, as: string | undefined, progress?: Progress): Promise<MadeTenant> {
    return this.exports.importFile(file, as, progress);
  }
}
