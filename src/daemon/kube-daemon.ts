import type { Log } from '../core/log.js';
/**
 * The daemon on the kubernetes runtime: the same control plane, REST API and
 * router as on one host, over tenants that are CloudNativePG clusters.
 * Nothing of a tenant is kept in this process or its files: pgs's record of
 * each tenant is an annotation of its Cluster, its login verifier is in its
 * Secret, and every pgs pod (a Deployment of two or more) watches them, so
 * any pod can route any client and take any API call, and losing a pod
 * loses nothing.
 *
 * This file is the wiring: the parts are KubeRecords (the Cluster records),
 * KubeServers (the clusters), KubeBackupProvider (the barman plugin),
 * ApiServerOrder (changes at once; the Lease holder leads) and KubeIdle (the
 * leader's idle suspension over every pod's activity).
 */
import { promises as fs } from 'node:fs';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { EventLog } from '../telemetry/events.js';
import { DaemonMetrics, type TenantSample } from '../telemetry/metrics.js';
import { buildApi, listenApi, type ListenedApi } from '../api/server.js';
import { TokenStore } from '../api/tokens.js';
import { DEFAULT_API_LISTEN, type Catalog } from '../catalog/schema.js';
import { PgsError, errnoCode } from '../core/errors.js';
import { AllowList } from '../core/cidr.js';
import { daemonPaths, type DaemonPaths } from '../core/paths.js';
import { Router } from '../router/router.js';
import { PodActivity } from '../runtime/kubernetes/activity.js';
import { KubeClient, loadConnection } from '../runtime/kubernetes/client.js';
import { LeaderLease } from '../runtime/kubernetes/lease.js';
import type { KubernetesSettings } from '../runtime/kubernetes/objects.js';
import { KubeTenants, type KubeTenantView } from '../runtime/kubernetes/tenants.js';
import type { Pgs } from '../service/pgs.js';
import type { Tenant } from '../catalog/schema.js';
import { claimPidFile, certificateExpiry, readCertificate } from './daemon-files.js';
import { History, type HistorySample } from '../telemetry/history.js';
import { KubeBackends } from './kube-backends.js';
import { KubeBackups } from './kube-backups.js';
import { S3_SECRET } from '../runtime/kubernetes/probe.js';
import { SecretTokenBacking, TOKENS_SECRET } from './kube-tokens.js';
import { TenantPlane } from './control-plane.js';
import { ApiServerOrder } from './coordination.js';
import { KubeBackupProvider } from './kube-backup-provider.js';
import { KubeIdle } from './kube-idle.js';
import { KubeRecords } from './kube-records.js';
import { KubeServers, stateOf } from './kube-servers.js';

export { stateOf } from './kube-servers.js';

export interface KubeDaemonOptions {
  version?: string;
  /** This pod's name (PGS_POD); default: the host name. */
  pod?: string;
  /** How long a create, start or wake waits for the cluster to serve (default 10 min: a first pull of the image is slow). */
  readyTimeoutMs?: number;
  /** How often this pod says which tenants it served, and the leader looks for idle ones (default 10 s). */
  activityIntervalMs?: number;
  historyIntervalMs?: number;
  serverSessions?: number;
  poolTimeoutMs?: number;
  /** Connections still starting up from one address at once, more wait their turn (default 64; 0: no limit; PGS_MAX_STARTUPS_PER_ADDRESS). */
  maxStartupsPerAddress?: number;
  env?: NodeJS.ProcessEnv;
}

export class KubeDaemon {
  private readonly pgs: Pgs;
  private readonly log: Log;
  private readonly paths: DaemonPaths;
  private readonly version: string;
  private readonly pod: string;
  private readonly readyTimeoutMs: number;
  private readonly activityIntervalMs: number;
  private readonly options: KubeDaemonOptions;
  private tokens!: TokenStore;
  readonly events = new EventLog();
  private readonly samples: History;
  private readonly startedAt = new Date();
  private catalog!: Catalog;
  private client!: KubeClient;
  private tenants!: KubeTenants;
  private backends!: KubeBackends;
  private router!: Router;
  private metrics!: DaemonMetrics;
  private api: ListenedApi | undefined;
  private lease!: LeaderLease;
  private backups: KubeBackups | undefined;
  private servers!: KubeServers;
  private idle!: KubeIdle;
  /** The one control plane the API serves. */
  plane!: TenantPlane;
  /** Tenants this pod last saw suspended (to act on a suspension another pod made). */
  private readonly suspendedSeen = new Set<string>();
  private activity!: PodActivity;
  private certExpires: string | null = null;
  private timers: NodeJS.Timeout[] = [];
  private stopping: Promise<void> | undefined;
  /** What this pod saw of each tenant's record last, to act on changes made through any pod. */
  private readonly seen = new Map<string, Tenant>();
  readonly stopped: Promise<void>;
  private resolveStopped!: () => void;

