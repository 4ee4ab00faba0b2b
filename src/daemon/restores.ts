import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Progress } from '../api/routes.js';
import { assertTenantId } from '../catalog/ids.js';
import type { Tenant } from '../catalog/schema.js';
import { generationDir, newStamp, tenantBackupsDir, writeGenerationMeta } from '../backup/layout.js';
import { crashPoint, crashPointSet } from '../core/crash.js';
import { tenantServerSpec } from '../runtime/server-spec.js';
import { recover, type Backups, type RecoverOptions, type RestorePlan } from '../service/backups.js';
import { findTenant } from '../service/pgs.js';
import { FLUSH_TIMEOUT_MS, type BackupPlaneDeps, type MadeTenant } from './backup-deps.js';
import type { BackupTarget } from './backup-target.js';
import type { BackupTaking } from './backup-taking.js';
import { RestoreJournals } from './restore-journal.js';

/**
 * Restores in place: a change of the tenant, run on the daemon's queue and
 * inside its hold. The current state is backed up first; from the journal's
 * write to the catalog's commit a daemon that dies leaves a journal, and the
 * next one finishes or undoes the restore (settleRestores).
 */
export class Restores {
  private readonly deps: BackupPlaneDeps;
  private readonly backups: Backups;
  private readonly target: BackupTarget;
  private readonly taking: BackupTaking;
  private readonly journals: RestoreJournals;
  /** Tenants whose restore settleRestores finished: each gets its first backup once the backups have started. */
  private readonly settled: string[] = [];

  constructor(deps: BackupPlaneDeps, backups: Backups, target: BackupTarget, taking: BackupTaking) {
    this.deps = deps;
    this.backups = backups;
    this.target = target;
    this.taking = taking;
    this.journals = new RestoreJournals(this.dataRoot);
  }

  private get dataRoot(): string {
    return this.deps.catalog().settings.dataRoot;
  }

