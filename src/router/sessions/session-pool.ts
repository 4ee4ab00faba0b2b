import type { ServerSession } from './server-session.js';

/**
 * The idle sessions of each tenant, per (database, role), most recently used
 * last. At most `keep` idle ones per tenant; one idle for `idleMs` is closed.
 */
export class ServerSessionPool {
  private readonly idle = new Map<string, IdleSession[]>();
  private readonly watched = new WeakSet<ServerSession>();

  constructor(private readonly options: { keep: number; idleMs: number }) {}

  take(tenant: string, key: string): ServerSession | undefined {
    const list = this.idle.get(tenant) ?? [];
    for (let at = list.length - 1; at >= 0; at--) {
      const entry = list[at] as IdleSession;
      if (entry.session.key !== key) continue;
      this.forget(tenant, at);
      if (entry.session.usable) return entry.session;
    }
    return undefined;
  }

  /** Keeps a clean, idle session (or closes it when the tenant has enough). */
  give(session: ServerSession): void {
    const list = this.idle.get(session.tenant) ?? [];
    if (!session.usable || list.length >= this.options.keep) {
      session.destroy();
      return;
    }
    const timer = setTimeout(() => this.remove(session), this.options.idleMs);
    timer.unref();
    list.push({ session, timer });
    this.idle.set(session.tenant, list);
    if (!this.watched.has(session)) {
      // Gone while idle (the server stopped or was killed): out of the pool at once.
      this.watched.add(session);
      session.socket.once('close', () => this.remove(session));
    }
  }

  /** Idle sessions the tenant's server has for the pool (not a client's activity). */
  idleCount(tenant: string): number {
    return this.idle.get(tenant)?.length ?? 0;
  }

  /** Closes the tenant's idle sessions (before its server is suspended or stopped); returns how many. */
  drop(tenant: string): number {
    const list = this.idle.get(tenant) ?? [];
    this.idle.delete(tenant);
    for (const entry of list) {
      clearTimeout(entry.timer);
      entry.session.destroy();
    }
    return list.length;
  }

  /** Closes the tenant's idle session that waited longest (its server needs the connection slot); false when it has none. */
  dropOldest(tenant: string): boolean {
    const oldest = this.idle.get(tenant)?.[0];
    if (oldest) this.remove(oldest.session);
    return oldest !== undefined;
  }

  closeAll(): void {
    for (const tenant of [...this.idle.keys()]) this.drop(tenant);
  }

  private remove(session: ServerSession): void {
    const at = this.idle.get(session.tenant)?.findIndex((e) => e.session === session) ?? -1;
    if (at < 0) return;
    this.forget(session.tenant, at);
    session.destroy();
  }

  private forget(tenant: string, at: number): void {
    const list = this.idle.get(tenant) as IdleSession[];
    const [entry] = list.splice(at, 1);
    if (entry) clearTimeout(entry.timer);
    if (list.length === 0) this.idle.delete(tenant);
  }
}

interface IdleSession {
  session: ServerSession;
  timer: NodeJS.Timeout;
}
