import type { Log } from '../core/log.js';
import { promises as fs } from 'node:fs';
import type { EventLog } from '../telemetry/events.js';
import { tenantServerSpec } from '../runtime/server-spec.js';
import { DISK_HARD_FACTOR, DISK_WARN_FACTOR, type Catalog, type Tenant } from '../catalog/schema.js';
import { dirBytes } from '../core/files.js';
import { formatBytes } from '../core/size.js';
import type { Router } from '../router/router.js';
import type { TenantRuntime } from '../runtime/runtime.js';
import type { Pgs } from '../service/pgs.js';
import type { Supervisor } from '../supervisor/supervisor.js';
import { diskNotice } from './backends.js';

/** Quotas are checked this often for running tenants (a suspended one cannot grow). */
const CHECK_MS = 10_000;
/** Below this share of free space on the data folder's file system, creates and wakes are refused. */
export const HOST_FREE_MIN = 0.05;

export interface DiskGuardDeps {
  pgs: Pgs;
  runtime: TenantRuntime;
  supervisor: Supervisor;
  router: Router;
  events: EventLog;
  log: Log;
  catalog(): Catalog;
  refresh(): Promise<void>;
  serial<T>(task: () => Promise<T>): Promise<T>;
  stopping(): boolean;
}

export type DiskLevel = 'ok' | 'warning' | 'read-only' | 'standby';

/**
 * Disk quotas. The size of a tenant with a quota (its data folder: data and
 * WAL) is measured every 10 s while its server runs, and once while it does
 * not (it cannot grow then). At 90 % it is warned; at the quota it becomes
 * read-only by default (`default_transaction_read_only`, which a session may
 * lift to delete, as on Supabase) and is writable again below it; 10 % past
 * the quota, where a session kept writing, its server is restarted as a
 * standby with no WAL source, where nothing can be written, until the quota is
 * raised. Sessions are told with a WARNING when it happens and at each login.
 * Also the host: with less than 5 % free on the data folder's file system,
 * creates and wakes are refused before PostgreSQL meets a full disk.
 */
export class DiskGuard {
  private readonly deps: DiskGuardDeps;
  private readonly used = new Map<string, { bytes: number; at: number }>();
  private readonly warned = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private hostFree: { free: number; total: number; at: number } | undefined;

  constructor(deps: DiskGuardDeps) {
    this.deps = deps;
  }

