import { createHash } from 'node:crypto';
import type { Tenant } from '../catalog/schema.js';
import { DEFAULT_BACKUP_SCHEDULE } from '../catalog/schema.js';
import { forEachLimit } from '../core/limit.js';
import type { BackupMeta } from '../backup/layout.js';
import type { BackupPlaneDeps } from './backup-deps.js';
import type { BackupTaking } from './backup-taking.js';

const SCHEDULE_TICK_MS = 30_000;
/** A new tenant's first scheduled backup: after its first minutes of loading data. */
const FIRST_BACKUP_DELAY_MS = 5 * 60_000;
const PARALLEL_BACKUPS = 2;

/**
 * The scheduled backups: every SCHEDULE_TICK_MS the tenants that are due
 * (backupDue) are backed up, PARALLEL_BACKUPS at a time, in the background;
 * a tenant whose WAL position has not moved since its last backup is skipped.
 */
export class BackupSchedule {
  private readonly deps: BackupPlaneDeps;
  private readonly taking: BackupTaking;
  /** Ids being made by a restore, branch or import: not backed up meanwhile. */
  private readonly reserved: ReadonlySet<string>;
  private readonly lastChecked = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private sweep: Promise<void> | undefined;

  constructor(deps: BackupPlaneDeps, taking: BackupTaking, reserved: ReadonlySet<string>) {
    this.deps = deps;
    this.taking = taking;
    this.reserved = reserved;
  }

  start(): void {
    this.timer = setInterval(() => this.tick(), SCHEDULE_TICK_MS);
    this.timer.unref();
  }

  /** Stops the schedule; a sweep in progress ends first. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.sweep;
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
        const last = this.taking.last(current.id);
        // Nothing written since the last backup (a tenant asleep for days): nothing to back up.
        if (last && last.generation === current.generation && (await this.deps.runtime.walPosition(current.id).catch(() => '')) === last.afterLsn) {
          this.lastChecked.set(current.id, Date.now());
          this.deps.metrics.backups.inc({ result: 'skipped' });
          return;
        }
        await this.taking.take(current, 'scheduled');
      }).catch(() => undefined);
    }).finally(() => { this.sweep = undefined; });
  }

  private isDue(tenant: Tenant, now: number): boolean {
    // A tenant past its hard disk limit runs as a standby: nothing can change until its quota is raised.
    return !this.reserved.has(tenant.id) && tenant.diskState !== 'standby' && backupDue(tenant, this.taking.last(tenant.id), this.lastChecked.get(tenant.id), now);
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
