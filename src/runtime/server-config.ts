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
export const SOCKET_FILE = `.s.PGSQL.${SERVER_PORT}`;

/** The unix socket a server listening in `socketDir` on `port` has (libpq's naming). The one place that builds it. */
export function socketPath(socketDir: string, port = SERVER_PORT): string {
  return `${socketDir.replace(/\/$/, '')}/.s.PGSQL.${port}`;
}
/** Bumped when the template's contents change, so that `pgs setup` rebuilds it. */
export const TEMPLATE_VERSION = 6;
export const TEMPLATE_MARKER = 'PGS_TEMPLATE';

/** Connections only superusers (pgs's admin sessions: health checks, password changes) may use. */
export const SUPERUSER_RESERVED_CONNECTIONS = 2;

export const SERVER_SETTINGS: Readonly<Record<string, string>> = {
  listen_addresses: "''",
  port: String(SERVER_PORT),
  unix_socket_permissions: '0700',
  password_encryption: 'scram-sha-256',
  shared_buffers: '16MB',
  max_connections: '20',
  superuser_reserved_connections: String(SUPERUSER_RESERVED_CONNECTIONS),
  io_method: 'sync',
  wal_level: 'minimal',
  max_wal_senders: '0',
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
  return `${lines.join('\n')}\n`;
}

/**
 * Local socket only. The admin superuser logs in by peer authentication from
 * any OS user that can reach the socket; the socket's folder is 0700 and owned
 * by the server user, so that is the server user and root. The tenant role
 * always needs its password.
 */
export function hbaConfText(): string {
  return [
    '# pgs: unix socket only; the router and local clients come in here.',
    `local all ${ADMIN_ROLE} peer map=pgs`,
    'local all all scram-sha-256',
    '',
  ].join('\n');
}

export function identConfText(): string {
  return ['# pgs: any OS user that can reach the 0700 socket folder may be the admin role.', `pgs /^(.*)$ ${ADMIN_ROLE}`, ''].join('\n');
}

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export function quoteLiteral(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}
