import { Type, type Static } from 'typebox';
import type { SampledState } from '../telemetry/history.js';

/**
 * The one schema source of the REST API: fastify validates requests with it,
 * serializes responses with it, the handlers are typed by it, and
 * @fastify/swagger turns it into the OpenAPI 3.1 document at /openapi.json.
 * A resource's CLI `--json` is the same object.
 */
const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(schema: T) => Type.Union([schema, Type.Null()]);
const DateTime = Type.String({ format: 'date-time' });

/** Ids are checked by the handlers (assertTenantId), so that a bad one is `invalid_id` with the reason. */
export const TenantId = Type.String({ maxLength: 200, description: 'a DNS label: a-z first, then a-z 0-9 -, at most 40, no trailing -' });
export const TenantParams = Type.Object({ id: TenantId });

export const TenantState = Type.Union([
  Type.Literal('running'), Type.Literal('starting'), Type.Literal('stopping'), Type.Literal('stopped'), Type.Literal('suspended'), Type.Literal('crashed'),
]);
// The API's states are the supervisor's (telemetry/history.ts lists them): a new one breaks the build until both have it.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const statesAgree: Same<Static<typeof TenantState>, SampledState> = true;
void statesAgree;
export const Access = Type.Union([Type.Literal('enabled'), Type.Literal('disabled')]);
export const Health = Type.Union([Type.Literal('ok'), Type.Literal('failing'), Type.Literal('unknown')]);
/** Seconds without connections before the server is suspended; null never. */
export const Autosuspend = Nullable(Type.Integer({ minimum: 1, maximum: 31_536_000 }));
export const MaxConnections = Type.Integer({ minimum: 5, maximum: 10_000 });
/** The continuous WAL archive of a tenant: ok, failing, behind, gap (a segment missing), unknown (not looked at yet), off (none yet). */
export const Archiving = Type.Union([Type.Literal('ok'), Type.Literal('failing'), Type.Literal('behind'), Type.Literal('gap'), Type.Literal('unknown'), Type.Literal('off')]);
export const BackupSchedule = Type.Union([Type.Literal('hourly'), Type.Literal('daily'), Type.Literal('off')]);
export const BackupRetain = Type.Integer({ minimum: 1, maximum: 1000 });
export const RpoSeconds = Type.Integer({ minimum: 1, maximum: 3600 });
/** Memory the tenant's server may use, in bytes (at least 64 MiB); null: no limit. */
export const MemoryBytes = Nullable(Type.Integer({ minimum: 64 * 2 ** 20, maximum: 2 ** 50 }));
/** Disk the tenant's data folder (data and WAL) may take, in bytes (at least 128 MiB); null: no quota. */
export const DiskBytes = Nullable(Type.Integer({ minimum: 128 * 2 ** 20, maximum: 2 ** 50 }));
/** Cores the tenant's server may use (0.01 to 1024); null: no limit. */
export const Pool = Type.Union([Type.Literal('session'), Type.Literal('transaction')]);
export const PoolSize = Type.Integer({ minimum: 1, maximum: 10_000 });
export const MaxClientConnections = Nullable(Type.Integer({ minimum: 1, maximum: 100_000 }));
export const Cpus = Nullable(Type.Number({ minimum: 0.01, maximum: 1024 }));
/** The source addresses the router lets connect (IPv4 and IPv6 CIDR blocks, a bare address is one); null: any. */
// null first, and as a const: the API coerces types (coerceTypes: array), and would make null [""] and "" null.
export const Allow = Type.Union([
  Type.Unsafe<null>({ const: null }),
  Type.Array(Type.String({ maxLength: 64 }), { maxItems: 100 }),
], { description: 'source addresses the router lets connect to the tenant, as CIDR blocks (203.0.113.0/24, 2001:db8::/32; a bare address is its /32 or /128), normalised; null: any address' });