  constructor(pgs: Pgs, log: Log, options: KubeDaemonOptions = {}) {
    this.pgs = pgs;
    this.log = log;
    this.options = options;
    this.paths = daemonPaths(pgs.home);
    this.version = options.version ?? 'unknown';
    this.pod = options.pod ?? hostname();
    this.readyTimeoutMs = options.readyTimeoutMs ?? 10 * 60_000;
    this.activityIntervalMs = options.activityIntervalMs ?? 10_000;
    this.samples = new History(options.historyIntervalMs ?? 10_000);
    this.stopped = new Promise((resolve) => { this.resolveStopped = resolve; });
  }

  private get kube(): KubernetesSettings {
    const s = this.catalog.settings;
    return {
      namespace: this.client.namespace,
      instances: s.instances ?? 1,
      ...(s.storageClass ? { storageClass: s.storageClass } : {}),
      ...(s.image ? { imageName: s.image } : {}),
    };
  }

  async start(): Promise<void> {
    this.catalog = await this.pgs.store.read();
    await claimPidFile(this.paths, this.pgs.home);
    try {
      const { settings } = this.catalog;
      const { cert, key } = readCertificate(settings.certFile, settings.keyFile);
      const connection = await loadConnection({ env: this.options.env ?? process.env, ...(settings.namespace ? { namespace: settings.namespace } : {}) });
      this.client = new KubeClient(connection, { log: this.log });
      // One token list for every pod, in the Kubernetes API.
      this.tokens = new TokenStore(new SecretTokenBacking(this.client));
      await this.tokens.load();
      const target = settings.backupTarget ? {
        url: settings.backupTarget,
        credentialsSecret: S3_SECRET,
        ...(settings.s3Endpoint ? { endpointURL: settings.s3Endpoint } : {}),
        ...(settings.s3Region ? { region: settings.s3Region } : {}),
      } : undefined;
      this.tenants = new KubeTenants(this.client, this.kube, target);
      if (target) {
        this.backups = new KubeBackups(this.client, this.kube);
        await this.backups.start();
      }
      await this.tenants.start();
      this.backends = new KubeBackends(this.client, this.tenants, {
        wakeTimeoutMs: this.readyTimeoutMs,
        // A failover: idle sessions kept for the old primary (both pools) go at once.
        onMoved: (id) => {
          const dropped = this.router?.dropServerSessions(id) ?? 0;
          this.log.info('the primary of a tenant moved', { tenant: id, droppedSessions: dropped });
        },
        onSecret: (name) => {
          if (name === TOKENS_SECRET) this.tokens.reload().catch((err: Error) => this.log.warn('could not read the tokens again', { error: err.message }));
        },
      });
      await this.backends.start();
      this.metrics = new DaemonMetrics({
        connections: () => this.router.connectionCount(),
        liveBytes: () => this.router.liveBytes(),
        refusals: () => this.router.refusals,
        pendingStartups: () => this.router.startups.size,
        tenantStates: async () => {
          const counts = new Map<string, number>();
          for (const view of this.tenants.list()) counts.set(stateOf(view), (counts.get(stateOf(view)) ?? 0) + 1);
          return counts;
        },
        tenants: async () => this.tenants.list().map((view) => this.sample(view)),
        running: () => {
          const { running, maxRunning } = this.servers.running();
          return { running, budget: maxRunning };
        },
      }, { version: this.version, postgres: '18' });
      this.router = new Router(this.backends, {
        domain: settings.domain, cert, key, authSecret: randomBytes(32), log: this.log, observer: this.metrics,
        ...(this.options.serverSessions !== undefined ? { serverSessions: { keep: this.options.serverSessions } } : {}),
        ...(this.options.poolTimeoutMs !== undefined ? { poolTimeoutMs: this.options.poolTimeoutMs } : {}),
        ...(this.options.maxStartupsPerAddress !== undefined ? { maxStartupsPerAddress: this.options.maxStartupsPerAddress } : {}),
      });
      this.tenants.onChange((id, view) => this.changed(id, view));
      for (const view of this.tenants.list()) if (view.tenant) this.seen.set(view.id, view.tenant);
      this.certExpires = certificateExpiry(cert);
      try {
        await this.router.listen(settings.port);
      } catch (err) {
        if (errnoCode(err) === 'EADDRINUSE') throw new PgsError('ADDRESS_IN_USE', `port ${settings.port} is already in use: stop what listens there, or choose another with "pgs setup --port P"`);
        throw err;
      }
      this.activity = new PodActivity(this.client, this.pod, this.activityIntervalMs);
      this.lease = new LeaderLease(this.client, {
        name: 'pgs-leader', identity: this.pod,
        onChange: (leader) => {
          this.log.info(leader ? 'this pod leads (suspends idle tenants)' : 'this pod no longer leads', { pod: this.pod });
          if (leader) this.idle.forget();
        },
      });
      this.plane = this.makePlane();
      const app = await buildApi({ plane: this.plane, tokens: this.tokens, events: this.events, metrics: this.metrics, version: this.version, log: this.log });
      this.api = await listenApi(app, this.paths.socket, settings.apiListen === undefined ? DEFAULT_API_LISTEN : settings.apiListen, { cert, key });
      await this.lease.start();
    } catch (err) {
      await this.router?.close().catch(() => undefined);
      await this.api?.close().catch(() => undefined);
      this.backups?.stop();
      this.backends?.stop();
      this.tenants?.stop();
      this.client?.close();
      await fs.rm(this.paths.pidFile, { force: true });
      throw err;
    }
    this.timers.push(setInterval(() => void this.idle.tick(), this.activityIntervalMs));
    this.timers.push(setInterval(() => this.sampleHistory(), this.samples.intervalMs));
    void this.idle.tick();
    this.log.info('daemon started', { pid: process.pid, runtime: 'kubernetes', namespace: this.client.namespace, pod: this.pod, port: this.router.port, api: this.api.tcpAddress });
  }

