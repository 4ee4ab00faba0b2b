import type { Log } from '../core/log.js';
import { serializeErrorResponse } from '../protocol/messages.js';
import { noticeBytes, refuseForSession } from './client-messages.js';
import type { ClientSide, ServerSide } from './client-side.js';
import type { RouterObserver, TenantRoute } from './contract.js';
import type { ServerAccess } from './server-access.js';
import { poolKey, type BackendAddress, type ServerSession } from './server-sessions.js';
import { PooledClient, applySettings, splitSettings, type Handed } from './transaction-pool.js';

export interface PoolRequest {
  tenant: TenantRoute;
  user: string;
  database: string;
  /** The client's start-up parameters, as set_config would set them. */
  settings: Map<string, string>;
  /** What the client sent after authentication. */
  rest: Buffer;
  servers: ServerAccess;
  /** Where the tenant's server is now (woken if need be). */
  backend: () => Promise<{ address: BackendAddress }>;
  log: Log;
  observer: RouterObserver | undefined;
  countTransaction: () => void;
  dropServerSessions: () => void;
}

/**
 * Greets the client from a server session of the tenant's transaction pool
 * (its start-up settings set there, so that what the server reports is what
 * it says), gives the session back, and from then on gets the client one
 * per transaction (transaction-pool.ts).
 */
export async function usePool(client: ClientSide, request: PoolRequest): Promise<void> {
  const { tenant, user, database, servers } = request;
  const pools = servers.transactions;
  const key = poolKey(tenant.id, database, user);
  const size = tenant.poolSize ?? 10;
  const open = async (): Promise<ServerSession> => {
    const { address } = await request.backend();
    return servers.open(tenant, address, user, database);
  };
  const acquire = (handed: Handed): void => pools.acquire(tenant.id, key, size, servers.poolTimeoutMs, open, () => client.gone, handed);
  let session: ServerSession;
  try {
    session = await new Promise<ServerSession>((resolve, reject) => acquire((err, s) => (err || !s ? reject(err) : resolve(s))));
  } catch (err) {
    if (client.gone) return;
    refuseForSession(client, err, tenant.id, request.log);
    return;
  }
  const { carried, fixed } = splitSettings(request.settings, session.params);
  const error = await applySettings(session, carried, fixed).catch((err: Error) => ({ M: err.message, C: '08006' }));
  if (error || client.gone) {
    pools.release(session, !error);
    if (error) client.refuseAsServer({ ...error, S: 'FATAL', V: 'FATAL' });
    return;
  }
  client.backendReached();
  request.observer?.serverSession?.('pooled');
  const seen = new Map(session.params);
  const parameters = session.greeting();
  pools.release(session, true);
  const socket = client.socket;
  const pooled: PooledClient = new PooledClient({
    socket,
    tenantId: tenant.id,
    take: () => pools.take(tenant.id, key, size),
    acquire,
    release: (s, clean) => {
      if (!clean) s.cancel();
      pools.release(s, clean);
    },
    fail: (fields) => {
      if (!fields || client.gone || !socket.writable) {
        client.destroy();
        return;
      }
      socket.end(serializeErrorResponse(fields), () => client.destroy());
      setTimeout(() => client.destroy(), 1_000).unref();
    },
    databaseStatement: request.dropServerSessions,
    transactionEnded: request.countTransaction,
  }, seen, fixed);
  // Cancel requests go to whichever backend runs the client's transaction then.
  client.greet(parameters, () => pooled.current?.cancelTarget, 4);
  client.establish(new PoolSide(client, pooled));
  socket.on('data', pooled.onData);
  if (request.rest.length > 0) pooled.onData(request.rest);
  socket.resume(); // paused since authentication
}

/** A client served one server session per transaction. */
class PoolSide implements ServerSide {
  constructor(private readonly client: ClientSide, private readonly pooled: PooledClient) {}

  notify(message: string): void {
    const client = this.client;
    this.pooled.betweenMessages(() => {
      if (!client.gone && !client.closing && client.socket.writable) client.socket.write(noticeBytes(message));
    });
  }

  betweenMessages(then: () => void): void {
    this.pooled.betweenMessages(then);
  }

  stop(): void {
    this.client.socket.off('data', this.pooled.onData);
  }

  release(): void {
    this.pooled.close();
  }
}
