import * as v from 'valibot';
import { MAX_ALLOW_ENTRIES, isNormalCidr } from '../core/cidr.js';
import { TENANT_ID_PATTERN } from './ids.js';

/**
 * The catalog: the single source of desired state. One schema both validates
 * every read and types the code. Passwords are never part of it.
 * (valibot rather than zod: the same idea at a tenth of the start-up cost,
 * which every CLI command pays.)
 */
export const CATALOG_VERSION = 1;
export const DEFAULT_AUTOSUSPEND_SECONDS = 300;
export const DEFAULT_API_LISTEN = '127.0.0.1:5480';
/** A finished WAL segment is archived at least this often while the tenant writes: the most a lost disk costs. */
export const DEFAULT_RPO_SECONDS = 60;
/** Server sessions a tenant that pools by transaction shares among its clients, unless it says otherwise. */
export const DEFAULT_POOL_SIZE = 10;
export const DEFAULT_BACKUP_SCHEDULE = 'daily';
export const DEFAULT_BACKUP_RETAIN = 7;

export const AccessSchema = v.picklist(['enabled', 'disabled'], 'must be enabled or disabled');
export type Access = v.InferOutput<typeof AccessSchema>;

export const BackupScheduleSchema = v.picklist(['hourly', 'daily', 'off'], 'must be hourly, daily or off');
export type BackupSchedule = v.InferOutput<typeof BackupScheduleSchema>;

export const WantedSchema = v.picklist(['running', 'stopped'], 'must be running or stopped');
export type Wanted = v.InferOutput<typeof WantedSchema>;

/** The smallest memory limit: the server's shared buffers (16 MB) and a few sessions must fit. */
export const MIN_MEMORY_BYTES = 64 * 2 ** 20;

/** The smallest disk quota: a new tenant's folder takes about 40 MB. */
export const MIN_DISK_BYTES = 128 * 2 ** 20;
/** Past the quota a tenant is read-only; past the quota and this much more it runs as a standby (no write can happen). */
export const DISK_HARD_FACTOR = 1.1;
/** At this share of its quota a tenant is warned. */
export const DISK_WARN_FACTOR = 0.9;
/** The smallest limit of an upload to import (`pgs setup --import-limit`). */
export const MIN_IMPORT_BYTES = 2 ** 20;
/** The most an upload to import may be when the limit is auto (what the disk allows otherwise). */
export const AUTO_IMPORT_CAP_BYTES = 64 * 2 ** 30;

/** Every issue names its field and says what the field must be (see schemaProblem). */
export const int = (min: number, max: number) => {
  const message = `must be an integer from ${min} to ${max}`;
  return v.pipe(v.number(message), v.integer(message), v.minValue(min, message), v.maxValue(max, message));
};
/** A string of the pattern: no control character, no other text can pass. */
export const matching = (pattern: RegExp, what: string) => v.pipe(v.string(`must be ${what}`), v.regex(pattern, `must be ${what}`));
export const isoTime = v.pipe(v.string('must be a time (ISO 8601)'), v.isoTimestamp('must be a time (ISO 8601)'));
const nonEmpty = v.pipe(v.string(), v.minLength(1));
const RESERVED_IDS = new Set(['template0', 'template1', 'postgres']);
const idText = 'a tenant id (a DNS label of at most 40 lower-case letters, digits and -)';
export const TenantIdSchema = v.pipe(matching(TENANT_ID_PATTERN, idText), v.check((id) => !RESERVED_IDS.has(id), `must be ${idText}, not a reserved name`));
export const StampSchema = matching(/^\d{8}-\d{6}-[0-9a-f]{4}$/, 'a stamp such as 20260101-120000-a3f9');

const cidrText = 'a CIDR block in normal form such as 203.0.113.0/24 or 2001:db8::/32';
/** A tenant's network allow-list as the catalog keeps it: normal blocks (core/cidr.ts), no duplicate, 1 to MAX_ALLOW_ENTRIES. */
export const AllowSchema = v.pipe(
  v.array(v.pipe(v.string(`must be ${cidrText}`), v.check(isNormalCidr, `must be ${cidrText}`)), 'must be a list of CIDR blocks'),
  v.minLength(1, 'must name at least one CIDR block (absent: any address)'),
  v.maxLength(MAX_ALLOW_ENTRIES, `must have at most ${MAX_ALLOW_ENTRIES} CIDR blocks`),
  v.check((list) => new Set(list).size === list.length, 'must not name a CIDR block twice'),
);