export const Tenant = Type.Object({
  id: Type.String(),
  hostname: Type.String(),
  access: Access,
  state: TenantState,
  wanted: Type.Union([Type.Literal('running'), Type.Literal('stopped')]),
  pid: Nullable(Type.Integer()),
  database: Type.String(),
  user: Type.String(),
  port: Type.Integer(),
  maxConnections: Type.Integer(),
  autosuspendSeconds: Autosuspend,
  createdAt: DateTime,
  serverStartedAt: Nullable(DateTime),
  uptimeSeconds: Nullable(Type.Integer()),
  connections: Nullable(Type.Integer()),
  health: Health,
  healthCheckedAt: Nullable(DateTime),
  healthError: Type.Optional(Type.String()),
  lastError: Type.Optional(Type.String()),
  restarts: Type.Integer(),
  wakes: Type.Integer(),
  backupSchedule: BackupSchedule,
  backupRetain: Type.Integer(),
  rpoSeconds: Type.Integer({ description: 'at most this many seconds of writes wait before their WAL is archived' }),
  memoryBytes: MemoryBytes,
  cpus: Cpus,
  diskBytes: DiskBytes,
  pool: Type.Union([Pool], { description: 'how its clients share server sessions: session (one each) or transaction (poolSize shared, one per transaction)' }),
  poolSize: Type.Integer({ description: 'server sessions shared in transaction mode (at most maxConnections)' }),
  maxClientConnections: Nullable(Type.Integer({ description: 'client connections at once through the router; null: maxConnections in session mode, 1000 in transaction mode' })),
  allow: Allow,
  /** Its data folder's size at the last measurement (measured from disk soon after the daemon starts and after its server ran, at most every 10 min; with a quota every 10 s while it runs); null: not measured yet. */
  diskUsedBytes: Nullable(Type.Integer()),
  /** With a quota: ok, warning (90 %), read-only (at the quota), standby (10 % past it: nothing can be written). */
  disk: Type.Optional(Type.Union([Type.Literal('ok'), Type.Literal('warning'), Type.Literal('read-only'), Type.Literal('standby')])),
  /** What its server uses now (with limits, while it runs): memory from its control group, or the sum of its processes' PSS (memorySource). */
  usage: Type.Optional(Type.Object({ memoryBytes: Type.Integer(), cpuSeconds: Type.Number(), memorySource: Type.Union([Type.Literal('cgroup'), Type.Literal('pss')]) })),
  /** Present when the tenant has a limit this host cannot enforce: why. */
  limitsNotEnforced: Type.Optional(Type.String()),
  lastBackupAt: Nullable(DateTime),
  /** The last time a client was connected through the router (null: not since the daemon started). */
  lastActiveAt: Type.Optional(Nullable(DateTime)),
  archiving: Archiving,
  archivingError: Type.Optional(Type.String()),
  /** With a backup bucket: what of this tenant is not in it yet (files, bytes, when the oldest was written); null without one. */
  backupPending: Type.Optional(Nullable(Type.Object({ files: Type.Integer(), bytes: Type.Integer(), oldestAt: Nullable(DateTime) }))),
  /** Only in the answer of a restore, branch or import: what pgs took from data it did not make (superuser roles, ALTER SYSTEM settings, C functions...), one line each. */
  neutralized: Type.Optional(Type.Array(Type.String())),
  /** Only in the answer of a restore, branch or import: anything else to know of it (an archive in the bucket taken over from another host). */
  notes: Type.Optional(Type.Array(Type.String())),
});
export type TenantJson = Static<typeof Tenant>;

export const TenantList = Type.Object({
  items: Type.Array(Tenant),
  /** Pass as `cursor` for the next page; null on the last. */
  nextCursor: Nullable(Type.String()),
  /** PostgreSQL servers running now on the host (tenants' and spares) and how many may (the budget). */
  running: Type.Integer(),
  maxRunning: Type.Integer(),
});

