/**
 * The server sessions of the tenants that pool by transaction: per tenant at
 * most its pool size of them, idle or lent to a client, and the clients
 * waiting for one in order of arrival.
 */
import type { ServerSession } from '../server-sessions.js';
import { stateOf } from './server-state.js';

/** No server session became free in time. */
export class PoolTimeout extends Error {}

/** Told of the session a client gets (at once, or when one is free), or of why it gets none. */
export type Handed = (err: Error | undefined, session?: ServerSession) => void;

interface Waiter {
  key: string;
  open: () => Promise<ServerSession>;
  handed: Handed;
  /** When it stops waiting (ms since the epoch). */
  deadline: number;
  timeoutMs: number;
  gone: () => boolean;
  /** Served, timed out or gone: skipped when its turn comes. */
  done: boolean;
}

interface Idle {
  session: ServerSession;
  since: number;
}

interface TenantPool {
  /** The most sessions, as the last client asked (the tenant's setting when it logged in). */
  size: number;
  /** Most recently given back last. */
  idle: Idle[];
  /** Sessions held by clients or being opened. */
  busy: number;
  /** Waiting clients in order of arrival; `head` is the first not yet dequeued. */
  waiters: Waiter[];
  head: number;
}

/**
 * The server sessions of the tenants in transaction mode: at most `size` per
 * tenant (idle, held or being opened), any database and role; a client that
 * finds none free waits its turn, at most `timeoutMs`. Time-outs of waiting
 * clients and of idle sessions are found by one sweep every 250 ms rather than
 * a timer each (thousands of hand-overs a second would make and clear as many).
 */
export class TransactionPool {
  private readonly tenants = new Map<string, TenantPool>();
  private readonly watched = new WeakSet<ServerSession>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(private readonly options: { idleMs: number }) {}

  /** An idle session for `key`, at once, or undefined (then `acquire`). */
  take(tenant: string, key: string, size: number): ServerSession | undefined {
    const pool = this.tenants.get(tenant);
    if (!pool) return undefined;
    pool.size = size;
    this.trim(pool);
    const idle = pool.idle;
    for (let at = idle.length - 1; at >= 0; at--) {
      const entry = idle[at] as Idle;
      if (entry.session.key !== key) continue;
      if (at === idle.length - 1) idle.pop();
      else idle.splice(at, 1);
      pool.busy++;
      return entry.session;
    }
    return undefined;
  }

  /**
   * A session for `key`: an idle one (`handed` is called before this returns),
   * a new one while the pool has room, or the next one given back, in order of
   * asking (`handed` is called from `release`, so that a waiting client's
   * query goes to the server in the same turn the last one's answer ended).
   */
  acquire(tenant: string, key: string, size: number, timeoutMs: number, open: () => Promise<ServerSession>, gone: () => boolean, handed: Handed): void {
    const ready = this.take(tenant, key, size);
    if (ready) {
      handed(undefined, ready);
      return;
    }
    const pool = this.poolOf(tenant);
    pool.size = size;
    if (pool.idle.length + pool.busy >= size && pool.idle.length > 0) {
      // Full, but an idle session for another database or role can make room.
      (pool.idle.shift() as Idle).session.destroy();
    }
    if (pool.idle.length + pool.busy < size) {
      pool.busy++;
      this.open(tenant, open, handed);
      return;
    }
    pool.waiters.push({ key, open, handed, gone, timeoutMs, deadline: Date.now() + timeoutMs, done: false });
    this.sweepSoon();
  }

  /** A client is done with `session`: to the next client waiting, kept idle, or closed when it is not `clean`. */
  release(session: ServerSession, clean: boolean): void {
    const pool = this.poolOf(session.tenant);
    pool.busy--;
    if (!clean || !session.usable || stateOf(session).tainted) {
      session.destroy();
      this.serve(session.tenant, pool);
      return;
    }
    const waiter = this.nextWaiter(pool);
    if (waiter) {
      pool.busy++;
      if (waiter.key === session.key) {
        waiter.handed(undefined, session);
      } else {
        // The next client wants another database or role: this session's slot serves it.
        session.destroy();
        this.open(session.tenant, waiter.open, waiter.handed);
      }
      return;
    }
    if (pool.idle.length + pool.busy >= pool.size) {
      // The pool was made smaller.
      session.destroy();
      this.forgetIfEmpty(session.tenant, pool);
      return;
    }
    pool.idle.push({ session, since: Date.now() });
    this.sweepSoon();
    if (!this.watched.has(session)) {
      // Gone while idle (the server stopped or was killed): out of the pool at once.
      this.watched.add(session);
      session.socket.once('close', () => this.remove(session));
    }
  }

