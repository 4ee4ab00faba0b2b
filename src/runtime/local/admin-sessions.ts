/**
 * pgs's admin sessions on a server: the one the health check keeps open per
 * server (reused for the small reads pgs makes often: the archiver's state,
 * login roles, query statistics), and one-off sessions for everything else.
 */
import { AdminClient } from '../admin-client.js';
import type { HealthCheckOptions, ServerStatus } from '../runtime.js';
import { ADMIN_DATABASE, ADMIN_ROLE, SERVER_PORT, socketDirOf } from '../server-config.js';
import type { LocalLayout } from './layout.js';
import type { ServerWatch } from './server-watch.js';

interface HealthSession {
  pid: number;
  client: AdminClient;
  openedAt: number;
}

export class AdminSessions {
  private readonly health = new Map<string, HealthSession>();

  constructor(private readonly layout: LocalLayout, private readonly watch: ServerWatch) {}

  /** Where an admin session of `id` connects; '' is the template being built. */
  host(id: string): string {
    return id === '' ? socketDirOf(this.layout.templateBuildDir) : this.watch.socketDir(id);
  }

  connect(id: string, database = ADMIN_DATABASE, options: { replication?: boolean; timeoutMs?: number } = {}): Promise<AdminClient> {
    return AdminClient.connect(this.host(id), SERVER_PORT, ADMIN_ROLE, database, options);
  }

  /** A one-off session in `database`, closed after `fn`. */
  async withAdmin<T>(id: string, database: string, fn: (client: AdminClient) => Promise<T>): Promise<T> {
    const client = await this.connect(id, database);
    try {
      return await fn(client);
    } finally {
      await client.close();
    }
  }

  /** `fn` on the open health session in pgs_admin where there is one (no new backend), else on a one-off session. */
  onSession<T>(id: string, fn: (client: AdminClient) => Promise<T>): Promise<T> {
    const session = this.health.get(id);
    if (session?.client.usable) return fn(session.client);
    return this.withAdmin(id, ADMIN_DATABASE, fn);
  }

  /** Keeps `client` (in pgs_admin, on the server with `pid`) as the health session of `id`. */
  keep(id: string, pid: number, client: AdminClient): HealthSession {
    const opened = { pid, client, openedAt: Date.now() };
    this.health.set(id, opened);
    // A backend exits when its postmaster dies: the session closing is the first news of an adopted server's death.
    client.onClose(() => {
      if (this.health.get(id) === opened) this.health.delete(id);
      this.watch.doubt(id, opened.pid);
    });
    return opened;
  }

  /**
   * The server is stopping: its health session goes, by Terminate and waiting
   * (at most `graceMs`) for its backend to exit, so that the shutdown does not
   * meet it still there (its FATAL "terminating connection due to
   * administrator command" would be in the server's log); 0: at once.
   */
  async drop(id: string, graceMs = 1_000): Promise<void> {
    const session = this.health.get(id);
    this.health.delete(id);
    if (!session) return;
    if (graceMs > 0) await session.client.close(graceMs);
    else session.client.destroy();
  }

  /**
   * `SELECT 1` over one admin session per server, kept open between checks: a
   * new backend costs ~30 ms of CPU on this 2-core VM (fork, page faults,
   * catalog caches), which at 1,000 servers checked each minute would be a
   * quarter of the machine; a query on an open session costs well under 1 ms.
   * The session is opened again when the server was restarted, when it broke,
   * and once it is `maxSessionAgeMs` old: that new connection shows that the
   * postmaster still lets clients in, which a query on an old session cannot.
   */
  async check(id: string, server: ServerStatus, { timeoutMs, maxSessionAgeMs }: HealthCheckOptions): Promise<void> {
    if (server.state !== 'running' || server.pid === undefined) throw new Error(`the server is ${server.state}`);
    let session = this.health.get(id);
    if (session && (session.pid !== server.pid || !session.client.usable || Date.now() - session.openedAt > maxSessionAgeMs)) {
      session.client.destroy();
      this.health.delete(id);
      session = undefined;
    }
    if (!session) session = this.keep(id, server.pid, await this.connect(id, ADMIN_DATABASE, { timeoutMs }));
    try {
      const rows = await session.client.query('SELECT 1', { timeoutMs });
      if (rows[0]?.[0] !== '1') throw new Error(`SELECT 1 answered ${JSON.stringify(rows)}`);
    } catch (err) {
      session.client.destroy();
      if (this.health.get(id) === session) this.health.delete(id);
      throw err;
    }
  }
}