export const TenantListQuery = Type.Object({
  state: Type.Optional(TenantState),
  access: Type.Optional(Access),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
  cursor: Type.Optional(Type.String({ maxLength: 200 })),
});

export const CreateTenantBody = Type.Object({
  id: TenantId,
  password: Type.Optional(Type.String({ description: 'at least 8 characters; default: 32 random characters' })),
  autosuspend: Type.Optional(Autosuspend),
  maxConnections: Type.Optional(MaxConnections),
  memoryBytes: Type.Optional(MemoryBytes),
  cpus: Type.Optional(Cpus),
  diskBytes: Type.Optional(DiskBytes),
  init: Type.Optional(Type.String({ maxLength: 1_048_576, description: 'SQL run as the tenant role in its new database (one transaction unless it says otherwise); if it fails, nothing is created and the error names the line' })),
}, { additionalProperties: false });
export type CreateTenantRequest = Static<typeof CreateTenantBody>;

export const CreatedTenant = Type.Object({
  id: Type.String(),
  hostname: Type.String(),
  password: Type.String(),
  database: Type.String(),
  user: Type.String(),
  url: Type.String(),
});

export const PatchTenantBody = Type.Object({
  access: Type.Optional(Access),
  autosuspend: Type.Optional(Autosuspend),
  maxConnections: Type.Optional(MaxConnections),
  backupSchedule: Type.Optional(BackupSchedule),
  backupRetain: Type.Optional(BackupRetain),
  rpoSeconds: Type.Optional(RpoSeconds),
  memoryBytes: Type.Optional(MemoryBytes),
  cpus: Type.Optional(Cpus),
  diskBytes: Type.Optional(DiskBytes),
  pool: Type.Optional(Pool),
  poolSize: Type.Optional(PoolSize),
  maxClientConnections: Type.Optional(MaxClientConnections),
  allow: Type.Optional(Allow),
}, { additionalProperties: false, minProperties: 1 });
export type PatchTenantRequest = Static<typeof PatchTenantBody>;

export const TenantAction = Type.Union([Type.Literal('start'), Type.Literal('stop'), Type.Literal('restart'), Type.Literal('suspend'), Type.Literal('wake')]);
export type TenantActionName = Static<typeof TenantAction>;
export const ActionParams = Type.Object({ id: TenantId, action: TenantAction });

export const PasswordBody = Type.Object({
  password: Type.Optional(Type.String({ description: 'the new password; default: 32 random characters' })),
}, { additionalProperties: false });
export const PasswordResult = Type.Object({ id: Type.String(), password: Type.String() });

export type CreatedTenantJson = Static<typeof CreatedTenant>;

export const Connection = Type.Object({
  uri: Type.String(),
  psql: Type.String(),
  jdbc: Type.String(),
  env: Type.String({ description: 'libpq environment variables, one NAME=value a line' }),
  /** libpq URI over the server's unix socket on the daemon's host (administration). */
  local: Type.String(),
  hostname: Type.String(),
  port: Type.Integer(),
  database: Type.String(),
  user: Type.String(),
  sslrootcert: Nullable(Type.String({ description: 'the self-signed certificate pgs made (its own CA) on the daemon\'s host: sslmode=verify-full sslrootcert=<it>' })),
  hostaddr: Nullable(Type.String({ description: '127.0.0.1 when the host name does not resolve on the daemon\'s host (*.localhost often does not): libpq\'s hostaddr, which pgs url --format psql|env adds there; null when it resolves' })),
});

export type ConnectionJson = Static<typeof Connection>;

