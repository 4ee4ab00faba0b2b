import type { Log } from '../core/log.js';
import type { DaemonMetrics, TenantSample } from '../telemetry/metrics.js';
import type { EventLog } from '../telemetry/events.js';
import type { SampledState } from '../telemetry/history.js';
import type { Catalog, Tenant } from '../catalog/schema.js';
import { DEFAULT_AUTOSUSPEND_SECONDS } from '../catalog/schema.js';
import { PgsError } from '../core/errors.js';
import { dirBytes } from '../core/files.js';
import { forEachLimit } from '../core/limit.js';
import { BackendUnavailable } from '../router/router.js';
import type { ArchiverStatus, TenantRuntime } from '../runtime/runtime.js';
import { tenantServerSpec } from '../runtime/server-spec.js';
import { runningBudget } from './budget.js';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * The supervisor: makes what runs match what the catalog wants, and keeps
 * what it learns on the way. It restarts servers that die (at once, then
 * with back-off), checks their health, suspends idle ones and wakes them for
 * a client, and sizes their folders. The daemon calls it from its one queue
 * of changes; it never writes the catalog.
 */
export type Health = 'ok' | 'failing' | 'unknown';

export interface TenantStatus {
  id: string;
  state: SampledState;
  /** The postmaster's pid, null when no server runs. */
  pid: number | null;
  /** When the running server started (ISO), null when none runs. */
  serverStartedAt: string | null;
  /** Client connections through the router now. */
  connections: number;
  /** The last health check of the running server: a real query over its socket. */
  health: Health;
  healthCheckedAt: string | null;
  healthError?: string;
  restarts: number;
  wakes: number;
  lastError?: string;
}

/** The outcome of the health checks of one server process (a restart starts afresh). */
interface HealthRecord {
  pid: number;
  health: Exclude<Health, 'unknown'>;
  checkedAt: number;
  failures: number;
  error?: string;
}

/** Restart attempts of one tenant's server: back-off doubles from 1 s up to 60 s. */
interface Backoff {
  failures: number;
  restarts: number;
  nextAttemptAt: number;
  lastError?: string;
}

/** What the supervisor needs of the router: connection counts, and closing a tenant's sessions. */
export interface RouterView {
  connectionCount(id?: string): number;
  /** When a client connection to the tenant last opened or closed (ms), if ever since the router started. */
  lastUsed(id: string): number | undefined;
  closeTenant(id: string, message?: string): number;
  /** Idle server sessions the router keeps for the tenant: sessions on its server, but no activity. */
  idleServerSessions(id: string): number;
  /** Closes them (before the server stops). */
  dropServerSessions(id: string): number;
}

export interface SupervisorDeps {
  runtime: TenantRuntime;
  router: RouterView;
  metrics: DaemonMetrics;
  events: EventLog;
  log: Log;
  /** The catalog as the daemon has it now. */
  catalog: () => Catalog;
  /** True once the daemon is stopping: nothing new is started. */
  stopping: () => boolean;
  healthIntervalMs: number;
  /** Why no tenant may be woken now (the host's disk is nearly full), or undefined. */
  wakeProblem?: () => Promise<string | undefined>;
}

/** After this many failed starts in a row a tenant shows as `crashed` (attempts go on, slowly). */
const CRASHED_AFTER = 3;
/** A woken server must accept connections within this, or the waiting clients get 57P03. */
const WAKE_TIMEOUT_MS = 15_000;
/** A wake beyond the running budget waits this long for a slot (the router's start-up time-out) before 53300. */
const BUDGET_WAIT_MS = 10_000;
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
/** Servers started, suspended or checked at the same time: enough to use both cores, few enough to keep the router answering. */
const PARALLEL_STARTS = 4;
const PARALLEL_SUSPENDS = 4;
const PARALLEL_CHECKS = 4;
/** Wake durations kept for the last hour's percentiles. */
const WAKE_TIMES_KEPT = 10_000;
/** Data folder sizes: the first sweep soon after start, then each minute; a running server's folder at most every 10 min. */
const SIZE_FIRST_MS = 5_000;
const SIZE_SWEEP_MS = 60_000;
const SIZE_INTERVAL_MS = 10 * 60_000;