  start(): void {
    this.timer = setInterval(() => void this.check(), CHECK_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** What the tenant's folder took at the last measurement. */
  usedBytes(id: string): number | undefined {
    return this.used.get(id)?.bytes;
  }

  level(tenant: Tenant): DiskLevel | undefined {
    if (tenant.diskBytes === undefined) return undefined;
    if (tenant.diskState) return tenant.diskState;
    const used = this.used.get(tenant.id)?.bytes;
    return used !== undefined && used >= tenant.diskBytes * DISK_WARN_FACTOR ? 'warning' : 'ok';
  }

  /** One pass over the tenants with a quota (or still marked over one); passes never overlap. */
  check(only?: string): Promise<void> {
    if (this.running) return this.running;
    this.running = this.pass(only).catch((err: Error) => this.deps.log.warn('disk quota check failed', { error: err.message })).finally(() => { this.running = undefined; });
    return this.running;
  }

  forget(id: string): void {
    this.used.delete(id);
    this.warned.delete(id);
  }

  private async pass(only?: string): Promise<void> {
    for (const tenant of this.deps.catalog().tenants) {
      if (this.deps.stopping()) return;
      if (only !== undefined && tenant.id !== only) continue;
      if (tenant.diskBytes === undefined && tenant.diskState === undefined) continue;
      const seen = this.used.get(tenant.id);
      const running = (await this.deps.runtime.status(tenant.id)).state === 'running';
      let bytes = seen?.bytes;
      if (running || seen === undefined || only !== undefined) {
        bytes = await dirBytes(this.deps.runtime.dataDir(tenant.id)).catch(() => undefined);
        if (bytes === undefined) continue;
        this.used.set(tenant.id, { bytes, at: Date.now() });
      }
      await this.settle(tenant, bytes as number);
    }
  }

  /** The state a tenant should be in for `bytes`; a standby stays one until it is under its quota (raised). */
  static target(tenant: Tenant, bytes: number): Tenant['diskState'] {
    const quota = tenant.diskBytes;
    if (quota === undefined || bytes < quota) return undefined;
    if (bytes >= quota * DISK_HARD_FACTOR || tenant.diskState === 'standby') return 'standby';
    return 'read-only';
  }

  private async settle(tenant: Tenant, bytes: number): Promise<void> {
    const quota = tenant.diskBytes;
    if (quota !== undefined && bytes >= quota * DISK_WARN_FACTOR && bytes < quota) {
      if (!this.warned.has(tenant.id)) {
        this.warned.add(tenant.id);
        this.deps.log.warn('tenant near its disk quota', { tenant: tenant.id, used: bytes, quota });
        this.deps.events.emit('disk', tenant.id, { state: 'warning', usedBytes: bytes, quotaBytes: quota });
      }
    } else if (quota === undefined || bytes < quota * DISK_WARN_FACTOR) {
      this.warned.delete(tenant.id);
    }
    const target = DiskGuard.target(tenant, bytes);
    if (target === tenant.diskState) return;
    await this.deps.serial(() => this.change(tenant.id, target, bytes));
  }

  private async change(id: string, target: Tenant['diskState'], bytes: number): Promise<void> {
    const current = this.deps.catalog().tenants.find((t) => t.id === id);
    if (!current || current.diskState === target || this.deps.stopping()) return;
    const { after } = await this.deps.pgs.patch(id, { diskState: target ?? null });
    await this.deps.refresh();
    const { runtime, supervisor, router } = this.deps;
    const spec = tenantServerSpec(this.deps.catalog().settings.dataRoot, after);
    const running = (await runtime.status(id, { fresh: true })).state === 'running' && !supervisor.isSuspended(id);
    const quota = after.diskBytes === undefined ? 'none' : formatBytes(after.diskBytes);
    this.deps.log.warn('disk quota', { tenant: id, state: target ?? 'ok', used: bytes, quota });
    this.deps.events.emit('disk', id, { state: target ?? 'ok', usedBytes: bytes, ...(after.diskBytes !== undefined ? { quotaBytes: after.diskBytes } : {}) });
    if (running && (current.diskState === 'standby') !== (target === 'standby')) {
      // Into or out of a standby: a restart (its sessions are told why first).
      const why = target === 'standby' ? diskNotice(after) ?? '' : `tenant ${id} may write again (quota ${quota}): it was restarted`;
      if (router.closeTenant(id, why) > 0) await router.drained(id);
      await supervisor.stopWanted(id);
      await supervisor.startNow(after);
      return;
    }
    // Read-only by default, or not: a reload.
    await runtime.configureArchive(spec);
    const notice = diskNotice(after);
    router.noticeTenant(id, notice ?? `tenant ${id} is under its disk quota (${quota}) again: it is writable`);
  }

  /** Why creates and wakes are refused now (the data folder's disk is nearly full), or undefined. */
  async hostProblem(): Promise<string | undefined> {
    const dataRoot = this.deps.catalog().settings.dataRoot;
    const now = Date.now();
    if (!this.hostFree || now - this.hostFree.at > 5_000) {
      try {
        const stats = await fs.statfs(dataRoot);
        this.hostFree = { free: stats.bavail * stats.bsize, total: stats.blocks * stats.bsize, at: now };
      } catch {
        return undefined;
      }
    }
    const { free, total } = this.hostFree;
    if (total === 0 || free / total >= HOST_FREE_MIN) return undefined;
    return `the disk of ${dataRoot} is nearly full (${formatBytes(free)} free of ${formatBytes(total)}, under 5 %): new tenants and wakes are refused until space is freed`;
  }
}