export const HistoryQuery = Type.Object({
  range: Type.Optional(Type.Union([Type.Literal('1h'), Type.Literal('1d')], { default: '1h', description: '1h: a point per sample (10 s); 1d: a point per minute' })),
  tenant: Type.Optional(Type.Array(TenantId, { maxItems: 1000, description: 'only these tenants (repeat the parameter); default: all' })),
  field: Type.Optional(Type.Array(Type.Union([Type.Literal('state'), Type.Literal('connections'), Type.Literal('tps'), Type.Literal('wakes')]), { maxItems: 4, description: 'only these series of each tenant (repeat the parameter); default: all' })),
  tenants: Type.Optional(Type.Literal('none', { description: 'none: only the host\'s totals, no tenant series' })),
});
const Points = <T extends Parameters<typeof Type.Union>[0][number]>(schema: T) => Type.Array(Nullable(schema));
export const History = Type.Object({
  range: Type.String(),
  intervalSeconds: Type.Number(),
  times: Type.Array(Type.Number(), { description: 'sample times, ms since the epoch, oldest first' }),
  host: Type.Object({
    running: Type.Array(Type.Number(), { description: 'tenants whose server ran' }),
    connections: Type.Array(Type.Number()),
    tps: Type.Array(Type.Number()),
    wakes: Type.Array(Type.Number(), { description: 'wakes within each point\'s interval' }),
  }, { description: 'all tenants together' }),
  tenants: Type.Record(Type.String(), Type.Object({
    state: Type.Optional(Points(TenantState)),
    connections: Type.Optional(Points(Type.Number())),
    tps: Type.Optional(Points(Type.Number({ description: 'transactions per second; null while the server does not run (a gap, not zero)' }))),
    wakes: Type.Optional(Points(Type.Number({ description: 'wakes within each point\'s interval' }))),
  })),
});
export type HistoryJson = Static<typeof History>;
export type HistoryField = 'state' | 'connections' | 'tps' | 'wakes';

export const QueryOrder = Type.Union([Type.Literal('total'), Type.Literal('mean'), Type.Literal('calls')]);
export const QueriesQuery = Type.Object({
  order: Type.Optional(Type.Union([QueryOrder], { default: 'total', description: 'total: the most time in all (default); mean: the slowest on average; calls: the most often run' })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })),
}, { additionalProperties: false });
export const QueryStat = Type.Object({
  queryId: Type.String({ description: 'pg_stat_statements\' queryid' }),
  query: Type.String({ description: 'the statement, normalised: constants are $1, $2...' }),
  calls: Type.Integer(),
  totalMs: Type.Number({ description: 'execution time of all its calls, in milliseconds' }),
  meanMs: Type.Number(),
  rows: Type.Integer({ description: 'rows returned or changed by all its calls' }),
});
export const Queries = Type.Object({
  tenant: Type.String(),
  order: QueryOrder,
  sample: Type.Boolean({ description: 'false: read from the running server now; true: the last sample, kept because the server is suspended or stopped (it was not woken)' }),
  sampledAt: Type.Union([DateTime, Type.Null()], { description: 'when these were read from the server; null: never (no sample yet)' }),
  items: Type.Array(QueryStat, { description: 'the tenant role\'s statements in its database since the last reset (pgs\'s own never), the first `limit` in `order`' }),
});
export type QueriesJson = Static<typeof Queries>;

export const LogsQuery = Type.Object({ lines: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000, default: 50 })) });
export const WhoAmI = Type.Object({
  kind: Type.Union([Type.Literal('token'), Type.Literal('unix')], { description: 'token: a bearer token over TCP; unix: the daemon\'s socket (full rights)' }),
  name: Nullable(Type.String({ description: 'the token\'s name' })),
  scope: Type.Union([Type.Literal('read'), Type.Literal('admin')]),
});
export type WhoAmIJson = Static<typeof WhoAmI>;
export const Logs = Type.Object({ lines: Type.Array(Type.String()) });

export const TenantStatus = Type.Object({
  id: Type.String(),
  state: TenantState,
  pid: Nullable(Type.Integer()),
  serverStartedAt: Nullable(DateTime),
  connections: Type.Integer(),
  health: Health,
  healthCheckedAt: Nullable(DateTime),
  healthError: Type.Optional(Type.String()),
  restarts: Type.Integer(),
  wakes: Type.Integer(),
  lastError: Type.Optional(Type.String()),
  archiving: Type.Optional(Archiving),
  backupPending: Type.Optional(Nullable(Type.Object({ files: Type.Integer(), bytes: Type.Integer(), oldestAt: Nullable(DateTime) }))),
  archivingError: Type.Optional(Type.String()),
});

