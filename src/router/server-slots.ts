import type net from 'node:net';
import type { ErrorFields } from '../protocol/messages.js';

/**
 * The connection slots of a tenant's server that the router's sessions may use.
 *
 * A tenant server runs with max_connections = the tenant's limit + the slots
 * only superusers may use (pgs_admin: health checks, password changes, login
 * lookups), so exactly `limit` slots are left to the tenant role. Every server
 * session the router opens there takes one: a client's own, a kept idle one, a
 * transaction pool's, one being opened or reset. Here they are counted from the
 * moment the router connects until the server has let go of the connection (the
 * socket's 'close': PostgreSQL keeps it open until its backend exited, after it
 * gave back its slot), so a new session is opened only into a slot that is free
 * on the server too. When none is, the tenant's idle kept sessions are closed to
 * make room and the session waits, at most `timeoutMs`; then the client is
 * refused by pgs (ServerFull, 53300 naming the limit), never by PostgreSQL.
 */
export class ServerSlots {
  private readonly held = new Map<string, number>();
  private readonly waiting = new Map<string, SlotWaiter[]>();

  /** Slots the router's sessions hold on the tenant's server now. */
  count(tenant: string): number {
    return this.held.get(tenant) ?? 0;
  }

  /**
   * A slot on the tenant's server: at once while fewer than `limit` are held (and nobody waits
   * before), else once one is given back. While waiting, `evict` is asked now and then to close
   * an idle session of the tenant's (true: it closed one). Resolves with the slot's release.
   */
  acquire(tenant: string, limit: number, timeoutMs: number, evict: () => boolean): Promise<() => void> {
    const queue = this.waiting.get(tenant);
    if ((queue === undefined || queue.length === 0) && this.count(tenant) < limit) return Promise.resolve(this.take(tenant));
    return new Promise((resolve, reject) => {
      const waiter: SlotWaiter = {
        limit,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.unqueue(tenant, waiter);
          reject(new SlotTimeout());
        }, Math.max(0, timeoutMs)),
        // Sessions a client left are kept once reset: close them as they come while a session waits.
        poll: setInterval(() => evict(), 10),
      };
      waiter.timer.unref();
      waiter.poll.unref();
      const list = this.waiting.get(tenant) ?? [];
      list.push(waiter);
      this.waiting.set(tenant, list);
      evict();
    });
  }

  /** Gives the slot back when `socket` closes (the server let go of the connection, or it never was one). */
  bind(socket: net.Socket, release: () => void): void {
    if (socket.closed) release();
    else socket.once('close', release);
  }

  private take(tenant: string): () => void {
    this.held.set(tenant, this.count(tenant) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.give(tenant);
    };
  }

  private give(tenant: string): void {
    const held = this.count(tenant) - 1;
    if (held <= 0) this.held.delete(tenant);
    else this.held.set(tenant, held);
    const list = this.waiting.get(tenant);
    const next = list?.[0];
    if (!list || !next || held >= next.limit) return;
    this.unqueue(tenant, next);
    next.resolve(this.take(tenant));
  }

  private unqueue(tenant: string, waiter: SlotWaiter): void {
    clearTimeout(waiter.timer);
    clearInterval(waiter.poll);
    const list = this.waiting.get(tenant);
    if (!list) return;
    const at = list.indexOf(waiter);
    if (at >= 0) list.splice(at, 1);
    if (list.length === 0) this.waiting.delete(tenant);
  }
}

interface SlotWaiter {
  limit: number;
  resolve: (release: () => void) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
  poll: NodeJS.Timeout;
}

/** No slot became free on the tenant's server in time. */
export class SlotTimeout extends Error {
  constructor() {
    super('no connection slot of the server became free in time');
    this.name = 'SlotTimeout';
  }
}

/**
 * Pgs's refusal of a session its tenant's server has no room for (the limit is
 * pgs's, never the server's): thrown where a session is opened, turned into a
 * FATAL 53300 naming the limit for the client.
 */
export class ServerFull extends Error {
  constructor(readonly tenant: string, readonly limit: number) {
    super(`too many connections for tenant ${tenant} (limit ${limit})`);
    this.name = 'ServerFull';
  }

  get hint(): string {
    return `pgs config ${this.tenant} --max-connections N raises it`;
  }

  get fields(): Record<string, string> {
    return { S: 'FATAL', V: 'FATAL', C: '53300', M: this.message, H: this.hint };
  }
}

/**
 * Whether a server's start-up error says it has no slot left (all taken, or the
 * rest reserved for superusers): a transient state while sessions that were
 * closed are still exiting, which pgs waits out. Not the limits a tenant set
 * itself (a role's or a database's CONNECTION LIMIT), whose refusal is its own.
 */
export function serverHasNoSlot(fields: ErrorFields): boolean {
  if (fields.C !== '53300') return false;
  const routine = fields.R;
  if (routine === 'InitializeSessionUserId' || routine === 'CheckMyDatabase') return false;
  return !/ for (role|database) /.test(fields.M ?? '');
}
