import type net from 'node:net';
import type { Log } from '../core/log.js';
import type { ClientSide, ServerSide } from './client-side.js';
import { refuseForSession } from './client-messages.js';
import type { RouterObserver, TenantRoute } from './contract.js';
import type { ServerAccess } from './server-access.js';
import { ServerPipe } from './server-pipe.js';
import type { ServerSession, ServerSessionPool} from './server-sessions.js';
import { SessionState, TX_IDLE, escapeLiteral, poolKey, recycle, sameServer, type BackendAddress } from './server-sessions.js';

export interface KeptSessionRequest {
  tenant: TenantRoute;
  address: BackendAddress;
  user: string;
  database: string;
  /** The client's start-up parameters, as set_config would set them (server-sessions.ts clientSettings). */
  settings: Map<string, string>;
  /** What the client sent after authentication. */
  rest: Buffer;
  servers: ServerAccess;
  log: Log;
  observer: RouterObserver | undefined;
  countTransaction: () => void;
  /** A backend of the client's own instead, `why` this one would not do. */
  connectOwn: (why?: string) => void;
}

/**
 * Gives the client a server session the router holds for (tenant, database,
 * role), or opens one, sets the client's start-up parameters on it, and
 * greets the client as the server would have. Parameters the server refuses
 * to set this way (or any trouble) fall back to a backend of the client's own
 * (`connectOwn`), whose start-up then answers as PostgreSQL does.
 */
export async function useKeptSession(client: ClientSide, request: KeptSessionRequest): Promise<void> {
  const { tenant, address, user, database, settings, servers } = request;
  const pool = servers.pool ?? servers.remotePool;
  let session = pool.take(tenant.id, poolKey(tenant.id, database, user));
  if (session && !sameServer(session.address, address)) {
    // Kept for the tenant's old primary (before a failover): new clients go to the new one.
    session.destroy();
    pool.drop(tenant.id);
    session = undefined;
  }
  request.observer?.serverSession?.(session ? 'reused' : 'opened');
  if (!session) {
    // The server counts idle kept sessions against its connection limit: they are closed to make room (server-slots.ts).
    try {
      session = await servers.open(tenant, address, user, database);
    } catch (err) {
      if (client.gone) return;
      refuseForSession(client, err, tenant.id, request.log);
      return;
    }
  }
  const current = settings.size === 0 ? undefined : new Map([...session.params].map(([k, v]) => [k.toLowerCase(), v]));
  const changes = current ? [...settings].filter(([k, v]) => current.get(k.toLowerCase()) !== v) : [];
  if (changes.length > 0) {
    const sql = `SELECT ${changes.map(([k, v]) => `pg_catalog.set_config(${escapeLiteral(k)}, ${escapeLiteral(v)}, false)`).join(', ')}`;
    const set = await session.query(sql).catch(() => undefined);
    if (!set || set.error || set.status !== TX_IDLE) {
      if (set) void recycle(pool, session, set.status);
      else session.destroy();
      if (!client.gone) request.connectOwn(`a start-up parameter could not be set (${set?.error?.M ?? 'no answer'})`);
      return;
    }
  }
  if (client.gone) {
    void recycle(pool, session, TX_IDLE);
    return;
  }
  client.backendReached();
  session.detach();
  const target = session.cancelTarget;
  client.greet(session.greeting(), target ?? (() => undefined), target?.secret.length ?? 4);
  const state = new SessionState(session.params);
  state.onDatabaseStatement = () => pool.drop(tenant.id);
  state.onTransactionEnd = request.countTransaction;
  const kept = new KeptSession(client, session, state, servers.pool, new ServerPipe(client.socket, request.countTransaction));
  client.establish(kept);
  kept.start(request.rest);
}

/**
 * A client on a session the router holds: both directions are followed at
 * message boundaries (SessionState), so that a client that leaves between two
 * exchanges leaves a session that can be reset and kept for the next one.
 */
class KeptSession implements ServerSide {
  private unpipe: (() => void) | undefined;

  constructor(
    private readonly client: ClientSide,
    private readonly session: ServerSession,
    private readonly state: SessionState,
    /** Where a session the client left clean goes back to; undefined: reuse is off. */
    private readonly reuse: ServerSessionPool | undefined,
    private readonly pipe: ServerPipe,
  ) {}

  start(rest: Buffer): void {
    const { client, state, pipe } = this;
    const socket = client.socket;
    const backend: net.Socket = this.session.socket;
    const onClient = (chunk: Buffer): void => {
      const forward = state.fromClient(chunk);
      if (forward === 0) return;
      if (!backend.write(forward === chunk.length ? chunk : chunk.subarray(0, forward))) {
        socket.pause();
        backend.once('drain', () => socket.resume());
      }
    };
    const onServer = (chunk: Buffer): void => {
      state.fromServer(chunk);
      pipe.fromServer(backend, chunk);
    };
    // The server ended the session (or died): end the client's side cleanly (TLS close_notify), as a backend of its own would.
    const onServerEnd = (): void => { socket.end(); };
    const onServerGone = (): void => {
      if (socket.writableEnded) setTimeout(() => client.destroy(), 1_000).unref();
      else client.destroy();
    };
    this.unpipe = () => {
      socket.off('data', onClient);
      backend.off('data', onServer);
      backend.off('end', onServerEnd);
      backend.off('close', onServerGone);
    };
    socket.on('data', onClient);
    backend.on('data', onServer);
    backend.on('end', onServerEnd);
    backend.on('close', onServerGone);
    if (rest.length > 0) onClient(rest);
    socket.resume(); // paused since authentication
  }

  notify(message: string): void {
    this.pipe.notify(message);
  }

  betweenMessages(then: () => void): void {
    this.pipe.betweenMessages(then);
  }

  stop(): void {
    this.session.socket.pause();
  }

  release(closing: boolean): void {
    const { session, state } = this;
    if (this.reuse && session.usable && state.reusable && !closing) {
      // The client left between two exchanges: its session is rolled back if need be, reset, and kept.
      this.unpipe?.();
      session.attach();
      session.socket.resume();
      void recycle(this.reuse, session, state.status);
      return;
    }
    // A query still running would run on (PostgreSQL notices a gone client only when it writes): cancel it.
    if (state.pending > 0) session.cancel();
    // The server's slot is free again only once its backend exited: let go when the server does.
    session.destroy();
  }
}
