import { tenantHostname } from '../catalog/ids.js';
import { DEFAULT_BACKUP_RETAIN, DEFAULT_BACKUP_SCHEDULE, DEFAULT_RPO_SECONDS, type Access, type BackupSchedule, type Settings, type Tenant, type Wanted } from '../catalog/schema.js';
import type { ServerState } from '../runtime/runtime.js';
import { TENANT_ROLE } from '../runtime/server-config.js';
import { autosuspendOf, effectivePoolSize } from './tenant-rules.js';

/** A tenant as the API and `--json` show it: its catalog entry with what is seen of its server, on any runtime. */
export interface TenantView {
  id: string;
  hostname: string;
  access: Access;
  /** What runs; with a daemon also `suspended` (idle, wakes on connect) or `crashed`. */
  state: ServerState | 'suspended' | 'crashed';
  wanted: Wanted;
  pid: number | null;
  database: string;
  user: string;
  port: number;
  maxConnections: number;
  /** Seconds without connections before the server is suspended; null: never. */
  autosuspendSeconds: number | null;
  createdAt: string;
  /** When the running server started (ISO) and for how long it has run; null when none runs. */
  serverStartedAt: string | null;
  uptimeSeconds: number | null;
  /** Client connections through the router now; null when no daemon runs. */
  connections: number | null;
  /** The daemon's last health check (a real query over the socket); `unknown` when none yet or no daemon. */
  health: 'ok' | 'failing' | 'unknown';
  healthCheckedAt: string | null;
  healthError?: string;
  /** Why the last start failed, while it keeps failing. */
  lastError?: string;
  /** Restarts after a crash and wakes since the daemon started (0 without a daemon). */
  restarts: number;
  wakes: number;
  /** Backups the daemon takes (hourly, daily, off) and how many it keeps. */
  backupSchedule: BackupSchedule;
  backupRetain: number;
  /** At most this many seconds of writes wait before their WAL is archived. */
  rpoSeconds: number;
  memoryBytes: number | null;
  cpus: number | null;
  diskBytes: number | null;
  diskUsedBytes: number | null;
  /** How its clients share server sessions (session: one each; transaction: poolSize shared). */
  pool: 'session' | 'transaction';
  poolSize: number;
  /** Client connections at once through the router; null: the default for its pool mode. */
  maxClientConnections: number | null;
  /** Source addresses the router lets connect (CIDR blocks); null: any. */
  allow: string[] | null;
  disk?: 'ok' | 'warning' | 'read-only' | 'standby';
  usage?: { memoryBytes: number; cpuSeconds: number; memorySource: 'cgroup' | 'pss' };
  limitsNotEnforced?: string;
  /** When the newest backup finished; null: none, or no daemon runs. */
  lastBackupAt: string | null;
  /** When a client was last connected through the router; null: not since the daemon started (absent without a daemon). */
  lastActiveAt?: string | null;
  /** The continuous archive: ok, failing, behind, gap, off (not yet set up), unknown (not looked at). */
  archiving: 'ok' | 'failing' | 'behind' | 'gap' | 'unknown' | 'off';
  archivingError?: string;
  /** With a backup bucket: what of the tenant is not in it yet; null without one (absent: not known, no daemon). */
  backupPending?: { files: number; bytes: number; oldestAt: string | null } | null;
}

/** What a running daemon knows of a tenant's server, which the files cannot tell (fields as in TenantView). */
export interface ObservedTenant extends
  Pick<TenantView, 'serverStartedAt' | 'health' | 'healthCheckedAt' | 'healthError' | 'lastError' | 'restarts' | 'wakes' | 'lastActiveAt' | 'archivingError' | 'backupPending' | 'usage' | 'limitsNotEnforced' | 'disk'>,
  Partial<Pick<TenantView, 'lastBackupAt' | 'archiving'>> {
  state: string;
  pid: number | null;
  connections: number;
  diskUsedBytes?: number;
}

/**
 * How long the server has run as this tenant's: since its start, or since the
 * tenant was created when its server ran before that (a running spare, which a
 * create takes over). Its start time has one-second resolution.
 */
export function uptimeSeconds(tenant: Pick<Tenant, 'createdAt'>, serverStartedAt: string | null, now = Date.now()): number | null {
  if (serverStartedAt === null) return null;
  const since = Math.max(Date.parse(serverStartedAt), Date.parse(tenant.createdAt) || 0);
  return Math.max(0, Math.round((now - since) / 1000));
}

/** A tenant as the API and `--json` show it: the catalog's settings with what is seen of its server. */
export function tenantView(settings: Settings, tenant: Tenant, seen: Omit<ObservedTenant, 'connections'> & { connections: number | null }, now = Date.now()): TenantView {
  return {
    id: tenant.id,
    hostname: tenantHostname(tenant.id, tenant.suffix, settings.domain),
    access: tenant.access,
    state: seen.state as TenantView['state'],
    wanted: tenant.wanted,
    pid: seen.pid,
    database: tenant.id,
    user: TENANT_ROLE,
    port: settings.port,
    maxConnections: tenant.maxConnections,
    autosuspendSeconds: autosuspendOf(tenant),
    createdAt: tenant.createdAt,
    serverStartedAt: seen.serverStartedAt,
    uptimeSeconds: uptimeSeconds(tenant, seen.serverStartedAt, now),
    connections: seen.connections,
    health: seen.health,
    healthCheckedAt: seen.healthCheckedAt,
    ...(seen.healthError ? { healthError: seen.healthError } : {}),
    ...(seen.lastError ? { lastError: seen.lastError } : {}),
    restarts: seen.restarts,
    wakes: seen.wakes,
    backupSchedule: tenant.backupSchedule ?? DEFAULT_BACKUP_SCHEDULE,
    backupRetain: tenant.backupRetain ?? DEFAULT_BACKUP_RETAIN,
    rpoSeconds: tenant.rpoSeconds ?? DEFAULT_RPO_SECONDS,
    memoryBytes: tenant.memoryBytes ?? null,
    cpus: tenant.cpus ?? null,
    diskBytes: tenant.diskBytes ?? null,
    diskUsedBytes: seen.diskUsedBytes ?? null,
    pool: tenant.pool ?? 'session',
    poolSize: effectivePoolSize(tenant),
    maxClientConnections: tenant.maxClientConnections ?? null,
    allow: tenant.allow ?? null,
    ...(tenant.diskBytes !== undefined ? { disk: seen.disk ?? tenant.diskState ?? 'ok' } : {}),
    ...(seen.usage ? { usage: seen.usage } : {}),
    ...(seen.limitsNotEnforced ? { limitsNotEnforced: seen.limitsNotEnforced } : {}),
    lastBackupAt: seen.lastBackupAt ?? null,
    ...(seen.lastActiveAt !== undefined ? { lastActiveAt: seen.lastActiveAt } : {}),
    archiving: seen.archiving ?? (tenant.generation === undefined ? 'off' : 'unknown'),
    ...(seen.archivingError ? { archivingError: seen.archivingError } : {}),
    ...(seen.backupPending !== undefined ? { backupPending: seen.backupPending } : {}),
  };
}