  /** The parts of this runtime, joined in the one control plane. */
  private makePlane(): TenantPlane {
    const settings = () => this.catalog.settings;
    const isLeader = () => this.lease.isLeader;
    const records = new KubeRecords(this.tenants, settings);
    const common = { client: this.client, tenants: this.tenants, records, backups: this.backups, events: this.events, log: this.log, settings, readyTimeoutMs: this.readyTimeoutMs };
    this.idle = new KubeIdle({ client: this.client, tenants: this.tenants, router: this.router, activity: this.activity, backups: this.backups, log: this.log, isLeader, stopping: () => this.stopping !== undefined });
    this.servers = new KubeServers({ ...common, router: this.router, idle: this.idle, kube: () => this.kube, pod: this.pod, isLeader });
    return new TenantPlane({
      records,
      servers: this.servers,
      backups: new KubeBackupProvider(common),
      coordination: new ApiServerOrder(isLeader),
      daemon: {
        version: this.version, startedAt: this.startedAt, history: this.samples,
        stopping: () => this.stopping !== undefined, port: () => this.router.port, api: () => this.api?.tcpAddress ?? null,
        connections: () => this.router.connectionCount(), refusals: () => Object.fromEntries(this.router.refusals), certificateExpires: () => this.certExpires,
        reload: () => this.reload(),
        // Stops this pod's daemon only: the tenants are the cluster's, and the other pods keep serving them.
        shutdown: () => void this.stop(),
      },
    });
  }

