import { statSync } from 'node:fs';
import path from 'node:path';
import type { Progress } from '../api/routes.js';
import { assertTenantId } from '../catalog/ids.js';
import type { Tenant } from '../catalog/schema.js';
import type { BackupMeta } from '../backup/layout.js';
import type { Backups } from '../service/backups.js';
import { findTenant } from '../service/pgs.js';
import type { BackupPlaneDeps } from './backup-deps.js';
import type { BackupTarget } from './backup-target.js';
import type { InFlight } from './archiving-state.js';

/**
 * Taking a base backup, and what the daemon remembers of each tenant's
 * backups since it started: the last one, the last failure, a gap found in
 * its archive, the one being written now. Retention follows each backup.
 */
export class BackupTaking {
  private readonly deps: BackupPlaneDeps;
  private readonly backups: Backups;
  private readonly target: BackupTarget;
  private readonly lastBackup = new Map<string, BackupMeta>();
  private readonly failures = new Map<string, { at: string; error: string }>();
  private readonly gaps = new Map<string, string>();
  /** Base backups being written now, by tenant: their folder and start (what is not in the bucket yet). */
  private readonly inFlight = new Map<string, { dir: string; startedMs: number }>();

  constructor(deps: BackupPlaneDeps, backups: Backups, target: BackupTarget) {
    this.deps = deps;
    this.backups = backups;
    this.target = target;
  }

  /** The tenant's newest backup this daemon knows of. */
  last(id: string): BackupMeta | undefined {
    return this.lastBackup.get(id);
  }

  /** At daemon start: the newest backup found on disk. */
  remember(id: string, meta: BackupMeta): void {
    this.lastBackup.set(id, meta);
  }

  failure(id: string): { at: string; error: string } | undefined {
    return this.failures.get(id);
  }

  gap(id: string): string | undefined {
    return this.gaps.get(id);
  }

  /** A restore began a new generation: the old one's gap is no longer the tenant's. */
  clearGap(id: string): void {
    this.gaps.delete(id);
  }

  /** The base backup being written now, with the size of its tar so far. */
  inFlightOf(id: string): InFlight | undefined {
    const flight = this.inFlight.get(id);
    if (!flight) return undefined;
    let bytes = 0;
    try {
      bytes = statSync(path.join(flight.dir, 'base.tar')).size;
    } catch {
      bytes = 0;
    }
    return { bytes, startedMs: flight.startedMs };
  }

  /** Its archive is gone: nothing of its backups is remembered (`all`), or only its last backup. */
  forget(id: string, all: boolean): void {
    this.lastBackup.delete(id);
    if (!all) return;
    this.failures.delete(id);
    this.gaps.delete(id);
  }

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

  /** The first backup of a new generation, so that its restorable window starts now. */
  backupSoon(tenant: Tenant): void {
    void this.backupNow(tenant.id, 'first').catch(() => undefined);
  }

  /** Must run inside a hold of the tenant. */
  async take(tenant: Tenant, reason: string, note?: string): Promise<BackupMeta> {
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
      const shipper = this.target.shipper;
      if (shipper) {
        if (pruned.removed.length > 0) await shipper.forget(pruned.removed).catch((err: Error) => this.deps.log.warn('could not delete old backups from S3', { tenant: tenant.id, error: err.message }));
        shipper.kick();
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
}