export class Supervisor {
  private readonly runtime: TenantRuntime;
  private readonly router: RouterView;
  private readonly metrics: DaemonMetrics;
  private readonly events: EventLog;
  private readonly log: Log;
  private readonly deps: SupervisorDeps;
  private readonly healthIntervalMs: number;
  private readonly backoff = new Map<string, Backoff>();
  /** Servers stopped for being idle (or on request): the next connection wakes them. */
  private readonly suspended = new Set<string>();
  private readonly idleSince = new Map<string, number>();
  private readonly waking = new Map<string, Promise<boolean>>();
  /** Suspends in progress: a wake waits for the stop to finish before it starts the server again. */
  private readonly suspending = new Map<string, Promise<void>>();
  private readonly health = new Map<string, HealthRecord>();
  private readonly nextCheck = new Map<string, number>();
  private readonly checking = new Map<string, Promise<void>>();
  private healthSweep: Promise<void> | undefined;
  private readonly wakes = new Map<string, number>();
  /** Last moment (ms) each tenant had a client connection through the router, as seen each second. */
  private readonly lastActive = new Map<string, number>();
  /** Recent wakes and how long each took, oldest first (the last hour, at most WAKE_TIMES_KEPT). */
  private readonly wakeTimes: { at: number; seconds: number }[] = [];
  /** Data folder sizes, measured in the background; re-measured after a tenant ran. */
  private readonly dataBytes = new Map<string, { bytes: number; at: number }>();
  private sizeSweep: NodeJS.Timeout | undefined;
  /** pg_stat_archiver of each running server, read with its health check. */
  private readonly archiver = new Map<string, ArchiverStatus>();
  /** Work on a tenant's files (a backup of a stopped server) that a wake or a restart waits for. */
  private readonly holds = new Map<string, Promise<unknown>>();
  /** Tenants seen running: finding one stopped while still wanted means it died. */
  private readonly seenRunning = new Set<string>();

  constructor(deps: SupervisorDeps) {
    this.deps = deps;
    this.runtime = deps.runtime;
    this.router = deps.router;
    this.metrics = deps.metrics;
    this.events = deps.events;
    this.log = deps.log;
    this.healthIntervalMs = deps.healthIntervalMs;
  }

  private get catalog(): Catalog {
    return this.deps.catalog();
  }

  private get isStopping(): boolean {
    return this.deps.stopping();
  }

  /** A person acted: failed tenants are tried again at the next reconcile, not after their back-off. */
  retryNow(id?: string): void {
    for (const [key, backoff] of this.backoff) if (id === undefined || key === id) backoff.nextAttemptAt = 0;
  }

  isSuspended(id: string): boolean {
    return this.suspended.has(id);
  }

  /** The tenant's server runs because a person made it so (create, restore, password change); its health is checked at once. */
  async noteRunning(id: string): Promise<void> {
    this.seenRunning.add(id);
    this.suspended.delete(id);
    await this.checkStarted(id);
  }

  /** Its autosuspend changed: the idle time counts afresh. */
  resetIdle(id: string): void {
    this.idleSince.delete(id);
  }

  /**
   * Runs `task` while the tenant's server is kept as it is: not suspended when
   * idle, not started by a wake or a restart until the task ends (those wait).
   * Holds on one tenant run one after another.
   */
  hold<T>(id: string, task: () => Promise<T>): Promise<T> {
    const before = this.holds.get(id) ?? Promise.resolve();
    const run = before.catch(() => undefined).then(async () => {
      await this.waking.get(id)?.catch(() => undefined);
      await this.suspending.get(id)?.catch(() => undefined);
      return task();
    });
    const settled = run.catch(() => undefined).finally(() => {
      if (this.holds.get(id) === settled) this.holds.delete(id);
    });
    this.holds.set(id, settled);
    return run;
  }

  isHeld(id: string): boolean {
    return this.holds.has(id);
  }

  /** What the last health check read of the server's archiver (kept while it is suspended). */
  archiverStatus(id: string): ArchiverStatus | undefined {
    return this.archiver.get(id);
  }