  /** A tenant's record changed, through this pod or another: its clients here follow. */
  private changed(id: string, view: KubeTenantView | undefined): void {
    const before = this.seen.get(id);
    const after = view?.tenant;
    if (after) this.seen.set(id, after);
    else this.seen.delete(id);
    if (!view) {
      if (before) {
        this.router.closeTenant(id, `tenant ${id} was removed`);
        this.events.emit('removed', id);
      }
      this.activity?.forget(id);
      return;
    }
    // A suspension, by whichever pod: this pod's clients of the tenant are told why.
    if (view.suspended && !this.suspendedSeen.has(id)) {
      this.suspendedSeen.add(id);
      if (after?.wanted === 'running') {
        this.router.closeTenant(id, `tenant ${id} was suspended`);
        this.events.emit('state', id, { state: 'suspended' });
      }
    } else if (!view.suspended) this.suspendedSeen.delete(id);
    if (!before || !after) return;
    if (after.access === 'disabled' && before.access !== 'disabled') {
      const closed = this.router.closeTenant(id, `access to tenant ${id} was disabled`);
      if (closed > 0) this.log.info('closed connections', { tenant: id, count: closed, why: 'access disabled' });
    }
    if (after.access !== before.access) this.events.emit('access', id, { access: after.access });
    if (after.allow !== undefined && after.allow.join(',') !== (before.allow ?? []).join(',')) {
      const closed = this.router.closeUnallowed(id, new AllowList(after.allow));
      if (closed > 0) this.log.info('closed connections', { tenant: id, count: closed, why: 'address no longer allowed' });
    }
    if (after.wanted === 'stopped' && before.wanted !== 'stopped') this.router.closeTenant(id, `tenant ${id} was stopped`);
    if ((after.pool ?? 'session') !== (before.pool ?? 'session')) this.router.dropServerSessions(id);
  }

  private sampleHistory(): void {
    const samples = new Map<string, HistorySample>();
    for (const view of this.tenants.list()) {
      samples.set(view.id, { state: stateOf(view), connections: this.router.connectionCount(view.id), xacts: this.router.transactionCount(view.id), wakes: this.servers.wakes.get(view.id) ?? 0 });
    }
    this.samples.record(Date.now(), samples);
  }

  private sample(view: KubeTenantView): TenantSample {
    const last = this.router.lastUsed(view.id);
    return {
      id: view.id, up: view.healthy, connections: this.router.connectionCount(view.id), wakes: this.servers.wakes.get(view.id) ?? 0,
      lastActive: last === undefined ? null : Math.floor(last / 1000), dataBytes: null,
      lastBackup: this.backups?.newest.has(view.id) ? Math.floor(Date.parse(this.backups.newest.get(view.id) as string) / 1000) : null,
      archiveFailing: view.archiving ? (view.archiving.ok ? 0 : 1) : null,
      archivePending: null,
    };
  }

  stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.stopping ??= (async () => {
      this.log.info('daemon stopping');
      // Clients and callers first (the API lets requests under way finish), while the watches still run for them.
      await this.router.close();
      await this.api?.close();
      await this.lease.stop().catch(() => undefined);
      await this.activity.withdraw();
      await this.tokens.flush().catch((err: Error) => this.log.warn('could not write the tokens\' last use', { error: err.message }));
      this.backups?.stop();
      this.backends.stop();
      this.tenants.stop();
      this.client.close();
      await fs.rm(this.paths.pidFile, { force: true });
      this.log.info('daemon stopped');
    })().catch((err: Error) => this.log.warn('stop failed', { error: err.message })).finally(() => this.resolveStopped());
    return this.stopping;
  }

  async reload(): Promise<void> {
    const next = await this.pgs.store.read();
    if (next.settings.domain !== this.catalog.settings.domain) this.router.setDomain(next.settings.domain);
    try {
      const { cert, key } = readCertificate(next.settings.certFile, next.settings.keyFile);
      this.router.setCertificate(cert, key);
      this.api?.setCertificate(cert, key);
      this.certExpires = certificateExpiry(cert);
    } catch (err) {
      this.log.warn('certificate not reloaded; the old one stays', { error: (err as Error).message });
    }
    const was = this.catalog.settings;
    const now = next.settings;
    if (was.instances !== now.instances || was.storageClass !== now.storageClass || was.image !== now.image || was.namespace !== now.namespace || was.backupTarget !== now.backupTarget || was.s3Endpoint !== now.s3Endpoint) {
      this.log.warn('the kubernetes settings changed: they apply when the daemon starts again (pgs stop; pgs start)', {});
    }
    this.catalog = { ...next, settings: { ...now, instances: was.instances, storageClass: was.storageClass, image: was.image, namespace: was.namespace, backupTarget: was.backupTarget, s3Endpoint: was.s3Endpoint } } as Catalog;
  }
}
