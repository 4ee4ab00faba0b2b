/**
 * The health checks of running servers: each gets `SELECT 1` over its socket
 * as the admin role, about every interval (spread by ±10 %), sooner after a
 * failure, and at once after it starts. What the last check found is kept per
 * server process (a restart starts afresh), with the archiver's status it
 * read on the way.
 */
import type { Catalog } from '../catalog/schema.js';
import { forEachLimit } from '../core/limit.js';
import { debugLog, type Log } from '../core/log.js';
import type { ArchiverStatus, TenantRuntime } from '../runtime/runtime.js';

const debug = debugLog('pgs:supervisor');

export type Health = 'ok' | 'failing' | 'unknown';

/** The outcome of the health checks of one server process. */
export interface HealthRecord {
  pid: number;
  health: Exclude<Health, 'unknown'>;
  checkedAt: number;
  failures: number;
  error?: string;
}

/** Each running server answers `SELECT 1` over its socket this often (spread by ±10 %), sooner after a failure. */
export const HEALTH_INTERVAL_MS = 60_000;
const HEALTH_RETRY_MS = 10_000;
/**
 * The check's session is replaced by a new connection this often (60 intervals: an hour by
 * default), which shows that the postmaster still lets clients in. A new backend costs ~30 ms
 * of CPU here: at 1,000 servers, renewing each half hour cost 0.8 % of the two cores.
 */
const HEALTH_SESSION_INTERVALS = 60;
const HEALTH_TIMEOUT_MS = 5_000;
/** Servers checked at the same time. */
const PARALLEL_CHECKS = 4;

export interface HealthDeps {
  runtime: TenantRuntime;
  log: Log;
  catalog: () => Catalog;
  stopping: () => boolean;
  /** Suspended servers are not checked, and a check that fails because one was suspended meanwhile is no failure. */
  isSuspended: (id: string) => boolean;
  intervalMs: number;
}

export class HealthChecks {
  private readonly deps: HealthDeps;
  private readonly records = new Map<string, HealthRecord>();
  private readonly nextCheck = new Map<string, number>();
  private readonly checking = new Map<string, Promise<void>>();
  /** pg_stat_archiver of each running server, read with its health check. */
  private readonly archiver = new Map<string, ArchiverStatus>();
  private sweep: Promise<void> | undefined;

  constructor(deps: HealthDeps) {
    this.deps = deps;
  }

  /** What the last check found of the tenant's server, if it was of process `pid`. */
  current(id: string, pid: number | undefined): HealthRecord | undefined {
    const checked = this.records.get(id);
    return checked !== undefined && checked.pid === pid ? checked : undefined;
  }

  /** What the last health check read of the server's archiver (kept while it is suspended). */
  archiverStatus(id: string): ArchiverStatus | undefined {
    return this.archiver.get(id);
  }

  /**
   * The same, with what waits in the server's archive_status read now: the
   * last check may be a minute old (or older than a suspension that archived
   * everything), and what is left to copy must not be said from it.
   */
  async archiverStatusNow(id: string): Promise<ArchiverStatus | undefined> {
    const known = this.archiver.get(id);
    const { runtime } = this.deps;
    if (!known || !runtime.readyFiles) return known;
    const ready = await runtime.readyFiles(id).catch((e: unknown) => debug(`reading the ready WAL files of ${id}`, e));
    if (!ready) return known;
    const now = { ...known, ...ready };
    if (this.archiver.get(id) === known) this.archiver.set(id, now);
    return now;
  }

  /** The server stopped on purpose: its checks so far say nothing of the next one. */
  stopped(id: string): void {
    this.records.delete(id);
  }

  /** Forgets tenants that are not in `ids` (removed). */
  keepOnly(ids: Set<string>): void {
    for (const map of [this.records, this.nextCheck, this.archiver]) for (const id of map.keys()) if (!ids.has(id)) map.delete(id);
  }

  /** Waits for the sweep in flight. */
  async quiesce(): Promise<void> {
    await this.sweep;
  }

  /**
   * Starts the checks that are due (one sweep at a time, a few checks in
   * flight). A check that fails because the server was stopped or replaced
   * meanwhile is not a failure of the server.
   */
  checkDue(): void {
    if (this.sweep || this.deps.stopping()) return;
    const now = Date.now();
    const due = this.deps.catalog().tenants.filter((t) => t.wanted === 'running' && !this.deps.isSuspended(t.id) && (this.nextCheck.get(t.id) ?? 0) <= now);
    if (due.length === 0) return;
    this.sweep = forEachLimit(due, PARALLEL_CHECKS, (t) => this.check(t.id)).finally(() => { this.sweep = undefined; });
  }

  /**
   * A server just started (a new process: the last check was of another) is
   * checked now rather than at its turn, which can be up to an interval away:
   * until then it would read as unknown.
   */
  async checkStarted(id: string): Promise<void> {
    this.nextCheck.delete(id);
    await this.check(id).catch((e: unknown) => debug(`health check of ${id} after its start`, e));
  }

  /** One check at a time per server: a second caller waits for the one in flight (one kept session each). */
  private check(id: string): Promise<void> {
    const inFlight = this.checking.get(id);
    if (inFlight) return inFlight;
    const check = this.checkOnce(id).finally(() => this.checking.delete(id));
    this.checking.set(id, check);
    return check;
  }

  private async checkOnce(id: string): Promise<void> {
    const { runtime, log, intervalMs } = this.deps;
    const before = await runtime.status(id);
    if (before.state !== 'running' || before.pid === undefined || this.deps.stopping()) return;
    const spread = intervalMs * (0.9 + 0.2 * Math.random());
    try {
      await runtime.check(id, { timeoutMs: HEALTH_TIMEOUT_MS, maxSessionAgeMs: intervalMs * HEALTH_SESSION_INTERVALS });
      const previous = this.records.get(id);
      if (previous?.health === 'failing' && previous.pid === before.pid) log.info('health check passes again', { tenant: id });
      this.records.set(id, { pid: before.pid, health: 'ok', checkedAt: Date.now(), failures: 0 });
      this.nextCheck.set(id, Date.now() + spread);
      const archiver = await runtime.archiverStatus(id).catch((e: unknown) => debug(`reading the archiver status of ${id}`, e));
      if (archiver) this.archiver.set(id, archiver);
    } catch (err) {
      const after = await runtime.status(id);
      if (after.state !== 'running' || after.pid !== before.pid || this.deps.isSuspended(id)) return; // stopped or replaced meanwhile
      const previous = this.records.get(id);
      const failures = (previous?.pid === before.pid ? previous.failures : 0) + 1;
      const error = (err as Error).message.split('\n')[0] ?? '';
      this.records.set(id, { pid: before.pid, health: 'failing', checkedAt: Date.now(), failures, error });
      if (failures === 1 || failures % 10 === 0) log.warn('health check failed', { tenant: id, failures, error });
      this.nextCheck.set(id, Date.now() + Math.min(HEALTH_RETRY_MS, intervalMs));
    }
  }
}