export const Status = Type.Object({
  pid: Type.Integer(),
  version: Type.String(),
  startedAt: DateTime,
  port: Type.Integer(),
  domain: Type.String(),
  /** Where the REST API listens on TCP (`host:port`), null when only on the unix socket. */
  api: Nullable(Type.String()),
  connections: Type.Integer(),
  certificateExpires: Nullable(DateTime),
  /** The certificate file the router serves; when pgs made it (self-signed), clients can trust it with sslrootcert. */
  certificate: Type.String(),
  certificateSelfSigned: Type.Boolean(),
  /** PostgreSQL servers running now, tenants' and spares. */
  running: Type.Integer(),
  /** How many may run at once (pgs setup --max-running; derived from memory by default). */
  maxRunning: Type.Integer(),
  /** What runs the tenants' servers: "native: ..." (processes pgs starts) or "docker: ..." (a container per tenant). */
  runtime: Type.String(),
  /** Whether per-tenant memory and CPU limits are enforced on this host: how (cgroup v1 or v2), or why not. */
  limits: Type.Object({ enforced: Type.Boolean(), how: Type.Optional(Type.String()), why: Type.Optional(Type.String()) }),
  /** Whether each tenant's server runs as an OS user of its own (pgs runs as root), and as whom they run. */
  serverUsers: Type.Object({ perTenant: Type.Boolean(), detail: Type.String() }),
  refusals: Type.Record(Type.String(), Type.Integer()),
  /** The largest upload POST /v1/import takes now (pgs setup --import-limit; auto: measured from the data root's free space); null where there are no imports. */
  importLimit: Nullable(Type.Object({ bytes: Type.Integer(), auto: Type.Boolean() })),
  /** Where backups are copied besides the data root; null: nowhere. */
  /** The data root's file system. */
  disk: Nullable(Type.Object({ path: Type.String(), freeBytes: Type.Integer(), totalBytes: Type.Integer() })),
  /** Wakes over the last hour: how many, and how long they took (null when there were none). */
  wakesLastHour: Type.Object({ count: Type.Integer(), p50Seconds: Nullable(Type.Number()), p95Seconds: Nullable(Type.Number()) }),
  backupTarget: Nullable(Type.Object({
    url: Type.String(),
    /** Files of all tenants not in the bucket yet: not copied yet, finished by a server and not archived yet, or a base backup being written. */
    pendingFiles: Type.Integer(),
    pendingBytes: Type.Optional(Type.Integer()),
    /** When the oldest of them was written; null when none waits. */
    oldestPendingAt: Type.Optional(Nullable(DateTime)),
    /** When a file last reached the bucket (since the daemon started). */
    lastCopiedAt: Type.Optional(Nullable(DateTime)),
    failingSince: Nullable(DateTime),
    error: Type.Optional(Type.String()),
  })),
  /** While the daemon stops: it copies what is not in the bucket yet (pgs stop waits for it). */
  stopping: Type.Optional(Type.Object({ phase: Type.String(), pendingFiles: Type.Integer(), pendingBytes: Type.Integer(), error: Type.Optional(Type.String()) })),
  tenants: Type.Array(TenantStatus),
});
export type StatusJson = Static<typeof Status>;

export const Bulk = Type.Object({
  done: Type.Array(Type.String()),
  failed: Type.Array(Type.Object({ id: Type.String(), error: Type.String() })),
});

export type BulkJson = Static<typeof Bulk>;

