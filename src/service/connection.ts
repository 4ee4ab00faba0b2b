import { tenantHostname } from '../catalog/ids.js';
import type { Settings, Tenant } from '../catalog/schema.js';
import type { TenantRuntime } from '../runtime/runtime.js';
import { TENANT_ROLE } from '../runtime/server-config.js';

/** How clients reach a tenant: its connection strings (never with the password but in a create's answer), as the login role. */
export interface CreatedTenant {
  id: string;
  hostname: string;
  password: string;
  database: string;
  user: string;
  url: string;
}

export interface ConnectionStrings {
  uri: string;
  psql: string;
  jdbc: string;
  /** libpq environment variables, one `NAME=value` a line. */
  env: string;
  local: string;
  hostname: string;
  port: number;
  database: string;
  user: string;
  /** The self-signed certificate pgs made, which is its own CA: `sslrootcert=` it with `sslmode=verify-full`. Null for a certificate you gave. */
  sslrootcert: string | null;
}

export function connectionStrings(settings: Settings, tenant: Tenant, runtime: Pick<TenantRuntime, 'localEndpoint'> | { local: string }): ConnectionStrings {
  const hostname = tenantHostname(tenant.id, tenant.suffix, settings.domain);
  const local = 'local' in runtime ? runtime.local : localUrl(runtime.localEndpoint(tenant.id), tenant.id);
  return {
    uri: remoteUrl(hostname, settings.port, tenant.id),
    psql: `host=${hostname} port=${settings.port} user=${TENANT_ROLE} dbname=${tenant.id} sslmode=require`,
    jdbc: `jdbc:postgresql://${hostname}:${settings.port}/${tenant.id}?user=${TENANT_ROLE}&sslmode=require`,
    env: [`PGHOST=${hostname}`, `PGPORT=${settings.port}`, `PGUSER=${TENANT_ROLE}`, `PGDATABASE=${tenant.id}`, 'PGSSLMODE=require'].join('\n'),
    local,
    hostname,
    port: settings.port,
    database: tenant.id,
    user: TENANT_ROLE,
    sslrootcert: settings.certSelfSigned ? settings.certFile : null,
  };
}

/** libpq URI over the server's unix socket, for administration on the host. */
export function localUrl(endpoint: { host: string; port: number }, database: string): string {
  return `postgresql://${TENANT_ROLE}@/${database}?host=${encodeURIComponent(endpoint.host)}&port=${endpoint.port}`;
}

export function remoteUrl(hostname: string, port: number, database: string, password?: string): string {
  const auth = password === undefined ? TENANT_ROLE : `${TENANT_ROLE}:${encodeURIComponent(password)}`;
  return `postgresql://${auth}@${hostname}:${port}/${database}?sslmode=require`;
}

/** A create's answer: the one place the password is shown. */
export function createdAnswer(settings: Pick<Settings, 'domain' | 'port'>, tenant: Pick<Tenant, 'id' | 'suffix'>, password: string): CreatedTenant {
  const hostname = tenantHostname(tenant.id, tenant.suffix, settings.domain);
  return { id: tenant.id, hostname, password, database: tenant.id, user: TENANT_ROLE, url: remoteUrl(hostname, settings.port, tenant.id, password) };
}
