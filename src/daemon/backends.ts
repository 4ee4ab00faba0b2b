import { AllowList } from '../core/cidr.js';
import type { ScramVerifier } from '../auth/scram.js';
import type { Catalog, Tenant } from '../catalog/schema.js';
import { effectivePoolSize } from '../service/tenant-rules.js';
import { formatBytes } from '../core/size.js';
import type { Logins } from './logins.js';
import type { TenantRuntime } from '../runtime/runtime.js';
import { socketPath } from '../runtime/server-config.js';
import { BackendUnavailable, type RouterBackends, type TenantRoute } from '../router/router.js';

/** What a session of a tenant over its disk quota is told when it logs in (and at once, when it happens). */
export function diskNotice(tenant: Tenant): string | undefined {
  const quota = tenant.diskBytes === undefined ? '' : formatBytes(tenant.diskBytes);
  if (tenant.diskState === 'read-only') {
    return `tenant ${tenant.id} is over its disk quota of ${quota}: it is read-only. To free space, DELETE, TRUNCATE or DROP in a transaction begun with BEGIN READ WRITE (or after SET default_transaction_read_only = off); it is writable again once under the quota, or with a larger one (pgs config ${tenant.id} --disk SIZE)`;
  }
  if (tenant.diskState === 'standby') {
    return `tenant ${tenant.id} is past its hard disk limit (10 % over its quota of ${quota}): it runs read-only, nothing can be written, until the quota is raised (pgs config ${tenant.id} --disk SIZE)`;
  }
  return undefined;
}

/**
 * The router's view of the catalog: host-name label → tenant, tenant → the
 * socket of its running server. Rebuilt from each new catalog.
 */
export class CatalogBackends implements RouterBackends {
  private routes = new Map<string, TenantRoute>();
  private readonly runtime: TenantRuntime;
  private readonly logins: Logins;

  constructor(runtime: TenantRuntime, logins: Logins, catalog?: Catalog) {
    this.runtime = runtime;
    this.logins = logins;
    if (catalog) this.update(catalog);
  }

  update(catalog: Catalog): void {
    const routes = new Map<string, TenantRoute>();
    for (const tenant of catalog.tenants) {
      const notice = diskNotice(tenant);
      routes.set(`${tenant.id}-${tenant.suffix}`, {
        id: tenant.id,
        access: tenant.access,
        maxConnections: tenant.maxConnections,
        ...(notice ? { notice } : {}),
        ...(tenant.pool === 'transaction' ? { pool: 'transaction', poolSize: effectivePoolSize(tenant) } : {}),
        ...(tenant.maxClientConnections !== undefined ? { maxClientConnections: tenant.maxClientConnections } : {}),
      ...(tenant.allow !== undefined ? { allow: new AllowList(tenant.allow) } : {}),
      });
    }
    this.routes = routes;
  }

  lookup(label: string): TenantRoute | undefined {
    return this.routes.get(label);
  }

  verifier(id: string, role: string, options: { fresh?: boolean } = {}): Promise<{ verifier: ScramVerifier | undefined; live: boolean }> {
    return this.logins.verifier(id, role, options);
  }

  /** Set by the daemon: starts a suspended tenant's server (one start however many clients wait). */
  wake: ((id: string) => Promise<boolean>) | undefined;

  async backend(id: string): Promise<{ address: string; woke: boolean }> {
    // A suspended tenant (maybe still stopping) is woken first; wake() is false at once for any other.
    const woke = this.wake !== undefined && (await this.wake(id));
    if (!woke) {
      const status = await this.runtime.status(id, { fresh: true });
      if (status.state !== 'running') throw notRunning(id, status.state);
    }
    const endpoint = this.runtime.localEndpoint(id);
    return { address: socketPath(endpoint.host, endpoint.port), woke };
  }
}

/** A tenant whose server is not running: a stopped one (pgs stop <id>, or pgs stop of everything) says how to start it. */
function notRunning(id: string, state: string): BackendUnavailable {
  return new BackendUnavailable(`tenant ${id} is not running (${state})`, 'tenant_unavailable', state === 'stopped' ? `pgs start ${id} starts it` : undefined);
}