  /** Waits for a wake or a suspend of the tenant in flight. */
  async settle(id: string): Promise<void> {
    await this.waking.get(id)?.catch(() => undefined);
    await this.suspending.get(id)?.catch(() => undefined);
  }

  /** For the daemon's stop: waits for health checks, wakes and suspends in flight. */
  async quiesce(): Promise<void> {
    clearTimeout(this.sizeSweep);
    await this.healthSweep;
    await Promise.all([...this.waking.values(), ...this.suspending.values()].map((p) => p.catch(() => undefined)));
  }

  startSizing(): void {
    this.sizeSweep = setTimeout(() => void this.measureSizes(), SIZE_FIRST_MS);
  }

  async stopWanted(id: string): Promise<void> {
    await this.waking.get(id)?.catch(() => undefined);
    await this.suspending.get(id)?.catch(() => undefined);
    this.suspended.delete(id);
    this.seenRunning.delete(id);
    this.idleSince.delete(id);
    this.health.delete(id);
    try {
      await this.runtime.stop(id);
      this.dataBytes.delete(id); // measure again: it ran
    } catch (err) {
      this.log.warn('stop failed', { tenant: id, error: (err as Error).message });
      throw err;
    }
  }

  async reconcile(): Promise<void> {
    const ids = new Set(this.catalog.tenants.map((t) => t.id));
    for (const map of [this.backoff, this.health, this.nextCheck, this.lastActive, this.wakes, this.dataBytes, this.archiver]) for (const id of map.keys()) if (!ids.has(id)) map.delete(id);
    for (const id of this.seenRunning) if (!ids.has(id)) this.seenRunning.delete(id);
    const toStart: Tenant[] = [];
    const now = Date.now();
    for (const tenant of this.catalog.tenants) {
      if (this.isStopping) return;
      if (this.router.connectionCount(tenant.id) > 0) this.lastActive.set(tenant.id, now);
      if (tenant.wanted !== 'running') {
        this.backoff.delete(tenant.id);
        this.seenRunning.delete(tenant.id);
        this.suspended.delete(tenant.id);
        continue;
      }
      if (this.suspended.has(tenant.id) || this.waking.has(tenant.id) || this.holds.has(tenant.id)) continue;
      const state = (await this.runtime.status(tenant.id)).state;
      if (state !== 'stopped') {
        this.seenRunning.add(tenant.id);
        if (state === 'running') await this.suspendIfIdle(tenant.id, tenant.autosuspendSeconds);
        continue;
      }
      if (Date.now() >= (this.backoff.get(tenant.id)?.nextAttemptAt ?? 0)) toStart.push(tenant);
    }
    // After a reboot every tenant wants a start: a few at a time, not 1,000 in a row.
    await forEachLimit(toStart, PARALLEL_STARTS, (tenant) => this.startSupervised(tenant));
  }

  private async startSupervised(tenant: Tenant): Promise<void> {
    if (this.isStopping) return;
    const backoff = this.backoff.get(tenant.id) ?? { failures: 0, restarts: 0, nextAttemptAt: 0 };
    try {
      await this.runtime.start(tenantServerSpec(this.catalog.settings.dataRoot, tenant));
      if (this.seenRunning.has(tenant.id)) {
        backoff.restarts++;
        this.metrics.restarts.inc();
        this.log.warn('server restarted', { tenant: tenant.id, restarts: backoff.restarts });
      }
      this.seenRunning.add(tenant.id);
      backoff.failures = 0;
      backoff.lastError = undefined;
      await this.checkStarted(tenant.id);
      this.events.emit('state', tenant.id, { state: 'running' });
    } catch (err) {
      backoff.failures++;
      backoff.lastError = (err as Error).message;
      backoff.nextAttemptAt = Date.now() + Math.min(60_000, 1_000 * 2 ** (backoff.failures - 1));
      this.log.warn('start failed', { tenant: tenant.id, failures: backoff.failures, error: backoff.lastError });
      if (backoff.failures === CRASHED_AFTER) this.events.emit('state', tenant.id, { state: 'crashed', reason: backoff.lastError });
    }
    this.backoff.set(tenant.id, backoff);
  }

