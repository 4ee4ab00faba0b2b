import { PgsError } from '../core/errors.js';

/**
 * What every tenant server runs with. Sized for many small, mostly idle servers
 * on one host (see DESIGN.md "Runtime facts"): small shared memory, no network
 * listener (the router reaches the unix socket), few background wake-ups.
 * Durability is not traded: fsync and synchronous_commit stay on.
 */
export const ADMIN_ROLE = 'pgs_admin';
export const TENANT_ROLE = 'postgres';
/** The template's tenant database; renamed to the tenant id on create. */
export const TEMPLATE_DATABASE = 'pgs_tenant';
/**
 * pgs's own database in every server (as RDS has rdsadmin): the admin role's
 * sessions (health checks, passwords) sit here, never in template1 (a session
 * there would block the tenant's CREATE DATABASE) nor in the tenant's database
 * (it would block DROP, RENAME and TEMPLATE of it). Tenants cannot connect.
 */
export const ADMIN_DATABASE = 'pgs_admin';
/** Every server listens on `<socketDir>/.s.PGSQL.5432` only. */
export const SERVER_PORT = 5432;
/**
 * The folder of a server's socket, inside its data folder (so that the socket
 * moves with the folder when a running spare becomes a tenant). BASE_BACKUP
 * leaves out the contents of pg_stat_tmp (a folder PostgreSQL keeps for
 * temporary files and never empties at a start), so the socket and its lock
 * file are never in a backup: in the data folder's top level, every backup
 * logged "skipping special file".
 */
export const SOCKET_SUBDIR = 'pg_stat_tmp';

/** The socket folder of the server whose data folder is `dataDir`. */
export function socketDirOf(dataDir: string): string {
  return `${dataDir.replace(/\/$/, '')}/${SOCKET_SUBDIR}`;
}
export const SOCKET_FILE = `.s.PGSQL.${SERVER_PORT}`;

/** The unix socket a server listening in `socketDir` on `port` has (libpq's naming). The one place that builds it. */
export function socketPath(socketDir: string, port = SERVER_PORT): string {
  return `${socketDir.replace(/\/$/, '')}/.s.PGSQL.${port}`;
}
/** Bumped when the template's contents change, so that `pgs setup` rebuilds it. */
export const TEMPLATE_VERSION = 12;
export const TEMPLATE_MARKER = 'PGS_TEMPLATE';

/**
 * Connections only superusers may use: PostgreSQL refuses a tenant role's session
 * once no more than these are free (whoever holds the rest, pgs's own admin
 * sessions included), so they are counted on top of PGS_SESSION_SLOTS.
 */
export const SUPERUSER_RESERVED_CONNECTIONS = 2;
/**
 * Slots for pgs's own sessions (the admin role's: the health check's kept session,
 * one for a statement such as a password change or a login lookup, and one to spare
 * while another is closing), so that they never take one of the tenant's.
 */
export const PGS_SESSION_SLOTS = 3;

/**
 * The server's max_connections for a tenant limited to `limit` sessions: the tenant's,
 * pgs's own and the superusers' reserve. The router opens at most `limit` sessions of the
 * tenant role there (router/server-slots.ts), so a client over the limit is refused by
 * pgs (53300 naming it), never by PostgreSQL.
 */
export function serverMaxConnections(limit: number): number {
  return limit + PGS_SESSION_SLOTS + SUPERUSER_RESERVED_CONNECTIONS;
}

