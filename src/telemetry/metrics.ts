import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { AuthResult, ConnectionResult, RouterObserver } from '../router/router.js';
import type { ShedInterval, ShedWhy } from '../router/admission.js';

/**
 * The daemon's Prometheus metrics (text format at GET /metrics). Labels are
 * bounded: results, reasons, states, routes as templates, and one `tenant`
 * label per tenant on the pgs_tenant_* series (a setting turns those off),
 * and at most 5 `network` labels: those shed most in the last interval.
 * Values that the daemon already holds (states, connections, refusals) are
 * read at scrape time; nothing here wakes a server or reads its files.
 */
export interface MetricsSource {
  connections(): number;
  liveBytes(): { in: number; out: number };
  refusals(): ReadonlyMap<string, number>;
  /** Connections still starting up now (TLS, start-up packet, password check). */
  pendingStartups?(): number;
  /** Tenants by state, as the daemon last saw them. */
  tenantStates(): Promise<ReadonlyMap<string, number>>;
  /** Per tenant, or undefined when per-tenant series are off. */
  tenants(): Promise<TenantSample[] | undefined>;
  /** Servers running now (spares included) and how many may. */
  running(): { running: number; budget: number };
  /** What is not in the backup bucket yet (as GET /v1/status says); undefined without a bucket. */
  backupPending?(): { files: number; bytes: number; oldestAt: string | null } | undefined;
}

export interface TenantSample {
  id: string;
  up: boolean;
  connections: number;
  wakes: number;
  /** Seconds since the epoch of the last moment with a client connection; null if never seen. */
  lastActive: number | null;
  /** Data folder size from disk, null until measured. */
  dataBytes: number | null;
  /** When its newest backup finished (Unix time); null: none. */
  lastBackup: number | null;
  /** 1 while archiving its WAL fails (or its archive has a gap), else 0; null: not known (not running). */
  archiveFailing: number | null;
  /** Finished WAL segments waiting to be archived; null: not known. */
  archivePending: number | null;
}

const SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class DaemonMetrics implements RouterObserver {
  readonly registry = new Registry();
  private readonly accepted: Counter<'result'>;
  private readonly tls: Histogram;
  private readonly backend: Histogram<'wake'>;
  private readonly cancels: Counter<'outcome'>;
  private readonly authentications: Counter<'result'>;
  private readonly serverSessions: Counter<'how'>;
  private readonly authSeconds: Histogram<'result'>;
  private readonly shed: Counter<'why'>;
  private readonly shedNetworks: Gauge<'network'>;
  private readonly closedBytes = { in: 0, out: 0 };
  readonly wakes: Counter;
  readonly wakeDuration: Histogram;
  readonly suspends: Counter;
  readonly budgetRefusals: Counter;
  readonly restarts: Counter;
  readonly apiRequests: Counter<'route' | 'code'>;
  readonly backups: Counter<'result'>;
  readonly backupDuration: Histogram;

  constructor(source: MetricsSource, build: { version: string; postgres: string }) {
    const registers = [this.registry];
    const closedBytes = this.closedBytes;
    new Gauge({ name: 'pgs_router_connections', help: 'Client connections open through the router.', registers, collect() { this.set(source.connections()); } });
    this.accepted = new Counter({ name: 'pgs_router_connections_accepted_total', help: 'Client connections accepted by the router, by how they ended (ok: reached ReadyForQuery).', labelNames: ['result'], registers });
    for (const result of ['ok', 'refused', 'cancel', 'closed']) this.accepted.inc({ result }, 0);
    new Counter({
      name: 'pgs_router_refusals_total', help: 'Connections the router refused, by reason.', labelNames: ['reason'], registers,
      collect() {
        this.reset();
        for (const [reason, n] of source.refusals()) this.inc({ reason }, n);
      },
    });
    this.tls = new Histogram({ name: 'pgs_router_tls_handshake_seconds', help: 'TLS handshakes with clients.', buckets: SECONDS_BUCKETS, registers });
    this.backend = new Histogram({ name: 'pgs_router_backend_connect_seconds', help: 'From a routed start-up packet to a connected server socket; wake="true" when the tenant had to be woken.', labelNames: ['wake'], buckets: SECONDS_BUCKETS, registers });
    new Counter({
      name: 'pgs_router_bytes_total', help: 'Bytes between clients and the router (TLS included), by direction (in: from clients).', labelNames: ['direction'], registers,
      collect() {
        const live = source.liveBytes();
        this.reset();
        this.inc({ direction: 'in' }, closedBytes.in + live.in);
        this.inc({ direction: 'out' }, closedBytes.out + live.out);
      },
    });
    this.authentications = new Counter({
      name: 'pgs_router_authentications_total', help: 'Password checks the router ran itself (before any wake), by result (failed: wrong password or no such role).', labelNames: ['result'], registers,
    });
    for (const result of ['ok', 'failed', 'protocol_error']) this.authentications.inc({ result }, 0);
    this.authSeconds = new Histogram({ name: 'pgs_router_authentication_seconds', help: 'From the start-up packet to the end of the router\'s password check (failures before their delay).', labelNames: ['result'], buckets: SECONDS_BUCKETS, registers });
    this.serverSessions = new Counter({
      name: 'pgs_router_server_sessions_total', help: 'How logged-in clients got their server session: reused (one the router kept), opened (a new one it will keep), own (a backend of the client\'s own start-up), pooled (transaction pooling: one per transaction).', labelNames: ['how'], registers,
    });
    for (const how of ['reused', 'opened', 'own', 'pooled']) this.serverSessions.inc({ how }, 0);
    new Gauge({ name: 'pgs_router_startups_pending', help: 'Client connections still starting up (TLS handshake, start-up packet, the router\'s password check), or waiting to: their address had PGS_MAX_STARTUPS_PER_ADDRESS starting up.', registers, collect() { this.set(source.pendingStartups?.() ?? 0); } });
    this.shed = new Counter({
      name: 'pgs_router_startups_shed_total', help: 'Connections still starting up that the router closed for admission: address_limit (one that waited its deadline behind PGS_MAX_STARTUPS_PER_ADDRESS others from its address), global_limit (the oldest of the network with the most, all start-up slots taken).', labelNames: ['why'], registers,
    });
    for (const why of ['address_limit', 'global_limit'] as const) this.shed.inc({ why }, 0);
    this.shedNetworks = new Gauge({ name: 'pgs_router_startups_shed_networks', help: 'The networks (/24, /64) shed most in the last interval of the router\'s (10 s), at most 5, with how many connections each; none when nothing was.', labelNames: ['network'], registers });
    this.cancels = new Counter({ name: 'pgs_router_cancel_requests_total', help: 'Cancel requests, by outcome.', labelNames: ['outcome'], registers });
    for (const outcome of ['forwarded', 'unknown_key']) this.cancels.inc({ outcome }, 0);

    new Gauge({
      name: 'pgs_tenants', help: 'Tenants by state.', labelNames: ['state'], registers,
      async collect() {
        const states = await source.tenantStates();
        this.reset();
        for (const state of ['running', 'starting', 'stopping', 'stopped', 'suspended', 'crashed']) this.set({ state }, 0);
        for (const [state, n] of states) this.set({ state }, n);
      },
    });
    this.wakes = new Counter({ name: 'pgs_wakes_total', help: 'Suspended tenants woken by a connection or a request.', registers });
    this.wakeDuration = new Histogram({ name: 'pgs_wake_duration_seconds', help: 'From the wake request to a server that accepts connections.', buckets: SECONDS_BUCKETS, registers });
    new Gauge({ name: 'pgs_running_servers', help: 'PostgreSQL servers running now, tenants\' and spares.', registers, collect() { this.set(source.running().running); } });
    new Gauge({ name: 'pgs_running_budget', help: 'Servers that may run at once (pgs setup --max-running).', registers, collect() { this.set(source.running().budget); } });
    this.budgetRefusals = new Counter({ name: 'pgs_budget_refusals_total', help: 'Wakes refused because the running budget was spent and no tenant was idle (FATAL 53300).', registers });
    this.suspends = new Counter({ name: 'pgs_suspends_total', help: 'Servers stopped for being idle, or on request.', registers });
    this.restarts = new Counter({ name: 'pgs_server_restarts_total', help: 'Servers that died and were started again by the supervisor.', registers });
    this.apiRequests = new Counter({ name: 'pgs_api_requests_total', help: 'REST API requests, by route template and status code.', labelNames: ['route', 'code'], registers });
    this.backups = new Counter({ name: 'pgs_backups_total', help: 'Base backups, by result (skipped: a scheduled one found nothing changed).', labelNames: ['result'], registers });
    for (const result of ['ok', 'failed', 'skipped']) this.backups.inc({ result }, 0);
    this.backupDuration = new Histogram({ name: 'pgs_backup_duration_seconds', help: 'Base backups that succeeded, from start to a listed backup.', buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600], registers });
    const pendingGauge = (name: string, help: string, pick: (p: { files: number; bytes: number; oldestAt: string | null }) => number) => new Gauge({
      name, help, registers,
      collect() {
        this.reset();
        const pending = source.backupPending?.();
        if (pending) this.set(pick(pending));
      },
    });
    pendingGauge('pgs_backup_pending_files', 'Files of all tenants not in the backup bucket yet: not copied, not archived by their server yet, or a base backup being written; absent without a bucket.', (p) => p.files);
    pendingGauge('pgs_backup_pending_bytes', 'Bytes of those files.', (p) => p.bytes);
    pendingGauge('pgs_backup_oldest_pending_seconds', 'Age of the oldest of those files (0 when none waits).', (p) => (p.oldestAt === null ? 0 : Math.max(0, (Date.now() - Date.parse(p.oldestAt)) / 1000)));
    new Gauge({ name: 'pgs_build_info', help: 'pgs and PostgreSQL versions.', labelNames: ['version', 'postgres'], registers }).set(build, 1);

    // One sample of every tenant per scrape, shared by the five pgs_tenant_* series.
    let pending: Promise<TenantSample[] | undefined> | undefined;
    const tenantsOnce = () => {
      pending ??= source.tenants().finally(() => { queueMicrotask(() => { pending = undefined; }); });
      return pending;
    };
    const perTenant = (name: string, help: string, pick: (t: TenantSample) => number | null, kind: 'gauge' | 'counter' = 'gauge') => {
      const Metric = kind === 'gauge' ? Gauge : Counter;
      new Metric({
        name, help, labelNames: ['tenant'], registers,
        async collect(this: Gauge<'tenant'> | Counter<'tenant'>) {
          const samples = await tenantsOnce();
          this.reset();
          for (const t of samples ?? []) {
            const value = pick(t);
            if (value === null) continue;
            if (this instanceof Gauge) this.set({ tenant: t.id }, value);
            else this.inc({ tenant: t.id }, value);
          }
        },
      });
    };
    perTenant('pgs_tenant_up', 'Whether the tenant\'s server runs (1) or not (0).', (t) => (t.up ? 1 : 0));
    perTenant('pgs_tenant_connections', 'Client connections to the tenant through the router.', (t) => t.connections);
    perTenant('pgs_tenant_wakes_total', 'Times the tenant was woken since the daemon started.', (t) => t.wakes, 'counter');
    perTenant('pgs_tenant_last_active_timestamp_seconds', 'Last time the tenant had a client connection (Unix time).', (t) => t.lastActive);
    perTenant('pgs_tenant_data_bytes', 'Size of the tenant\'s data folder on disk.', (t) => t.dataBytes);
    perTenant('pgs_tenant_last_backup_timestamp_seconds', 'When the tenant\'s newest base backup finished (Unix time).', (t) => t.lastBackup);
    perTenant('pgs_tenant_archive_failing', 'Whether archiving the tenant\'s WAL fails or its archive has a gap (1) or not (0); absent while not known.', (t) => t.archiveFailing);
    perTenant('pgs_tenant_archive_pending_segments', 'Finished WAL segments of the tenant waiting to be archived.', (t) => t.archivePending);
  }

  // --- RouterObserver ---

  tlsHandshake(seconds: number): void {
    this.tls.observe(seconds);
  }

  backendConnect(seconds: number, woke: boolean): void {
    this.backend.observe({ wake: woke ? 'true' : 'false' }, seconds);
  }

  connectionClosed(result: ConnectionResult, bytesIn: number, bytesOut: number): void {
    this.accepted.inc({ result });
    this.closedBytes.in += bytesIn;
    this.closedBytes.out += bytesOut;
  }

  cancelRequest(outcome: 'forwarded' | 'unknown_key'): void {
    this.cancels.inc({ outcome });
  }

  serverSession(how: 'reused' | 'opened' | 'own'): void {
    this.serverSessions.inc({ how });
  }

  startupShed(why: ShedWhy): void {
    this.shed.inc({ why });
  }

  startupsShedInterval(summary: ShedInterval): void {
    this.shedNetworks.reset();
    for (const { network, count } of summary.networks) this.shedNetworks.set({ network }, count);
  }

  authentication(result: AuthResult, seconds: number): void {
    this.authentications.inc({ result });
    this.authSeconds.observe({ result }, seconds);
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