  /**
   * Starts the health checks that are due (one sweep at a time, a few checks
   * in flight): each running server gets `SELECT 1` over its socket as the
   * admin role. A check that fails because the server was stopped or replaced
   * meanwhile is not a failure of the server.
   */
  checkHealthDue(): void {
    if (this.healthSweep || this.isStopping) return;
    const now = Date.now();
    const due = this.catalog.tenants.filter((t) => t.wanted === 'running' && !this.suspended.has(t.id) && (this.nextCheck.get(t.id) ?? 0) <= now);
    if (due.length === 0) return;
    this.healthSweep = forEachLimit(due, PARALLEL_CHECKS, (t) => this.checkHealth(t.id)).finally(() => { this.healthSweep = undefined; });
  }

  /**
   * A server just started (a new process: the last check was of another) is
   * checked now rather than at its turn, which can be up to an interval away:
   * until then it would read as unknown.
   */
  private async checkStarted(id: string): Promise<void> {
    this.nextCheck.delete(id);
    await this.checkHealth(id).catch(() => undefined);
  }

  /** One check at a time per server: a second caller waits for the one in flight (one kept session each). */
  private checkHealth(id: string): Promise<void> {
    const inFlight = this.checking.get(id);
    if (inFlight) return inFlight;
    const check = this.checkHealthOnce(id).finally(() => this.checking.delete(id));
    this.checking.set(id, check);
    return check;
  }

  private async checkHealthOnce(id: string): Promise<void> {
    const before = await this.runtime.status(id);
    if (before.state !== 'running' || before.pid === undefined || this.isStopping) return;
    const spread = this.healthIntervalMs * (0.9 + 0.2 * Math.random());
    try {
      await this.runtime.check(id, { timeoutMs: HEALTH_TIMEOUT_MS, maxSessionAgeMs: this.healthIntervalMs * HEALTH_SESSION_INTERVALS });
      const previous = this.health.get(id);
      if (previous?.health === 'failing' && previous.pid === before.pid) this.log.info('health check passes again', { tenant: id });
      this.health.set(id, { pid: before.pid, health: 'ok', checkedAt: Date.now(), failures: 0 });
      this.nextCheck.set(id, Date.now() + spread);
      const archiver = await this.runtime.archiverStatus(id).catch(() => undefined);
      if (archiver) this.archiver.set(id, archiver);
    } catch (err) {
      const after = await this.runtime.status(id);
      if (after.state !== 'running' || after.pid !== before.pid || this.suspended.has(id)) return; // stopped or replaced meanwhile
      const previous = this.health.get(id);
      const failures = (previous?.pid === before.pid ? previous.failures : 0) + 1;
      const error = (err as Error).message.split('\n')[0] ?? '';
      this.health.set(id, { pid: before.pid, health: 'failing', checkedAt: Date.now(), failures, error });
      if (failures === 1 || failures % 10 === 0) this.log.warn('health check failed', { tenant: id, failures, error });
      this.nextCheck.set(id, Date.now() + Math.min(HEALTH_RETRY_MS, this.healthIntervalMs));
    }
  }

  /** Stops a server that has had no client connection through the router for its autosuspend time. */
  private async suspendIfIdle(id: string, autosuspendSeconds: number | null | undefined): Promise<void> {
    const seconds = autosuspendSeconds === undefined ? DEFAULT_AUTOSUSPEND_SECONDS : autosuspendSeconds;
    if (seconds === null || this.router.connectionCount(id) > 0 || this.holds.has(id)) {
      this.idleSince.delete(id);
      return;
    }
    const since = this.idleSince.get(id) ?? Date.now();
    this.idleSince.set(id, since);
    if (Date.now() - since < seconds * 1000) return;
    if (this.suspending.size >= PARALLEL_SUSPENDS) return; // the next second's reconcile takes it
    // Sessions over the local socket (administration, `pgs url --local`) count too; the router's idle kept ones do not.
    if ((await this.runtime.clientSessions(id)) - this.router.idleServerSessions(id) > 0) {
      this.idleSince.set(id, Date.now());
      this.lastActive.set(id, Date.now());
      return;
    }
    // A client admitted while /proc was read: not idle after all. From here
    // to suspended.add nothing awaits, so no client slips in between; one
    // that comes after waits for a wake, which waits for this stop.
    if (this.router.connectionCount(id) > 0 || this.isStopping) {
      this.idleSince.delete(id);
      return;
    }
    // In the background, so that a thousand tenants going idle together do not
    // hold up the queue for minutes; wake and stop wait for it.
    void this.suspendNow(id, `idle for ${seconds} s`).catch(() => undefined);
  }

