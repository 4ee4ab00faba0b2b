import { setTimeout as sleep } from 'node:timers/promises';
import type { Catalog, Tenant } from '../catalog/schema.js';
import { DEFAULT_AUTOSUSPEND_SECONDS } from '../catalog/schema.js';
import { PgsError } from '../core/errors.js';
import { forEachLimit } from '../core/limit.js';
import { debugLog, type Log } from '../core/log.js';
import { BackendUnavailable } from '../router/router.js';
import type { ArchiverStatus, TenantRuntime } from '../runtime/runtime.js';
import { tenantServerSpec } from '../runtime/server-spec.js';
import type { EventLog } from '../telemetry/events.js';
import type { DaemonMetrics, TenantSample } from '../telemetry/metrics.js';
import { CRASHED_AFTER, freshBackoff, startFailed, startSucceeded, type Backoff } from './backoff.js';
import { runningBudget } from './budget.js';
import { HealthChecks } from './health.js';
import { DataSizes } from './sizes.js';
import { WakeTimes, type RecentWakes } from './wake-times.js';
import type { RouterView, SupervisorDeps, TenantStatus } from './contract.js';

export { HEALTH_INTERVAL_MS, type Health } from './health.js';
export type { RouterView, SupervisorDeps, TenantStatus } from './contract.js';

const debug = debugLog('pgs:supervisor');

/**
 * The supervisor: makes what runs match what the catalog wants, and keeps
 * what it learns on the way. It restarts servers that die (at once, then
 * with back-off), checks their health, suspends idle ones and wakes them for
 * a client, and sizes their folders. The daemon calls it from its one queue
 * of changes; it never writes the catalog. The health checks (health.ts),
 * the folder sizes (sizes.ts), the restart back-off (backoff.ts) and the wake
 * times (wake-times.ts) are parts of their own; this file keeps which server
 * is running, suspended, waking or held, and the budget of running servers.
 */

/** A woken server must accept connections within this, or the waiting clients get 57P03. */
const WAKE_TIMEOUT_MS = 15_000;
/** A wake beyond the running budget waits this long for a slot (the router's start-up time-out) before 53300. */
const BUDGET_WAIT_MS = 10_000;
/** Servers started or suspended at the same time: enough to use both cores, few enough to keep the router answering. */
const PARALLEL_STARTS = 4;
const PARALLEL_SUSPENDS = 4;