export const TenantSchema = v.strictObject({
  id: TenantIdSchema,
  suffix: matching(/^[a-z0-9]{6}$/, 'six lower-case letters or digits'),
  access: AccessSchema,
  wanted: WantedSchema,
  maxConnections: int(5, 10000),
  createdAt: isoTime,
  /** Seconds without connections before the daemon suspends the server; null: never; absent: the default (300). */
  autosuspendSeconds: v.optional(v.nullable(int(1, 31_536_000))),
  /** Its current WAL archive (backups/<id>/<generation>/); absent: made before archiving (the daemon gives it one). */
  generation: v.optional(StampSchema),
  /** Seconds between forced WAL segment switches while it writes; absent: 60. */
  rpoSeconds: v.optional(int(1, 3600)),
  /** Base backups the daemon takes; absent: daily. */
  backupSchedule: v.optional(BackupScheduleSchema),
  /** Base backups kept (older ones and the WAL only they need are deleted); absent: 7. */
  backupRetain: v.optional(int(1, 1000)),
  /** Memory its server may use (a cgroup limit, as root); absent: no limit. */
  memoryBytes: v.optional(int(MIN_MEMORY_BYTES, 2 ** 50)),
  /** Cores its server may use (a cgroup CPU quota, as root); absent: no limit. */
  cpus: v.optional(v.pipe(v.number('must be a number from 0.01 to 1024'), v.minValue(0.01, 'must be a number from 0.01 to 1024'), v.maxValue(1024, 'must be a number from 0.01 to 1024'))),
  /** Disk its data folder (data and WAL) may take; absent: no quota. */
  diskBytes: v.optional(int(MIN_DISK_BYTES, 2 ** 50)),
  /** How its clients share server sessions through the router; absent: session (one each). */
  pool: v.optional(v.picklist(['session', 'transaction'], 'must be session or transaction')),
  /** In transaction mode, the server sessions its clients share; absent: DEFAULT_POOL_SIZE (never more than maxConnections). */
  poolSize: v.optional(int(1, 10000)),
  /** Client connections at once through the router; absent: maxConnections in session mode, the router's limit per tenant in transaction mode. */
  maxClientConnections: v.optional(int(1, 100000)),
  /** Set while the tenant is over its quota: read-only (it can lift it to clean up), or a standby (past the hard limit). */
  diskState: v.optional(v.picklist(['read-only', 'standby'], 'must be read-only or standby')),
  /** The database's name on the server when it is not the tenant's id (a restore or branch on the kubernetes runtime keeps its source's); clients still ask for the id. */
  database: v.optional(matching(/^[a-z][a-z0-9_]{0,62}$/, 'a database name (lower-case letters, digits and _)')),
  /** The source addresses the router lets connect to it (CIDR blocks); absent: any. */
  allow: v.optional(AllowSchema),
  /** Changes to this entry so far, also in its folder's pgs-tenant.json: the higher of the two is the newer; absent: 0 (written before pgs counted). */
  rev: v.optional(int(0, Number.MAX_SAFE_INTEGER)),
}, 'must be a tenant entry');
export type Tenant = v.InferOutput<typeof TenantSchema>;

