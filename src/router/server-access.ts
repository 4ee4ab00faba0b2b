import type { Log } from '../core/log.js';
import type { TenantRoute } from './contract.js';
import { ServerSession, ServerSessionError, ServerSessionPool, isRemote, type BackendAddress } from './server-sessions.js';
import { ServerFull, ServerSlots, SlotTimeout, serverHasNoSlot } from './server-slots.js';
import { TransactionPool } from './transaction-pool.js';

export interface ServerAccessOptions {
  /** Idle sessions kept per tenant (0: no reuse) and how long one stays idle. */
  keep: number;
  idleMs: number;
  /** How long a client waits for a free session of its tenant's transaction pool. */
  poolTimeoutMs: number;
  /** How long opening a session waits for a connection slot of the tenant's server. */
  slotTimeoutMs: number;
  /** How long a server has to let the router's session in. */
  loginTimeoutMs: number;
  log: Log;
}

/**
 * The server sessions the router holds: those kept for reuse, those of the
 * tenants that pool by transaction, the connection slots of each tenant's
 * server (on this host) they take, and the opening of one into a slot.
 */
export class ServerAccess {
  /** Idle server sessions for reuse; undefined when reuse is off. */
  readonly pool: ServerSessionPool | undefined;
  /** Servers on the network are reached only through sessions the router logs in itself: with reuse off, they are kept by none. */
  readonly remotePool: ServerSessionPool;
  /** The server sessions of tenants that pool by transaction. */
  readonly transactions: TransactionPool;
  /** The connection slots of each tenant's server (on this host) that the router's sessions hold. */
  readonly slots = new ServerSlots();
  readonly poolTimeoutMs: number;
  readonly slotTimeoutMs: number;
  private readonly loginTimeoutMs: number;
  private readonly log: Log;

  constructor(options: ServerAccessOptions) {
    this.pool = options.keep > 0 ? new ServerSessionPool({ keep: options.keep, idleMs: options.idleMs }) : undefined;
    this.remotePool = this.pool ?? new ServerSessionPool({ keep: 0, idleMs: options.idleMs });
    this.transactions = new TransactionPool({ idleMs: options.idleMs });
    this.poolTimeoutMs = options.poolTimeoutMs;
    this.slotTimeoutMs = options.slotTimeoutMs;
    this.loginTimeoutMs = options.loginTimeoutMs;
    this.log = options.log;
  }

  /** Closes one idle server session the router keeps for the tenant (its server needs the slot); false when it keeps none. */
  private evictIdle(id: string): boolean {
    return (this.pool?.dropOldest(id) ?? false) || this.transactions.dropOldest(id);
  }

  /**
   * A slot of the tenant's server for one more session of the router's (server-slots.ts):
   * resolves with its release once the server has one free for the tenant role (idle kept
   * sessions are closed to make room); throws ServerFull when none is free in time.
   */
  async serverSlot(tenant: TenantRoute, deadline: number): Promise<() => void> {
    const limit = tenant.maxConnections ?? Infinity;
    try {
      return await this.slots.acquire(tenant.id, limit, deadline - Date.now(), () => this.evictIdle(tenant.id));
    } catch (err) {
      if (err instanceof SlotTimeout) throw new ServerFull(tenant.id, limit);
      throw err;
    }
  }

  /**
   * Opens a server session for `role` in `database` into a slot of the server's (on this host):
   * should the server still refuse for want of a slot (a backend closed by someone else is
   * still exiting), it is asked again until the slot wait's end, then pgs refuses (ServerFull).
   */
  async open(tenant: TenantRoute, address: BackendAddress, role: string, database: string): Promise<ServerSession> {
    if (isRemote(address)) return ServerSession.open(address, tenant.id, role, database, this.loginTimeoutMs);
    const deadline = Date.now() + this.slotTimeoutMs;
    for (;;) {
      const release = await this.serverSlot(tenant, deadline);
      try {
        return await ServerSession.open(address, tenant.id, role, database, this.loginTimeoutMs, (socket) => this.slots.bind(socket, release));
      } catch (err) {
        // Its slot is given back when its socket closes (the refused backend holds one until it exits).
        if (!(err instanceof ServerSessionError) || !serverHasNoSlot(err.fields)) throw err;
        if (Date.now() >= deadline) throw new ServerFull(tenant.id, tenant.maxConnections ?? 0);
        this.log.info('the server has no free slot yet; trying again', { tenant: tenant.id, error: err.message });
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  /** Idle server sessions the router keeps for the tenant (its server counts them as sessions; they are no activity). */
  idleCount(id: string): number {
    return (this.pool?.idleCount(id) ?? 0) + this.transactions.idleCount(id);
  }

  /** Closes the tenant's idle server sessions (before its server is suspended or stopped). */
  drop(id: string): number {
    return (this.pool?.drop(id) ?? 0) + this.transactions.drop(id);
  }

  closeAll(): void {
    this.pool?.closeAll();
    this.transactions.closeAll();
  }
}