export const SERVER_SETTINGS: Readonly<Record<string, string>> = {
  listen_addresses: "''",
  port: String(SERVER_PORT),
  unix_socket_permissions: '0700',
  password_encryption: 'scram-sha-256',
  shared_buffers: '16MB',
  max_connections: '20',
  superuser_reserved_connections: String(SUPERUSER_RESERVED_CONNECTIONS),
  io_method: 'sync',
  // Continuous archiving (see ARCHIVE_SETTINGS): WAL detailed enough to restore from, and
  // two replication connections for pgs's own BASE_BACKUP (no standby streams from a tenant).
  wal_level: 'replica',
  max_wal_senders: '2',
  max_replication_slots: '0',
  archive_mode: 'on',
  archive_library: "'basic_archive'",
  min_wal_size: '4MB',
  max_wal_size: '64MB',
  checkpoint_timeout: '1h',
  bgwriter_delay: '10s',
  wal_writer_delay: '10s',
  autovacuum_naptime: '5min',
  max_worker_processes: '4',
  max_parallel_workers: '2',
  max_parallel_workers_per_gather: '1',
  max_logical_replication_workers: '0',
  max_sync_workers_per_subscription: '0',
  huge_pages: 'off',
  dynamic_shared_memory_type: 'posix',
  logging_collector: 'off',
  log_destination: 'stderr',
  log_line_prefix: "'%m [%p] %q%u@%d '",
  log_timezone: "'UTC'",
  timezone: "'UTC'",
};

export function serverConfText(): string {
  const lines = ['', '# --- pgs: settings for one small tenant server (managed by pgs setup) ---'];
  for (const [name, value] of Object.entries(SERVER_SETTINGS)) lines.push(`${name} = ${value}`);
  lines.push(ARCHIVE_INCLUDE);
  return `${lines.join('\n')}\n`;
}

/**
 * The settings of this one server (its connection limit, where its WAL goes
 * and how often), written by pgs before every start (and on change, with a
 * reload) into the data folder, included last by postgresql.conf. A copy of a
 * data folder (a restore, a branch, an import) therefore never archives into
 * its source's archive: the file it inherits is replaced before its first
 * start. A server without an archive (a spare) has archiving on but not
 * configured: it keeps its WAL until it becomes a tenant and gets one. (It
 * would warn at every segment it finished; an idle spare finishes none, and
 * the template it is copied from has no segment marked for archiving.)
 * Archiving to nowhere instead would race: the reload that gives a taken
 * spare its archive reaches the archiver in its own time, and the archiver
 * restarts for a new library at most every 10 s.
 */
export const ARCHIVE_CONF = 'pgs.conf';
export const ARCHIVE_INCLUDE = `include_if_exists = '${ARCHIVE_CONF}'`;
/**
 * A restore's recovery settings, written before the start that replays and
 * emptied before any other start. Most of them take effect only at a start:
 * kept while the promoted server runs, a reload of pgs.conf (a new RPO, a
 * memory limit) finds them as the server has them instead of reporting each
 * as one it cannot change and the configuration as containing errors.
 */
export const RECOVERY_CONF = 'pgs-recovery.conf';


/** Settings a server made from an older template lacks: added to its postgresql.conf before its next start. */
export const ARCHIVE_MIGRATION: Readonly<Record<string, string>> = {
  wal_level: 'replica',
  max_wal_senders: '2',
  max_replication_slots: '0',
  archive_mode: 'on',
  archive_library: "'basic_archive'",
};

export interface ArchiveTarget {
  /** Absolute folder the server copies each finished WAL segment to. */
  directory: string;
  /** A segment is finished at least this often while anything is written (the most a lost disk can cost). */
  timeoutSeconds: number;
}

/** Recovery settings for a restore: replay from `walDir`, stop at `target`, then become a primary. */
export interface RecoverySettings {
  /** Folders holding the WAL to replay, tried in order (the archive first). */
  walDirs: string[];
  /** ISO time, 'immediate' (the backup's consistent point), or 'latest' (the end of the archive). */
  target: string;
}

/**
 * Query statistics (pg_stat_statements): loaded at every server's start, so that
 * each tenant's top statements can be shown (pgs queries, GET /v1/tenants/{id}/queries).
 * 1,000 distinct statements per server (PostgreSQL's default is 5,000): the hash
 * table is shared memory of every server, idle or not. Saved at a clean shutdown
 * (pg_stat/pg_stat_statements.stat), so a suspended tenant's counts survive its wake.
 */
export const QUERY_STATS_EXTENSION = 'pg_stat_statements';
export const QUERY_STATS_SETTINGS: readonly string[] = [
  `shared_preload_libraries = '${QUERY_STATS_EXTENSION}'`,
  'pg_stat_statements.max = 1000',
  "pg_stat_statements.track = 'top'",
];
/** Where the extension lives in pgs's own database (a schema pgs makes; see NativeRuntime.queryStats). */
export const QUERY_STATS_SCHEMA = 'pgs_stats';