  idleCount(tenant: string): number {
    return this.tenants.get(tenant)?.idle.length ?? 0;
  }

  /** Closes the tenant's idle session that waited longest (its server needs the connection slot); false when it has none. */
  dropOldest(tenant: string): boolean {
    const pool = this.tenants.get(tenant);
    const oldest = pool?.idle.shift();
    if (!pool || !oldest) return false;
    oldest.session.destroy();
    this.forgetIfEmpty(tenant, pool);
    return true;
  }

  /** Closes the tenant's idle sessions; returns how many. */
  drop(tenant: string): number {
    const pool = this.tenants.get(tenant);
    if (!pool) return 0;
    const idle = pool.idle;
    pool.idle = [];
    for (const entry of idle) entry.session.destroy();
    this.forgetIfEmpty(tenant, pool);
    return idle.length;
  }

  closeAll(): void {
    for (const [tenant, pool] of [...this.tenants]) {
      for (let waiter = this.nextWaiter(pool); waiter; waiter = this.nextWaiter(pool)) waiter.handed(new Error('pgs is shutting down'));
      this.drop(tenant);
    }
    clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  private poolOf(tenant: string): TenantPool {
    let pool = this.tenants.get(tenant);
    if (!pool) {
      pool = { size: 1, idle: [], busy: 0, waiters: [], head: 0 };
      this.tenants.set(tenant, pool);
    }
    return pool;
  }

  /** The first waiting client still there, off the queue. */
  private nextWaiter(pool: TenantPool): Waiter | undefined {
    while (pool.head < pool.waiters.length) {
      const waiter = pool.waiters[pool.head++] as Waiter;
      if (waiter.done) continue;
      waiter.done = true;
      if (waiter.gone()) continue;
      return waiter;
    }
    pool.waiters = [];
    pool.head = 0;
    return undefined;
  }

  /** Closes idle sessions beyond the size (oldest first). */
  private trim(pool: TenantPool): void {
    while (pool.idle.length > 0 && pool.idle.length + pool.busy > pool.size) (pool.idle.shift() as Idle).session.destroy();
  }

  private forgetIfEmpty(tenant: string, pool: TenantPool): void {
    if (pool.idle.length === 0 && pool.busy === 0 && pool.head >= pool.waiters.length) this.tenants.delete(tenant);
  }

  /** Opens a session in a slot already counted as busy. */
  private open(tenant: string, open: () => Promise<ServerSession>, handed: Handed): void {
    open().then((session) => {
      stateOf(session); // its defaults, before any client changes them
      handed(undefined, session);
    }, (err: Error) => {
      const pool = this.poolOf(tenant);
      pool.busy--;
      this.serve(tenant, pool);
      handed(err);
    });
  }

  /** A slot was freed: it serves the next waiting client with a new session. */
  private serve(tenant: string, pool: TenantPool): void {
    const waiter = this.nextWaiter(pool);
    if (!waiter) {
      this.forgetIfEmpty(tenant, pool);
      return;
    }
    pool.busy++;
    this.open(tenant, waiter.open, waiter.handed);
  }

  private remove(session: ServerSession): void {
    const pool = this.tenants.get(session.tenant);
    const at = pool?.idle.findIndex((e) => e.session === session) ?? -1;
    if (!pool || at < 0) return;
    pool.idle.splice(at, 1);
    session.destroy();
    this.forgetIfEmpty(session.tenant, pool);
  }

  private sweepSoon(): void {
    if (this.sweeper) return;
    this.sweeper = setInterval(() => this.sweep(), 250);
    this.sweeper.unref();
  }

  /** Refuses clients that waited too long, closes sessions idle too long; stops when nothing is left to watch. */
  private sweep(): void {
    const now = Date.now();
    for (const [tenant, pool] of [...this.tenants]) {
      for (let at = pool.head; at < pool.waiters.length; at++) {
        const waiter = pool.waiters[at] as Waiter;
        if (waiter.done || waiter.deadline > now) continue;
        waiter.done = true;
        waiter.handed(new PoolTimeout(`no server session became free within ${Math.round(waiter.timeoutMs / 1000)} s`));
      }
      if (pool.head > 1024 && pool.head * 2 > pool.waiters.length) {
        pool.waiters = pool.waiters.slice(pool.head);
        pool.head = 0;
      }
      while (pool.idle.length > 0 && now - (pool.idle[0] as Idle).since >= this.options.idleMs) (pool.idle.shift() as Idle).session.destroy();
      this.forgetIfEmpty(tenant, pool);
    }
    if (this.tenants.size === 0) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }
}
