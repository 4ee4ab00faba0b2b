import type { Log } from '../core/log.js';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { EventLog } from '../telemetry/events.js';
import { DaemonMetrics } from '../telemetry/metrics.js';
import type * as S from '../api/schemas.js';
import { buildApi, listenApi, type ListenedApi } from '../api/server.js';
import { TokenStore } from '../api/tokens.js';
import type { Catalog } from '../catalog/schema.js';
import { DEFAULT_API_LISTEN } from '../catalog/schema.js';
import { PgsError, errnoCode } from '../core/errors.js';
import { writeAtomic } from '../core/files.js';
import { forEachLimit } from '../core/limit.js';
import { History, type HistorySample } from '../telemetry/history.js';
import { daemonPaths, type DaemonPaths } from '../core/paths.js';
import { Router } from '../router/router.js';
import { certificateExpiry, claimPidFile, readCertificate } from './daemon-files.js';

export { jsonLog } from './daemon-files.js';
import type { TenantRuntime } from '../runtime/runtime.js';
import { ADMIN_ROLE } from '../runtime/server-config.js';
import type { Pgs } from '../service/pgs.js';
import { tenantFromMeta } from '../service/doctor.js';
import { compareTenantMeta } from '../catalog/tenant-meta.js';
import { HEALTH_INTERVAL_MS, Supervisor } from '../supervisor/supervisor.js';
import { CatalogBackends } from './backends.js';
import { Logins } from './logins.js';
import { QuerySamples } from './query-stats.js';
import { DiskGuard } from './disk-guard.js';
import { BackupPlane } from './backup-plane.js';
import { tenantServerSpec } from '../runtime/server-spec.js';
import { CatalogRecords } from './catalog-records.js';
import { TenantPlane } from './control-plane.js';
import { SerialQueue } from './coordination.js';
import { NativeBackups } from './native-backups.js';
import { NativeServers, endSessions } from './native-servers.js';

/**
 * The pgs daemon of one host (native or docker runtime). It owns the router
 * and the tenant servers, and is the only writer of the catalog (but for
 * `pgs setup`). The CLI
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

/** One host's daemon: builds the parts (catalog, servers, backups, coordination), joins them in the control plane, runs them. */
export class Daemon {
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
  private servers!: NativeServers;
  /** The one control plane the API serves. */
  plane!: TenantPlane;
  private readonly coordination = new SerialQueue();
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
        tenants: async () => (await this.supervisor.tenantSamples())?.map((sample) => this.servers.withBackupSample(sample)),
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
        endSessions: (id, why) => endSessions(this.router, id, why),
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
      this.servers = new NativeServers({
        pgs: this.pgs, runtime: this.runtime, supervisor: this.supervisor, router: this.router, disk: this.disk, backupPlane: this.backupPlane,
        logins: this.logins, querySamples: this.querySamples, events: this.events, log: this.log,
        catalog: () => this.catalog, refresh: () => this.refresh(), stopProgress: () => this.stopProgress,
      });
      this.plane = new TenantPlane({
        records: new CatalogRecords(this.pgs, () => this.catalog, () => this.refresh()),
        servers: this.servers,
        backups: new NativeBackups(this.backupPlane, () => this.catalog),
        coordination: this.coordination,
        daemon: {
          version: this.version, startedAt: this.startedAt, history: this.samples,
          stopping: () => this.isStopping, port: () => this.router.port, api: () => this.api?.tcpAddress ?? null,
          connections: () => this.router.connectionCount(), refusals: () => Object.fromEntries(this.router.refusals), certificateExpires: () => this.certExpires,
          reload: () => this.reload(), shutdown: (stopTenants, ship) => this.shutdown(stopTenants, ship),
        },
      });
      const app = await buildApi({ plane: this.plane, tokens: this.tokens, events: this.events, metrics: this.metrics, version: this.version, log: this.log });
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

  private serial<T>(task: () => Promise<T>): Promise<T> {
    return this.coordination.serial(task);
  }

  /** Answers, then (when `stopTenants`) records every tenant as stopped, and stops. */
  shutdown(stopTenants: boolean, ship = true): void {
    void (async () => {
      if (stopTenants && !this.isStopping) {
        await this.serial(() => this.pgs.recordWanted('stopped')).catch((err: Error) => this.log.warn('could not record the tenants as stopped', { error: err.message }));
      }
      await this.stop({ ship });
    })();
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

}