export function archiveConfText(maxConnections: number, archive: ArchiveTarget | undefined, recovery?: RecoverySettings, memoryBytes?: number, readOnly?: 'soft' | 'standby', queryStats = true): string {
  // Whatever the values' source (the catalog, an imported file), nothing but a checked number or a quoted string reaches the file.
  confInteger('max_connections', maxConnections, 1, 100_000);
  if (memoryBytes !== undefined) confInteger('the memory limit', memoryBytes, 1, Number.MAX_SAFE_INTEGER);
  if (archive) {
    confInteger('archive_timeout', archive.timeoutSeconds, 1, 86_400);
    confPath('the archive folder', archive.directory);
  }
  const lines = ['# pgs: written before each start; changes here are lost.'];
  // The tenant's limit plus pgs's own sessions' slots and the superusers' reserve.
  lines.push(`max_connections = ${serverMaxConnections(maxConnections)}`);
  if (queryStats) lines.push(...QUERY_STATS_SETTINGS);
  if (memoryBytes !== undefined) lines.push(...memorySettings(memoryBytes, maxConnections));
  // Over the disk quota: writes need a session to say SET default_transaction_read_only = off first.
  if (readOnly === 'soft') lines.push('default_transaction_read_only = on');
  if (readOnly === 'standby' && !recovery) lines.push('hot_standby = on');
  if (archive) {
    lines.push(`basic_archive.archive_directory = ${quoteLiteral(archive.directory)}`, `archive_timeout = ${archive.timeoutSeconds}`);
  }
  // Last: what the server was started with for a restore outranks the lines above until its next start.
  lines.push(`include_if_exists = '${RECOVERY_CONF}'`);
  return `${lines.join('\n')}\n`;
}

/**
 * RECOVERY_CONF: for a restore's start, replay from the WAL folders to the target, then promote;
 * for any other start, nothing (the file is there all the same: a missing include is logged).
 */
export function recoveryConfText(recovery: RecoverySettings | undefined): string {
  if (!recovery) return '# pgs: the settings of a restore\'s start go here; this start is not one.\n';
  for (const dir of recovery.walDirs) confPath('a WAL folder', dir);
  if (recovery.target !== 'immediate' && recovery.target !== 'latest' && Number.isNaN(Date.parse(recovery.target))) throw new PgsError('INVALID_SETTING', `invalid recovery target ${JSON.stringify(recovery.target)}`);
  const lines = ['# pgs: written before a restore\'s start, removed before the next start.'];
  // %f is a segment name PostgreSQL makes ([0-9A-F.a-z]); the folders are pgs's, quoted for the shell.
  // A file that is there but cannot be copied (unreadable, a full disk) ends the recovery with an
  // error (an exit status above 125 is fatal to PostgreSQL) instead of passing for the archive's end.
  const dirs = recovery.walDirs.map((dir) => shellQuote(`${dir}/`)).join(' ');
  const command = `for d in ${dirs}; do if [ -e "\${d}%f" ]; then cp -- "\${d}%f" "%p" && exit 0; exit 126; fi; done; exit 1`;
  lines.push(`restore_command = ${quoteLiteral(recovery.walDirs.length > 0 ? command : 'false')}`);
  lines.push("recovery_target_timeline = 'latest'");
  // No sessions until the replay is over: the server reads as ready (postmaster.pid) only once it is a primary.
  lines.push('hot_standby = off');
  if (recovery.target === 'immediate') lines.push("recovery_target = 'immediate'");
  // PostgreSQL's timestamptz input: "2026-11-30 14:02:00.123+00".
  else if (recovery.target !== 'latest') lines.push(`recovery_target_time = ${quoteLiteral(`${new Date(recovery.target).toISOString().replace('T', ' ').replace('Z', '')}+00`)}`);
  if (recovery.target !== 'latest') lines.push("recovery_target_action = 'promote'");
  return `${lines.join('\n')}\n`;
}