export const SettingsSchema = v.strictObject({
  domain: nonEmpty,
  port: int(1, 65535),
  /** Wildcard certificate and key for `*.<domain>` (PEM files). */
  certFile: nonEmpty,
  keyFile: nonEmpty,
  /** True when `pgs setup` generated the certificate (it regenerates it on a domain change). */
  certSelfSigned: v.boolean(),
  /** Tenant data directories, sockets, logs and the template cluster live here. */
  dataRoot: nonEmpty,
  /** The OS user the servers run as; null: the user running pgs. */
  serverUser: v.nullable(nonEmpty),
  defaultMaxConnections: int(5, 10000),
  /** Where the daemon's REST API listens on TCP (`ADDR:PORT`); null: only its unix socket; absent: 127.0.0.1:5480. */
  apiListen: v.optional(v.nullable(nonEmpty)),
  /** Per-tenant series in /metrics (pgs_tenant_*); absent: on. */
  tenantMetrics: v.optional(v.boolean()),
  /** Where WAL and backups are copied besides the data root: `s3://bucket/prefix`; absent: the data root only. */
  backupTarget: v.optional(v.pipe(v.string(), v.regex(/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/))),
  /** An S3 API server's URL (MinIO, Ceph, ...); absent: AWS. */
  s3Endpoint: v.optional(v.pipe(v.string(), v.url())),
  /** absent: AWS_REGION, else us-east-1. */
  s3Region: v.optional(nonEmpty),
  /** Servers (tenants and spares) that may run at once; absent: derived from the host's memory (runningBudget). */
  maxRunning: v.optional(int(1, 100000)),
  /** How tenant servers run: child processes (absent: native) or a container each (docker). */
  runtime: v.optional(v.picklist(['native', 'docker', 'kubernetes'])),
  /** The docker runtime's image (absent: postgres:18) and the folder of its postgres binary; the kubernetes runtime's PostgreSQL image (absent: the operator's). */
  image: v.optional(nonEmpty),
  pgBinPath: v.optional(v.pipe(v.string(), v.startsWith('/'))),
  /** The kubernetes runtime: the namespace of the tenants' clusters (absent: the kubeconfig's, or the pod's own). */
  namespace: v.optional(v.pipe(v.string(), v.regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/))),
  /** The kubernetes runtime: the storage class of the tenants' volumes (absent: the cluster's default). */
  storageClass: v.optional(nonEmpty),
  /** The kubernetes runtime: instances per tenant cluster (absent: 1; 2 or 3 add streaming replicas and failover). */
  instances: v.optional(v.picklist([1, 2, 3])),
  /** The largest upload POST /v1/import takes, in bytes; absent: auto (see daemon/uploads.ts). */
  importMaxBytes: v.optional(int(MIN_IMPORT_BYTES, 2 ** 50)),
});
export type Settings = v.InferOutput<typeof SettingsSchema>;

export const CatalogSchema = v.pipe(
  v.strictObject({
    version: v.literal(CATALOG_VERSION),
    settings: SettingsSchema,
    tenants: v.array(TenantSchema),
  }),
  v.check((catalog) => new Set(catalog.tenants.map((t) => t.id)).size === catalog.tenants.length, 'two tenants have the same id'),
);
export type Catalog = v.InferOutput<typeof CatalogSchema>;

/** The first problem of a value that does not match the schema, as "path: message". */
export function catalogProblem(value: unknown): { catalog: Catalog } | { problem: string } {
  const result = v.safeParse(CatalogSchema, value);
  if (result.success) return { catalog: result.output };
  const issue = result.issues[0];
  return { problem: issue ? describeIssue(issue, '', ': ') : 'top level: does not match the schema' };
}

/** The first issue of `value` against `schema` as "<prefix>.<field> must be ...", or undefined when it matches. */
export function schemaProblem(schema: v.GenericSchema, value: unknown, prefix: string): string | undefined {
  const result = v.safeParse(schema, value);
  const issue = result.success ? undefined : result.issues[0];
  return issue ? describeIssue(issue, prefix, ' ') : undefined;
}

function describeIssue(issue: v.BaseIssue<unknown>, prefix: string, between: string): string {
  const where = [prefix, ...(issue.path ?? []).map((p) => String(p.key))].filter((p) => p !== '').join('.') || 'top level';
  // An object's own issues are of three kinds, with one message: not an object, a missing field, an unknown one.
  if (issue.type === 'strict_object' || issue.type === 'object') {
    if (issue.expected === 'never') return `${where}${between}is not a field pgs knows`;
    if (issue.received === 'undefined' && issue.path !== undefined) return `${where}${between}is missing`;
  }
  return `${where}${between}${issue.message}`;
}