export class Supervisor {
  private readonly runtime: TenantRuntime;
  private readonly router: RouterView;
  private readonly metrics: DaemonMetrics;
  private readonly events: EventLog;
  private readonly log: Log;
  private readonly deps: SupervisorDeps;
  private readonly checks: HealthChecks;
  private readonly sizes: DataSizes;
  private readonly wakeTimes = new WakeTimes();
  private readonly backoff = new Map<string, Backoff>();
  /** Servers stopped for being idle (or on request): the next connection wakes them. */
  private readonly suspended = new Set<string>();
  private readonly idleSince = new Map<string, number>();
  private readonly waking = new Map<string, Promise<boolean>>();
  /** Suspends in progress: a wake waits for the stop to finish before it starts the server again. */
  private readonly suspending = new Map<string, Promise<void>>();
  private readonly wakes = new Map<string, number>();
  /** Last moment (ms) each tenant had a client connection through the router, as seen each second. */
  private readonly lastActive = new Map<string, number>();
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
    this.checks = new HealthChecks({
      runtime: deps.runtime, log: deps.log, catalog: deps.catalog, stopping: deps.stopping, isSuspended: (id) => this.suspended.has(id), intervalMs: deps.healthIntervalMs,
    });
    this.sizes = new DataSizes({ runtime: deps.runtime, catalog: deps.catalog, stopping: deps.stopping });
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
    await this.checks.checkStarted(id);
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
    return this.checks.archiverStatus(id);
  }

  /** The same, with the ready WAL files read now (see HealthChecks.archiverStatusNow). */
  archiverStatusNow(id: string): Promise<ArchiverStatus | undefined> {
    return this.checks.archiverStatusNow(id);
  }

  /** Waits for a wake or a suspend of the tenant in flight. */
  async settle(id: string): Promise<void> {
    await this.waking.get(id)?.catch(() => undefined);
    await this.suspending.get(id)?.catch(() => undefined);
  }

  /** For the daemon's stop: waits for health checks, wakes and suspends in flight. */
  async quiesce(): Promise<void> {
    this.sizes.stop();
    await this.checks.quiesce();
    await Promise.all([...this.waking.values(), ...this.suspending.values()].map((p) => p.catch(() => undefined)));
  }

  startSizing(): void {
    this.sizes.start();
  }

  async stopWanted(id: string): Promise<void> {
    await this.waking.get(id)?.catch(() => undefined);
    await this.suspending.get(id)?.catch(() => undefined);
    this.suspended.delete(id);
    this.seenRunning.delete(id);
    this.idleSince.delete(id);
    this.checks.stopped(id);
    try {
      await this.runtime.stop(id);
      this.sizes.ran(id);
    } catch (err) {
      this.log.warn('stop failed', { tenant: id, error: (err as Error).message });
      throw err;
    }
  }

  async reconcile(): Promise<void> {
    const ids = new Set(this.catalog.tenants.map((t) => t.id));
    for (const map of [this.backoff, this.lastActive, this.wakes]) for (const id of map.keys()) if (!ids.has(id)) map.delete(id);
    this.checks.keepOnly(ids);
    this.sizes.keepOnly(ids);
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
    const backoff = this.backoff.get(tenant.id) ?? freshBackoff();
    try {
      await this.runtime.start(tenantServerSpec(this.catalog.settings.dataRoot, tenant));
      if (this.seenRunning.has(tenant.id)) {
        backoff.restarts++;
        this.metrics.restarts.inc();
        this.log.warn('server restarted', { tenant: tenant.id, restarts: backoff.restarts });
      }
      this.seenRunning.add(tenant.id);
      startSucceeded(backoff);
      await this.checks.checkStarted(tenant.id);
      this.events.emit('state', tenant.id, { state: 'running' });
    } catch (err) {
      startFailed(backoff, (err as Error).message);
      this.log.warn('start failed', { tenant: tenant.id, failures: backoff.failures, error: backoff.lastError });
      if (backoff.failures === CRASHED_AFTER) this.events.emit('state', tenant.id, { state: 'crashed', reason: backoff.lastError });
    }
    this.backoff.set(tenant.id, backoff);
  }

  /** Starts the health checks that are due (health.ts). */
  checkHealthDue(): void {
    this.checks.checkDue();
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
    void this.suspendNow(id, `idle for ${seconds} s`).catch((e: unknown) => debug(`suspending ${id} (suspendNow logged it)`, e));
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
        this.sizes.ran(id);
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
        await this.suspendNow(victim, `making room for ${id}: at most ${this.budget} servers run at once`).catch((e: unknown) => debug(`suspending ${victim} to make room (suspendNow logged it)`, e));
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
        const backoff = this.backoff.get(id) ?? freshBackoff();
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
      this.wakeTimes.record(seconds);
      this.log.info('woke', { tenant: id, ms: Math.round(seconds * 1000) });
      void this.checks.checkStarted(id); // not in the waiting client's way
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
    const current = this.checks.current(t.id, server.pid);
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
  recentWakes(now = Date.now()): RecentWakes {
    return this.wakeTimes.recent(now);
  }

  /** The data folder's size at its last measurement (the size sweep), or undefined before the first. */
  measuredBytes(id: string): number | undefined {
    return this.sizes.bytes(id);
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
        dataBytes: this.sizes.bytes(t.id) ?? null,
      };
    }));
  }

  /** One sweep of the data folders' sizes (sizes.ts). */
  measureSizes(): Promise<void> {
    return this.sizes.sweep();
  }
}
