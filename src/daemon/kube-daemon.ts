import type { Log } from '../core/log.js';
/**
 * The daemon on the kubernetes runtime: the same REST API and router as on
 * one host, over tenants that are CloudNativePG clusters. Nothing of a
 * tenant is kept in this process or its files: pgs's record of each tenant
 * is an annotation of its Cluster, its login verifier is in its Secret, and
 * every pgs pod (a Deployment of two or more) watches them, so any pod can
 * route any client and take any API call, and losing a pod loses nothing.
 *
 * One pod at a time (the holder of a Lease) suspends idle tenants; each pod
 * says which tenants it served in a Lease of its own, so the leader sees
 * the connections of every pod.
 */
import { promises as fs } from 'node:fs';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { EventLog } from '../telemetry/events.js';
import { DaemonMetrics, type TenantSample } from '../telemetry/metrics.js';
import type { ControlPlane } from '../api/routes.js';
import type * as S from '../api/schemas.js';
import type { Static } from 'typebox';
import { buildApi, listenApi, type ListenedApi } from '../api/server.js';
import { TokenStore } from '../api/tokens.js';
import { generatePassword, scramVerifier } from '../auth/scram.js';
import { assertTenantId, newSuffix } from '../catalog/ids.js';
import { DEFAULT_API_LISTEN, type Catalog, type Tenant } from '../catalog/schema.js';
import { PgsError, errnoCode } from '../core/errors.js';
import { AllowList } from '../core/cidr.js';
import { parsePointInTime } from '../core/time.js';
import { daemonPaths, type DaemonPaths } from '../core/paths.js';
import { Router } from '../router/router.js';
import { PodActivity, lastActivity } from '../runtime/kubernetes/activity.js';
import { KubeClient, RESOURCES, loadConnection, type KubeResource } from '../runtime/kubernetes/client.js';
import { LeaderLease } from '../runtime/kubernetes/lease.js';
import { DATABASE_ANNOTATION, DEFAULT_STORAGE_BYTES, ownerSecretName, type KubernetesSettings } from '../runtime/kubernetes/objects.js';
import { newStamp } from '../backup/layout.js';
import { KubeTenants, type KubeTenantView } from '../runtime/kubernetes/tenants.js';
import type { Pgs } from '../service/pgs.js';
import { connectionStrings, createdAnswer } from '../service/connection.js';
import { applyChanges, assertPassword, assertWantedRunning, checkPatch, etagOf, idleLongEnough, newTenantEntry, notSupported, patchChanges } from '../service/tenant-rules.js';
import { tenantView } from '../service/tenant-view.js';
import { claimPidFile, certificateExpiry, readCertificate } from './daemon-files.js';
import { History, type HistorySample } from '../telemetry/history.js';
import { KubeBackends, secretValue } from './kube-backends.js';
import { KubeBackups, backupJson } from './kube-backups.js';
import { S3_SECRET } from '../runtime/kubernetes/probe.js';
import { SecretTokenBacking, TOKENS_SECRET } from './kube-tokens.js';

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

const notHere = (what: string, instead: string) => notSupported('kubernetes', what, instead);