  /** Stops the server and marks it suspended; its next connection (or a wake) starts it again. */
  suspendNow(id: string, reason: string): Promise<void> {
    this.suspended.add(id);
    this.seenRunning.delete(id);
    this.idleSince.delete(id);
    this.router.dropServerSessions(id); // closed before the server is asked to stop
    const stopped = this.runtime.stop(id)
      .then(() => {
        this.metrics.suspends.inc();
        this.dataBytes.delete(id);
        this.log.info('suspended', { tenant: id, reason });
        this.events.emit('state', id, { state: 'suspended', reason });
      })
      .catch((err: Error) => {
        this.suspended.delete(id); // still running: supervised as before, tried again when idle
        this.log.warn('suspend failed', { tenant: id, error: err.message });
        throw err;
      })
      .finally(() => this.suspending.delete(id));
    this.suspending.set(id, stopped);
    return stopped;
  }

  /** Servers that may run at once (spares included). */
  get budget(): number {
    return runningBudget(this.catalog.settings.maxRunning);
  }

  /** Servers running or being woken now: tenants' (not suspended, seen running or waking) and spares. */
  runningCount(): number {
    let n = this.runtime.runningSpares();
    for (const t of this.catalog.tenants) {
      if (t.wanted === 'running' && !this.suspended.has(t.id) && this.seenRunning.has(t.id)) n++;
    }
    for (const id of this.waking.keys()) if (this.suspended.has(id)) n++; // a wake in flight holds its slot
    return n;
  }

  /**
   * Before a wake: while the budget is spent, suspend the idle tenant unused the
   * longest (no client through the router or on its socket, autosuspend not off,
   * no backup holding it). With none idle, wait for a slot up to BUDGET_WAIT_MS,
   * then refuse with 53300.
   */
  private async makeRoom(id: string): Promise<void> {
    const deadline = Date.now() + BUDGET_WAIT_MS;
    let waited = false;
    while (this.runningCount() > this.budget) {
      if (Date.now() >= deadline || this.isStopping) {
        this.metrics.budgetRefusals.inc();
        throw new BackendUnavailable(`too many tenants running on this host (at most ${this.budget}, none idle)`, 'too_many_connections');
      }
      const victim = await this.leastRecentlyUsedIdle(id);
      if (victim && this.runningCount() > this.budget) {
        // A suspend that fails leaves the victim running: the deadline above still ends the loop.
        await this.suspendNow(victim, `making room for ${id}: at most ${this.budget} servers run at once`).catch(() => undefined);
        continue;
      }
      if (!waited) this.log.info('waiting for a running slot', { tenant: id, running: this.runningCount() - 1, budget: this.budget });
      waited = true;
      await sleep(100);
    }
  }

  private async leastRecentlyUsedIdle(except: string): Promise<string | undefined> {
    const idle = (t: Tenant) => t.id !== except && t.wanted === 'running' && t.autosuspendSeconds !== null && !this.suspended.has(t.id)
      && !this.waking.has(t.id) && !this.holds.has(t.id) && this.seenRunning.has(t.id) && this.router.connectionCount(t.id) === 0;
    const used = (id: string) => Math.max(this.lastActive.get(id) ?? 0, this.router.lastUsed(id) ?? 0);
    const candidates = this.catalog.tenants.filter(idle).sort((a, b) => used(a.id) - used(b.id));
    for (const t of candidates.slice(0, 8)) {
      // Sessions over the local socket count as use too.
      if ((await this.runtime.clientSessions(t.id).catch(() => 1)) - this.router.idleServerSessions(t.id) > 0) continue;
      if (idle(t)) return t.id;
    }
    return undefined;
  }

