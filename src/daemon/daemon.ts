import { X509Certificate, createHash } from 'node:crypto';
import { promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { EventLog } from '../api/events.js';
import { DaemonMetrics, type TenantSample } from '../api/metrics.js';
import type { ControlPlane } from '../api/routes.js';
import type * as S from '../api/schemas.js';
import { buildApi, listenApi, type ListenedApi } from '../api/server.js';
import { TokenStore } from '../api/tokens.js';
import { assertTenantId } from '../catalog/ids.js';
import type { Catalog, Tenant } from '../catalog/schema.js';
import { DEFAULT_API_LISTEN, DEFAULT_AUTOSUSPEND_SECONDS } from '../catalog/schema.js';
import { processAlive } from '../catalog/lock.js';
import { PgsError, errnoCode } from '../core/errors.js';
import { dirBytes, tail } from '../core/files.js';
import { forEachLimit } from '../core/limit.js';
import { processArgv } from '../core/proc.js';
import { BackendUnavailable, Router, type RouterLog } from '../router/router.js';
import type { TenantRuntime } from '../runtime/runtime.js';
import { generatePassword, scramVerifier } from '../runtime/scram.js';
import { ADMIN_ROLE } from '../runtime/server-config.js';
import { assertPassword, connectionStrings, findTenant, setVerifier, tenantView, type DoctorReport, type Pgs } from '../service/pgs.js';
import { CatalogBackends } from './backends.js';

/**
 * The pgs daemon: the one control plane. It owns the router and the tenant
 * servers, and is the only writer of the catalog (but for `pgs setup`). The CLI
 * and automation talk to it through the REST API (api/): the unix socket in
 * PGS_HOME (0600) and TCP with tokens.
 */
export interface DaemonPaths {
  pidFile: string;
  socket: string;
  log: string;
  tokens: string;
}

export function daemonPaths(home: string): DaemonPaths {
  return { pidFile: path.join(home, 'daemon.pid'), socket: path.join(home, 'daemon.sock'), log: path.join(home, 'daemon.log'), tokens: path.join(home, 'tokens.json') };
}

export type DaemonStatus = S.StatusJson;

export interface DaemonOptions {
  /** How often each running server gets its health check (default 60 s; PGS_HEALTH_INTERVAL). */
  healthIntervalMs?: number;
  /** pgs's version, for /v1/status and pgs_build_info. */
  version?: string;
  /** Spare servers kept running for fast creates (default 2; PGS_RUNNING_SPARES). */
  runningSpares?: number;
}

export type Health = 'ok' | 'failing' | 'unknown';

export interface TenantStatus {
  id: string;
  state: S.TenantJson['state'];
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

/** After this many failed starts in a row a tenant shows as `crashed` (attempts go on, slowly). */
const CRASHED_AFTER = 3;
const SUPERVISE_INTERVAL_MS = 1_000;
/** A woken server must accept connections within this, or the waiting clients get 57P03. */
const WAKE_TIMEOUT_MS = 15_000;
/** Each running server answers `SELECT 1` over its socket this often (spread by ±10 %), sooner after a failure. */
const HEALTH_INTERVAL_MS = 60_000;
const HEALTH_RETRY_MS = 10_000;
/**
 * The check's session is replaced by a new connection this often (60 intervals: an hour by
 * default), which shows that the postmaster still lets clients in. A new backend costs ~30 ms
 * of CPU here: at 1,000 servers, renewing each half hour cost 0.8 % of the two cores.
 */
const HEALTH_SESSION_INTERVALS = 60;
const HEALTH_TIMEOUT_MS = 5_000;
/** Servers started, stopped or checked at the same time: enough to use both cores, few enough to keep the router answering. */
const PARALLEL_STARTS = 4;
const PARALLEL_STOPS = 16;
const PARALLEL_SUSPENDS = 4;
const PARALLEL_CHECKS = 4;
/** Spare servers kept running: two cover a burst of creates while the next ones start. */
const DEFAULT_RUNNING_SPARES = 2;
/** Data folder sizes: the first sweep soon after start, then each few minutes; a running server's folder at most every 10 min. */
const SIZE_FIRST_MS = 5_000;
const SIZE_SWEEP_MS = 60_000;
const SIZE_INTERVAL_MS = 10 * 60_000;

/** JSON lines: one object per event, for the log file or stderr. */
export function jsonLog(write: (line: string) => void): RouterLog {
  const emit = (level: string) => (message: string, fields: Record<string, unknown> = {}) =>
    write(`${JSON.stringify({ time: new Date().toISOString(), level, message, ...fields })}\n`);
  return { info: emit('info'), warn: emit('warn') };
}

export class Daemon implements ControlPlane {
  private readonly pgs: Pgs;
  private readonly paths: DaemonPaths;
  private readonly log: RouterLog;
  private readonly version: string;
  private runtime!: TenantRuntime;
  private backends!: CatalogBackends;
  private router!: Router;
  private api: ListenedApi | undefined;
  private catalog!: Catalog;
  private readonly startedAt = new Date();
  private stopping: Promise<void> | undefined;
  private certExpires: string | null = null;
  private readonly backoff = new Map<string, Backoff>();
  /** Servers this daemon stopped for being idle (or on request): the next connection wakes them. */
  private readonly suspended = new Set<string>();
  private readonly idleSince = new Map<string, number>();
  private readonly waking = new Map<string, Promise<boolean>>();
  /** Suspends in progress: a wake waits for the stop to finish before it starts the server again. */
  private readonly suspending = new Map<string, Promise<void>>();
  private readonly health = new Map<string, HealthRecord>();
  private readonly nextCheck = new Map<string, number>();
  private healthSweep: Promise<void> | undefined;
  private readonly wakes = new Map<string, number>();
  /** Last moment (ms) each tenant had a client connection through the router, as seen each second. */
  private readonly lastActive = new Map<string, number>();
  /** Data folder sizes, measured in the background; re-measured after a tenant ran. */
  private readonly dataBytes = new Map<string, { bytes: number; at: number }>();
  private sizeSweep: NodeJS.Timeout | undefined;
  private superviseTimer: NodeJS.Timeout | undefined;
  readonly events = new EventLog();
  private metrics!: DaemonMetrics;
  private readonly tokens: TokenStore;
  /** Resolves when the daemon has stopped. */
  readonly stopped: Promise<void>;
  private resolveStopped!: () => void;

  private readonly healthIntervalMs: number;
  private readonly runningSpares: number;

  constructor(pgs: Pgs, log: RouterLog, options: DaemonOptions = {}) {
    this.pgs = pgs;
    this.healthIntervalMs = options.healthIntervalMs ?? HEALTH_INTERVAL_MS;
    this.version = options.version ?? 'unknown';
    this.runningSpares = options.runningSpares ?? DEFAULT_RUNNING_SPARES;
    this.paths = daemonPaths(pgs.home);
    this.tokens = new TokenStore(this.paths.tokens);
    this.log = log;
    this.stopped = new Promise((resolve) => { this.resolveStopped = resolve; });
  }

  /** Starts everything or fails with one clear error, leaving nothing behind. */
  async start(): Promise<void> {
    this.catalog = await this.pgs.store.read();
    await this.claimPidFile();
    try {
      const { settings } = this.catalog;
      const { cert, key } = readCertificate(settings.certFile, settings.keyFile);
      await this.tokens.load();
      this.runtime = this.pgs.runtimeFor(settings);
      this.backends = new CatalogBackends(this.runtime, this.catalog);
      this.backends.wake = (id) => this.wake(id);
      // A server that dies is restarted now, not at the next tick.
      this.runtime.onServerExit = () => this.reconcileSoon();
      this.metrics = new DaemonMetrics({
        connections: () => this.router.connectionCount(),
        liveBytes: () => this.router.liveBytes(),
        refusals: () => this.router.refusals,
        tenantStates: () => this.tenantStates(),
        tenants: () => this.tenantSamples(),
      }, { version: this.version, postgres: this.runtime.serverVersion() });
      this.router = new Router(this.backends, { domain: settings.domain, cert, key, reservedUsers: [ADMIN_ROLE], log: this.log, observer: this.metrics });
      this.certExpires = certificateExpiry(cert);
      try {
        await this.router.listen(settings.port);
      } catch (err) {
        if (errnoCode(err) === 'EADDRINUSE') throw new PgsError('ADDRESS_IN_USE', `port ${settings.port} is already in use: stop what listens there, or choose another with "pgs setup --port P"`);
        if (errnoCode(err) === 'EACCES') throw new PgsError('INVALID_SETTING', `no permission to listen on port ${settings.port}: ports below 1024 need root`);
        throw err;
      }
      const app = await buildApi({ plane: this, tokens: this.tokens, events: this.events, metrics: this.metrics, version: this.version, log: this.log });
      this.api = await listenApi(app, this.paths.socket, settings.apiListen === undefined ? DEFAULT_API_LISTEN : settings.apiListen, { cert, key });
    } catch (err) {
      await this.router?.close().catch(() => undefined);
      await fs.rm(this.paths.pidFile, { force: true });
      throw err;
    }
    this.log.info('daemon started', { pid: process.pid, port: this.catalog.settings.port, domain: this.catalog.settings.domain, api: this.api.tcpAddress });
    await this.serial(() => this.settleDataFolders()).catch((err: Error) => this.log.warn('could not look at the data folders', { error: err.message }));
    // Spare servers already running make a create one rename and one transaction.
    await this.runtime.keepWarm(this.runningSpares, this.catalog.settings.defaultMaxConnections);
    // A reload, not a bare reconcile: `pgs setup` may have changed the catalog
    // between the read above and the API answering.
    await this.reload();
    if (this.isStopping) return; // stopped during the first reconcile: no timer to keep the process alive
    // Servers die (kill -9, OOM): check every second and restart with back-off.
    this.superviseTimer = setInterval(() => {
      this.reconcileSoon();
      this.checkHealthDue();
    }, SUPERVISE_INTERVAL_MS);
    this.sizeSweep = setTimeout(() => void this.measureSizes(), SIZE_FIRST_MS);
  }

  private reconcileQueued = false;

  /** Queues a reconcile unless one is queued already: a slow one is not followed by a pile of them. */
  private reconcileSoon(): void {
    if (this.reconcileQueued || this.isStopping || this.superviseTimer === undefined) return;
    this.reconcileQueued = true;
    void this.serial(() => this.reconcile()).finally(() => { this.reconcileQueued = false; });
  }

  /**
   * Every change, reload, reconcile and stop runs one at a time, in order: an
   * older reload can never finish after a newer one (and bring back access
   * that was disabled), no supervisor decision interleaves with a person's
   * request, and nothing starts a server once stop has begun.
   */
  private queue: Promise<unknown> = Promise.resolve();

  private serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Stop accepting, close client connections, fast-shut-down every server, exit. */
  stop(): Promise<void> {
    clearInterval(this.superviseTimer);
    clearTimeout(this.sizeSweep);
    this.stopping ??= this.serial(async () => {
      this.log.info('daemon stopping');
      await this.router.close();
      await this.healthSweep;
      await Promise.all([...this.waking.values(), ...this.suspending.values()].map((p) => p.catch(() => undefined)));
      // The catalog as it is now: a tenant made by hand since the last reload may have a server too.
      const now = await this.pgs.store.read().catch(() => this.catalog);
      const ids = [...new Set([...this.catalog.tenants, ...now.tenants].map((t) => t.id))];
      await forEachLimit(ids, PARALLEL_STOPS, (id) =>
        this.runtime.stop(id).catch((err: Error) => this.log.warn('stop failed', { tenant: id, error: err.message })));
      await this.runtime.stopWarm();
      await this.tokens.flush().catch(() => undefined);
      await this.api?.close();
      await fs.rm(this.paths.pidFile, { force: true });
      this.log.info('daemon stopped');
    }).catch((err: Error) => {
      this.log.warn('stop failed', { error: err.message });
    }).finally(() => this.resolveStopped());
    return this.stopping;
  }

  private get isStopping(): boolean {
    return this.stopping !== undefined;
  }

  private assertRunning(): void {
    if (this.isStopping) throw new PgsError('DAEMON_STOPPING', 'the daemon is stopping');
  }

  /** Re-reads the catalog (and the certificate) and makes the router and the servers match it. */
  reload(): Promise<void> {
    return this.serial(() => this.reloadNow());
  }

  private async reloadNow(): Promise<void> {
    if (this.isStopping) return;
    for (const backoff of this.backoff.values()) backoff.nextAttemptAt = 0; // a person acted: try again now
    this.runtime.forgetObserved();
    const next = await this.pgs.store.read();
    if (next.settings.domain !== this.catalog.settings.domain) {
      this.router.setDomain(next.settings.domain);
      this.log.info('domain changed', { domain: next.settings.domain });
    }
    if (next.settings.port !== this.catalog.settings.port) {
      this.log.warn('the port changed in the catalog; it takes effect when the daemon restarts', { listening: this.catalog.settings.port, configured: next.settings.port });
    }
    const before = new Map(this.catalog.tenants.map((t) => [t.id, t]));
    this.applyCatalog(next);
    const ids = new Set(next.tenants.map((t) => t.id));
    for (const [id, old] of before) {
      const now = next.tenants.find((t) => t.id === id);
      if (!ids.has(id) || (now?.access === 'disabled' && old.access !== 'disabled')) {
        const closed = this.router.closeTenant(id);
        if (closed > 0) this.log.info('closed connections', { tenant: id, count: closed, why: ids.has(id) ? 'access disabled' : 'removed' });
      }
      // A hand edit stopped the tenant: the daemon stops its server.
      if (now?.wanted === 'stopped' && old.wanted !== 'stopped') await this.stopWanted(id);
    }
    try {
      const { cert, key } = readCertificate(next.settings.certFile, next.settings.keyFile);
      this.router.setCertificate(cert, key);
      this.api?.setCertificate(cert, key);
      this.certExpires = certificateExpiry(cert);
    } catch (err) {
      this.log.warn('certificate not reloaded; the old one stays', { error: (err as Error).message });
    }
    await this.reconcile();
  }

  /**
   * A daemon killed in the middle of a create leaves a whole tenant or none:
   * a folder still marked unfinished whose id the catalog does not name is
   * removed (its server stopped first); one the catalog names is finished.
   * Folders the catalog does not know that were finished are reported, never deleted.
   */
  private async settleDataFolders(): Promise<void> {
    const catalog = await this.pgs.store.read();
    const known = new Map(catalog.tenants.map((t) => [t.id, t]));
    for (const { id, unfinished } of await this.runtime.dataFolders()) {
      const tenant = known.get(id);
      if (tenant) {
        if (unfinished) await this.runtime.finishCreate(id);
        // Folders made before they kept their own metadata get it now.
        if (JSON.stringify(await this.runtime.readMeta(id)) !== JSON.stringify(tenant)) await this.runtime.writeMeta(id, tenant);
      } else if (unfinished) {
        await this.runtime.remove(id);
        this.log.info('removed an unfinished create', { tenant: id });
      } else {
        this.log.warn('a data folder that the catalog does not name (an orphan): it is kept; "pgs doctor --fix" adopts it', { tenant: id, folder: this.runtime.dataDir(id) });
      }
    }
  }

  private applyCatalog(next: Catalog): void {
    this.catalog = next;
    this.backends.update(next);
  }

  /** After a change this daemon wrote: the catalog as it is now. */
  private async refresh(): Promise<void> {
    this.applyCatalog(await this.pgs.store.read());
  }

  /**
   * Sets the tenant role's password verifier. A running server gets it at once;
   * a suspended one is woken for it (and suspended again when idle); one that
   * is wanted running but down is started; one stopped on purpose is started
   * for the change and stopped again.
   */
  private setVerifier(id: string, verifier: string): Promise<void> {
    return this.serial(async () => {
      this.assertRunning();
      const tenant = findTenant(await this.pgs.store.read(), id);
      if (this.suspended.has(id)) await this.wake(id);
      await setVerifier(this.runtime, tenant, verifier, { keepStarted: tenant.wanted === 'running' });
      if (tenant.wanted === 'running') this.seenRunning.add(id);
    });
  }

  private async stopWanted(id: string): Promise<void> {
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

  private async reconcile(): Promise<void> {
    const ids = new Set(this.catalog.tenants.map((t) => t.id));
    for (const map of [this.backoff, this.health, this.nextCheck, this.lastActive, this.wakes, this.dataBytes]) for (const id of map.keys()) if (!ids.has(id)) map.delete(id);
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
      if (this.suspended.has(tenant.id) || this.waking.has(tenant.id)) continue;
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
      await this.runtime.start({ id: tenant.id, maxConnections: tenant.maxConnections });
      if (this.seenRunning.has(tenant.id)) {
        backoff.restarts++;
        this.metrics.restarts.inc();
        this.log.warn('server restarted', { tenant: tenant.id, restarts: backoff.restarts });
      }
      this.seenRunning.add(tenant.id);
      backoff.failures = 0;
      backoff.lastError = undefined;
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
  private checkHealthDue(): void {
    if (this.healthSweep || this.isStopping) return;
    const now = Date.now();
    const due = this.catalog.tenants.filter((t) => t.wanted === 'running' && !this.suspended.has(t.id) && (this.nextCheck.get(t.id) ?? 0) <= now);
    if (due.length === 0) return;
    this.healthSweep = forEachLimit(due, PARALLEL_CHECKS, (t) => this.checkHealth(t.id)).finally(() => { this.healthSweep = undefined; });
  }

  private async checkHealth(id: string): Promise<void> {
    const before = await this.runtime.status(id);
    if (before.state !== 'running' || before.pid === undefined || this.isStopping) return;
    const spread = this.healthIntervalMs * (0.9 + 0.2 * Math.random());
    try {
      await this.runtime.check(id, { timeoutMs: HEALTH_TIMEOUT_MS, maxSessionAgeMs: this.healthIntervalMs * HEALTH_SESSION_INTERVALS });
      const previous = this.health.get(id);
      if (previous?.health === 'failing' && previous.pid === before.pid) this.log.info('health check passes again', { tenant: id });
      this.health.set(id, { pid: before.pid, health: 'ok', checkedAt: Date.now(), failures: 0 });
      this.nextCheck.set(id, Date.now() + spread);
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
    if (seconds === null || this.router.connectionCount(id) > 0) {
      this.idleSince.delete(id);
      return;
    }
    const since = this.idleSince.get(id) ?? Date.now();
    this.idleSince.set(id, since);
    if (Date.now() - since < seconds * 1000) return;
    if (this.suspending.size >= PARALLEL_SUSPENDS) return; // the next second's reconcile takes it
    // Sessions over the local socket (administration, `pgs url --local`) count too.
    if ((await this.runtime.clientSessions(id)) > 0) {
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
  private suspendNow(id: string, reason: string): Promise<void> {
    this.suspended.add(id);
    this.seenRunning.delete(id);
    this.idleSince.delete(id);
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

  /** Starts a suspended server for a waiting client; concurrent callers share one start. */
  private wake(id: string): Promise<boolean> {
    if (!this.suspended.has(id) || this.isStopping) return Promise.resolve(false);
    const running = this.waking.get(id);
    if (running) return running;
    const tenant = this.catalog.tenants.find((t) => t.id === id);
    if (!tenant) return Promise.resolve(false);
    const started = performance.now();
    const attempt = (async () => {
      let timer: NodeJS.Timeout | undefined;
      try {
        await this.suspending.get(id)?.catch(() => undefined);
        await Promise.race([
          this.runtime.start({ id, maxConnections: tenant.maxConnections }),
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
      this.wakes.set(id, (this.wakes.get(id) ?? 0) + 1);
      const seconds = (performance.now() - started) / 1000;
      this.metrics.wakes.inc();
      this.metrics.wakeDuration.observe(seconds);
      this.log.info('woke', { tenant: id, ms: Math.round(seconds * 1000) });
      this.events.emit('state', id, { state: 'running', reason: 'woken' });
      return true;
    })().finally(() => this.waking.delete(id));
    this.waking.set(id, attempt);
    return attempt;
  }

  /** Tenants this daemon saw running: finding one stopped while still wanted means it died. */
  private readonly seenRunning = new Set<string>();

  /** What is seen of one tenant's server; `fresh`: look at adopted servers now, not at the last sighting. */
  private async observe(t: Tenant, fresh: boolean): Promise<TenantStatus> {
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

  private async view(tenant: Tenant): Promise<S.TenantJson> {
    return tenantView(this.catalog.settings, tenant, await this.observe(tenant, true));
  }

  async status(): Promise<DaemonStatus> {
    // A person asked: look at the servers now (1,000 /proc reads cost ~25 ms), not at the last sighting.
    const tenants = await Promise.all(this.catalog.tenants.map((t) => this.observe(t, true)));
    return {
      pid: process.pid,
      version: this.version,
      startedAt: this.startedAt.toISOString(),
      port: this.catalog.settings.port,
      domain: this.catalog.settings.domain,
      api: this.api?.tcpAddress ?? null,
      connections: this.router.connectionCount(),
      certificateExpires: this.certExpires,
      refusals: Object.fromEntries(this.router.refusals),
      tenants,
    };
  }

  // --- the control plane (api/routes.ts) ---

  async listTenants(): Promise<S.TenantJson[]> {
    const tenants = [...this.catalog.tenants].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return Promise.all(tenants.map((t) => this.view(t)));
  }

  async getTenant(id: string): Promise<{ tenant: S.TenantJson; etag: string }> {
    assertTenantId(id);
    const tenant = findTenant(this.catalog, id);
    return { tenant: await this.view(tenant), etag: etagOf(tenant) };
  }

  createTenant(request: S.CreateTenantRequest): Promise<S.CreatedTenantJson> {
    assertTenantId(request.id);
    if (request.password !== undefined) assertPassword(request.password);
    return this.serial(async () => {
      this.assertRunning();
      const created = await this.pgs.create(request.id, {
        password: request.password,
        ...(request.autosuspend !== undefined ? { autosuspendSeconds: request.autosuspend } : {}),
        ...(request.maxConnections !== undefined ? { maxConnections: request.maxConnections } : {}),
        ...(request.init !== undefined ? { init: request.init } : {}),
      });
      await this.refresh();
      this.seenRunning.add(request.id);
      this.events.emit('created', request.id);
      this.events.emit('state', request.id, { state: 'running' });
      return created;
    });
  }

  patchTenant(id: string, patch: S.PatchTenantRequest, ifMatch: string | undefined): Promise<{ tenant: S.TenantJson; etag: string }> {
    assertTenantId(id);
    return this.serial(async () => {
      this.assertRunning();
      const { before, after } = await this.pgs.patch(id, {
        ...(patch.access !== undefined ? { access: patch.access } : {}),
        ...(patch.autosuspend !== undefined ? { autosuspendSeconds: patch.autosuspend } : {}),
        ...(patch.maxConnections !== undefined ? { maxConnections: patch.maxConnections } : {}),
      }, (current) => {
        if (ifMatch !== undefined && !etagMatches(ifMatch, etagOf(current))) {
          throw new PgsError('PRECONDITION_FAILED', `tenant ${id} changed since that ETag was read: GET it again and retry`);
        }
      });
      await this.refresh();
      if (after.access !== before.access) {
        if (after.access === 'disabled') {
          const closed = this.router.closeTenant(id);
          if (closed > 0) this.log.info('closed connections', { tenant: id, count: closed, why: 'access disabled' });
        }
        this.events.emit('access', id, { access: after.access });
      }
      if (after.autosuspendSeconds !== before.autosuspendSeconds) this.idleSince.delete(id);
      return { tenant: await this.view(after), etag: etagOf(after) };
    });
  }

  removeTenant(id: string): Promise<void> {
    assertTenantId(id);
    return this.serial(async () => {
      this.assertRunning();
      findTenant(this.catalog, id);
      // The server stops first, so that nothing restarts it while its files go.
      await this.stopWanted(id);
      this.router.closeTenant(id);
      await this.pgs.remove(id);
      await this.refresh();
      this.events.emit('removed', id);
    });
  }

  act(id: string, action: S.TenantActionName): Promise<S.TenantJson> {
    assertTenantId(id);
    return this.serial(async () => {
      this.assertRunning();
      let tenant = findTenant(this.catalog, id);
      const wantRunning = action !== 'stop';
      if (!wantRunning || action === 'start' || action === 'restart') {
        tenant = (await this.pgs.patch(id, { wanted: wantRunning ? 'running' : 'stopped' })).after;
        await this.refresh();
      }
      const backoff = this.backoff.get(id);
      if (backoff) backoff.nextAttemptAt = 0;
      switch (action) {
        case 'stop':
          await this.stopWanted(id);
          this.events.emit('state', id, { state: 'stopped' });
          break;
        case 'restart':
          await this.stopWanted(id);
          await this.startNow(tenant);
          break;
        case 'suspend': {
          if (tenant.wanted !== 'running') throw new PgsError('INVALID_STATE', `tenant ${id} is stopped: there is nothing to suspend`);
          await this.waking.get(id)?.catch(() => undefined);
          if (this.suspended.has(id)) break;
          this.router.closeTenant(id);
          await this.suspendNow(id, 'requested');
          break;
        }
        case 'wake':
        case 'start':
          if (tenant.wanted !== 'running') throw new PgsError('INVALID_STATE', `tenant ${id} is stopped: "pgs start ${id}" starts it`);
          // Waking a tenant that is down for another reason (crashed, say) starts it.
          if (this.suspended.has(id)) await this.wake(id);
          else if ((await this.runtime.status(id, { fresh: true })).state !== 'running') await this.startNow(tenant);
          break;
      }
      return this.view(tenant);
    });
  }

  /** Starts the server now (a person asked), failing with why. */
  private async startNow(tenant: Tenant): Promise<void> {
    await this.suspending.get(tenant.id)?.catch(() => undefined);
    this.suspended.delete(tenant.id);
    await this.startSupervised(tenant);
    const error = this.backoff.get(tenant.id)?.lastError;
    if (error !== undefined && (await this.runtime.status(tenant.id, { fresh: true })).state !== 'running') {
      throw new PgsError('PG_START_FAILED', `tenant ${tenant.id} did not start: ${error}`);
    }
  }

  async setPassword(id: string, password: string | undefined): Promise<{ id: string; password: string }> {
    assertTenantId(id);
    if (password !== undefined) assertPassword(password);
    findTenant(this.catalog, id);
    const chosen = password ?? generatePassword();
    await this.setVerifier(id, scramVerifier(chosen));
    return { id, password: chosen };
  }

  async connection(id: string): Promise<S.ConnectionJson> {
    assertTenantId(id);
    return connectionStrings(this.catalog.settings, findTenant(this.catalog, id), this.runtime);
  }

  async logs(id: string, lines: number): Promise<string[]> {
    assertTenantId(id);
    findTenant(this.catalog, id);
    if (lines === 0) return [];
    const text = await tail(this.runtime.logFile(id), lines).catch(() => '');
    return text === '' ? [] : text.replace(/\n$/, '').split('\n');
  }

  startAll(): Promise<S.BulkJson> {
    return this.serial(async () => {
      this.assertRunning();
      await this.pgs.start(undefined, { recordOnly: true });
      await this.refresh();
      for (const backoff of this.backoff.values()) backoff.nextAttemptAt = 0;
      await this.reconcile();
      const done: string[] = [];
      const failed: { id: string; error: string }[] = [];
      for (const t of this.catalog.tenants) {
        const seen = await this.observe(t, true);
        if (seen.state === 'running' || seen.state === 'suspended') done.push(t.id);
        else failed.push({ id: t.id, error: seen.lastError ?? `the server is ${seen.state}` });
      }
      return { done, failed };
    });
  }

  shutdown(stopTenants: boolean): void {
    void (async () => {
      if (stopTenants && !this.isStopping) {
        await this.serial(() => this.pgs.stop(undefined, { recordOnly: true })).catch((err: Error) => this.log.warn('could not record the tenants as stopped', { error: err.message }));
      }
      await this.stop();
    })();
  }

  doctor(): Promise<DoctorReport> {
    return this.serial(() => this.pgs.doctor());
  }

  doctorFix(): Promise<S.DoctorFixJson> {
    return this.serial(async () => {
      this.assertRunning();
      const before = await this.pgs.doctor();
      const removed: string[] = [];
      for (const id of before.unfinished) {
        await this.runtime.remove(id);
        removed.push(id);
      }
      const adopted = await this.pgs.adopt(before.orphans.map((o) => o.id));
      await this.refresh();
      for (const a of adopted) {
        this.events.emit('created', a.id, { reason: 'adopted' });
        this.log.info('adopted an orphan data folder', { tenant: a.id, hostname: a.hostname, newHostname: a.newHostname });
      }
      await this.reconcile();
      return { adopted, removed, report: await this.pgs.doctor() };
    });
  }

  // --- metrics ---

  private async tenantStates(): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for (const t of this.catalog.tenants) {
      const { state } = await this.observe(t, false);
      counts.set(state, (counts.get(state) ?? 0) + 1);
    }
    return counts;
  }

  private async tenantSamples(): Promise<TenantSample[] | undefined> {
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
  private async measureSizes(): Promise<void> {
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

  private async claimPidFile(): Promise<void> {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await fs.writeFile(this.paths.pidFile, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
        return;
      } catch (err) {
        if (errnoCode(err) !== 'EEXIST') throw err;
      }
      const pid = Number.parseInt(await fs.readFile(this.paths.pidFile, 'utf8').catch(() => ''), 10);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid) && (await isPgsProcess(pid))) {
        throw new PgsError('USAGE', `a pgs daemon already runs for ${this.pgs.home} (pid ${pid}); "pgs stop" stops it`);
      }
      await fs.rm(this.paths.pidFile, { force: true }); // left by a daemon that died
    }
    throw new PgsError('USAGE', `cannot claim ${this.paths.pidFile}`);
  }
}

/** A strong ETag of a tenant's settings (what PATCH changes), not of its server's state. */
function etagOf(tenant: Tenant): string {
  return `"${createHash('sha256').update(JSON.stringify(tenant)).digest('base64url').slice(0, 22)}"`;
}

function etagMatches(ifMatch: string, etag: string): boolean {
  return ifMatch.split(',').map((s) => s.trim().replace(/^W\//, '')).some((candidate) => candidate === '*' || candidate === etag);
}

function readCertificate(certFile: string, keyFile: string): { cert: Buffer; key: Buffer } {
  try {
    return { cert: readFileSync(certFile), key: readFileSync(keyFile) };
  } catch (err) {
    throw new PgsError('CERT_INVALID', `cannot read the certificate or key (${(err as Error).message}); run "pgs setup" to make or check them`);
  }
}

function certificateExpiry(cert: Buffer): string | null {
  try {
    return new Date(new X509Certificate(cert).validTo).toISOString();
  } catch {
    return null;
  }
}

async function isPgsProcess(pid: number): Promise<boolean> {
  return (await processArgv(pid)).some((arg) => arg.includes('pgs'));
}