/**
 * Under a memory limit, a query should fail with PostgreSQL's "out of memory"
 * or spill to disk before the kernel stops the server: a quarter of the limit
 * shared among all sessions' sorts and hashes (work_mem is per operation),
 * an eighth for maintenance. shared_buffers stays 16 MB (the limit is at
 * least 64 MB). All of these take effect at a reload.
 */
export function memorySettings(memoryBytes: number, maxConnections: number): string[] {
  const kib = (bytes: number) => `${Math.floor(bytes / 1024)}kB`;
  const clamp = (x: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, x));
  return [
    `work_mem = ${kib(clamp(memoryBytes / 4 / maxConnections, 64 * 1024, 4 * 2 ** 20))}`,
    `maintenance_work_mem = ${kib(clamp(memoryBytes / 8, 1024 * 1024, 64 * 2 ** 20))}`,
    'hash_mem_multiplier = 1.0',
  ];
}

function confInteger(what: string, value: number, min: number, max: number): void {
  if (!Number.isSafeInteger(value) || value < min || value > max) throw new PgsError('INVALID_SETTING', `refusing to write ${what} = ${JSON.stringify(value)} into ${ARCHIVE_CONF}: an integer from ${min} to ${max} is needed`);
}

/** Control characters (a newline above all) would end the quoted value and start a setting of their own. */
function confPath(what: string, value: string): void {
  // eslint-disable-next-line no-control-regex
  if (typeof value !== 'string' || !value.startsWith('/') || /[\x00-\x1f\x7f]/.test(value)) throw new PgsError('INVALID_SETTING', `refusing to write ${what} ${JSON.stringify(value)} into ${ARCHIVE_CONF}: an absolute path without control characters is needed`);
}

function shellQuote(value: string): string {
  return `'${value.replaceAll("'", "'\\''")}'`;
}

/**
 * Local socket only, and peer authentication only: whoever reaches the
 * socket may log in as any role. That is the server's OS user and root (the
 * socket's folder is the data folder, 0700): both can read the data files
 * anyway. Clients from the network never get here directly: the router
 * checks their password itself (SCRAM, against the role's verifier) and then
 * logs in for them over this socket. From SQL a tenant cannot take this
 * path: dblink and postgres_fdw refuse a connection made without a password
 * to anyone but a superuser, and the tenant role is not one.
 */
export function hbaConfText(adminOnly = false): string {
  return [
    adminOnly
      ? '# pgs: a restored server before pgs has checked its roles: pgs itself only, no client.'
      : '# pgs: unix socket only; the router (after checking the password) and pgs itself come in here.',
    adminOnly ? `local all ${ADMIN_ROLE} peer map=pgs` : 'local all all peer map=pgs',
    `local replication ${ADMIN_ROLE} peer map=pgs`,
    '',
  ].join('\n');
}

/**
 * Settings every session of pgs's admin role sends in its start-up packet.
 * They outrank `ALTER ROLE/DATABASE ... SET` (a client's setting wins over
 * pg_db_role_setting), so data pgs did not make cannot steer pgs's own
 * sessions: no library loaded at log-in, no `SET ROLE` to another role, no
 * event trigger firing on pgs's DDL, no schema of the tenant's searched
 * before pg_catalog, no time-out or read-only default breaking pgs's work.
 */
export const ADMIN_SESSION_SETTINGS: Readonly<Record<string, string>> = {
  role: 'none',
  search_path: 'pg_catalog, pg_temp',
  session_preload_libraries: '',
  local_preload_libraries: '',
  event_triggers: 'off',
  default_transaction_read_only: 'off',
  statement_timeout: '0',
  lock_timeout: '0',
  idle_in_transaction_session_timeout: '0',
  transaction_timeout: '0',
  // pgs's own statements (health checks, password verifiers, reads of the statistics) are never counted.
  'pg_stat_statements.track': 'none',
};

export function identConfText(): string {
  return ['# pgs: any OS user that can reach the 0700 socket folder (the server user, root) may be any role.', 'pgs /^(.*)$ all', ''].join('\n');
}

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export function quoteLiteral(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}
