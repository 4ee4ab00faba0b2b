import path from 'node:path';
import type { Progress } from '../api/routes.js';
import { assertTenantId } from '../catalog/ids.js';
import type { Tenant } from '../catalog/schema.js';
import { PgsError } from '../core/errors.js';
import { newStamp, writeGenerationMeta } from '../backup/layout.js';
import { tenantServerSpec } from '../runtime/server-spec.js';
import type { TenantServerSpec } from '../runtime/runtime.js';
import { recover, type Backups, type RestorePlan } from '../service/backups.js';
import { findTenant } from '../service/pgs.js';
import { FLUSH_TIMEOUT_MS, type BackupPlaneDeps, type MadeTenant } from './backup-deps.js';
import type { BackupTarget } from './backup-target.js';
import type { BackupTaking } from './backup-taking.js';

/**
 * New tenants made from another's data: a restore as a new id (the source may
 * be a removed tenant whose backups remain), a branch, and (for imports) a
 * tenant from any restore plan. The new id is reserved while it is made, and
 * takes the daemon's queue only to be added to the catalog; nothing remains
 * of it if a step fails.
 */
export class TenantCopies {
  private readonly deps: BackupPlaneDeps;
  private readonly backups: Backups;
  private readonly target: BackupTarget;
  private readonly taking: BackupTaking;
  /** Ids being made by a restore, branch or import: a create of the same id is refused meanwhile. */
  readonly reserved = new Set<string>();

  constructor(deps: BackupPlaneDeps, backups: Backups, target: BackupTarget, taking: BackupTaking) {
    this.deps = deps;
    this.backups = backups;
    this.target = target;
    this.taking = taking;
  }

  private get dataRoot(): string {
    return this.deps.catalog().settings.dataRoot;
  }

  private assertFree(id: string): void {
    if (this.deps.catalog().tenants.some((t) => t.id === id) || this.reserved.has(id)) throw new PgsError('TENANT_EXISTS', `tenant ${id} already exists`);
  }

  /** Keeps `id` for one restore until the returned function is called. */
  async reserve(id: string): Promise<() => void> {
    this.assertFree(id);
    const folder = await this.deps.runtime.folderState(id);
    if (folder === 'finished') throw new PgsError('ORPHAN_DATA', `a data folder for ${id} exists that the catalog does not name (${this.deps.runtime.dataDir(id)}): "pgs doctor --fix" adopts it back, or move it away first`);
    this.reserved.add(id);
    if (folder === 'unfinished') await this.deps.runtime.remove(id);
    return () => this.reserved.delete(id);
  }

