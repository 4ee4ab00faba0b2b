import { X509Certificate } from 'node:crypto';
import { promises as fs, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { TENANT_ID_PATTERN } from '../catalog/ids.js';
import type { Catalog, Tenant } from '../catalog/schema.js';
import { forEachLimit } from '../core/limit.js';
import { processAlive } from '../catalog/lock.js';
import { PgsError, errnoCode } from '../core/errors.js';
import { Router, type RouterLog } from '../router/router.js';
import type { TenantRuntime } from '../runtime/runtime.js';
import { ADMIN_ROLE } from '../runtime/server-config.js';
import { setVerifier, type Pgs } from '../service/pgs.js';
import { DEFAULT_AUTOSUSPEND_SECONDS } from '../catalog/schema.js';
import { BackendUnavailable } from '../router/router.js';
import { CatalogBackends } from './backends.js';

/**
 * The pgs daemon: owns the router and the tenant servers. The CLI talks to it
 * over HTTP on a unix socket in PGS_HOME (0600): GET /status, POST /reload
 * (the catalog changed), POST /stop.
 */
export interface DaemonPaths {
  pidFile: string;
  socket: string;
  log: string;
}

export function daemonPaths(home: string): DaemonPaths {
  return { pidFile: path.join(home, 'daemon.pid'), socket: path.join(home, 'daemon.sock'), log: path.join(home, 'daemon.log') };
}

export interface DaemonStatus {
  pid: number;
  startedAt: string;
  port: number;
  domain: string;
  connections: number;
  certificateExpires: string | null;
  /** Refused connections since start, by reason (unknown_host, access_disabled, ...). */
  refusals: Record<string, number>;
  tenants: TenantStatus[];
}

export interface DaemonOptions {
  /** How often each running server gets its health check (default 60 s; PGS_HEALTH_INTERVAL). */
  healthIntervalMs?: number;
}

export type Health = 'ok' | 'failing' | 'unknown';

export interface TenantStatus {
  id: string;
  state: string;
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

/** JSON lines: one object per event, for the log file or stderr. */
export function jsonLog(write: (line: string) => void): RouterLog {
  const emit = (level: string) => (message: string, fields: Record<string, unknown> = {}) =>
    write(`${JSON.stringify({ time: new Date().toISOString(), level, message, ...fields })}\n`);
  return { info: emit('info'), warn: emit('warn') };
}

export class Daemon {
  private readonly pgs: Pgs;
  private readonly paths: DaemonPaths;
  private readonly log: RouterLog;
  private runtime!: TenantRuntime;
  private backends!: CatalogBackends;
  private router!: Router;
  private api!: http.Server;
  private catalog!: Catalog;
  private readonly startedAt = new Date();
  private stopping: Promise<void> | undefined;
  private certExpires: string | null = null;
  private readonly backoff = new Map<string, Backoff>();
  /** Servers this daemon stopped for being idle: the next connection wakes them. */
  private readonly suspended = new Set<string>();
  private readonly idleSince = new Map<string, number>();
  private readonly waking = new Map<string, Promise<boolean>>();
  /** Suspends in progress: a wake waits for the stop to finish before it starts the server again. */
  private readonly suspending = new Map<string, Promise<void>>();
  private readonly health = new Map<string, HealthRecord>();
  private readonly nextCheck = new Map<string, number>();
  private healthSweep: Promise<void> | undefined;
  private readonly wakes = new Map<string, number>();
  private superviseTimer: NodeJS.Timeout | undefined;
  /** Resolves when the daemon has stopped. */
  readonly stopped: Promise<void>;
  private resolveStopped!: () => void;

  private readonly healthIntervalMs: number;

  constructor(pgs: Pgs, log: RouterLog, options: DaemonOptions = {}) {
    this.pgs = pgs;
    this.healthIntervalMs = options.healthIntervalMs ?? HEALTH_INTERVAL_MS;
    this.paths = daemonPaths(pgs.home);
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
      this.runtime = this.pgs.runtimeFor(settings);
      this.backends = new CatalogBackends(this.runtime, this.catalog);
      this.backends.wake = (id) => this.wake(id);
      this.router = new Router(this.backends, { domain: settings.domain, cert, key, reservedUsers: [ADMIN_ROLE], log: this.log });
      this.certExpires = certificateExpiry(cert);
      try {
        await this.router.listen(settings.port);
      } catch (err) {
        if (errnoCode(err) === 'EADDRINUSE') throw new PgsError('INVALID_SETTING', `port ${settings.port} is already in use: stop what listens there, or choose another with "pgs setup --port P"`);
        if (errnoCode(err) === 'EACCES') throw new PgsError('INVALID_SETTING', `no permission to listen on port ${settings.port}: ports below 1024 need root`);
        throw err;
      }
      await this.listenApi();
    } catch (err) {
      await this.router?.close().catch(() => undefined);
      await fs.rm(this.paths.pidFile, { force: true });
      throw err;
    }
    this.log.info('daemon started', { pid: process.pid, port: this.catalog.settings.port, domain: this.catalog.settings.domain });
    // A reload, not a bare reconcile: a command may have changed the catalog
    // between the read above and the API answering.
    await this.reload();
    if (this.isStopping) return; // stopped during the first reconcile: no timer to keep the process alive
    // Servers die (kill -9, OOM): check every second and restart with back-off.
    this.superviseTimer = setInterval(() => {
      // One reconcile at a time: a slow one is not followed by a pile of queued ones.
      if (!this.reconcileQueued) {
        this.reconcileQueued = true;
        void this.serial(() => this.reconcile()).finally(() => { this.reconcileQueued = false; });
      }
      this.checkHealthDue();
    }, SUPERVISE_INTERVAL_MS);
  }

  private reconcileQueued = false;

  /**
   * Reload, reconcile and stop run one at a time, in order: an older reload can
   * never finish after a newer one (and bring back access that was disabled),
   * and nothing starts a server once stop has begun.
   */
  private queue: Promise<void> = Promise.resolve();

  private serial(task: () => Promise<void>): Promise<void> {
    const run = this.queue.then(task);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Stop accepting, close client connections, fast-shut-down every server, exit. */
  stop(): Promise<void> {
    clearInterval(this.superviseTimer);
    this.stopping ??= this.serial(async () => {
      this.log.info('daemon stopping');
      const apiClosed = new Promise<void>((resolve) => this.api.close(() => resolve()));
      this.api.closeIdleConnections();
      await this.router.close();
      await this.healthSweep;
      await Promise.all([...this.waking.values(), ...this.suspending.values()].map((p) => p.catch(() => undefined)));
      // The catalog as it is now: a tenant created since the last reload has a server too.
      const now = await this.pgs.store.read().catch(() => this.catalog);
      const ids = [...new Set([...this.catalog.tenants, ...now.tenants].map((t) => t.id))];
      await forEachLimit(ids, PARALLEL_STOPS, (id) =>
        this.runtime.stop(id).catch((err: Error) => this.log.warn('stop failed', { tenant: id, error: err.message })));
      this.api.closeAllConnections();
      await apiClosed;
      await fs.rm(this.paths.socket, { force: true });
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

  /** Re-reads the catalog (and the certificate) and makes the router and the servers match it. */
  reload(): Promise<void> {
    return this.serial(() => this.reloadNow());
  }

  private async reloadNow(): Promise<void> {
    if (this.isStopping) return;
    for (const backoff of this.backoff.values()) backoff.nextAttemptAt = 0; // a person acted: try again now
    // The CLI starts and stops servers itself before it tells the daemon: what was seen of them is old news.
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
    this.catalog = next;
    this.backends.update(next);
    const ids = new Set(next.tenants.map((t) => t.id));
    for (const [id, old] of before) {
      const now = next.tenants.find((t) => t.id === id);
      if (!ids.has(id) || (now?.access === 'disabled' && old.access !== 'disabled')) {
        const closed = this.router.closeTenant(id);
        if (closed > 0) this.log.info('closed connections', { tenant: id, count: closed, why: ids.has(id) ? 'access disabled' : 'removed' });
      }
      // A person stopped the tenant: the daemon stops its server, so that no
      // supervisor restart between the CLI's stop and its catalog write survives it.
      if (now?.wanted === 'stopped' && old.wanted !== 'stopped') await this.stopWanted(id);
    }
    try {
      const { cert, key } = readCertificate(next.settings.certFile, next.settings.keyFile);
      this.router.setCertificate(cert, key);
      this.certExpires = certificateExpiry(cert);
    } catch (err) {
      this.log.warn('certificate not reloaded; the old one stays', { error: (err as Error).message });
    }
    await this.reconcile();
  }

  /**
   * Sets the tenant role's password verifier. A running server gets it at once;
   * a suspended one is woken for it (and suspended again when idle); one that
   * is wanted running but down is started; one stopped on purpose is started
   * for the change and stopped again. One at a time with reconcile and reload,
   * so no supervisor decision interleaves.
   */
  private setPassword(id: string, verifier: string): Promise<void> {
    return this.serial(async () => {
      if (this.isStopping) throw new Error('the daemon is stopping');
      const tenant = (await this.pgs.store.read()).tenants.find((t) => t.id === id);
      if (!tenant) throw new PgsError('TENANT_NOT_FOUND', `no tenant ${id} (see "pgs list")`);
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
    } catch (err) {
      this.log.warn('stop failed', { tenant: id, error: (err as Error).message });
    }
  }

  private async reconcile(): Promise<void> {
    const ids = new Set(this.catalog.tenants.map((t) => t.id));
    for (const map of [this.backoff, this.health, this.nextCheck]) for (const id of map.keys()) if (!ids.has(id)) map.delete(id);
    for (const id of this.seenRunning) if (!ids.has(id)) this.seenRunning.delete(id);
    const toStart: Tenant[] = [];
    for (const tenant of this.catalog.tenants) {
      if (this.isStopping) return;
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
        this.log.warn('server restarted', { tenant: tenant.id, restarts: backoff.restarts });
      }
      this.seenRunning.add(tenant.id);
      backoff.failures = 0;
      backoff.lastError = undefined;
    } catch (err) {
      backoff.failures++;
      backoff.lastError = (err as Error).message;
      backoff.nextAttemptAt = Date.now() + Math.min(60_000, 1_000 * 2 ** (backoff.failures - 1));
      this.log.warn('start failed', { tenant: tenant.id, failures: backoff.failures, error: backoff.lastError });
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
      return;
    }
    // A client admitted while /proc was read: not idle after all. From here
    // to suspended.add nothing awaits, so no client slips in between; one
    // that comes after waits for a wake, which waits for this stop.
    if (this.router.connectionCount(id) > 0 || this.isStopping) {
      this.idleSince.delete(id);
      return;
    }
    this.suspended.add(id);
    this.seenRunning.delete(id);
    this.idleSince.delete(id);
    // In the background, so that a thousand tenants going idle together do not
    // hold up the queue for minutes; wake and stop wait for it.
    const stopped = this.runtime.stop(id)
      .then(() => this.log.info('suspended', { tenant: id, idleSeconds: seconds }))
      .catch((err: Error) => {
        this.suspended.delete(id); // still running: supervised as before, tried again when idle
        this.log.warn('suspend failed', { tenant: id, error: err.message });
      })
      .finally(() => this.suspending.delete(id));
    this.suspending.set(id, stopped);
  }

  /** Starts a suspended server for a waiting client; concurrent callers share one start. */
  private wake(id: string): Promise<boolean> {
    if (!this.suspended.has(id) || this.isStopping) return Promise.resolve(false);
    const running = this.waking.get(id);
    if (running) return running;
    const tenant = this.catalog.tenants.find((t) => t.id === id);
    if (!tenant) return Promise.resolve(false);
    const started = Date.now();
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
      this.log.info('woke', { tenant: id, ms: Date.now() - started });
      return true;
    })().finally(() => this.waking.delete(id));
    this.waking.set(id, attempt);
    return attempt;
  }

  /** Tenants this daemon saw running: finding one stopped while still wanted means it died. */
  private readonly seenRunning = new Set<string>();

  async status(): Promise<DaemonStatus> {
    const tenants = await Promise.all(this.catalog.tenants.map(async (t): Promise<TenantStatus> => {
      const backoff = this.backoff.get(t.id);
      // A person asked: look at the servers now (1,000 /proc reads cost ~25 ms), not at the last sighting.
      const server = await this.runtime.status(t.id, { fresh: true });
      let state: string = server.state;
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
    }));
    return {
      pid: process.pid,
      startedAt: this.startedAt.toISOString(),
      port: this.catalog.settings.port,
      domain: this.catalog.settings.domain,
      connections: this.router.connectionCount(),
      certificateExpires: this.certExpires,
      refusals: Object.fromEntries(this.router.refusals),
      tenants,
    };
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

  private async listenApi(): Promise<void> {
    await fs.rm(this.paths.socket, { force: true });
    this.api = http.createServer((req, res) => void this.onApi(req, res));
    const previous = process.umask(0o177); // the socket is created 0600: only this user (and root) may drive the daemon
    try {
      await new Promise<void>((resolve, reject) => {
        this.api.once('error', reject);
        this.api.listen(this.paths.socket, () => resolve());
      });
    } finally {
      process.umask(previous);
    }
  }

  private async onApi(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
      res.end(JSON.stringify(body));
    };
    try {
      if (req.method === 'GET' && req.url === '/status') return send(200, await this.status());
      if (req.method === 'POST' && req.url === '/reload') {
        await this.reload();
        return send(200, { ok: true });
      }
      const password = req.method === 'POST' ? /^\/tenants\/([^/]+)\/password$/.exec(req.url ?? '') : null;
      if (password?.[1] !== undefined && TENANT_ID_PATTERN.test(password[1])) {
        const body = await readJson(req);
        const verifier = (body as { verifier?: unknown } | undefined)?.verifier;
        // Only a SCRAM verifier crosses the socket, never a password.
        if (typeof verifier !== 'string' || !/^SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/.test(verifier)) return send(400, { error: 'the body must be {"verifier": "SCRAM-SHA-256$..."}' });
        await this.setPassword(password[1], verifier);
        return send(200, { ok: true });
      }
      if (req.method === 'POST' && req.url === '/stop') {
        send(200, { ok: true });
        void this.stop();
        return;
      }
      send(404, { error: `no ${req.method} ${req.url}` });
    } catch (err) {
      send(500, { error: (err as Error).message });
    }
  }
}

/** A small JSON request body (at most 16 KiB). */
function readJson(req: http.IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => {
      text += chunk;
      if (text.length > 16_384) req.destroy(new Error('request body too large'));
    });
    req.on('end', () => {
      try {
        resolve(text === '' ? undefined : JSON.parse(text));
      } catch {
        resolve(undefined);
      }
    });
    req.on('error', reject);
  });
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
  try {
    const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes('pgs');
  } catch {
    return false;
  }
}