  /** Starts a suspended server for a waiting client; concurrent callers share one start. */
  wake(id: string): Promise<boolean> {
    if (!this.suspended.has(id) || this.isStopping) return Promise.resolve(false);
    const running = this.waking.get(id);
    if (running) return running;
    const tenant = this.catalog.tenants.find((t) => t.id === id);
    if (!tenant) return Promise.resolve(false);
    const started = performance.now();
    const attempt = (async () => {
      let timer: NodeJS.Timeout | undefined;
      await this.suspending.get(id)?.catch(() => undefined);
      await this.holds.get(id); // a backup of its files ends first
      // Meanwhile a stop or a remove may have taken the tenant out of suspension: nothing to wake
      // (the router then finds it not running and says so).
      const now = this.catalog.tenants.find((t) => t.id === id);
      if (!this.suspended.has(id) || now?.wanted !== 'running' || this.isStopping) return false;
      const problem = await this.deps.wakeProblem?.();
      if (problem) throw new BackendUnavailable(`tenant ${id} cannot be woken: ${problem}`, 'disk_full');
      await this.makeRoom(id);
      if (!this.suspended.has(id) || this.isStopping) return false;
      try {
        await Promise.race([
          this.runtime.start(tenantServerSpec(this.catalog.settings.dataRoot, now)),
          new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`it did not start within ${WAKE_TIMEOUT_MS / 1000} s`)), WAKE_TIMEOUT_MS); }),
        ]);
      } catch (err) {
        const message = (err as Error).message;
        const backoff = this.backoff.get(id) ?? { failures: 0, restarts: 0, nextAttemptAt: 0 };
        backoff.lastError = message;
        this.backoff.set(id, backoff);
        this.log.warn('wake failed', { tenant: id, error: message });
        throw new BackendUnavailable(`tenant ${id} could not be woken: ${message.split('\n')[0]} (see pgs logs ${id})`);
      } finally {
        clearTimeout(timer);
      }
      this.suspended.delete(id);
      this.seenRunning.add(id);
      this.lastActive.set(id, Date.now()); // the most recently used now: not the next one to make room
      this.idleSince.delete(id); // its idle time counts from the wake, not from before the suspend
      this.wakes.set(id, (this.wakes.get(id) ?? 0) + 1);
      const seconds = (performance.now() - started) / 1000;
      this.metrics.wakes.inc();
      this.metrics.wakeDuration.observe(seconds);
      this.wakeTimes.push({ at: Date.now(), seconds });
      if (this.wakeTimes.length > WAKE_TIMES_KEPT) this.wakeTimes.splice(0, this.wakeTimes.length - WAKE_TIMES_KEPT);
      this.log.info('woke', { tenant: id, ms: Math.round(seconds * 1000) });
      void this.checkStarted(id); // not in the waiting client's way
      this.events.emit('state', id, { state: 'running', reason: 'woken' });
      return true;
    })().finally(() => this.waking.delete(id));
    this.waking.set(id, attempt);
    return attempt;
  }

  /** What is seen of one tenant's server; `fresh`: look at adopted servers now, not at the last sighting. */
  async observe(t: Tenant, fresh: boolean): Promise<TenantStatus> {
    const backoff = this.backoff.get(t.id);
    const server = await this.runtime.status(t.id, { fresh });
    let state: TenantStatus['state'] = server.state;
    if (state === 'stopped' && t.wanted === 'running' && (backoff?.failures ?? 0) >= CRASHED_AFTER) state = 'crashed';
    if (state === 'stopped' && this.suspended.has(t.id)) state = 'suspended';
    const checked = this.health.get(t.id);
    const current = checked !== undefined && checked.pid === server.pid ? checked : undefined;
    return {
      id: t.id,
      state,
      pid: server.state === 'stopped' ? null : (server.pid ?? null),
      serverStartedAt: server.state === 'running' && server.startedAt ? server.startedAt.toISOString() : null,
      connections: this.router.connectionCount(t.id),
      health: current?.health ?? 'unknown',
      healthCheckedAt: current ? new Date(current.checkedAt).toISOString() : null,
      ...(current?.error ? { healthError: current.error } : {}),
      restarts: backoff?.restarts ?? 0,
      wakes: this.wakes.get(t.id) ?? 0,
      ...(backoff?.lastError ? { lastError: backoff.lastError } : {}),
    };
  }

  /** Starts the server now (a person asked), failing with why. */
  async startNow(tenant: Tenant): Promise<void> {
    await this.suspending.get(tenant.id)?.catch(() => undefined);
    await this.holds.get(tenant.id);
    this.suspended.delete(tenant.id);
    await this.startSupervised(tenant);
    const error = this.backoff.get(tenant.id)?.lastError;
    if (error !== undefined && (await this.runtime.status(tenant.id, { fresh: true })).state !== 'running') {
      throw new PgsError('PG_START_FAILED', `tenant ${tenant.id} did not start: ${error}`);
    }
  }

  async tenantStates(): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for (const t of this.catalog.tenants) {
      const { state } = await this.observe(t, false);
      counts.set(state, (counts.get(state) ?? 0) + 1);
    }
    return counts;
  }

  /** Wakes over the last hour: how many, and the median and 95th percentile of how long they took. */
  recentWakes(now = Date.now()): { count: number; p50Seconds: number | null; p95Seconds: number | null } {
    const cutoff = now - 3_600_000;
    while (this.wakeTimes.length > 0 && (this.wakeTimes[0] as { at: number }).at < cutoff) this.wakeTimes.shift();
    const sorted = this.wakeTimes.map((w) => w.seconds).sort((a, b) => a - b);
    const at = (q: number) => (sorted.length === 0 ? null : Math.round((sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number) * 1000) / 1000);
    return { count: sorted.length, p50Seconds: at(0.5), p95Seconds: at(0.95) };
  }

  /** The data folder's size at its last measurement (the size sweep), or undefined before the first. */
  measuredBytes(id: string): number | undefined {
    return this.dataBytes.get(id)?.bytes;
  }

  /** When a client was last connected to the tenant through the router (now, while one is), or null. */
  lastActiveAt(id: string): string | null {
    const at = this.router.connectionCount(id) > 0 ? Date.now() : Math.max(this.lastActive.get(id) ?? 0, this.router.lastUsed(id) ?? 0);
    return at > 0 ? new Date(at).toISOString() : null;
  }

  /** Per-tenant samples for /metrics (the daemon adds what its backups know). */
  async tenantSamples(): Promise<Omit<TenantSample, 'lastBackup' | 'archiveFailing' | 'archivePending'>[] | undefined> {
    if (this.catalog.settings.tenantMetrics === false) return undefined;
    return Promise.all(this.catalog.tenants.map(async (t) => {
      const { state } = await this.observe(t, false);
      const active = this.router.connectionCount(t.id) > 0 ? Date.now() : this.lastActive.get(t.id);
      return {
        id: t.id,
        up: state === 'running',
        connections: this.router.connectionCount(t.id),
        wakes: this.wakes.get(t.id) ?? 0,
        lastActive: active === undefined ? null : Math.floor(active / 1000),
        dataBytes: this.dataBytes.get(t.id)?.bytes ?? null,
      };
    }));
  }

  /**
   * Sizes of the data folders, from disk (never a query: a suspended tenant
   * stays asleep). A folder is measured once, then again only after its server
   * ran; running ones every SIZE_INTERVAL_MS. One at a time, in the background.
   */
  async measureSizes(): Promise<void> {
    if (this.isStopping) return;
    try {
      for (const t of this.catalog.tenants) {
        if (this.isStopping) return;
        const known = this.dataBytes.get(t.id);
        const running = (await this.runtime.status(t.id)).state === 'running';
        if (known && (!running || Date.now() - known.at < SIZE_INTERVAL_MS)) continue;
        this.dataBytes.set(t.id, { bytes: await dirBytes(this.runtime.dataDir(t.id)), at: Date.now() });
      }
    } finally {
      if (!this.isStopping) this.sizeSweep = setTimeout(() => void this.measureSizes(), SIZE_SWEEP_MS);
    }
  }
}