export const TokenScope = Type.Union([Type.Literal('read'), Type.Literal('admin')]);
export const TokenName = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$' });
export const TokenBody = Type.Object({ name: TokenName, scope: TokenScope }, { additionalProperties: false });
export const TokenInfo = Type.Object({ name: Type.String(), scope: TokenScope, createdAt: DateTime, lastUsedAt: Nullable(DateTime) });
export const CreatedToken = Type.Object({ name: Type.String(), scope: TokenScope, createdAt: DateTime, token: Type.String() });
export const TokenList = Type.Object({ items: Type.Array(TokenInfo) });
export const TokenParams = Type.Object({ name: TokenName });

export const Operation = Type.Object({
  id: Type.String(),
  kind: Type.String({ description: 'what runs: tenant.start, tenant.stop, tenant.restart, tenant.suspend, tenant.wake, tenant.remove, tenant.backup, tenant.restore, tenant.branch, tenant.export, tenant.import' }),
  /** What it does now, for progress displays. */
  phase: Type.Optional(Type.String()),
  /** The answer the synchronous request would have given, once succeeded. */
  result: Type.Optional(Type.Unknown()),
  tenant: Nullable(Type.String()),
  status: Type.Union([Type.Literal('running'), Type.Literal('succeeded'), Type.Literal('failed')]),
  createdAt: DateTime,
  finishedAt: Nullable(DateTime),
  error: Type.Optional(Type.Object({ code: Type.String(), detail: Type.String() })),
});
export type OperationJson = Static<typeof Operation>;
export const OperationParams = Type.Object({ id: Type.String({ pattern: '^op_[a-z0-9]{1,40}$' }) });

/** RFC 9457 problem details; `code` is stable and is the word the CLI prints. */
export const Problem = Type.Object({
  type: Type.String(),
  title: Type.String(),
  status: Type.Integer(),
  code: Type.String(),
  detail: Type.String(),
  /** The request field at fault, for invalid_request. */
  field: Type.Optional(Type.String()),
});
export type ProblemJson = Static<typeof Problem>;

const MetaValue = Type.Union([Type.String(), Type.Number(), Type.Null()]);

export const DoctorReport = Type.Object({
  orphans: Type.Array(Type.Object({
    id: Type.String(),
    folder: Type.String(),
    running: Type.Boolean(),
    pid: Nullable(Type.Integer()),
    /** From the folder's own metadata file; null when it has none (adopting gives it a new host name). */
    hostname: Nullable(Type.String()),
  })),
  unfinished: Type.Array(Type.String()),
  missingData: Type.Array(Type.String()),
  /** Tenants whose folder's own metadata (pgs-tenant.json) says otherwise than the catalog, say after catalog.json was restored from its backup. */
  disagreements: Type.Array(Type.Object({
    id: Type.String(),
    newer: Type.Union([Type.Literal('catalog'), Type.Literal('folder'), Type.Literal('same')], { description: 'the side with more changes counted; same: as many on both (a fix takes the catalog\'s)' }),
    catalogRev: Type.Integer({ description: 'changes counted in the catalog\'s entry' }),
    folderRev: Nullable(Type.Integer({ description: 'changes counted in the folder\'s copy; null: the folder has no usable metadata file' })),
    fields: Type.Array(Type.Object({
      field: Type.String({ description: 'as in the tenant\'s JSON: hostname, access, wanted, generation, maxConnections, autosuspendSeconds, memoryBytes, ...' }),
      catalog: MetaValue,
      folder: MetaValue,
    })),
  })),
  /** What pgs's own work left beside the tenants' folders (a restore's working folders, the trash, journals): reported with what removes it, never touched by a fix. */
  leftovers: Type.Array(Type.Object({
    path: Type.String(),
    kind: Type.Union([Type.Literal('partial-copy'), Type.Literal('restore-staging'), Type.Literal('pre-restore'), Type.Literal('trash'), Type.Literal('restore-journal'), Type.Literal('borrowed-wal')]),
    bytes: Type.Integer(),
    note: Type.String(),
  })),
});
export const DoctorFix = Type.Object({
  adopted: Type.Array(Type.Object({ id: Type.String(), hostname: Type.String(), newHostname: Type.Boolean() })),
  removed: Type.Array(Type.String()),
  /** Each disagreement settled the way the newer side has it: `updated` is the side rewritten (catalog: from the folder's copy; folder: its metadata from the catalog). */
  settled: Type.Array(Type.Object({
    id: Type.String(),
    newer: Type.Union([Type.Literal('catalog'), Type.Literal('folder'), Type.Literal('same')]),
    updated: Type.Union([Type.Literal('catalog'), Type.Literal('folder')]),
    fields: Type.Array(Type.String()),
  })),
  report: DoctorReport,
});
export type DoctorFixJson = Static<typeof DoctorFix>;