  /**
   * A new tenant `newId` from `source`'s backups (the source may be a removed
   * tenant whose backups remain): at a time, from a backup, or at the latest
   * point. The source is not touched.
   */
  async restoreAs(source: string, newId: string, choice: { backup?: string; time?: Date }, reason: string, progress?: Progress): Promise<MadeTenant> {
    assertTenantId(source);
    assertTenantId(newId);
    const runtime = this.deps.runtime;
    const src = this.deps.catalog().tenants.find((t) => t.id === source);
    await this.target.hydrate(source);
    await this.backups.plan(source, choice, src?.generation); // refused here, before anything is made
    const release = await this.reserve(newId);
    let extraWal: string | undefined;
    try {
      if (src && choice.backup === undefined) {
        // Everything the source wrote up to now must be in reach: archived, or copied from a stopped server.
        await this.deps.supervisor.hold(source, async () => {
          if ((await runtime.status(source, { fresh: true })).state === 'running') {
            await runtime.flushArchive(source, FLUSH_TIMEOUT_MS).catch((err: Error) => this.deps.log.warn('could not archive the last WAL', { tenant: source, error: err.message }));
          } else {
            extraWal = path.join(this.dataRoot, 'backups', source, `.pgwal-${newStamp()}`);
            await runtime.copyWal(source, extraWal);
          }
        });
      }
      const plan = await this.backups.plan(source, choice, src?.generation);
      progress?.(`fetching backup ${plan.backup.id}`);
      await this.target.ensureLocal(plan);
      return await this.makeFrom(newId, plan, plan.backup.tenantEntry, reason, extraWal, progress);
    } finally {
      if (extraWal !== undefined) await runtime.removeOwned(extraWal).catch(() => undefined);
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
    const runtime = this.deps.runtime;
    const src = findTenant(this.deps.catalog(), source);
    if (at !== undefined) return this.restoreAs(source, newId, { time: at }, 'branch', progress);
    const release = await this.reserve(newId);
    try {
      const now = new Date().toISOString();
      return await this.makeTenant(newId, src, 'branch', { tenant: source, backup: 'clone', target: now }, async (spec) => {
        progress?.(`copying ${source}`);
        // Held: not suspended while its backup streams, not woken while its files are copied.
        const { online } = await this.deps.supervisor.hold(source, () => runtime.clone(source, newId));
        progress?.('starting the new server');
        if (online) return recover(runtime, spec, { walDir: '', target: 'immediate' }, { beforeOpen: () => runtime.renameDatabase(newId, source) });
        await runtime.start(spec);
        await runtime.renameDatabase(newId, source);
        return [];
      });
    } finally {
      release();
    }
  }

  /** Makes tenant `newId` from a plan (its folder, its server replayed, its catalog entry); nothing remains if it fails. */
  makeFrom(newId: string, plan: RestorePlan, from: Tenant, reason: string, extraWal: string | undefined, progress?: Progress): Promise<MadeTenant> {
    const runtime = this.deps.runtime;
    return this.makeTenant(newId, from, reason, { tenant: plan.backup.tenant, backup: plan.backup.id, target: plan.target }, async (spec) => {
      progress?.(`unpacking and checking backup ${plan.backup.id}`);
      const folder = await runtime.materialize(newId, plan.backupDir, plan.backup.id, { finished: false });
      progress?.(plan.target === 'immediate' ? 'starting the new server' : `replaying WAL to ${plan.target}`);
      const taken = await recover(runtime, spec, plan, { extraWal, folder, beforeOpen: () => runtime.renameDatabase(newId, plan.backup.tenant) });
      return [...folder.dropped, ...taken];
    });
  }

  /**
   * Makes tenant `newId` with `from`'s settings: `build` makes its folder and starts its server,
   * then its database gets its name, its generation a record, and the catalog the tenant.
   * Nothing remains if any step fails.
   */
  private async makeTenant(newId: string, from: Tenant, reason: string, origin: { tenant: string; backup: string; target: string }, build: (spec: TenantServerSpec) => Promise<string[]>): Promise<MadeTenant> {
    const entry = copyEntry(newId, from, newStamp());
    const spec = tenantServerSpec(this.dataRoot, { ...entry, suffix: 'aaaaaa', createdAt: new Date().toISOString() });
    try {
      const neutralized = await build(spec);
      await writeGenerationMeta(this.deps.runtime, this.dataRoot, entry, origin);
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
      if (from.id === newId) {
        // Back under its own id: this host is the one that writes its archive in the bucket from now on.
        const note = await this.target.takeOver(newId);
        if (note !== undefined) notes.push(note);
      }
      this.taking.backupSoon(tenant); // its restorable window starts now, not at the first scheduled backup
      return { tenant, neutralized, ...(notes.length > 0 ? { notes } : {}) };
    } catch (err) {
      if (!this.deps.catalog().tenants.some((t) => t.id === newId)) await this.deps.runtime.remove(newId).catch(() => undefined);
      throw err;
    }
  }
}

/**
 * The catalog entry of a tenant made from `from` under `newId`, in a new
 * generation. Its settings come along: how clients share it, its limits, its
 * backups. Access too when it comes back under its own id (a disabled tenant
 * stays disabled); a copy under a new id starts enabled.
 */
export function copyEntry(newId: string, from: Tenant, generation: string): Omit<Tenant, 'suffix' | 'createdAt'> {
  return {
    id: newId,
    access: from.id === newId ? from.access : 'enabled',
    wanted: 'running',
    maxConnections: from.maxConnections,
    generation,
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
}
