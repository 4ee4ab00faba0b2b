import type { Refusal } from '../protocol/refusals.js';
import type { AddressAllowList, TenantRoute } from './contract.js';

/** A logged-in client connection as its tenant's count of them sees it. */
export interface TenantClient {
  readonly address: string;
  /** Set by `admit`. */
  tenantId: string | undefined;
  closeWith(refusal: Refusal): void;
  notify(message: string): void;
}

/**
 * The logged-in client connections of each tenant: the limits they are
 * admitted under (pgs's in all, per tenant, the tenant's own), when each
 * tenant was last used, how many transactions ended, and what is done to all
 * of a tenant's sessions at once (closed, warned).
 */
export class TenantConnections<C extends TenantClient> {
  private readonly byTenant = new Map<string, Set<C>>();
  private admitted = 0;
  private readonly lastUse = new Map<string, number>();
  private readonly transactionsEnded = new Map<string, number>();

  constructor(private readonly maxConnections: number, private readonly maxPerTenant: number) {}

  /** Counts `client` against `tenant` (and sets its tenantId), or says why it is refused. */
  admit(client: C, tenant: TenantRoute): Refusal | undefined {
    const tenantId = tenant.id;
    if (this.admitted >= this.maxConnections) {
      return { reason: 'too_many_connections', message: 'too many connections to pgs' };
    }
    const set = this.byTenant.get(tenantId) ?? new Set<C>();
    const own = tenant.maxClientConnections ?? (tenant.pool === 'transaction' ? undefined : tenant.maxConnections);
    const limit = Math.min(this.maxPerTenant, own ?? Infinity);
    if (set.size >= limit) {
      const hint = limit !== own ? undefined
        : tenant.maxClientConnections !== undefined ? `pgs config ${tenantId} --max-client-conn N raises it`
          : `pgs config ${tenantId} --max-connections N raises it (or --pool transaction, which shares fewer server sessions among more clients)`;
      return { reason: 'too_many_connections', message: `too many connections for tenant ${tenantId} (limit ${limit})`, hint };
    }
    set.add(client);
    this.byTenant.set(tenantId, set);
    this.lastUse.set(tenantId, Date.now());
    this.admitted++;
    client.tenantId = tenantId;
    return undefined;
  }

  /** An admitted client closed. */
  forget(client: C): void {
    if (client.tenantId === undefined) return;
    this.lastUse.set(client.tenantId, Date.now());
    this.admitted--;
    const set = this.byTenant.get(client.tenantId);
    set?.delete(client);
    if (set && set.size === 0) this.byTenant.delete(client.tenantId);
  }

  count(id: string): number {
    return this.byTenant.get(id)?.size ?? 0;
  }

  /** Ends every open session of a tenant with a FATAL 57P01 saying `message`; returns how many. */
  closeAll(id: string, message: string): number {
    const set = this.byTenant.get(id);
    if (!set) return 0;
    const count = set.size;
    for (const client of [...set]) client.closeWith({ reason: 'terminated', message });
    return count;
  }

  /** Ends the tenant's sessions from addresses `allow` does not let in; returns how many. */
  closeUnallowed(id: string, allow: AddressAllowList): number {
    const set = this.byTenant.get(id);
    if (!set) return 0;
    let count = 0;
    for (const client of [...set]) {
      if (allow.allows(client.address)) continue;
      count++;
      client.closeWith({ reason: 'terminated', message: `connections from ${client.address} are no longer allowed for tenant ${id}` });
    }
    return count;
  }

  /** A WARNING to every open session of the tenant; returns how many. */
  notice(id: string, message: string): number {
    const set = this.byTenant.get(id);
    if (!set) return 0;
    for (const client of set) client.notify(message);
    return set.size;
  }

  /** Counts a transaction of the tenant's that ended (a ReadyForQuery saying idle). */
  countTransaction(id: string): void {
    this.transactionsEnded.set(id, (this.transactionsEnded.get(id) ?? 0) + 1);
  }

  transactionCount(id: string): number {
    return this.transactionsEnded.get(id) ?? 0;
  }

  /** When a client connection to the tenant last opened or closed (ms since the epoch). */
  lastUsed(id: string): number | undefined {
    return this.lastUse.get(id);
  }
}