export class KubeDaemon implements ControlPlane {
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
  /** Tenants the leader found idle, and when: suspended only if still idle at a later look, after every live pod has spoken since. */
  private readonly idleSeen = new Map<string, number>();
  /** Tenants this pod last saw suspended (to act on a suspension another pod made). */
  private readonly suspendedSeen = new Set<string>();
  private activity!: PodActivity;
  private certExpires: string | null = null;
  private timers: NodeJS.Timeout[] = [];
  private stopping: Promise<void> | undefined;
  /** What this pod saw of each tenant's record last, to act on changes made through any pod. */
  private readonly seen = new Map<string, Tenant>();
  /** When the leader first saw each tenant serving (a tenant is not idle before it has served that long). */
  private readonly servingSince = new Map<string, number>();
  private readonly wakes = new Map<string, number>();
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
      this.client = new KubeClient(connection);
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
          const { running, maxRunning } = this.running();
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
      const app = await buildApi({ plane: this, tokens: this.tokens, events: this.events, metrics: this.metrics, version: this.version, log: this.log });
      this.api = await listenApi(app, this.paths.socket, settings.apiListen === undefined ? DEFAULT_API_LISTEN : settings.apiListen, { cert, key });
      this.activity = new PodActivity(this.client, this.pod, this.activityIntervalMs);
      this.lease = new LeaderLease(this.client, {
        name: 'pgs-leader', identity: this.pod,
        onChange: (leader) => {
          this.log.info(leader ? 'this pod leads (suspends idle tenants)' : 'this pod no longer leads', { pod: this.pod });
          if (leader) this.servingSince.clear();
        },
      });
      await this.lease.start();
    } catch (err) {
      await this.router?.close().catch(() => undefined);
      this.backups?.stop();
      this.backends?.stop();
      this.tenants?.stop();
      this.client?.close();
      await fs.rm(this.paths.pidFile, { force: true });
      throw err;
    }
    this.timers.push(setInterval(() => void this.tick(), this.activityIntervalMs));
    this.timers.push(setInterval(() => this.sampleHistory(), this.samples.intervalMs));
    void this.tick();
    this.log.info('daemon started', { pid: process.pid, runtime: 'kubernetes', namespace: this.client.namespace, pod: this.pod, port: this.router.port, api: this.api.tcpAddress });
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

  /** Every few seconds: say which tenants this pod served; the leader suspends the idle ones. */
  private ticking = false;

  private async tick(): Promise<void> {
    if (this.ticking || this.stopping) return;
    this.ticking = true;
    try {
      const now = Date.now();
      for (const view of this.tenants.list()) {
        if (this.router.connectionCount(view.id) > 0) this.activity.note(view.id, now);
        else {
          const last = this.router.lastUsed(view.id);
          if (last !== undefined) this.activity.note(view.id, last);
        }
      }
      await this.activity.publish(now);
      if (this.lease.isLeader) await this.suspendIdle(now);
    } catch (err) {
      this.log.warn('could not publish activity or suspend idle tenants', { error: (err as Error).message });
    } finally {
      this.ticking = false;
    }
  }

  /**
   * The leader's look for idle tenants. A tenant is suspended when no pod
   * served it for its autosuspend time at two looks in a row, with every live
   * pod having published since the first: a client that came to another pod
   * just before is seen first. With backups on, what changed since the last
   * backup is backed up before.
   */
  private async suspendIdle(now: number): Promise<void> {
    const { active, oldestRenewal } = await lastActivity(this.client, now);
    for (const view of this.tenants.list()) {
      const t = view.tenant;
      if (!t || !view.healthy || view.suspended) {
        this.servingSince.delete(view.id);
        this.idleSeen.delete(view.id);
        continue;
      }
      const since = this.servingSince.get(view.id) ?? now;
      this.servingSince.set(view.id, since);
      const last = Math.max(since, active.get(view.id) ?? 0);
      if (!idleLongEnough(t, last, now, this.router.connectionCount(view.id))) {
        this.idleSeen.delete(view.id);
        continue;
      }
      const first = this.idleSeen.get(view.id);
      if (first === undefined || oldestRenewal < first) {
        if (first === undefined) this.idleSeen.set(view.id, now);
        continue;
      }
      try {
        // Hibernation has lost volumes in some operator versions: never without a backup of what changed.
        if (this.backups && !(await this.backups.readyToHibernate(t, last, now))) continue;
        this.log.info('suspending an idle tenant', { tenant: view.id, idleSeconds: Math.round((now - last) / 1000) });
        await this.tenants.setSuspended(view.id, true);
        this.servingSince.delete(view.id);
        this.idleSeen.delete(view.id);
      } catch (err) {
        this.log.warn('could not suspend an idle tenant', { tenant: view.id, error: (err as Error).message });
      }
    }
  }

  private sampleHistory(): void {
    const samples = new Map<string, HistorySample>();
    for (const view of this.tenants.list()) {
      samples.set(view.id, { state: stateOf(view), connections: this.router.connectionCount(view.id), xacts: this.router.transactionCount(view.id), wakes: this.wakes.get(view.id) ?? 0 });
    }
    this.samples.record(Date.now(), samples);
  }

  private sample(view: KubeTenantView): TenantSample {
    const last = this.router.lastUsed(view.id);
    return {
      id: view.id, up: view.healthy, connections: this.router.connectionCount(view.id), wakes: this.wakes.get(view.id) ?? 0,
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

  private assertRunning(): void {
    if (this.stopping) throw new PgsError('DAEMON_STOPPING', 'the daemon is stopping');
  }

  // --- the control plane (api/routes.ts) ---

  private held(id: string): KubeTenantView & { tenant: Tenant } {
    assertTenantId(id);
    const view = this.tenants.view(id);
    if (!view) throw new PgsError('TENANT_NOT_FOUND', `no tenant ${id} (see "pgs list")`);
    if (!view.tenant) throw new PgsError('INVALID_STATE', view.problem ?? `tenant ${id} cannot be read`);
    return view as KubeTenantView & { tenant: Tenant };
  }

  /** The tenant as the API server holds it now (a write through this pod is seen before its watch event). */
  private async fresh(id: string): Promise<KubeTenantView & { tenant: Tenant }> {
    const view = await this.tenants.read(id);
    if (!view?.tenant) return this.held(id);
    return view as KubeTenantView & { tenant: Tenant };
  }

  private json(view: KubeTenantView & { tenant: Tenant }): S.TenantJson {
    const t = view.tenant;
    const last = this.router.lastUsed(t.id);
    const problem = !view.healthy && !view.suspended && t.wanted === 'running' && view.phase !== 'pending' && view.phase !== 'Setting up primary' && view.phase !== 'Cluster in healthy state' ? `the operator says: ${view.phase}` : undefined;
    // The same view as on one host; what a host measures (pid, uptime, disk use) the operator does not say.
    return tenantView(this.catalog.settings, t, {
      state: stateOf(view),
      pid: null,
      serverStartedAt: null,
      connections: this.router.connectionCount(t.id),
      health: view.healthy ? 'ok' : view.suspended || t.wanted === 'stopped' ? 'unknown' : 'failing',
      healthCheckedAt: null,
      ...(problem ? { lastError: problem } : {}),
      restarts: 0,
      wakes: this.wakes.get(t.id) ?? 0,
      lastBackupAt: this.backups?.newest.get(t.id) ?? null,
      lastActiveAt: last === undefined ? null : new Date(last).toISOString(),
      ...this.archivingOf(view),
    }) as S.TenantJson;
  }

  /** WAL archiving as the operator reports it (its ContinuousArchiving condition). */
  private archivingOf(view: KubeTenantView): Pick<S.TenantJson, 'archiving' | 'archivingError'> {
    if (!this.backups) return { archiving: 'off' };
    if (!view.archiving) return { archiving: 'unknown' };
    return view.archiving.ok ? { archiving: 'ok' } : { archiving: 'failing', ...(view.archiving.message ? { archivingError: view.archiving.message } : {}) };
  }

  async listTenants(): Promise<S.TenantJson[]> {
    return this.tenants.list().filter((v): v is KubeTenantView & { tenant: Tenant } => v.tenant !== undefined).map((v) => this.json(v));
  }

  async getTenant(id: string): Promise<{ tenant: S.TenantJson; etag: string }> {
    const view = this.held(id);
    return { tenant: this.json(view), etag: etagOf(view.tenant) };
  }

  async createTenant(request: S.CreateTenantRequest): Promise<S.CreatedTenantJson> {
    this.assertRunning();
    assertTenantId(request.id);
    if (request.password !== undefined) assertPassword(request.password);
    if (request.init !== undefined) throw notHere('an init script (--init)', 'create the tenant, then run the script with psql through its connection string');
    const tenant = newTenantEntry(this.catalog.settings, request);
    if (this.backups && (await this.client.get(RESOURCES.secrets, ownerSecretName(tenant.id)))) {
      throw new PgsError('TENANT_EXISTS', `tenant ${tenant.id} was removed and its backups are kept: "pgs restore ${tenant.id}" brings it back, "pgs backups ${tenant.id} --delete" deletes them and frees the id`);
    }
    const password = request.password ?? generatePassword();
    await this.tenants.create(tenant, { ownerPassword: generatePassword(), clientVerifier: scramVerifier(password) });
    try {
      await this.tenants.awaitHealthy(tenant.id, this.readyTimeoutMs);
    } catch (err) {
      // No half tenant: a cluster that never served is removed with its volumes (it holds no data yet).
      await this.tenants.remove(tenant.id, { volumes: true }).catch((e: Error) => this.log.warn('could not remove a failed create', { tenant: tenant.id, error: e.message }));
      throw err;
    }
    this.events.emit('created', tenant.id);
    return createdAnswer(this.catalog.settings, tenant, password);
  }

  async patchTenant(id: string, patch: S.PatchTenantRequest, ifMatch: string | undefined): Promise<{ tenant: S.TenantJson; etag: string }> {
    this.assertRunning();
    this.held(id);
    const after = await this.tenants.update(id, (current) => {
      checkPatch(current, patch, ifMatch);
      if (patch.diskBytes !== undefined && (patch.diskBytes ?? DEFAULT_STORAGE_BYTES) < (current.diskBytes ?? DEFAULT_STORAGE_BYTES)) {
        throw new PgsError('USAGE', `tenant ${id}'s volume holds ${current.diskBytes ?? DEFAULT_STORAGE_BYTES} bytes and a volume cannot shrink: give a larger --disk`);
      }
      return applyChanges(current, patchChanges(patch));
    });
    if (patch.autosuspend !== undefined) this.servingSince.delete(id);
    return { tenant: this.json(await this.fresh(id)), etag: etagOf(after) };
  }

  async removeTenant(id: string): Promise<void> {
    this.assertRunning();
    this.held(id);
    if (this.router.closeTenant(id, `tenant ${id} was removed`) > 0) await this.router.drained(id);
    // The person confirmed deleting the tenant's data: its volumes go with its cluster (its backups stay).
    await this.tenants.remove(id, { volumes: true, keepBackups: this.backups !== undefined });
    this.samples.forget(id);
  }

  async act(id: string, action: S.TenantActionName): Promise<S.TenantJson> {
    this.assertRunning();
    const view = this.held(id);
    switch (action) {
      case 'stop':
        await this.backupBeforeHibernating(view);
        this.router.closeTenant(id, `tenant ${id} was stopped`);
        await this.tenants.update(id, (t) => ({ ...t, wanted: 'stopped' }));
        await this.tenants.awaitHibernated(id, this.readyTimeoutMs);
        this.events.emit('state', id, { state: 'stopped' });
        break;
      case 'suspend':
        assertWantedRunning(view.tenant, 'suspend');
        await this.backupBeforeHibernating(view);
        this.router.closeTenant(id, `tenant ${id} was suspended`);
        await this.tenants.setSuspended(id, true);
        await this.tenants.awaitHibernated(id, this.readyTimeoutMs);
        this.events.emit('state', id, { state: 'suspended', reason: 'requested' });
        break;
      case 'restart':
        assertWantedRunning(view.tenant, 'restart');
        this.router.closeTenant(id, `tenant ${id} is restarting`);
        await this.tenants.restart(id);
        break;
      case 'start':
      case 'wake':
        if (action === 'wake') assertWantedRunning(view.tenant, 'wake');
        if (view.tenant.wanted !== 'running') await this.tenants.update(id, (t) => ({ ...t, wanted: 'running' }));
        else if (view.suspended) {
          await this.tenants.setSuspended(id, false);
          this.wakes.set(id, (this.wakes.get(id) ?? 0) + 1);
        }
        await this.tenants.awaitHealthy(id, this.readyTimeoutMs);
        this.events.emit('state', id, { state: 'running' });
        break;
    }
    // The record as written, whether or not this pod's watch has brought it back yet.
    return this.json(await this.fresh(id));
  }

  /** With backups on, a serving tenant whose data may have changed since its last backup is backed up before it is hibernated. */
  private async backupBeforeHibernating(view: KubeTenantView & { tenant: Tenant }): Promise<void> {
    if (!this.backups || !view.healthy) return;
    const newest = this.backups.newest.get(view.id);
    const last = this.router.lastUsed(view.id) ?? Date.now();
    if (newest !== undefined && Date.parse(newest) >= last && this.router.connectionCount(view.id) === 0) return;
    await this.backups.backupNow(view.tenant, 'pre-suspend', this.readyTimeoutMs);
  }

  async setPassword(id: string, password: string | undefined): Promise<{ id: string; password: string }> {
    this.assertRunning();
    this.held(id);
    if (password !== undefined) assertPassword(password);
    const chosen = password ?? generatePassword();
    await this.client.patch(RESOURCES.secrets, ownerSecretName(id), { stringData: { 'client-verifier': scramVerifier(chosen) } });
    return { id, password: chosen };
  }

  async connection(id: string): Promise<S.ConnectionJson> {
    const t = this.held(id).tenant;
    // Administration goes through the operator's pod, not a socket on this host.
    // Clients reach the router through the cluster's service, never this pod's loopback: no hostaddr.
    return { ...connectionStrings(this.catalog.settings, t, { local: `kubectl -n ${this.client.namespace} exec -it ${this.tenants.view(id)?.primary ?? `${id}-1`} -- psql ${t.database ?? t.id}` }), hostaddr: null };
  }

  async logs(id: string): Promise<string[]> {
    this.held(id);
    throw notHere('pgs logs', `the server's log is its pod's: kubectl -n ${this.client.namespace} logs -l cnpg.io/cluster=${id}`);
  }

  async queries(id: string): Promise<S.QueriesJson> {
    this.held(id);
    throw notHere('query statistics (pgs queries)', `read pg_stat_statements in the tenant's database, if its cluster loads it: kubectl -n ${this.client.namespace} exec -it ${this.tenants.view(id)?.primary ?? `${id}-1`} -- psql -c 'SELECT * FROM pg_stat_statements'`);
  }

  async resetQueries(id: string): Promise<S.QueriesJson> {
    this.held(id);
    throw notHere('resetting query statistics (pgs config --reset-queries)', `run SELECT pg_stat_statements_reset() in the tenant's cluster as a superuser`);
  }

  history(range: '1h' | '1d', ids: string[] | undefined, fields: S.HistoryField[] | undefined): S.HistoryJson {
    return { range, ...this.samples.series(range, ids, fields) };
  }

  async status(): Promise<S.StatusJson> {
    const views = this.tenants.list();
    return {
      pid: process.pid,
      version: this.version,
      startedAt: this.startedAt.toISOString(),
      port: this.router.port,
      domain: this.catalog.settings.domain,
      api: this.api?.tcpAddress ?? null,
      connections: this.router.connectionCount(),
      certificateExpires: this.certExpires,
      certificate: this.catalog.settings.certFile,
      certificateSelfSigned: this.catalog.settings.certSelfSigned,
      ...this.running(),
      runtime: `kubernetes: CloudNativePG clusters in namespace ${this.client.namespace} at ${this.client.connection.server}, ${this.kube.instances} instance${this.kube.instances === 1 ? '' : 's'} each; pod ${this.pod}${this.lease.isLeader ? ' (leader)' : ''}`,
      limits: { enforced: true, how: 'the pods\' resource limits' },
      serverUsers: { perTenant: true, detail: 'a pod of its own per instance' },
      refusals: Object.fromEntries(this.router.refusals),
      importLimit: null,
      disk: null,
      wakesLastHour: { count: [...this.wakes.values()].reduce((a, b) => a + b, 0), p50Seconds: null, p95Seconds: null },
      backupTarget: this.catalog.settings.backupTarget ? { url: this.catalog.settings.backupTarget, pendingFiles: 0, failingSince: null } : null,
      tenants: views.map((view) => ({
        id: view.id, state: stateOf(view), pid: null, serverStartedAt: null, connections: this.router.connectionCount(view.id),
        health: view.healthy ? 'ok' as const : 'unknown' as const, healthCheckedAt: null, restarts: 0, wakes: this.wakes.get(view.id) ?? 0,
        ...(view.problem ? { lastError: view.problem } : {}),
      })),
    };
  }

  running(): { running: number; maxRunning: number } {
    const views = this.tenants?.list() ?? [];
    return { running: views.filter((v) => v.healthy).length, maxRunning: views.length };
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

  async startAll(): Promise<S.BulkJson> {
    this.assertRunning();
    const done: string[] = [];
    const failed: { id: string; error: string }[] = [];
    for (const view of this.tenants.list()) {
      try {
        if (view.tenant?.wanted === 'stopped') await this.tenants.update(view.id, (t) => ({ ...t, wanted: 'running' }));
        done.push(view.id);
      } catch (err) {
        failed.push({ id: view.id, error: (err as Error).message });
      }
    }
    return { done, failed };
  }

  async doctor(): Promise<Static<typeof S.DoctorReport>> {
    return { orphans: [], unfinished: [], missingData: this.tenants.list().filter((v) => v.problem !== undefined).map((v) => v.id), disagreements: [], leftovers: [] };
  }

  async doctorFix(): Promise<S.DoctorFixJson> {
    return { adopted: [], removed: [], settled: [], report: await this.doctor() };
  }

  /** Stops this pod's daemon only: the tenants are the cluster's, and the other pods keep serving them. */
  shutdown(): void {
    void this.stop();
  }

  private needBackups(): KubeBackups {
    if (!this.backups) throw new PgsError('INVALID_STATE', `no backup target is set: pgs setup --backup-target s3://BUCKET/PREFIX (with the Secret ${S3_SECRET} in namespace ${this.client.namespace}: ACCESS_KEY_ID, ACCESS_SECRET_KEY)`);
    return this.backups;
  }

  async backup(id: string, progress?: (phase: string) => void): Promise<S.BackupJson> {
    this.assertRunning();
    const backups = this.needBackups();
    const { tenant } = this.held(id);
    progress?.('backing up');
    const made = backupJson(id, await backups.backupNow(tenant, 'manual', this.readyTimeoutMs));
    if (!made) throw new PgsError('BACKUP_FAILED', `the backup of tenant ${id} finished but the operator reports no times for it`);
    return made;
  }

  async listBackups(id: string): Promise<S.BackupListJson> {
    assertTenantId(id);
    return this.needBackups().list(id);
  }

  /** Deletes what is kept of a removed tenant: its files in the object store, its Backups, its ObjectStore, its login. */
  async deleteBackups(id: string): Promise<void> {
    this.assertRunning();
    const backups = this.needBackups();
    assertTenantId(id);
    if (this.tenants.view(id)) throw new PgsError('INVALID_STATE', `tenant ${id} exists: its backups are deleted only after "pgs remove ${id}"`);
    const s = this.catalog.settings;
    const files = await backups.deleteAll(id, { url: s.backupTarget as string, ...(s.s3Endpoint ? { endpoint: s.s3Endpoint } : {}), ...(s.s3Region ? { region: s.s3Region } : {}) }, S3_SECRET);
    this.log.info('deleted the backups of a removed tenant', { tenant: id, files });
  }

  /**
   * A new cluster from the tenant's backups: `as` names a new tenant (the one
   * it comes from stays as it is); without it, a removed tenant comes back
   * under its id, with its login.
   */
  async restore(id: string, request: S.RestoreRequest, progress?: (phase: string) => void): Promise<S.TenantJson> {
    this.assertRunning();
    const backups = this.needBackups();
    assertTenantId(id);
    const target = request.as ?? id;
    assertTenantId(target);
    const existing = this.tenants.view(id)?.tenant;
    if (existing && target === id) {
      throw new PgsError('INVALID_STATE', `tenant ${id} exists: on the kubernetes runtime a restore makes a new cluster. Restore it as another tenant (pgs restore ${id} --as ${id}-restored), move its clients, then pgs remove ${id}`);
    }
    if (!existing && target !== id) {
      // Only a removal with backups on keeps the login Secret: without it there is nothing to restore under the id either.
      if (!(await this.client.get(RESOURCES.secrets, ownerSecretName(id)))) throw new PgsError('TENANT_NOT_FOUND', `no tenant ${id}, and no backups of one (see "pgs list")`);
      throw new PgsError('INVALID_STATE', `tenant ${id} was removed: restore it under its own id first (pgs restore ${id})`);
    }
    if (this.tenants.view(target)) throw new PgsError('TENANT_EXISTS', `tenant ${target} already exists`);
    const time = request.time !== undefined ? parsePointInTime(request.time, 'time', 'INVALID_REQUEST', 'time').date.toISOString() : undefined;
    const source = await backups.source(id, existing, { ...(request.backup !== undefined ? { backup: request.backup } : {}), ...(time !== undefined ? { time } : {}) });
    // The login: a branch keeps its source's; a removed tenant's comes back from the Secret its removal kept.
    const kept = await this.client.get<KubeResource & { data?: Record<string, string> }>(RESOURCES.secrets, ownerSecretName(id));
    const clientVerifier = secretValue(kept, 'client-verifier');
    if (!clientVerifier) throw new PgsError('BACKUP_NOT_FOUND', `the login of tenant ${id} is gone (no Secret ${ownerSecretName(id)})`);
    const ownerPassword = existing ? generatePassword() : secretValue(kept, 'password') ?? generatePassword();
    const tenant: Tenant = {
      ...(existing ?? { maxConnections: this.catalog.settings.defaultMaxConnections }),
      id: target,
      suffix: newSuffix(),
      access: 'enabled',
      wanted: 'running',
      createdAt: new Date().toISOString(),
      // Back under its own id, it archives as a new server beside the one it came from.
      ...(existing ? {} : { generation: newStamp() }),
      // Its database on the server is its source's, under that name: the router maps clients' requests for the id to it.
      ...(existing && (existing.database ?? existing.id) !== target ? { database: existing.database ?? existing.id } : {}),
      // A removed tenant's kept login says what its database was called.
      ...(!existing && kept?.metadata.annotations?.[DATABASE_ANNOTATION] ? { database: kept.metadata.annotations[DATABASE_ANNOTATION] } : {}),
    } as Tenant;
    if (existing) delete (tenant as { generation?: string }).generation;
    progress?.('restoring');
    // A removed tenant's login Secret is kept as it is (a failed restore must not lose it).
    await this.tenants.create(tenant, { ownerPassword, clientVerifier }, source, { secretExists: !existing });
    try {
      await this.tenants.awaitHealthy(target, this.readyTimeoutMs);
    } catch (err) {
      await this.tenants.remove(target, { volumes: true, keepBackups: target === id }).catch((e: Error) => this.log.warn('could not remove a failed restore', { tenant: target, error: e.message }));
      throw err;
    }
    this.events.emit('created', target, { reason: 'restored' });
    return this.json(await this.fresh(target));
  }

  branch(id: string, request: S.BranchRequest, progress?: (phase: string) => void): Promise<S.TenantJson> {
    return this.restore(id, { as: request.id, ...(request.at !== undefined ? { time: request.at } : {}) }, progress);
  }

  exportTenant(): Promise<S.ExportJson> {
    return Promise.reject(notHere('pgs export', 'pg_dump through the tenant\'s connection string'));
  }

  exportFile(): string {
    throw notHere('exports', 'pg_dump through the tenant\'s connection string');
  }

  importLimit(): Promise<never> {
    return Promise.reject(notHere('pgs import', 'pg_restore through the tenant\'s connection string'));
  }

  importUploadFile(): Promise<string> {
    return Promise.reject(notHere('pgs import', 'pg_restore through the tenant\'s connection string'));
  }

  importFile(): Promise<S.TenantJson> {
    return Promise.reject(notHere('pgs import', 'pg_restore through the tenant\'s connection string'));
  }
}

/** A tenant's state as pgs names it, from what pgs asked and what the operator says. */
export function stateOf(view: KubeTenantView): S.TenantJson['state'] {
  if (view.tenant?.wanted === 'stopped') return view.hibernated ? 'stopped' : 'stopping';
  if (view.suspended) return view.hibernated ? 'suspended' : 'stopping';
  if (view.healthy) return 'running';
  return 'starting';
}