  /**
   * Restores the tenant in place: keeps a backup of its current state first
   * (listed and restorable), then puts the restored data in place of its
   * data and starts it. Its logins stay as they are now.
   */
  restoreInPlace(id: string, choice: { backup?: string; time?: Date }, progress?: Progress): Promise<MadeTenant> {
    assertTenantId(id);
    const runtime = this.deps.runtime;
    return this.deps.serial(async () => {
      const tenant = findTenant(this.deps.catalog(), id);
      await this.target.hydrate(id);
      await this.backups.plan(id, choice, tenant.generation); // refused here, before anything changes
      return this.deps.supervisor.hold(id, async () => {
        await this.deps.endSessions(id, `tenant ${id} is being restored`);
        // Its data folder is gone (a lost disk, the catalog kept elsewhere): nothing to keep, restore into place.
        if ((await runtime.folderState(id)) === 'none') return this.restoreMissing(tenant, choice, progress);
        const spec = tenantServerSpec(this.dataRoot, tenant);
        let running = (await runtime.status(id, { fresh: true })).state === 'running';
        if (!running) {
          progress?.('starting the current server to keep its state');
          running = await runtime.start(spec).then(() => true, (err: Error) => {
            this.deps.log.warn('the current server does not start; its files are kept as they are', { tenant: id, error: err.message });
            return false;
          });
        }
        let verifier: string | null = null;
        let extraWal: string | undefined;
        progress?.('backing up the current state');
        await this.taking.take(tenant, 'pre-restore', preRestoreNote(choice));
        if (running) {
          verifier = await runtime.tenantVerifier(id);
          await runtime.flushArchive(id, FLUSH_TIMEOUT_MS).catch((err: Error) => this.deps.log.warn('could not archive the last WAL before the restore', { tenant: id, error: err.message }));
          await this.deps.endSessions(id, `tenant ${id} is being restored`);
          await runtime.stop(id);
        } else {
          extraWal = path.join(this.dataRoot, 'backups', id, `.pgwal-${newStamp()}`);
          await runtime.copyWal(id, extraWal);
        }
        try {
          const plan = await this.backups.plan(id, choice, tenant.generation);
          const next: Tenant = { ...tenant, generation: newStamp() };
          const nextSpec = tenantServerSpec(this.dataRoot, next);
          const staging = `.restore-${id}`;
          progress?.(`fetching backup ${plan.backup.id}`);
          await this.target.ensureLocal(plan);
          crashPoint('restore:download');
          progress?.(`unpacking and checking backup ${plan.backup.id}`);
          const folder = await runtime.materialize(staging, plan.backupDir, plan.backup.id, { finished: true });
          crashPoint('restore:extract');
          // From here to the catalog's commit a dead daemon's successor settles the restore (settleRestores).
          await this.journals.write({ format: 1, tenant: id, generation: next.generation as string, hadFolder: true, backup: plan.backup.id, target: plan.target, startedAt: new Date().toISOString() });
          const swap = await runtime.replaceData(id, staging);
          crashPoint('restore:swap');
          let neutralized: string[];
          try {
            progress?.(plan.target === 'immediate' ? 'starting the restored server' : `replaying WAL to ${plan.target}`);
            const taken = await recover(runtime, nextSpec, plan, {
              extraWal, folder, ...this.recoverCrashPoints(id),
              beforeOpen: async () => {
                await runtime.renameDatabase(id, plan.backup.tenant);
                if (verifier !== null) await runtime.setPassword(id, verifier);
              },
            });
            neutralized = [...folder.dropped, ...taken];
            await writeGenerationMeta(runtime, this.dataRoot, next, { tenant: plan.backup.tenant, backup: plan.backup.id, target: plan.target });
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
          if (tenant.wanted !== 'running') await runtime.stop(id);
          else await this.deps.supervisor.noteRunning(id);
          this.taking.clearGap(id);
          this.emitRestored(id, plan, neutralized);
          const restored = findTenant(this.deps.catalog(), id);
          this.taking.backupSoon(restored);
          return { tenant: restored, neutralized };
        } finally {
          if (extraWal !== undefined) await runtime.removeOwned(extraWal).catch(() => undefined);
        }
      });
    });
  }

  /** Restores a tenant whose data folder is gone into its place; its catalog entry stays as it is. Inside its hold. */
  private async restoreMissing(tenant: Tenant, choice: { backup?: string; time?: Date }, progress?: Progress): Promise<MadeTenant> {
    const id = tenant.id;
    const runtime = this.deps.runtime;
    const plan = await this.backups.plan(id, choice, tenant.generation);
    const next: Tenant = { ...tenant, generation: newStamp() };
    progress?.(`fetching backup ${plan.backup.id}`);
    await this.target.ensureLocal(plan);
    progress?.(`unpacking and checking backup ${plan.backup.id}`);
    await this.journals.write({ format: 1, tenant: id, generation: next.generation as string, hadFolder: false, backup: plan.backup.id, target: plan.target, startedAt: new Date().toISOString() });
    let neutralized: string[];
    try {
      const folder = await runtime.materialize(id, plan.backupDir, plan.backup.id, { finished: true });
      progress?.(plan.target === 'immediate' ? 'starting the restored server' : `replaying WAL to ${plan.target}`);
      const taken = await recover(runtime, tenantServerSpec(this.dataRoot, next), plan, { folder, ...this.recoverCrashPoints(id), beforeOpen: () => runtime.renameDatabase(id, plan.backup.tenant) });
      neutralized = [...folder.dropped, ...taken];
      await writeGenerationMeta(runtime, this.dataRoot, next, { tenant: plan.backup.tenant, backup: plan.backup.id, target: plan.target });
      await runtime.writeMeta(id, next);
      await this.deps.pgs.patch(id, { generation: next.generation }); // the commit: last in this block
    } catch (err) {
      await runtime.remove(id).catch(() => undefined);
      await this.forgetGeneration(id, next.generation as string);
      await this.journals.remove(id);
      throw err;
    }
    crashPoint('restore:commit');
    await this.journals.remove(id);
    await this.deps.refresh();
    if (tenant.wanted !== 'running') await runtime.stop(id);
    else await this.deps.supervisor.noteRunning(id);
    this.emitRestored(id, plan, neutralized);
    const restored = findTenant(this.deps.catalog(), id);
    this.taking.backupSoon(restored);
    return { tenant: restored, neutralized };
  }

  /** Crash points inside the restored server's start, for the kill -9 tests (core/crash.ts). */
  private recoverCrashPoints(id: string): Pick<RecoverOptions, 'afterStart' | 'whileStarting'> {
    return {
      afterStart: () => crashPoint('restore:promote'),
      whileStarting: () => {
        if (!crashPointSet('restore:replay')) return;
        // Once the recovering server has written its pid file, the daemon dies under it.
        const pidFile = path.join(this.deps.runtime.dataDir(id), 'postmaster.pid');
        const look = () => void fs.access(pidFile).then(() => crashPoint('restore:replay'), () => setTimeout(look, 2));
        look();
      },
    };
  }

  /** A generation no catalog will name (a restore that failed or was undone): its archive here and in the bucket goes. */
  private async forgetGeneration(id: string, generation: string): Promise<void> {
    await this.deps.runtime.removeOwned(generationDir(this.dataRoot, id, generation)).catch(() => undefined);
    await this.target.shipper?.forget([`${id}/${generation}`]).catch(() => undefined);
  }

  /**
   * At daemon start, before the router listens: every in-place restore that a
   * dead daemon left is finished (the catalog names its generation: only the
   * folder from before goes) or undone (the tenant is as it was before it).
   * What WAL folders restores borrowed (`.pgwal-*`) goes too.
   */
  async settleRestores(): Promise<void> {
    const runtime = this.deps.runtime;
    for (const journal of await this.journals.list()) {
      if ('damaged' in journal) {
        this.deps.log.warn('a restore journal that does not parse is kept ("pgs doctor" lists it)', { file: journal.damaged });
        continue;
      }
      const id = journal.tenant;
      const tenant = this.deps.catalog().tenants.find((t) => t.id === id);
      const committed = tenant !== undefined && tenant.generation === journal.generation;
      const done = await runtime.settleRestore(id, committed ? 'restored' : 'previous', journal.hadFolder);
      if (!committed) await this.forgetGeneration(id, journal.generation);
      await this.journals.remove(id);
      this.deps.events.emit('restored', id, { backup: journal.backup, target: journal.target, ...(committed ? {} : { undone: true, reason: 'the daemon stopped during the restore' }) });
      this.deps.log.warn(committed ? 'finished a restore that a stopped daemon had committed' : 'undid a restore that a stopped daemon left unfinished', { tenant: id, backup: journal.backup, target: journal.target, done });
      if (committed) this.settled.push(id);
    }
    for (const id of await this.backups.tenantsWithBackups()) {
      for (const name of await fs.readdir(tenantBackupsDir(this.dataRoot, id)).catch(() => [] as string[])) {
        if (name.startsWith('.pgwal-')) await runtime.removeOwned(path.join(tenantBackupsDir(this.dataRoot, id), name)).catch(() => undefined);
      }
    }
  }

  /** The tenants settleRestores finished, once: each is given its new generation's first backup, as after any restore. */
  takeSettled(): string[] {
    return this.settled.splice(0);
  }

  private emitRestored(id: string, plan: RestorePlan, neutralized: string[]): void {
    const extra = neutralized.length > 0 ? { neutralized } : {};
    this.deps.events.emit('restored', id, { backup: plan.backup.id, target: plan.target, ...extra });
    this.deps.log.info('restored', { tenant: id, backup: plan.backup.id, target: plan.target, ...extra });
  }
}

/** What a pre-restore backup was taken before: the restore's target as it was asked for. */
export function preRestoreNote(choice: { backup?: string; time?: Date }): string {
  if (choice.time !== undefined) return `before restore to ${choice.time.toISOString()}${choice.backup !== undefined ? ` (from backup ${choice.backup})` : ''}`;
  if (choice.backup !== undefined) return `before restore to backup ${choice.backup}`;
  return 'before restore to the latest point';
}
