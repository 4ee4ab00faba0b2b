import type { Log } from '../core/log.js';
import { X509Certificate, createHash } from 'node:crypto';
import { promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { EventLog } from '../telemetry/events.js';
import { DaemonMetrics } from '../telemetry/metrics.js';
import type { ControlPlane } from '../api/routes.js';
import type * as S from '../api/schemas.js';
import { buildApi, listenApi, type ListenedApi } from '../api/server.js';
import { TokenStore } from '../api/tokens.js';
import { assertTenantId } from '../catalog/ids.js';
import type { Catalog, Tenant } from '../catalog/schema.js';
import { DEFAULT_API_LISTEN } from '../catalog/schema.js';
import { PgsError, errnoCode, isPgsError } from '../core/errors.js';
import { AllowList, requestedAllow } from '../core/cidr.js';
import { localHostaddr } from '../core/hostaddr.js';
import { tail, writeAtomic } from '../core/files.js';
import { forEachLimit } from '../core/limit.js';
import { parsePointInTime } from '../core/time.js';
import { History, type HistorySample } from '../telemetry/history.js';
import { pidExists, processArgv } from '../core/proc.js';
import { daemonPaths, type DaemonPaths } from '../core/paths.js';
import { Router } from '../router/router.js';
import type { TenantRuntime } from '../runtime/runtime.js';
import type { ResourceUsage } from '../runtime/cgroups.js';
import { generatePassword, scramVerifier } from '../auth/scram.js';
import { ADMIN_ROLE } from '../runtime/server-config.js';
import { assertPassword, connectionStrings, findTenant, setVerifier, tenantFromMeta, tenantView, type DoctorReport, type Pgs } from '../service/pgs.js';
import { compareTenantMeta } from '../catalog/tenant-meta.js';
import { HEALTH_INTERVAL_MS, Supervisor } from '../supervisor/supervisor.js';
import { CatalogBackends } from './backends.js';
import { Logins } from './logins.js';
import { QUERIES_LIMIT, QuerySamples, type QueryOrder } from './query-stats.js';
import { DiskGuard } from './disk-guard.js';
import { BackupPlane, type MadeTenant, type Progress } from './backup-plane.js';
import { importLimit, type ImportLimit } from './uploads.js';
import type { TenantSample } from '../telemetry/metrics.js';
import { type BackupMeta } from '../backup/layout.js';
import { tenantServerSpec } from '../runtime/server-spec.js';

/**
 * The pgs daemon: the one control plane. It owns the router and the tenant
 * servers, and is the only writer of the catalog (but for `pgs setup`). The CLI
 * and automation talk to it through the REST API (api/): the unix socket in
 * PGS_HOME (0600) and TCP with tokens.
 */
export type DaemonStatus = S.StatusJson;

export interface DaemonOptions {
  /** How often each running server gets its health check (default 60 s; PGS_HEALTH_INTERVAL). */
  healthIntervalMs?: number;
  /** pgs's version, for /v1/status and pgs_build_info. */
  version?: string;
  /** Spare servers kept running for fast creates (default 2; PGS_RUNNING_SPARES). */
  runningSpares?: number;
  /** Idle server sessions the router keeps per tenant for reuse (default 2; 0 turns reuse off; PGS_SERVER_SESSIONS). */
  serverSessions?: number;
  /** Transaction pooling: how long a client waits for a free server session (default 30 s). */
  poolTimeoutMs?: number;
  /** Connections still starting up from one address at once, more wait their turn (default 64; 0: no limit; PGS_MAX_STARTUPS_PER_ADDRESS). */
  maxStartupsPerAddress?: number;
  /** How often each tenant's state, connections and transactions are sampled for the history (default 10 s; PGS_HISTORY_INTERVAL). */
  historyIntervalMs?: number;
  /** How long a stop waits for the bucket to take what is not in it yet (default 120 s; PGS_STOP_SHIP_TIMEOUT). */
  shipTimeoutMs?: number;
}

export type { Health, TenantStatus } from '../supervisor/supervisor.js';

const SUPERVISE_INTERVAL_MS = 1_000;
const PARALLEL_STOPS = 16;
/** Spare servers kept running: two cover a burst of creates while the next ones start. */
const DEFAULT_RUNNING_SPARES = 2;

/** JSON lines: one object per event, for the log file or stderr. */
export function jsonLog(write: (line: string) => void): Log {
  const emit = (level: string) => (message: string, fields: Record<string, unknown> = {}) =>
    write(`${JSON.stringify({ time: new Date().toISOString(), level, message, ...fields })}\n`);
  return { info: emit('info'), warn: emit('warn') };
}

export class Daemon implements ControlPlane {
  private readonly pgs: Pgs;
  private readonly paths: DaemonPaths;
  private readonly log: Log;
  private readonly version: string;
  private runtime!: TenantRuntime;
  private backends!: CatalogBackends;
  private logins!: Logins;
  private querySamples!: QuerySamples;
  private disk!: DiskGuard;
  private router!: Router;
  private api: ListenedApi | undefined;
  private catalog!: Catalog;
  private readonly startedAt = new Date();
  private stopping: Promise<void> | undefined;
  private certExpires: string | null = null;
  private superviseTimer: NodeJS.Timeout | undefined;
  readonly events = new EventLog();
  private metrics!: DaemonMetrics;
  private supervisor!: Supervisor;
  private backupPlane!: BackupPlane;
  private readonly tokens: TokenStore;
  /** Resolves when the daemon has stopped. */
  readonly stopped: Promise<void>;
  private resolveStopped!: () => void;

  private readonly healthIntervalMs: number;
  private readonly runningSpares: number;
  private readonly serverSessions: number | undefined;
  private readonly poolTimeoutMs: number | undefined;
  private readonly maxStartupsPerAddress: number | undefined;
  private readonly shipTimeoutMs: number;
  private readonly samples: History;
  private historyTimer: NodeJS.Timeout | undefined;

  constructor(pgs: Pgs, log: Log, options: DaemonOptions = {}) {
    this.pgs = pgs;
    this.healthIntervalMs = options.healthIntervalMs ?? HEALTH_INTERVAL_MS;
    this.version = options.version ?? 'unknown';
    this.runningSpares = options.runningSpares ?? DEFAULT_RUNNING_SPARES;
    this.serverSessions = options.serverSessions;
    this.poolTimeoutMs = options.poolTimeoutMs;
    this.maxStartupsPerAddress = options.maxStartupsPerAddress;
    this.shipTimeoutMs = options.shipTimeoutMs ?? 120_000;
    this.samples = new History(options.historyIntervalMs ?? 10_000);
    this.paths = daemonPaths(pgs.home);
    this.tokens = new TokenStore(this.paths.tokens);
    this.log = log;
    this.stopped = new Promise((resolve) => { this.resolveStopped = resolve; });
  }

  /** Starts everything or fails with one clear error, leaving nothing behind. */
  async start(): Promise<void> {
    this.catalog = await this.pgs.store.read();
    await claimPidFile(this.paths, this.pgs.home);
    try {
      const { settings } = this.catalog;
      const { cert, key } = readCertificate(settings.certFile, settings.keyFile);
      await this.tokens.load();
      this.runtime = this.pgs.runtimeFor(settings);
      this.logins = new Logins(path.join(settings.dataRoot, 'logins'), this.runtime, this.log);
      await this.logins.open();
      this.logins.wake = (id) => this.supervisor.wake(id);
      this.querySamples = new QuerySamples(path.join(settings.dataRoot, 'queries'), this.runtime, this.log);
      await this.querySamples.open();
      // Just before any server of a tenant stops: a copy of its login roles, to check its clients while it is down,
      // and a sample of its query statistics, to show them without waking it.
      this.runtime.beforeStop = (id) => (this.catalog.tenants.some((t) => t.id === id)
        ? Promise.all([this.logins.snapshot(id), this.querySamples.snapshot(id).catch(() => undefined)]).then(() => undefined)
        : Promise.resolve());
      this.backends = new CatalogBackends(this.runtime, this.logins, this.catalog);
      this.backends.wake = (id) => this.supervisor.wake(id);
      // A server that dies is restarted now, not at the next tick.
      this.runtime.onServerExit = () => this.reconcileSoon();
      // Before anything looks for a server under its name: groups and containers an older pgs named by id alone.
      const moved = await this.runtime.moveToHomeNames?.(this.catalog.tenants.map((t) => tenantServerSpec(settings.dataRoot, t)))
        .catch((err: Error) => { this.log.warn('could not move servers to their home\'s names', { error: err.message }); return []; });
      for (const what of moved ?? []) this.log.info('took the home\'s name', { what });
      this.metrics = new DaemonMetrics({
        connections: () => this.router.connectionCount(),
        liveBytes: () => this.router.liveBytes(),
        refusals: () => this.router.refusals,
        pendingStartups: () => this.router.startups.size,
        tenantStates: () => this.supervisor.tenantStates(),
        tenants: async () => (await this.supervisor.tenantSamples())?.map((sample) => this.withBackupSample(sample)),
        running: () => ({ running: this.supervisor.runningCount(), budget: this.supervisor.budget }),
        backupPending: () => {
          const target = this.backupPlane.targetStatus(this.catalog.tenants.map((t) => ({ id: t.id, status: this.supervisor.archiverStatus(t.id) })));
          return target ? { files: target.pendingFiles, bytes: target.pendingBytes, oldestAt: target.oldestPendingAt } : undefined;
        },
      }, { version: this.version, postgres: this.runtime.serverVersion() });
      this.router = new Router(this.backends, { domain: settings.domain, cert, key, reservedUsers: [ADMIN_ROLE], authSecret: this.logins.secret, log: this.log, observer: this.metrics,
        ...(this.serverSessions !== undefined ? { serverSessions: { keep: this.serverSessions } } : {}),
        ...(this.poolTimeoutMs !== undefined ? { poolTimeoutMs: this.poolTimeoutMs } : {}),
        ...(this.maxStartupsPerAddress !== undefined ? { maxStartupsPerAddress: this.maxStartupsPerAddress } : {}) });
      this.supervisor = new Supervisor({
        runtime: this.runtime,
        router: this.router,
        metrics: this.metrics,
        events: this.events,
        log: this.log,
        catalog: () => this.catalog,
        stopping: () => this.isStopping,
        healthIntervalMs: this.healthIntervalMs,
        wakeProblem: () => this.disk.hostProblem(),
      });
      this.disk = new DiskGuard({
        pgs: this.pgs,
        runtime: this.runtime,
        supervisor: this.supervisor,
        router: this.router,
        events: this.events,
        log: this.log,
        catalog: () => this.catalog,
        refresh: () => this.refresh(),
        serial: (task) => this.serial(task),
        stopping: () => this.isStopping,
      });
      this.backupPlane = new BackupPlane({
        pgs: this.pgs,
        runtime: this.runtime,
        supervisor: this.supervisor,
        events: this.events,
        metrics: this.metrics,
        log: this.log,
        version: this.version,
        catalog: () => this.catalog,
        refresh: () => this.refresh(),
        serial: (task) => this.serial(task),
        endSessions: (id, why) => this.endSessions(id, why),
        stopping: () => this.isStopping,
      });
      // Before the API answers: a request for a tenant's backups may need the bucket at once.
      await this.backupPlane.configure();
      // Before the router listens: a restore a dead daemon left is finished or undone, so no client meets it half made.
      await this.backupPlane.settleRestores();
      // Servers an older pgs started still ask clients for their password: the router checks it now, and logs in by peer.
      await forEachLimit(this.catalog.tenants, 8, (t) => this.runtime.updateAuthFiles(t.id).catch(() => undefined));
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
    await this.backupPlane.start().catch((err: Error) => this.log.warn('could not look at the backups', { error: err.message }));
    // Spare servers already running make a create one rename and one transaction.
    await this.runtime.keepWarm(this.runningSpares, this.catalog.settings.defaultMaxConnections);
    // A reload, not a bare reconcile: `pgs setup` may have changed the catalog
    // between the read above and the API answering.
    await this.reload();
    if (this.isStopping) return; // stopped during the first reconcile: no timer to keep the process alive
    // Servers die (kill -9, OOM): check every second and restart with back-off.
    this.superviseTimer = setInterval(() => {
      this.reconcileSoon();
      this.supervisor.checkHealthDue();
    }, SUPERVISE_INTERVAL_MS);
    this.supervisor.startSizing();
    this.historyTimer = setInterval(() => void this.sampleHistory(), this.samples.intervalMs);
    this.disk.start();
    void this.disk.check();
  }

  private sampling = false;

  /**
   * One history sample of every tenant: its state and connections as the
   * supervisor sees them, and how many of its transactions through the router
   * have ended (the router counts them; nothing is asked of the server).
   */
  private async sampleHistory(): Promise<void> {
    if (this.sampling || this.isStopping) return;
    this.sampling = true;
    try {
      const at = Date.now();
      const samples = new Map<string, HistorySample>();
      await forEachLimit([...this.catalog.tenants], 16, async (tenant) => {
        const seen = await this.supervisor.observe(tenant, false);
        samples.set(tenant.id, { state: seen.state, connections: seen.connections ?? 0, xacts: this.router.transactionCount(tenant.id), wakes: seen.wakes });
      });
      this.samples.record(at, samples);
    } catch (err) {
      this.log.warn('could not sample the history', { error: (err as Error).message });
    } finally {
      this.sampling = false;
    }
  }

  private reconcileQueued = false;

  /** Queues a reconcile unless one is queued already: a slow one is not followed by a pile of them. */
  private reconcileSoon(): void {
    if (this.reconcileQueued || this.isStopping || this.superviseTimer === undefined) return;
    this.reconcileQueued = true;
    void this.serial(() => this.supervisor.reconcile()).finally(() => { this.reconcileQueued = false; });
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

  /**
   * Stop accepting, close client connections, fast-shut-down every server,
   * then (unless `ship` is false) copy to the bucket what is not there yet,
   * for at most `shipTimeoutMs`, and exit. The servers' shutdown archives
   * their last segment here; a planned stop must not leave it only here.
   * What could not be copied is logged, written to `last-stop.json` in the
   * home for `pgs stop` to report, and makes `stopped` resolve with false.
   */
  stop(options: { ship?: boolean } = {}): Promise<void> {
    clearInterval(this.superviseTimer);
    clearInterval(this.historyTimer);
    this.stopping ??= this.serial(async () => {
      this.log.info('daemon stopping');
      this.disk.stop();
      await this.router.close();
      await this.backupPlane.stop();
      await this.supervisor.quiesce();
      // The catalog as it is now: a tenant made by hand since the last reload may have a server too.
      const now = await this.pgs.store.read().catch(() => this.catalog);
      const ids = [...new Set([...this.catalog.tenants, ...now.tenants].map((t) => t.id))];
      await forEachLimit(ids, PARALLEL_STOPS, (id) =>
        this.runtime.stop(id).catch((err: Error) => this.log.warn('stop failed', { tenant: id, error: err.message })));
      await this.runtime.stopWarm();
      const report = options.ship === false ? { shipped: false, skipped: true, left: [] as string[] } : await this.shipBeforeStop();
      await this.backupPlane.stopShipping();
      await this.tokens.flush().catch(() => undefined);
      await writeAtomic(this.paths.lastStop, `${JSON.stringify({ at: new Date().toISOString(), pid: process.pid, ...report }, null, 2)}\n`).catch(() => undefined);
      await this.api?.close();
      await fs.rm(this.paths.pidFile, { force: true });
      this.log.info('daemon stopped');
      this.cleanStop = report.left.length === 0;
    }).catch((err: Error) => {
      this.log.warn('stop failed', { error: err.message });
    }).finally(() => this.resolveStopped());
    return this.stopping;
  }

  /** Whether the last stop left nothing only on this host (false: see last-stop.json). */
  cleanStop = true;

  /** While a stop copies to the bucket: what is left, for GET /v1/status (pgs stop shows it). */
  private stopProgress: { phase: string; pendingFiles: number; pendingBytes: number; error?: string } | undefined;

  private async shipBeforeStop(): Promise<{ shipped: boolean; left: string[]; error?: string; writtenElsewhere?: Record<string, string> }> {
    if (this.catalog.settings.backupTarget === undefined) return { shipped: false, left: [] };
    const deadline = Date.now() + this.shipTimeoutMs;
    this.stopProgress = { phase: 'copying to the bucket', pendingFiles: 0, pendingBytes: 0 };
    const result = await this.backupPlane.shipBeforeStop(deadline, (left, error) => {
      this.stopProgress = { phase: 'copying to the bucket', pendingFiles: left.files, pendingBytes: left.bytes, ...(error ? { error } : {}) };
    });
    this.stopProgress = undefined;
    if (result.left.length > 0) {
      this.log.warn('stopped with files not in the bucket: they are only on this host until the next start copies them', { files: result.left.length, left: result.left.slice(0, 50), ...(result.error ? { error: result.error } : {}) });
    }
    return { shipped: result.left.length === 0, ...result };
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
    this.supervisor.retryNow(); // a person acted: try again now
    this.runtime.forgetObserved();
    const next = await this.pgs.store.read();
    if (next.settings.domain !== this.catalog.settings.domain) {
      this.router.setDomain(next.settings.domain);
      this.log.info('domain changed', { domain: next.settings.domain });
    }
    let portError: PgsError | undefined;
    if (next.settings.port !== this.router.port) {
      try {
        await this.router.move(next.settings.port);
        this.log.info('the router moved to a new port', { port: next.settings.port });
      } catch (err) {
        const code = errnoCode(err);
        const why = code === 'EADDRINUSE' ? 'it is in use' : code === 'EACCES' ? 'ports below 1024 need root' : (err as Error).message;
        portError = new PgsError('ADDRESS_IN_USE', `the daemon cannot listen on port ${next.settings.port} (${why}); it still listens on ${this.router.port}`);
        this.log.warn('the router could not move to the new port; it stays', { listening: this.router.port, configured: next.settings.port, error: why });
      }
    }
    const before = new Map(this.catalog.tenants.map((t) => [t.id, t]));
    this.applyCatalog(next);
    const ids = new Set(next.tenants.map((t) => t.id));
    for (const [id, old] of before) {
      const now = next.tenants.find((t) => t.id === id);
      if (!ids.has(id) || (now?.access === 'disabled' && old.access !== 'disabled')) {
        const closed = this.router.closeTenant(id, ids.has(id) ? `access to tenant ${id} was disabled` : `tenant ${id} was removed`);
        if (closed > 0) this.log.info('closed connections', { tenant: id, count: closed, why: ids.has(id) ? 'access disabled' : 'removed' });
      }
      // A hand edit stopped the tenant: the daemon stops its server.
      if (now?.wanted === 'stopped' && old.wanted !== 'stopped') await this.supervisor.stopWanted(id).catch(() => undefined);
    }
    try {
      const { cert, key } = readCertificate(next.settings.certFile, next.settings.keyFile);
      this.router.setCertificate(cert, key);
      this.api?.setCertificate(cert, key);
      this.certExpires = certificateExpiry(cert);
    } catch (err) {
      this.log.warn('certificate not reloaded; the old one stays', { error: (err as Error).message });
    }
    await this.backupPlane.configure();
    await this.supervisor.reconcile();
    if (portError) throw portError;
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
        const meta = await this.runtime.readMeta(id);
        if (JSON.stringify(meta) === JSON.stringify(tenant)) continue;
        // A copy with more changes than the catalog's entry (a catalog restored from its backup) is left for pgs doctor.
        const found = compareTenantMeta(tenant, tenantFromMeta(id, meta), catalog.settings.domain);
        if (found?.newer === 'folder') {
          this.log.warn('a tenant folder\'s metadata is newer than the catalog: "pgs doctor" shows the difference, "pgs doctor --fix" takes it', { tenant: id, fields: found.fields.map((f) => f.field).join(',') });
          continue;
        }
        // Folders made before they kept their own metadata get it now, and a lost write is redone.
        await this.runtime.writeMeta(id, tenant);
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
      if (this.supervisor.isSuspended(id)) await this.supervisor.wake(id);
      await setVerifier(this.runtime, tenantServerSpec(this.catalog.settings.dataRoot, tenant), verifier, { keepStarted: tenant.wanted === 'running' });
      if (tenant.wanted === 'running') await this.supervisor.noteRunning(id);
    });
  }











  private async view(tenant: Tenant): Promise<S.TenantJson> {
    const diskUsed = this.disk.usedBytes(tenant.id) ?? this.supervisor.measuredBytes(tenant.id);
    const disk = this.disk.level(tenant);
    return tenantView(this.catalog.settings, tenant, {
      ...(await this.observeWithArchive(tenant)),
      ...(await this.limitsSeen(tenant)),
      ...(diskUsed !== undefined ? { diskUsedBytes: diskUsed } : {}),
      ...(disk !== undefined ? { disk } : {}),
      lastBackupAt: this.backupPlane.lastBackupAt(tenant.id),
      lastActiveAt: this.supervisor.lastActiveAt(tenant.id),
    });
  }

  /** What a tenant with limits uses now, or why its limits are not enforced. */
  private async limitsSeen(tenant: Tenant): Promise<{ usage?: ResourceUsage; limitsNotEnforced?: string }> {
    if (tenant.memoryBytes === undefined && tenant.cpus === undefined) return {};
    const support = this.runtime.limitsSupport();
    const usage = await this.runtime.resourceUsage(tenant.id).catch(() => undefined);
    return { ...(usage ? { usage } : {}), ...(support.enforced ? {} : { limitsNotEnforced: `memory and CPU limits are not enforced: ${support.why}` }) };
  }

  /** What the supervisor sees of the tenant's server, with the state of its WAL archive. */
  private async observeWithArchive(tenant: Tenant): Promise<Awaited<ReturnType<Supervisor['observe']>> & { archiving: S.TenantJson['archiving']; archivingError?: string; backupPending: S.TenantJson['backupPending'] }> {
    const seen = await this.supervisor.observe(tenant, true);
    const status = this.supervisor.archiverStatus(tenant.id);
    const archiving = this.backupPlane.archiving(tenant, status);
    const pending = this.backupPlane.pendingFor(tenant.id, status);
    return {
      ...seen, archiving: archiving.state, ...(archiving.error !== undefined ? { archivingError: archiving.error } : {}),
      backupPending: pending === null ? null : { files: pending.files, bytes: pending.bytes, oldestAt: pending.oldestMs === null ? null : new Date(pending.oldestMs).toISOString() },
    };
  }

  private withBackupSample(sample: Omit<TenantSample, 'lastBackup' | 'archiveFailing' | 'archivePending'>): TenantSample {
    const tenant = this.catalog.tenants.find((t) => t.id === sample.id);
    const status = this.supervisor.archiverStatus(sample.id);
    const last = this.backupPlane.lastBackupAt(sample.id);
    const state = tenant ? this.backupPlane.archiving(tenant, status).state : 'unknown';
    return {
      ...sample,
      lastBackup: last === null ? null : Math.floor(Date.parse(last) / 1000),
      archiveFailing: state === 'failing' || state === 'gap' ? 1 : state === 'ok' || state === 'behind' ? 0 : null,
      archivePending: status?.pending ?? null,
    };
  }

  async status(): Promise<DaemonStatus> {
    // A person asked: look at the servers now (1,000 /proc reads cost ~25 ms), not at the last sighting.
    const tenants = await Promise.all(this.catalog.tenants.map((t) => this.observeWithArchive(t)));
    return {
      pid: process.pid,
      version: this.version,
      startedAt: this.startedAt.toISOString(),
      port: this.router.port, // the one it listens on, whatever the catalog says
      domain: this.catalog.settings.domain,
      api: this.api?.tcpAddress ?? null,
      connections: this.router.connectionCount(),
      certificateExpires: this.certExpires,
      certificate: this.catalog.settings.certFile,
      certificateSelfSigned: this.catalog.settings.certSelfSigned,
      ...this.running(),
      runtime: this.runtime.describe(),
      limits: this.runtime.limitsSupport(),
      serverUsers: this.runtime.serverUsers(),
      refusals: Object.fromEntries(this.router.refusals),
      importLimit: await this.importLimit().then(({ bytes, auto }) => ({ bytes, auto }), () => null),
      disk: await fs.statfs(this.catalog.settings.dataRoot).then((f) => ({ path: this.catalog.settings.dataRoot, freeBytes: f.bavail * f.bsize, totalBytes: f.blocks * f.bsize }), () => null),
      wakesLastHour: this.supervisor.recentWakes(),
      backupTarget: this.backupPlane.targetStatus(this.catalog.tenants.map((t) => ({ id: t.id, status: this.supervisor.archiverStatus(t.id) }))),
      ...(this.stopProgress ? { stopping: this.stopProgress } : {}),
      tenants,
    };
  }

  // --- the control plane (api/routes.ts) ---

  history(range: '1h' | '1d', ids: string[] | undefined, fields: S.HistoryField[] | undefined): S.HistoryJson {
    return { range, ...this.samples.series(range, ids, fields) };
  }

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
    const done = this.createSerially(request);
    // Its folder is measured at once when it has a quota.
    if (request.diskBytes !== undefined && request.diskBytes !== null) void done.then(() => this.disk.check(request.id), () => undefined);
    return done;
  }

  private createSerially(request: S.CreateTenantRequest): Promise<S.CreatedTenantJson> {
    return this.serial(async () => {
      this.assertRunning();
      if (this.backupPlane.reserved.has(request.id)) throw new PgsError('TENANT_EXISTS', `tenant ${request.id} is being made from a backup`);
      const full = await this.disk.hostProblem();
      if (full) throw new PgsError('DISK_FULL', full);
      const created = await this.pgs.create(request.id, {
        password: request.password,
        ...(request.autosuspend !== undefined ? { autosuspendSeconds: request.autosuspend } : {}),
        ...(request.maxConnections !== undefined ? { maxConnections: request.maxConnections } : {}),
        ...(request.init !== undefined ? { init: request.init } : {}),
        ...(request.memoryBytes !== undefined && request.memoryBytes !== null ? { memoryBytes: request.memoryBytes } : {}),
        ...(request.cpus !== undefined && request.cpus !== null ? { cpus: request.cpus } : {}),
        ...(request.diskBytes !== undefined && request.diskBytes !== null ? { diskBytes: request.diskBytes } : {}),
      });
      await this.refresh();
      // A create may take a spare server that already runs: it joins the tenant's control groups now.
      const made = this.catalog.tenants.find((t) => t.id === request.id);
      if (made && (made.memoryBytes !== undefined || made.cpus !== undefined)) {
        await this.runtime.applyLimits(tenantServerSpec(this.catalog.settings.dataRoot, made)).catch((err: Error) => this.log.warn('could not apply limits', { tenant: request.id, error: err.message }));
      }
      await this.supervisor.noteRunning(request.id);
      this.events.emit('created', request.id);
      this.events.emit('state', request.id, { state: 'running' });
      return created;
    });
  }

  patchTenant(id: string, patch: S.PatchTenantRequest, ifMatch: string | undefined): Promise<{ tenant: S.TenantJson; etag: string }> {
    assertTenantId(id);
    const done = this.patchSerially(id, patch, ifMatch);
    // A new quota is checked at once (after the change, outside the queue that the check's own change joins).
    if (patch.diskBytes !== undefined) void done.then(() => this.disk.check(id), () => undefined);
    return done;
  }

  private patchSerially(id: string, patch: S.PatchTenantRequest, ifMatch: string | undefined): Promise<{ tenant: S.TenantJson; etag: string }> {
    return this.serial(async () => {
      this.assertRunning();
      const { before, after } = await this.pgs.patch(id, {
        ...(patch.access !== undefined ? { access: patch.access } : {}),
        ...(patch.autosuspend !== undefined ? { autosuspendSeconds: patch.autosuspend } : {}),
        ...(patch.maxConnections !== undefined ? { maxConnections: patch.maxConnections } : {}),
        ...(patch.backupSchedule !== undefined ? { backupSchedule: patch.backupSchedule } : {}),
        ...(patch.backupRetain !== undefined ? { backupRetain: patch.backupRetain } : {}),
        ...(patch.rpoSeconds !== undefined ? { rpoSeconds: patch.rpoSeconds } : {}),
        ...(patch.memoryBytes !== undefined ? { memoryBytes: patch.memoryBytes } : {}),
        ...(patch.cpus !== undefined ? { cpus: patch.cpus } : {}),
        ...(patch.diskBytes !== undefined ? { diskBytes: patch.diskBytes } : {}),
        ...(patch.pool !== undefined ? { pool: patch.pool } : {}),
        ...(patch.poolSize !== undefined ? { poolSize: patch.poolSize } : {}),
        ...(patch.maxClientConnections !== undefined ? { maxClientConnections: patch.maxClientConnections } : {}),
        ...(patch.allow !== undefined ? { allow: requestedAllow(patch.allow) } : {}),
      }, (current) => {
        if (ifMatch !== undefined && !etagMatches(ifMatch, etagOf(current))) {
          throw new PgsError('PRECONDITION_FAILED', `tenant ${id} changed since that ETag was read: GET it again and retry`);
        }
        const maxConnections = patch.maxConnections ?? current.maxConnections;
        if (patch.poolSize !== undefined && patch.poolSize > maxConnections) {
          throw new PgsError('USAGE', `a pool of ${patch.poolSize} server sessions is more than tenant ${id}'s max connections (${maxConnections}): raise --max-connections first`);
        }
      });
      await this.refresh();
      await this.applyChange(id, before, after);
      return { tenant: await this.view(after), etag: etagOf(after) };
    });
  }

  /** What a changed catalog entry needs beyond the catalog (which the caller has written and refreshed). */
  private async applyChange(id: string, before: Tenant, after: Tenant): Promise<void> {
    if (after.access !== before.access) {
      if (after.access === 'disabled') {
        const closed = this.router.closeTenant(id, `access to tenant ${id} was disabled`);
        if (closed > 0) this.log.info('closed connections', { tenant: id, count: closed, why: 'access disabled' });
      }
      this.events.emit('access', id, { access: after.access });
    }
    if (after.allow !== undefined && after.allow.join(',') !== (before.allow ?? []).join(',')) {
      // Sessions from addresses the new list leaves out end, as when access is disabled.
      const closed = this.router.closeUnallowed(id, new AllowList(after.allow));
      if (closed > 0) this.log.info('closed connections', { tenant: id, count: closed, why: 'address no longer allowed' });
    }
    if (after.autosuspendSeconds !== before.autosuspendSeconds) this.supervisor.resetIdle(id);
    // Sessions kept for the other mode are of no use now (clients already connected keep their mode).
    if ((after.pool ?? 'session') !== (before.pool ?? 'session')) this.router.dropServerSessions(id);
    // A running server reads its new archive_timeout (or archive) at once (a reload); a stopped one at its next start.
    if (after.rpoSeconds !== before.rpoSeconds || after.generation !== before.generation) await this.runtime.configureArchive(tenantServerSpec(this.catalog.settings.dataRoot, after));
    // Limits reach a running server at once: its control groups and the settings that follow memory.
    if (after.memoryBytes !== before.memoryBytes || after.cpus !== before.cpus) await this.runtime.applyLimits(tenantServerSpec(this.catalog.settings.dataRoot, after));
  }

  running(): { running: number; maxRunning: number } {
    return { running: this.supervisor.runningCount(), maxRunning: this.supervisor.budget };
  }

  removeTenant(id: string): Promise<void> {
    assertTenantId(id);
    return this.serial(async () => {
      this.assertRunning();
      findTenant(this.catalog, id);
      // Its sessions are told why; then the server stops, so that nothing restarts it while its files go.
      await this.endSessions(id, `tenant ${id} was removed`);
      // Its backups stay: the WAL up to now goes to the archive first, so that a restore brings back all of it.
      if ((await this.runtime.status(id, { fresh: true })).state === 'running') {
        await this.runtime.flushArchive(id, 30_000).catch((err: Error) => this.log.warn('could not archive the last WAL before the removal', { tenant: id, error: err.message }));
      }
      await this.supervisor.stopWanted(id);
      await this.pgs.remove(id);
      await this.logins.forget(id);
      await this.querySamples.forget(id);
      this.disk.forget(id);
      this.samples.forget(id);
      await this.refresh();
      await this.backupPlane.forgetIfEmpty(id).catch((err: Error) => this.log.warn('could not delete an archive without backups', { tenant: id, error: err.message }));
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
      this.supervisor.retryNow(id);
      switch (action) {
        case 'stop':
          await this.endSessions(id, `tenant ${id} was stopped`);
          await this.supervisor.stopWanted(id);
          this.events.emit('state', id, { state: 'stopped' });
          break;
        case 'restart':
          await this.endSessions(id, `tenant ${id} is restarting`);
          await this.supervisor.stopWanted(id);
          await this.supervisor.startNow(tenant);
          break;
        case 'suspend': {
          if (tenant.wanted !== 'running') throw new PgsError('INVALID_STATE', `tenant ${id} is stopped: there is nothing to suspend`);
          await this.supervisor.settle(id);
          if (this.supervisor.isSuspended(id)) break;
          this.router.closeTenant(id, `tenant ${id} was suspended`);
          await this.supervisor.suspendNow(id, 'requested');
          break;
        }
        case 'wake':
        case 'start':
          if (tenant.wanted !== 'running') throw new PgsError('INVALID_STATE', `tenant ${id} is stopped: "pgs start ${id}" starts it`);
          // Waking a tenant that is down for another reason (crashed, say) starts it.
          if (this.supervisor.isSuspended(id)) await this.supervisor.wake(id);
          else if ((await this.runtime.status(id, { fresh: true })).state !== 'running') await this.supervisor.startNow(tenant);
          break;
      }
      return this.view(tenant);
    });
  }


  /** Ends the tenant's sessions with a FATAL saying why, before its server goes (which would only say "administrator command"). */
  private async endSessions(id: string, why: string): Promise<void> {
    if (this.router.closeTenant(id, why) > 0) await this.router.drained(id);
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
    const strings = connectionStrings(this.catalog.settings, findTenant(this.catalog, id), this.runtime);
    // Clients on this host (the dashboard's reader, most often) connect to loopback: what pgs url adds here.
    return { ...strings, hostaddr: await localHostaddr(strings.hostname) };
  }

  async queries(id: string, order: QueryOrder, limit: number): Promise<S.QueriesJson> {
    assertTenantId(id);
    findTenant(this.catalog, id);
    if (!Number.isInteger(limit) || limit < 1 || limit > QUERIES_LIMIT) throw new PgsError('INVALID_REQUEST', `invalid limit ${limit}: from 1 to ${QUERIES_LIMIT}`, { field: 'limit' });
    // Never a wake: a suspended (or suspending) tenant is answered from its last sample.
    const running = !this.supervisor.isSuspended(id) && (await this.runtime.status(id, { fresh: true })).state === 'running';
    const answer = await this.querySamples.read(id, running, order, limit);
    return { tenant: id, order, ...answer };
  }

  async resetQueries(id: string): Promise<S.QueriesJson> {
    assertTenantId(id);
    findTenant(this.catalog, id);
    await this.runtime.resetQueryStats(id);
    await this.querySamples.emptied(id);
    return this.queries(id, 'total', QUERIES_LIMIT);
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
      await this.pgs.recordWanted('running');
      await this.refresh();
      this.supervisor.retryNow();
      await this.supervisor.reconcile();
      const done: string[] = [];
      const failed: { id: string; error: string }[] = [];
      for (const t of this.catalog.tenants) {
        const seen = await this.supervisor.observe(t, true);
        if (seen.state === 'running' || seen.state === 'suspended') done.push(t.id);
        else failed.push({ id: t.id, error: seen.lastError ?? `the server is ${seen.state}` });
      }
      return { done, failed };
    });
  }

  shutdown(stopTenants: boolean, ship = true): void {
    void (async () => {
      if (stopTenants && !this.isStopping) {
        await this.serial(() => this.pgs.recordWanted('stopped')).catch((err: Error) => this.log.warn('could not record the tenants as stopped', { error: err.message }));
      }
      await this.stop({ ship });
    })();
  }

  // --- backups (daemon/backup-plane.ts) ---

  async backup(id: string, progress?: Progress): Promise<S.BackupJson> {
    this.assertRunning();
    return backupJson(await this.backupPlane.backupNow(id, 'manual', progress));
  }

  async listBackups(id: string): Promise<S.BackupListJson> {
    const list = await this.backupPlane.list(id);
    return { tenant: id, backups: list.backups.map(backupJson), window: list.window, ranges: list.ranges, lastFailure: list.lastFailure };
  }

  async restore(id: string, request: S.RestoreRequest, progress?: Progress): Promise<S.TenantJson> {
    this.assertRunning();
    const choice = { ...(request.backup !== undefined ? { backup: request.backup } : {}), ...(request.time !== undefined ? { time: parseTime(request.time, 'time') } : {}) };
    const exists = this.catalog.tenants.some((t) => t.id === id);
    const target = request.as ?? id;
    // A removed tenant whose backups remain comes back under its id (or another).
    const tenant = target !== id || !exists
      ? await this.backupPlane.restoreAs(id, target, choice, 'restored', progress).catch(async (err: unknown) => {
        // A tenant that is gone with nothing kept: "pgs backup <id>", which the plan suggests, would fail too.
        if (!exists && isPgsError(err, 'BACKUP_NOT_FOUND') && (await this.backupPlane.list(id).then((l) => l.backups.length, () => 0)) === 0) {
          throw new PgsError('TENANT_NOT_FOUND', `no tenant ${id}, and no backup of one to restore it from: "pgs list" shows the tenants there are`);
        }
        throw err;
      })
      : await this.backupPlane.restoreInPlace(id, choice, progress);
    return this.madeView(tenant);
  }

  async branch(id: string, request: S.BranchRequest, progress?: Progress): Promise<S.TenantJson> {
    this.assertRunning();
    return this.madeView(await this.backupPlane.branch(id, request.id, request.at !== undefined ? parseTime(request.at, 'at') : undefined, progress));
  }

  async exportTenant(id: string, progress?: Progress): Promise<S.ExportJson> {
    this.assertRunning();
    const made = await this.backupPlane.exportTenant(id, progress);
    return { ...made, download: `/v1/exports/${made.name}` };
  }

  async deleteBackups(id: string): Promise<void> {
    this.assertRunning();
    await this.backupPlane.deleteAll(id);
  }

  exportFile(name: string): string {
    return this.backupPlane.exportFile(name);
  }

  importLimit(): Promise<ImportLimit> {
    return importLimit(this.catalog.settings);
  }

  importUploadFile(body: Readable, limit: ImportLimit): Promise<string> {
    this.assertRunning();
    return this.backupPlane.importUploadFile(body, limit);
  }

  async importFile(file: string, as: string | undefined, progress?: Progress): Promise<S.TenantJson> {
    this.assertRunning();
    return this.madeView(await this.backupPlane.importFile(file, as, progress));
  }

  /** A tenant a restore, branch or import made, with what pgs took from its data. */
  private async madeView(made: MadeTenant): Promise<S.TenantJson> {
    const view = await this.view(made.tenant);
    return { ...view, ...(made.neutralized.length > 0 ? { neutralized: made.neutralized } : {}), ...(made.notes ? { notes: made.notes } : {}) };
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
      const settled = await this.pgs.settleMeta();
      await this.refresh();
      for (const s of settled) {
        this.log.info(s.updated === 'catalog' ? 'took a tenant\'s newer settings from its folder\'s metadata' : 'wrote the catalog\'s settings to a tenant folder\'s metadata', { tenant: s.id, newer: s.newer, fields: s.fields.join(',') });
        if (s.updated !== 'catalog') continue;
        if (s.after.wanted === 'stopped' && s.before.wanted !== 'stopped') {
          await this.endSessions(s.id, `tenant ${s.id} was stopped`);
          await this.supervisor.stopWanted(s.id);
        }
        await this.applyChange(s.id, s.before, s.after);
      }
      await this.supervisor.reconcile();
      return { adopted, removed, settled: settled.map(({ id, newer, updated, fields }) => ({ id, newer, updated, fields })), report: await this.pgs.doctor() };
    });
  }






}