export const Ok = Type.Object({ ok: Type.Boolean() });
export const Health200 = Type.Object({ status: Type.Literal('ok') });

export const Backup = Type.Object({
  id: Type.String(),
  tenant: Type.String(),
  generation: Type.String({ description: 'the unbroken line of WAL the backup belongs to (a restore starts a new one)' }),
  kind: Type.Union([Type.Literal('online'), Type.Literal('offline')], { description: 'online: of the running server; offline: of a stopped one\'s files' }),
  reason: Type.String({ description: 'manual, scheduled, pre-restore, first, branch, export' }),
  startedAt: DateTime,
  finishedAt: DateTime,
  startLsn: Type.String(),
  endLsn: Type.String(),
  timeline: Type.Integer(),
  bytes: Type.Integer(),
  note: Type.Optional(Type.String({ description: 'what it was taken for, where its reason does not say all: a pre-restore backup says "before restore to backup <id>", "before restore to <time>" or "before restore to the latest point"' })),
});
export type BackupJson = Static<typeof Backup>;

export const BackupList = Type.Object({
  tenant: Type.String(),
  backups: Type.Array(Backup),
  window: Nullable(Type.Object({ earliest: DateTime, latest: DateTime }, { description: 'the earliest and latest point in time a restore can reach' })),
  ranges: Type.Array(Type.Object({ generation: Type.String(), from: DateTime, to: DateTime, gap: Type.Optional(Type.String()) })),
  lastFailure: Nullable(Type.Object({ at: DateTime, error: Type.String() })),
});

/** Times in requests take what the CLI takes (the daemon's time zone for one without an offset). */
const TIME_FORMS = 'RFC 3339 (2026-11-30T14:02:00Z, any offset: +05:30, +0530, +05), PostgreSQL\'s timestamptz output (2026-11-30 14:02:00.123456+00), or without an offset for the daemon\'s local time';

export const RestoreBody = Type.Object({
  backup: Type.Optional(Type.String({ pattern: '^\\d{8}-\\d{6}-[0-9a-f]{4}$', description: 'restore this backup (to its end, or with `time` to that time)' })),
  time: Type.Optional(Type.String({ maxLength: 64, description: `restore to this point in time (replaying the WAL archive): ${TIME_FORMS}` })),
  as: Type.Optional(TenantId),
}, { additionalProperties: false });

export const BranchBody = Type.Object({
  id: TenantId,
  at: Type.Optional(Type.String({ maxLength: 64, description: `the source as it was then (${TIME_FORMS}); default: now` })),
}, { additionalProperties: false });

export const ExportResult = Type.Object({
  name: Type.String(),
  bytes: Type.Integer(),
  sha256: Type.String(),
  download: Type.String({ description: 'GET this path for the file (kept 24 hours; DELETE it when done)' }),
});
export const ExportParams = Type.Object({ name: Type.String({ maxLength: 200 }) });
export const ImportQuery = Type.Object({ as: Type.Optional(TenantId) }, { additionalProperties: false });
export type BackupListJson = Static<typeof BackupList>;
export type RestoreRequest = Static<typeof RestoreBody>;
export type BranchRequest = Static<typeof BranchBody>;
export type ExportJson = Static<typeof ExportResult>;