function backupJson(meta: BackupMeta): S.BackupJson {
  const { id, tenant, generation, kind, reason, startedAt, finishedAt, startLsn, endLsn, timeline, bytes, note } = meta;
  return { id, tenant, generation, kind, reason, startedAt, finishedAt, startLsn, endLsn, timeline, bytes, ...(note !== undefined ? { note } : {}) };
}

/** A time from a request (the route made it RFC 3339; other callers may give any form the CLI takes). */
function parseTime(text: string, field: 'time' | 'at'): Date {
  return parsePointInTime(text, field, 'INVALID_REQUEST', field).date;
}

/** A strong ETag of a tenant's settings (what PATCH changes), not of its server's state. */
export function etagOf(tenant: Tenant): string {
  return `"${createHash('sha256').update(JSON.stringify(tenant)).digest('base64url').slice(0, 22)}"`;
}

export function etagMatches(ifMatch: string, etag: string): boolean {
  return ifMatch.split(',').map((s) => s.trim().replace(/^W\//, '')).some((candidate) => candidate === '*' || candidate === etag);
}

export function readCertificate(certFile: string, keyFile: string): { cert: Buffer; key: Buffer } {
  try {
    return { cert: readFileSync(certFile), key: readFileSync(keyFile) };
  } catch (err) {
    throw new PgsError('CERT_INVALID', `cannot read the certificate or key (${(err as Error).message}); run "pgs setup" to make or check them`);
  }
}

export function certificateExpiry(cert: Buffer): string | null {
  try {
    return new Date(new X509Certificate(cert).validTo).toISOString();
  } catch {
    return null;
  }
}

async function isPgsProcess(pid: number): Promise<boolean> {
  return (await processArgv(pid)).some((arg) => arg.includes('pgs'));
}

/** Writes the daemon's pid file, or says which daemon already runs for this home. */
export async function claimPidFile(paths: DaemonPaths, home: string): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await fs.writeFile(paths.pidFile, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      return;
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
    const pid = Number.parseInt(await fs.readFile(paths.pidFile, 'utf8').catch(() => ''), 10);
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && pidExists(pid) && (await isPgsProcess(pid))) {
      throw new PgsError('USAGE', `a pgs daemon already runs for ${home} (pid ${pid}); "pgs stop" stops it`);
    }
    await fs.rm(paths.pidFile, { force: true }); // left by a daemon that died
  }
  throw new PgsError('USAGE', `cannot claim ${paths.pidFile}`);
}