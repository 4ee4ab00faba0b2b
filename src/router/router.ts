import { X509Certificate, randomBytes, randomInt } from 'node:crypto';
import { QUIET_LOG, type Log } from '../core/log.js';
import net from 'node:net';
import tls from 'node:tls';
import type { ScramVerifier } from '../auth/scram.js';
import { ScramError, ScramServer, certificateHash as channelBindingHash, mockSalt } from '../auth/scram-server.js';
import { AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL, BackendMessage, FrontendMessage, PROTOCOL_3_0 } from '../protocol/constants.js';
import { MessageReader, parseErrorFields, serializeErrorResponse, serializeNoticeResponse, typed, type ErrorFields, type Message } from '../protocol/messages.js';
import { MessageBoundaries } from '../protocol/boundary.js';
import { refusalBytes, type Refusal, type RefusalReason } from '../protocol/refusals.js';
import { decodeFirstPacket, encodeStartup, takeEndpointOption, type FirstPacket } from '../protocol/startup.js';
import { ServerSession, ServerSessionError, ServerSessionPool, SessionState, TX_IDLE, cancelOn, clientSettings, closeServerSocket, escapeLiteral, isRemote, poolKey, recycle, sameServer, type BackendAddress } from './server-sessions.js';
import { ServerFull, ServerSlots, SlotTimeout, serverHasNoSlot } from './server-slots.js';
import { PoolTimeout, PooledClient, TransactionPool, applySettings, splitSettings, type Handed } from './transaction-pool.js';
import { Startups, type ShedInterval, type ShedWhy } from './admission.js';

/** A connection or one waiting for its address's turn to start up: either can be shed. */
type Starting = ClientConnection | WaitingSocket;

/**
 * The PostgreSQL wire protocol up to the end of start-up, then a byte pipe.
 * It owns TLS, routing by SNI host name, authentication (SCRAM-SHA-256 with
 * the client itself, before any server is woken), access control, cancel
 * routing, limits and time-outs. It asks `RouterBackends` for a role's
 * verifier and for a ready server's socket, and never starts processes itself.
 */
export interface TenantRoute {
  id: string;
  access: 'enabled' | 'disabled';
  /** Client connections the tenant may have at once through the router (its server's limit for the tenant role). */
  maxConnections?: number;
  /** A warning every new session gets right after logging in (the tenant is over its disk quota, say). */
  notice?: string;
  /**
   * How its clients share server sessions: each has one of its own (`session`, the default), or
   * `transaction`: at most `poolSize` server sessions serve all of them, one per transaction.
   */
  pool?: 'session' | 'transaction';
  poolSize?: number;
  /** Client connections at once through the router; default: `maxConnections` in session mode, the router's limit per tenant in transaction mode. */
  maxClientConnections?: number;
  /** The source addresses that may connect; absent: any. Checked before authentication: a refused address wakes nothing. */
  allow?: AddressAllowList;
}

/** Whether a client's address (as its socket reports it) may connect (core/cidr.ts AllowList). */
export interface AddressAllowList {
  allows(address: string): boolean;
}

export interface RouterBackends {
  /** The tenant whose host name's first label is `label` (`<id>-<suffix>`), if any. */
  lookup(label: string): TenantRoute | undefined;
  /**
   * Where a ready server of the tenant is (woken when needed: `woke`): the path
   * of its unix socket, or a server on the network the router logs in to;
   * rejects when none can be had.
   */
  backend(id: string): Promise<{ address: BackendAddress; woke: boolean }>;
  /**
   * The SCRAM verifier of login role `role` in the tenant's server, or
   * undefined when there is none (no such role, no login, no SCRAM password,
   * expired). Must not wake a suspended tenant whose roles are known.
   * `live`: read from the running server now (not from the copy kept while it
   * was down). `fresh`: the server is known to run; ask it, not the copy.
   */
  verifier(id: string, role: string, options?: { fresh?: boolean }): Promise<{ verifier: ScramVerifier | undefined; live: boolean }>;
}

/** How a client connection ended: `ok` reached ReadyForQuery; `cancel` carried a cancel request. */
export type ConnectionResult = 'ok' | 'refused' | 'cancel' | 'closed';

/** The outcome of the router's own authentication of a client. */
export type AuthResult = 'ok' | 'failed' | 'protocol_error';

/** What the router tells whoever counts (the daemon's metrics); every method is cheap and synchronous. */
export interface RouterObserver {
  tlsHandshake(seconds: number): void;
  backendConnect(seconds: number, woke: boolean): void;
  connectionClosed(result: ConnectionResult, bytesIn: number, bytesOut: number): void;
  cancelRequest(outcome: 'forwarded' | 'unknown_key'): void;
  authentication(result: AuthResult, seconds: number): void;
  /** How a logged-in client got its server session: a kept one (`reused`), a new one to keep (`opened`), one of its own start-up (`own`), or one per transaction (`pooled`). */
  serverSession?(how: 'reused' | 'opened' | 'own' | 'pooled'): void;
  /** A connection still starting up was closed for admission: a new one over its address's limit, or the oldest of the busiest network when all start-up slots were taken. */
  startupShed?(why: ShedWhy): void;
  /** Once per interval after some were shed (then once with none): what was, and from which networks most. */
  startupsShedInterval?(summary: ShedInterval): void;
}

/** Thrown by `RouterBackends.backend`: its message is shown to the client. */
export class BackendUnavailable extends Error {
  /** How the client is refused: 57P03 (tenant_unavailable) unless said otherwise. */
  readonly reason: RefusalReason;
  /** What the client is told to do about it (the ErrorResponse's HINT), if anything. */
  readonly hint: string | undefined;
  constructor(message: string, reason: RefusalReason = 'tenant_unavailable', hint?: string) {
    super(message);
    this.name = 'BackendUnavailable';
    this.reason = reason;
    this.hint = hint;
  }
}

/** The router's log is the general one (core/log.ts). */
export type RouterLog = Log;

export interface RouterOptions {
  /** Tenants are `<label>.<domain>`. */
  domain: string;
  /** PEM certificate (chain) and key for `*.<domain>`. */
  cert: string | Buffer;
  key: string | Buffer;
  /** The default of `handshakeTimeoutMs` and `startupPacketTimeoutMs`. Default 10 s. */
  startupTimeoutMs?: number;
  /** From the TCP connection to the end of the TLS handshake (an SSLRequest included). Default `startupTimeoutMs`. */
  handshakeTimeoutMs?: number;
  /** From the end of the TLS handshake to the whole start-up packet. Default `startupTimeoutMs`. */
  startupPacketTimeoutMs?: number;
  /** Client connections at once, all tenants. Default 10,000. */
  maxConnections?: number;
  /** Client connections at once to one tenant. Default 1,000. */
  maxConnectionsPerTenant?: number;
  /**
   * Connections still starting up (TLS, start-up packet, password check) at once. When all are taken, a new
   * connection is let in and the network (/24, /64) with the most start-ups loses its oldest. Default 1,000.
   */
  maxPendingStartups?: number;
  /** Connections still starting up from one source address at once; more wait their turn (at most the handshake deadline). Default 64; 0: no limit. */
  maxStartupsPerAddress?: number;
  /** How often sheds are logged and told to `observer` (at most once per interval). Default 10 s. */
  shedIntervalMs?: number;
  /** From the start-up packet, authentication must reach ReadyForQuery within this (a wake included). Default 60 s (PostgreSQL's authentication_timeout). */
  authTimeoutMs?: number;
  /** Roles no client may log in as through the router (the admin role authenticates by peer). */
  reservedUsers?: string[];
  /** Secret for the salts of the mock exchange with a role that does not exist (stable across restarts). */
  authSecret: Buffer;
  /** Wait before telling a client its login failed, per recent failure from its address or against its tenant. Default 100 ms, at most `authDelayMaxMs` (default 2 s). */
  authDelayStepMs?: number;
  authDelayMaxMs?: number;
  /**
   * Server sessions kept for reuse: idle ones per tenant (default 2; 0 turns reuse off) and how
   * long one stays idle before it is closed (default 60 s). See server-sessions.ts.
   */
  serverSessions?: { keep?: number; idleMs?: number };
  /** Transaction pooling: how long a client waits for a free server session before it is refused with 53300 (default 30 s). */
  poolTimeoutMs?: number;
  /**
   * How long opening a server session waits for a connection slot of the tenant's server
   * (sessions just closed still exiting, idle kept ones being closed) before the client is
   * refused with pgs's 53300 naming the limit (default 10 s). See server-slots.ts.
   */
  slotTimeoutMs?: number;
  log?: RouterLog;
  observer?: RouterObserver;
}

interface CancelTarget {
  address: BackendAddress;
  pid: number;
  secret: Buffer;
}

/** Where a client's cancel request goes: one backend, or whichever runs its transaction now (none between transactions). */
type CancelRoute = CancelTarget | (() => CancelTarget | undefined);

const SSL_ACCEPT = Buffer.from('S');
const GSSENC_REFUSE = Buffer.from('N');
const ALPN_POSTGRESQL = 'postgresql';
const QUIET: Log = QUIET_LOG;

export class Router {
  private readonly backends: RouterBackends;
  private domainSuffix: string;
  private readonly handshakeTimeoutMs: number;
  readonly startupPacketTimeoutMs: number;
  readonly authTimeoutMs: number;
  /** Connections still starting up, by address and network (admission.ts). */
  readonly startups: Startups<Starting>;
  private admitted = 0;
  private readonly maxConnections: number;
  private readonly maxPerTenant: number;
  private readonly reservedUsers: Set<string>;
  readonly log: RouterLog;
  readonly observer: RouterObserver | undefined;
  private secureContext: tls.SecureContext;
  private certHash: Buffer | undefined;
  readonly authSecret: Buffer;
  readonly failures: AuthFailures;
  private server: net.Server;
  private readonly clients = new Set<ClientConnection>();
  /** Connections waiting for their address's turn to start up (admission.ts). */
  readonly waiting = new Set<WaitingSocket>();
  private readonly byTenant = new Map<string, Set<ClientConnection>>();
  private readonly cancelKeys = new Map<string, CancelRoute>();
  readonly refusals = new Map<RefusalReason, number>();
  private closing = false;
  /** Idle server sessions for reuse; undefined when reuse is off. */
  readonly pool: ServerSessionPool | undefined;
  /** Servers on the network are reached only through sessions the router logs in itself: with reuse off, they are kept by none. */
  readonly remotePool: ServerSessionPool;
  /** The server sessions of tenants that pool by transaction. */
  readonly transactions: TransactionPool;
  readonly poolTimeoutMs: number;
  /** The connection slots of each tenant's server (on this host) that the router's sessions hold. */
  readonly slots = new ServerSlots();
  readonly slotTimeoutMs: number;

  constructor(backends: RouterBackends, options: RouterOptions) {
    this.backends = backends;
    this.domainSuffix = `.${options.domain.toLowerCase()}`;
    const startupTimeoutMs = options.startupTimeoutMs ?? 10_000;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? startupTimeoutMs;
    this.startupPacketTimeoutMs = options.startupPacketTimeoutMs ?? startupTimeoutMs;
    this.authTimeoutMs = options.authTimeoutMs ?? 60_000;
    this.maxConnections = options.maxConnections ?? 10_000;
    this.maxPerTenant = options.maxConnectionsPerTenant ?? 1_000;
    this.reservedUsers = new Set(options.reservedUsers ?? []);
    this.log = options.log ?? QUIET;
    this.observer = options.observer;
    this.startups = new Startups<Starting>({
      maxPending: options.maxPendingStartups ?? 1_000,
      maxPerAddress: options.maxStartupsPerAddress ?? 64,
      ...(options.shedIntervalMs !== undefined ? { intervalMs: options.shedIntervalMs } : {}),
      onShed: (why) => {
        this.countRefusal('too_many_connections');
        this.observer?.startupShed?.(why);
      },
      onInterval: (summary) => {
        if (summary.addressLimit + summary.globalLimit > 0) {
          this.log.warn('start-ups shed', {
            seconds: summary.seconds,
            atAddressLimit: summary.addressLimit,
            atGlobalLimit: summary.globalLimit,
            networks: Object.fromEntries(summary.networks.map((n) => [n.network, n.count])),
            pending: summary.pending,
          });
        }
        this.observer?.startupsShedInterval?.(summary);
      },
      onTurn: (waiting) => {
        if (waiting instanceof WaitingSocket) waiting.start();
      },
    });
    this.secureContext = makeSecureContext(options.cert, options.key);
    this.certHash = leafHash(options.cert);
    this.authSecret = options.authSecret;
    this.failures = new AuthFailures(options.authDelayStepMs ?? 100, options.authDelayMaxMs ?? 2_000);
    this.server = net.createServer({ noDelay: true }, (socket) => this.onConnection(socket));
    const keep = options.serverSessions?.keep ?? 2;
    const idleMs = options.serverSessions?.idleMs ?? 60_000;
    this.pool = keep > 0 ? new ServerSessionPool({ keep, idleMs }) : undefined;
    this.remotePool = this.pool ?? new ServerSessionPool({ keep: 0, idleMs });
    this.transactions = new TransactionPool({ idleMs });
    this.poolTimeoutMs = options.poolTimeoutMs ?? 30_000;
    this.slotTimeoutMs = options.slotTimeoutMs ?? 10_000;
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
  async openServerSession(tenant: TenantRoute, address: BackendAddress, role: string, database: string): Promise<ServerSession> {
    if (isRemote(address)) return ServerSession.open(address, tenant.id, role, database, this.authTimeoutMs);
    const deadline = Date.now() + this.slotTimeoutMs;
    for (;;) {
      const release = await this.serverSlot(tenant, deadline);
      try {
        return await ServerSession.open(address, tenant.id, role, database, this.authTimeoutMs, (socket) => this.slots.bind(socket, release));
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
  idleServerSessions(id: string): number {
    return (this.pool?.idleCount(id) ?? 0) + this.transactions.idleCount(id);
  }

  /** Closes the tenant's idle server sessions (before its server is suspended or stopped). */
  dropServerSessions(id: string): number {
    return (this.pool?.drop(id) ?? 0) + this.transactions.drop(id);
  }

  listen(port: number, host?: string): Promise<net.AddressInfo> {
    return listenOn(this.server, port, host);
  }

  /**
   * Moves to another port: the new listener is opened first, and the old one
   * closed only once it works (open connections stay). On failure nothing changed.
   */
  async move(port: number, host?: string): Promise<net.AddressInfo> {
    const next = net.createServer({ noDelay: true }, (socket) => this.onConnection(socket));
    const address = await listenOn(next, port, host);
    const old = this.server;
    this.server = next;
    old.close();
    return address;
  }

  /** The port it listens on now. */
  get port(): number {
    return (this.server.address() as net.AddressInfo | null)?.port ?? 0;
  }

  /** New connections are routed under this domain. */
  setDomain(domain: string): void {
    this.domainSuffix = `.${domain.toLowerCase()}`;
  }

  /** Swaps the certificate for new connections; a pair that does not load throws and the old one stays. */
  setCertificate(cert: string | Buffer, key: string | Buffer): void {
    this.secureContext = makeSecureContext(cert, key);
    this.certHash = leafHash(cert);
  }

  /** The channel-binding data of the certificate connections get now (tls-server-end-point). */
  get certificateHash(): Buffer | undefined {
    return this.certHash;
  }

  get context(): tls.SecureContext {
    return this.secureContext;
  }

  /** Closes every open connection of a tenant (access disabled, tenant removed). Returns how many. */
  /**
   * Ends every open session of a tenant (access disabled, tenant removed) with a
   * FATAL 57P01 saying `message`, sent between two of the server's messages.
   * Returns how many.
   */
  closeTenant(id: string, message = `the session of tenant ${id} was closed by pgs`): number {
    this.dropServerSessions(id);
    const set = this.byTenant.get(id);
    if (!set) return 0;
    const count = set.size;
    for (const client of [...set]) client.closeWith({ reason: 'terminated', message });
    return count;
  }

  /** Ends, as closeTenant does, the tenant's sessions from addresses `allow` does not let in (its allow-list changed). Returns how many. */
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

  /** Sends every open session of a tenant a WARNING (a NoticeResponse), between two of the server's messages. Returns how many. */
  noticeTenant(id: string, message: string): number {
    const set = this.byTenant.get(id);
    if (!set) return 0;
    for (const client of set) client.notify(message);
    return set.size;
  }

  /** Bytes read from and written to the open client connections so far (TLS included). */
  liveBytes(): { in: number; out: number } {
    let bytesIn = 0;
    let bytesOut = 0;
    for (const client of this.clients) {
      bytesIn += client.bytesIn;
      bytesOut += client.bytesOut;
    }
    return { in: bytesIn, out: bytesOut };
  }

  private readonly lastUse = new Map<string, number>();
  private readonly transactionsEnded = new Map<string, number>();

  /** Counts a transaction of the tenant's that ended (a ReadyForQuery saying idle). */
  countTransaction(id: string): void {
    this.transactionsEnded.set(id, (this.transactionsEnded.get(id) ?? 0) + 1);
  }

  /**
   * Transactions of the tenant's clients through the router that ended since the daemon started
   * (statements outside a transaction count one each; a connection with a backend of its own
   * counts every ReadyForQuery).
   */
  transactionCount(id: string): number {
    return this.transactionsEnded.get(id) ?? 0;
  }

  /** When a client connection to the tenant last opened or closed (ms since the epoch). */
  lastUsed(id: string): number | undefined {
    return this.lastUse.get(id);
  }

  connectionCount(id?: string): number {
    return id === undefined ? this.clients.size : (this.byTenant.get(id)?.size ?? 0);
  }

  /** Resolves once the tenant has no open session through the router (at most `timeoutMs`). */
  async drained(id: string, timeoutMs = 1_500): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while ((this.byTenant.get(id)?.size ?? 0) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }

  /** Stops accepting, closes every client connection, resolves when the listener is closed. */
  async close(): Promise<void> {
    this.closing = true;
    this.startups.close();
    this.pool?.closeAll();
    this.transactions.closeAll();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const waiting of [...this.waiting]) waiting.shed();
    for (const client of [...this.clients]) client.closeWith({ reason: 'shutting_down', message: 'pgs is shutting down' });
    await closed;
  }

  // --- used by ClientConnection ---

  isClosing(): boolean {
    return this.closing;
  }

  countRefusal(reason: RefusalReason): void {
    this.refusals.set(reason, (this.refusals.get(reason) ?? 0) + 1);
  }

  /** Tenant label from an SNI host name, or undefined when the name is not under our domain. */
  labelOf(hostname: string): string | undefined {
    const name = hostname.toLowerCase().replace(/\.$/, '');
    if (!name.endsWith(this.domainSuffix)) return undefined;
    const label = name.slice(0, -this.domainSuffix.length);
    return label.length > 0 && !label.includes('.') ? label : undefined;
  }

  get domain(): string {
    return this.domainSuffix.slice(1);
  }

  lookup(label: string): TenantRoute | undefined {
    return this.backends.lookup(label);
  }

  backend(id: string): Promise<{ address: BackendAddress; woke: boolean }> {
    return this.backends.backend(id);
  }

  async verifier(id: string, role: string, options: { fresh?: boolean } = {}): Promise<{ verifier: ScramVerifier | undefined; live: boolean }> {
    return this.backends.verifier(id, role, options);
  }

  isReserved(user: string): boolean {
    return this.reservedUsers.has(user);
  }

  admit(client: ClientConnection, tenant: TenantRoute): Refusal | undefined {
    const tenantId = tenant.id;
    if (this.admitted >= this.maxConnections) {
      return { reason: 'too_many_connections', message: 'too many connections to pgs' };
    }
    const set = this.byTenant.get(tenantId) ?? new Set<ClientConnection>();
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
    this.startups.remove(client); // logged in: never shed
    return undefined;
  }

  unregisterCancelKey(key: string): void {
    this.cancelKeys.delete(key);
  }

  registerCancelKey(target: CancelRoute, secretLength: number): { pid: number; secret: Buffer; key: string } {
    for (;;) {
      const pid = randomInt(1, 2 ** 31 - 1);
      const secret = randomBytes(secretLength);
      const key = cancelKey(pid, secret);
      if (this.cancelKeys.has(key)) continue;
      this.cancelKeys.set(key, target);
      return { pid, secret, key };
    }
  }

  forwardCancel(pid: number, secret: Buffer): void {
    const route = this.cancelKeys.get(cancelKey(pid, secret));
    this.observer?.cancelRequest(route ? 'forwarded' : 'unknown_key');
    if (!route) return; // a forged or stale key: do nothing, say nothing (as PostgreSQL does)
    const target = typeof route === 'function' ? route() : route;
    if (target) cancelOn(target.address, target.pid, target.secret);
  }

  forget(client: ClientConnection): void {
    this.clients.delete(client);
    this.startups.remove(client);
    if (client.tenantId !== undefined) {
      this.lastUse.set(client.tenantId, Date.now());
      this.admitted--;
      const set = this.byTenant.get(client.tenantId);
      set?.delete(client);
      if (set && set.size === 0) this.byTenant.delete(client.tenantId);
    }
    if (client.cancelKey !== undefined) this.cancelKeys.delete(client.cancelKey);
  }

  private onConnection(socket: net.Socket): void {
    // Connections still starting up cost memory and a timer each: bound them, per address and in all, fairly (admission.ts).
    const remote = socket.remoteAddress;
    if (this.closing || remote === undefined) {
      socket.destroy();
      return;
    }
    const source = Startups.source(remote);
    const admission = this.startups.admit(source, (victim, network) => victim.shed(network));
    if (admission === 'refuse') socket.destroy(); // nothing was said yet: no TLS to say it in
    else if (admission === 'wait') {
      const waiting = new WaitingSocket(this, socket, source, this.handshakeTimeoutMs);
      this.waiting.add(waiting);
      this.startups.wait(waiting);
    }
    else this.startClient(socket, source);
  }

  /** A connection's start-up begins: TLS, the start-up packet, the password. */
  startClient(socket: net.Socket, source: { address: string; network: string }): void {
    if (this.closing || socket.destroyed) {
      socket.destroy();
      return;
    }
    const client = new ClientConnection(this, socket, source, this.handshakeTimeoutMs);
    this.clients.add(client);
    this.startups.add(client);
  }
}

/**
 * A connection whose address already has its limit of start-ups running: its
 * bytes stay unread (the kernel and the socket's buffer keep them) until one of
 * those ends (then `start`), it closes, or its deadline passes (closed, nothing said).
 */
class WaitingSocket {
  readonly address: string;
  readonly network: string;
  private readonly router: Router;
  private readonly socket: net.Socket;
  private readonly timer: NodeJS.Timeout;
  private readonly onGone = (): void => this.shed();

  constructor(router: Router, socket: net.Socket, source: { address: string; network: string }, deadlineMs: number) {
    this.router = router;
    this.socket = socket;
    this.address = source.address;
    this.network = source.network;
    socket.pause();
    socket.on('error', this.onGone);
    socket.on('close', this.onGone);
    this.timer = setTimeout(() => {
      this.router.startups.timedOut(this);
      this.shed();
    }, deadlineMs);
  }

  /** Its turn: the start-up begins where nothing was read yet. */
  start(): void {
    clearTimeout(this.timer);
    this.router.waiting.delete(this);
    this.socket.off('error', this.onGone);
    this.socket.off('close', this.onGone);
    this.router.startClient(this.socket, this);
    this.socket.resume(); // after the client's reader is on: nothing buffered is lost
  }

  /** Closed, nothing said (no TLS yet to say it in). */
  shed(): void {
    clearTimeout(this.timer);
    this.router.waiting.delete(this);
    this.router.startups.remove(this);
    this.socket.destroy();
  }
}

function listenOn(server: net.Server, port: number, host?: string): Promise<net.AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host }, () => {
      server.off('error', reject);
      resolve(server.address() as net.AddressInfo);
    });
  });
}

function cancelKey(pid: number, secret: Buffer): string {
  return `${pid}:${secret.toString('hex')}`;
}

function noticeBytes(message: string): Buffer {
  return serializeNoticeResponse({ S: 'WARNING', V: 'WARNING', C: '01000', M: message });
}

/** NAMEDATALEN - 1: the longest role name PostgreSQL keeps. */
const MAX_NAME_BYTES = 63;

function authMessage(code: number, data: Buffer): Buffer {
  const payload = Buffer.allocUnsafe(4 + data.length);
  payload.writeInt32BE(code, 0);
  data.copy(payload, 4);
  return typed(BackendMessage.Authentication, payload);
}

/** SASLInitialResponse: the mechanism (a C string), then the length of the data (-1: none) and the data. */
function parseSASLInitialResponse(message: Message): { mechanism: string; data: string } {
  if (message.type !== FrontendMessage.SASLResponse) throw new ScramError('08P01', `expected SASL response, got message type ${message.type}`);
  const payload = message.payload;
  const end = payload.indexOf(0);
  if (end < 0 || end + 5 > payload.length) throw new ScramError('08P01', 'malformed SASLInitialResponse');
  const length = payload.readInt32BE(end + 1);
  const data = length < 0 ? Buffer.alloc(0) : payload.subarray(end + 5);
  if (length >= 0 && data.length !== length) throw new ScramError('08P01', 'malformed SASLInitialResponse: the length does not match');
  return { mechanism: payload.toString('utf8', 0, end), data: data.toString('utf8') };
}

/** The client's messages during the router's authentication, one at a time (SASL messages are small: at most 64 KiB, as PostgreSQL). */
class ClientMessages {
  private readonly socket: net.Socket;
  private readonly reader = new MessageReader(65_536);
  private waiting: { resolve: (m: Message | undefined) => void; reject: (e: Error) => void } | undefined;
  private ended = false;
  private buffered = 0;
  private readonly onData = (chunk: Buffer): void => {
    // At most two SASL messages are read: a client sending more than that much is refused, not buffered.
    this.buffered += chunk.length;
    if (this.buffered > 2 * 65_536 + 16) {
      this.stop();
      this.overflow = true;
    } else {
      this.reader.push(chunk);
    }
    this.deliver();
  };
  private overflow = false;
  private readonly onEnd = (): void => {
    this.ended = true;
    this.deliver();
  };

  constructor(socket: net.Socket, rest: Buffer) {
    this.socket = socket;
    if (rest.length > 0) this.reader.push(rest);
    socket.on('data', this.onData);
    socket.on('close', this.onEnd);
    socket.on('end', this.onEnd);
    socket.resume();
  }

  next(): Promise<Message | undefined> {
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.deliver();
    });
  }

  /** Stops reading; returns what the client sent beyond the messages taken. */
  stop(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.off('close', this.onEnd);
    this.socket.off('end', this.onEnd);
    this.socket.pause();
    return this.reader.drain();
  }

  private deliver(): void {
    const waiting = this.waiting;
    if (!waiting) return;
    let message: Message | undefined;
    try {
      if (this.overflow) throw new RangeError('more data than an authentication exchange sends');
      message = this.reader.next();
    } catch (err) {
      this.waiting = undefined;
      waiting.reject(err as Error);
      return;
    }
    if (message?.type === FrontendMessage.Terminate) this.ended = true; // the client gave up: as if it closed
    if (this.ended) message = undefined;
    if (message || this.ended) {
      this.waiting = undefined;
      waiting.resolve(message);
    }
  }
}

/**
 * Recent login failures per key (an address, a tenant), counted over a minute:
 * each failure waits `step` ms per failure so far, at most `max`, before the
 * client hears of it (as auth_delay does, but growing with the attempts).
 */
export class AuthFailures {
  private readonly step: number;
  private readonly max: number;
  private readonly recent = new Map<string, { count: number; since: number }>();

  constructor(step: number, max: number) {
    this.step = step;
    this.max = max;
  }

  /** Counts a failure against each key; returns how long to wait. */
  note(keys: string[]): number {
    const now = Date.now();
    if (this.recent.size > 100_000) this.prune(now);
    let worst = 0;
    for (const key of keys) {
      let entry = this.recent.get(key);
      if (!entry || now - entry.since > 60_000) {
        entry = { count: 0, since: now };
        this.recent.set(key, entry);
      }
      entry.count++;
      worst = Math.max(worst, entry.count);
    }
    return Math.min(this.max, this.step * worst);
  }

  private prune(now: number): void {
    for (const [key, entry] of this.recent) if (now - entry.since > 60_000) this.recent.delete(key);
    if (this.recent.size > 100_000) this.recent.clear();
  }
}

/** The tls-server-end-point hash of the first (leaf) certificate of a PEM chain. */
function leafHash(cert: string | Buffer): Buffer | undefined {
  try {
    return channelBindingHash(new X509Certificate(cert).raw);
  } catch {
    return undefined;
  }
}

function makeSecureContext(cert: string | Buffer, key: string | Buffer): tls.SecureContext {
  return tls.createSecureContext({ cert, key, minVersion: 'TLSv1.2' });
}

/**
 * One client connection through its phases: plain first packet, TLS, start-up
 * packet, authentication relay (BackendKeyData rewritten), then a byte pipe.
 */
class ClientConnection {
  private readonly router: Router;
  private readonly raw: net.Socket;
  private socket: net.Socket | tls.TLSSocket;
  private pending: Buffer = Buffer.alloc(0);
  private backend: net.Socket | undefined;
  private timer: NodeJS.Timeout;
  private done = false;
  private result: ConnectionResult = 'closed';
  /** Set once admitted (it counts against the tenant's connections). */
  tenantId: string | undefined;
  /** The tenant the client asked for, once known (before authentication and admission). */
  private routed: string | undefined;
  private loginNotice: string | undefined;
  /** A warning for the client, sent at the next boundary between the server's messages. */
  private pendingNotice: string | undefined;
  cancelKey: string | undefined;
  /** Where it comes from (admission.ts counts its start-up by these). */
  readonly address: string;
  readonly network: string;

  constructor(router: Router, socket: net.Socket, source: { address: string; network: string }, handshakeTimeoutMs: number) {
    this.router = router;
    this.raw = socket;
    this.socket = socket;
    this.address = source.address;
    this.network = source.network;
    this.timer = setTimeout(() => this.onStartupTimeout(), handshakeTimeoutMs);
    socket.on('error', () => this.destroy());
    socket.on('close', () => this.destroy());
    socket.on('data', this.onPlainData);
  }

  get bytesIn(): number {
    return this.raw.bytesRead;
  }

  get bytesOut(): number {
    return this.raw.bytesWritten;
  }

  destroy(): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.socket.destroy();
    this.raw.destroy();
    const session = this.serverSession;
    const state = this.sessionState;
    if (session && state && this.router.pool && session.usable && state.reusable && !this.closingWith) {
      // The client left between two exchanges: its session is rolled back if need be, reset, and kept.
      this.unpipeSession?.();
      session.attach();
      session.socket.resume();
      void recycle(this.router.pool, session, state.status);
    } else {
      // A query still running would run on (PostgreSQL notices a gone client only when it writes): cancel it.
      if (session && state && state.pending > 0) session.cancel();
      // The server's slot is free again only once its backend exited: let go when the server does.
      if (session) session.destroy();
      else if (this.backend && this.backendLocal) closeServerSocket(this.backend);
      else this.backend?.destroy();
    }
    this.pooled?.close();
    this.router.forget(this);
    this.router.observer?.connectionClosed(this.result, this.raw.bytesRead, this.raw.bytesWritten);
  }

  /**
   * Closed to make room for another start-up (admission.ts): with a FATAL 53300 once TLS is up (the client
   * can read it), else at once. Not logged one by one: the router tells sheds once per interval.
   */
  shed(network: string): void {
    if (this.done) return;
    this.result = 'refused';
    clearTimeout(this.timer);
    const socket = this.socket;
    if (this.secured && socket.writable) {
      socket.end(refusalBytes({ reason: 'too_many_connections', message: `too many connections starting up from ${network}` }), () => this.destroy());
      setTimeout(() => this.destroy(), 1_000).unref();
      this.router.startups.remove(this); // its slot is free now, not once the goodbye is written
    } else {
      this.destroy();
    }
  }

  private onStartupTimeout(): void {
    // Before TLS the client reads plain text; during the handshake nothing can be said.
    const handshaking = this.socket instanceof tls.TLSSocket && !this.secured;
    this.refuse({ reason: 'startup_timeout', message: 'start-up took too long' }, !handshaking);
  }

  private secured = false;
  private gssencAnswered = false;
  /** tls-server-end-point data of the certificate this connection is served. */
  private certificateHash: Buffer | undefined;

  /** Sends a FATAL ErrorResponse (only over TLS, or before TLS to a plain client) and closes. */
  private refuse(refusal: Refusal, send = true): void {
    if (this.done) return;
    this.result = 'refused';
    this.router.countRefusal(refusal.reason);
    this.router.log.info('refused', { reason: refusal.reason, message: refusal.message, tenant: this.tenantId ?? this.routed });
    clearTimeout(this.timer);
    const socket = this.socket;
    if (send && socket.writable) {
      socket.end(refusalBytes(refusal), () => this.destroy());
      setTimeout(() => this.destroy(), 1_000).unref();
    } else {
      this.destroy();
    }
  }

  // --- phase 1: before TLS ---

  private readonly onPlainData = (chunk: Buffer): void => {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    this.decodePlain();
  };

  private decodePlain(): void {
    const decoded = decodeFirstPacket(this.pending);
    if (!decoded) return;
    const { packet, length } = decoded;
    const rest = this.pending.subarray(length);
    switch (packet.kind) {
      case 'ssl':
        if (rest.length > 0) {
          // Bytes sent before our answer would be read as if they came over TLS (CVE-2021-23214).
          this.router.countRefusal('protocol_violation');
          this.destroy();
          return;
        }
        this.pending = Buffer.alloc(0);
        this.raw.off('data', this.onPlainData);
        this.raw.write(SSL_ACCEPT);
        this.startTls(false);
        return;
      case 'tls':
        this.raw.off('data', this.onPlainData);
        this.raw.pause();
        this.raw.unshift(this.pending);
        this.pending = Buffer.alloc(0);
        this.startTls(true);
        return;
      case 'gssenc':
        // As PostgreSQL: one GSSENCRequest is answered N; a second one is a protocol violation.
        if (this.gssencAnswered) {
          this.refuse({ reason: 'protocol_violation', message: 'invalid start-up packet: a second GSSENCRequest' });
          return;
        }
        this.gssencAnswered = true;
        this.raw.write(GSSENC_REFUSE);
        this.pending = Buffer.from(rest);
        if (this.pending.length > 0) this.decodePlain(); // recurses at most once more: see above
        return;
      case 'cancel':
        this.result = 'cancel';
        this.router.forwardCancel(packet.pid, packet.secret);
        this.destroy();
        return;
      case 'startup':
        this.refuse({
          reason: 'tls_required',
          message: 'SSL/TLS required: connect with sslmode=require',
          hint: `pgs accepts only TLS connections; the host name (SNI) chooses the tenant: host=<id>-<suffix>.${this.router.domain}`,
        });
        return;
      case 'invalid':
        this.refuse({ reason: 'protocol_violation', message: `invalid start-up packet: ${packet.reason}` });
        return;
    }
  }

  // --- phase 2: TLS ---

  private startTls(direct: boolean): void {
    // The certificate's channel-binding hash goes with the context this connection is served (a new one may come for later ones).
    this.certificateHash = this.router.certificateHash;
    const secure = new tls.TLSSocket(this.raw, {
      isServer: true,
      secureContext: this.router.context,
      ALPNProtocols: [ALPN_POSTGRESQL],
    });
    this.socket = secure;
    const began = performance.now();
    secure.on('error', () => this.destroy());
    secure.on('close', () => this.destroy());
    secure.once('secure', () => {
      this.secured = true;
      this.router.observer?.tlsHandshake((performance.now() - began) / 1000);
      // Each phase has its own deadline: the start-up packet's starts now.
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.refuse({ reason: 'startup_timeout', message: 'start-up took too long: no start-up packet after the TLS handshake' }), this.router.startupPacketTimeoutMs);
      // Direct TLS has no SSLRequest to say "this is PostgreSQL": ALPN must (PostgreSQL 17 requires the same).
      if (direct && secure.alpnProtocol !== ALPN_POSTGRESQL) {
        this.router.countRefusal('protocol_violation');
        this.destroy();
        return;
      }
      secure.on('data', this.onTlsData);
    });
  }

  private readonly onTlsData = (chunk: Buffer): void => {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const decoded = decodeFirstPacket(this.pending);
    if (!decoded) return;
    this.socket.off('data', this.onTlsData);
    this.socket.pause();
    const rest = Buffer.from(this.pending.subarray(decoded.length));
    this.pending = Buffer.alloc(0);
    void this.onTlsPacket(decoded.packet, rest);
  };

  private async onTlsPacket(packet: FirstPacket, rest: Buffer): Promise<void> {
    if (packet.kind === 'cancel') {
      this.result = 'cancel';
      this.router.forwardCancel(packet.pid, packet.secret);
      this.destroy();
      return;
    }
    if (packet.kind !== 'startup') {
      const reason = packet.kind === 'invalid' ? packet.reason : `${packet.kind} request inside TLS`;
      this.refuse({ reason: 'protocol_violation', message: `invalid start-up packet: ${reason}` });
      return;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refuse({ reason: 'startup_timeout', message: 'authentication took too long' }), this.router.authTimeoutMs);
    try {
      await this.route(packet.version, packet.params, rest);
    } catch (err) {
      this.router.log.warn('routing failed', { tenant: this.tenantId ?? this.routed, error: (err as Error).message });
      const message = err instanceof BackendUnavailable ? err.message : `the server of tenant ${this.tenantId ?? this.routed ?? ''} is not available`;
      const hint = err instanceof BackendUnavailable ? err.hint : undefined;
      this.refuse({ reason: err instanceof BackendUnavailable ? err.reason : 'tenant_unavailable', message, ...(hint !== undefined ? { hint } : {}) });
    }
  }

  // --- phase 3: routing ---

  private async route(version: number, params: Map<string, string>, rest: Buffer): Promise<void> {
    const secure = this.socket as tls.TLSSocket & { servername?: string | false };
    const sni = typeof secure.servername === 'string' ? secure.servername : undefined;
    const { endpoint, rest: options } = takeEndpointOption(params.get('options'));
    const sniLabel = sni === undefined ? undefined : this.router.labelOf(sni);
    const domain = this.router.domain;
    if (sni !== undefined && sniLabel === undefined) {
      this.refuse({
        reason: 'unknown_host',
        message: `unknown host name "${sni}": tenants are reached as <id>-<suffix>.${domain}`,
        hint: 'pgs list shows each tenant\'s host name',
      });
      return;
    }
    if (sniLabel !== undefined && endpoint !== undefined && endpoint.toLowerCase() !== sniLabel) {
      this.refuse({ reason: 'host_mismatch', message: `the host name "${sni}" and options endpoint=${endpoint} name different tenants` });
      return;
    }
    const label = sniLabel ?? endpoint?.toLowerCase();
    if (label === undefined) {
      this.refuse({
        reason: 'no_host',
        message: 'no tenant host name: the client sent no TLS SNI name and no endpoint option',
        hint: `connect with host=<id>-<suffix>.${domain} (hostaddr= for an IP address), or add options=endpoint=<id>-<suffix>`,
      });
      return;
    }
    const tenant = this.router.lookup(label);
    if (!tenant) {
      this.refuse({
        reason: 'unknown_host',
        message: `unknown host name "${sni ?? `${label}.${domain}`}": no such tenant`,
        hint: 'pgs list shows each tenant\'s host name',
      });
      return;
    }
    this.routed = tenant.id;
    this.loginNotice = tenant.notice;
    // The tenant's allow-list first: an address it leaves out learns nothing more, costs no password check and wakes nothing.
    if (tenant.allow && !tenant.allow.allows(this.address)) {
      this.refuse({ reason: 'address_not_allowed', message: `connections from ${this.address} are not allowed for tenant ${tenant.id}` });
      return;
    }
    if (tenant.access === 'disabled') {
      this.refuse({ reason: 'access_disabled', message: `access to tenant ${tenant.id} is disabled`, hint: `pgs enable-access ${tenant.id} allows it again` });
      return;
    }
    const user = params.get('user') ?? '';
    if (user === '') {
      this.refuse({ reason: 'auth_failed', code: '28000', message: 'no PostgreSQL user name specified in startup packet' });
      return;
    }
    if (this.router.isReserved(user)) {
      this.refuse({ reason: 'reserved_role', message: `role "${user}" cannot log in through pgs` });
      return;
    }
    if (this.router.isClosing()) {
      this.refuse({ reason: 'shutting_down', message: 'pgs is shutting down' });
      return;
    }
    // The password is checked here, before anything is woken or admitted: a failed login costs no server and no slot.
    const login = await this.authenticate(tenant.id, user, rest);
    if (!login || this.result === 'refused') return; // refused meanwhile: shed, or timed out
    const full = this.router.admit(this, tenant);
    if (full) {
      this.refuse(full);
      return;
    }
    const began = performance.now();
    const { address, woke } = await this.router.backend(tenant.id);
    if (this.done) return;
    if (!login.live) {
      // Checked against the copy kept while the server was down: make sure the server still has that verifier.
      const now = await this.router.verifier(tenant.id, user, { fresh: true });
      if (this.done) return;
      if (!now.verifier || !now.verifier.storedKey.equals(login.verifier.storedKey)) {
        await this.failLogin(tenant.id, user, 'the password changed while the tenant was stopped');
        return;
      }
    }
    this.backendAsked = { began, woke };
    if (options === undefined) params.delete('options');
    else params.set('options', options);
    const connectOwn = (why?: string) => {
      if (isRemote(address)) {
        // A server on the network is logged in to by the router only: no client's start-up reaches it as it is.
        this.refuse({ reason: 'tenant_unavailable', code: '0A000', message: `tenant ${tenant.id} cannot serve this connection: ${why ?? 'protocol 3.2 is not supported for it yet (connect with protocol 3.0, the default)'}` });
        return;
      }
      this.router.observer?.serverSession?.('own');
      void this.connectOwnBackend(tenant, address, Buffer.concat([encodeStartup(version, params), login.rest]));
    };
    const settings = version === PROTOCOL_3_0 ? clientSettings(params) : undefined;
    const database = params.get('database') || user;
    if (settings && tenant.pool === 'transaction') await this.usePool(tenant, user, database, settings, login.rest);
    else if (settings && (this.router.pool || isRemote(address))) await this.useServerSession(tenant, address, user, database, settings, login.rest, connectOwn);
    else connectOwn();
  }

  // --- phase 4, transaction pooling ---

  private pooled: PooledClient | undefined;

  /**
   * Greets the client from a server session of the tenant's transaction pool
   * (its start-up settings set there, so that what the server reports is what
   * it says), gives the session back, and from then on gets the client one
   * per transaction (transaction-pool.ts).
   */
  private async usePool(tenant: TenantRoute, user: string, database: string, settings: Map<string, string>, rest: Buffer): Promise<void> {
    const pools = this.router.transactions;
    const key = poolKey(tenant.id, database, user);
    const size = tenant.poolSize ?? 10;
    const open = async (): Promise<ServerSession> => {
      const { address } = await this.router.backend(tenant.id);
      return this.router.openServerSession(tenant, address, user, database);
    };
    const acquire = (handed: Handed): void => pools.acquire(tenant.id, key, size, this.router.poolTimeoutMs, open, () => this.done, handed);
    let session: ServerSession;
    try {
      session = await new Promise<ServerSession>((resolve, reject) => acquire((err, s) => (err || !s ? reject(err) : resolve(s))));
    } catch (err) {
      if (this.done) return;
      if (err instanceof ServerFull) this.refuse({ reason: 'too_many_connections', message: err.message, hint: err.hint });
      else if (err instanceof ServerSessionError) this.refuseAsServer(err.fields);
      else if (err instanceof PoolTimeout) this.refuse({ reason: 'too_many_connections', message: `${err.message} for tenant ${tenant.id} (its transaction pool is full)`, hint: `pgs config ${tenant.id} --pool-size N allows more server sessions` });
      else {
        this.router.log.warn('backend connection failed', { tenant: tenant.id, error: (err as Error).message });
        this.refuse({ reason: 'tenant_unavailable', message: `the server of tenant ${tenant.id} is not available` });
      }
      return;
    }
    const { carried, fixed } = splitSettings(settings, session.params);
    const error = await applySettings(session, carried, fixed).catch((err: Error) => ({ M: err.message, C: '08006' }));
    if (error || this.done) {
      pools.release(session, !error);
      if (error) this.refuseAsServer({ ...error, S: 'FATAL', V: 'FATAL' });
      return;
    }
    if (this.backendAsked) this.router.observer?.backendConnect((performance.now() - this.backendAsked.began) / 1000, this.backendAsked.woke);
    this.router.observer?.serverSession?.('pooled');
    const seen = new Map(session.params);
    const parameters = session.greeting();
    pools.release(session, true);
    const client: PooledClient = new PooledClient({
      socket: this.socket,
      tenantId: tenant.id,
      take: () => pools.take(tenant.id, key, size),
      acquire,
      release: (s, clean) => {
        if (!clean) s.cancel();
        pools.release(s, clean);
      },
      fail: (fields) => {
        if (!fields || this.done || !this.socket.writable) {
          this.destroy();
          return;
        }
        this.socket.end(serializeErrorResponse(fields), () => this.destroy());
        setTimeout(() => this.destroy(), 1_000).unref();
      },
      databaseStatement: () => this.router.dropServerSessions(tenant.id),
      transactionEnded: () => this.router.countTransaction(tenant.id),
    }, seen, fixed);
    this.pooled = client;
    // Cancel requests go to whichever backend runs the client's transaction then.
    this.greet(parameters, () => client.current?.cancelTarget, 4);
    this.readyForQuery = true;
    this.result = 'ok';
    clearTimeout(this.timer);
    this.socket.on('data', client.onData);
    if (rest.length > 0) client.onData(rest);
    this.socket.resume(); // paused since authentication
  }

  /**
   * What a server's start-up would end with, for a client greeted from a
   * session the router holds: AuthenticationOk and its ParameterStatus set
   * (`parameters`, from ServerSession.greeting), a key of the router's
   * own for `route`, the login notice, and ReadyForQuery.
   */
  private greet(parameters: Buffer, route: CancelRoute, secretLength: number): void {
    const greeting = [parameters, this.ownKey(route, secretLength)];
    if (this.loginNotice !== undefined) greeting.push(noticeBytes(this.loginNotice));
    greeting.push(typed(BackendMessage.ReadyForQuery, Buffer.from([TX_IDLE])));
    this.socket.write(Buffer.concat(greeting));
  }

  // --- phase 4, with server sessions kept for reuse ---

  private serverSession: ServerSession | undefined;
  private sessionState: SessionState | undefined;

  /**
   * Gives the client a server session the router holds for (tenant, database,
   * role), or opens one, sets the client's start-up parameters on it, and
   * greets the client as the server would have. Parameters the server refuses
   * to set this way (or any trouble) fall back to a backend of the client's own
   * (`connectOwn`), whose start-up then answers as PostgreSQL does.
   */
  private async useServerSession(tenant: TenantRoute, address: BackendAddress, user: string, database: string, settings: Map<string, string>, rest: Buffer, connectOwn: (why?: string) => void): Promise<void> {
    const pool = this.router.pool ?? this.router.remotePool;
    let session = pool.take(tenant.id, poolKey(tenant.id, database, user));
    if (session && !sameServer(session.address, address)) {
      // Kept for the tenant's old primary (before a failover): new clients go to the new one.
      session.destroy();
      pool.drop(tenant.id);
      session = undefined;
    }
    this.router.observer?.serverSession?.(session ? 'reused' : 'opened');
    if (!session) {
      // The server counts idle kept sessions against its connection limit: they are closed to make room (server-slots.ts).
      try {
        session = await this.router.openServerSession(tenant, address, user, database);
      } catch (err) {
        if (this.done) return;
        if (err instanceof ServerFull) {
          this.refuse({ reason: 'too_many_connections', message: err.message, hint: err.hint });
          return;
        }
        if (err instanceof ServerSessionError) {
          this.refuseAsServer(err.fields);
          return;
        }
        this.router.log.warn('backend connection failed', { tenant: tenant.id, error: (err as Error).message });
        this.refuse({ reason: 'tenant_unavailable', message: `the server of tenant ${tenant.id} is not available` });
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
        if (!this.done) connectOwn(`a start-up parameter could not be set (${set?.error?.M ?? 'no answer'})`);
        return;
      }
    }
    if (this.done) {
      void recycle(pool, session, TX_IDLE);
      return;
    }
    if (this.backendAsked) this.router.observer?.backendConnect((performance.now() - this.backendAsked.began) / 1000, this.backendAsked.woke);
    session.detach();
    this.serverSession = session;
    this.backend = session.socket;
    const target = session.cancelTarget;
    this.greet(session.greeting(), target ?? (() => undefined), target?.secret.length ?? 4);
    const state = new SessionState(session.params);
    state.onDatabaseStatement = () => pool.drop(tenant.id);
    state.onTransactionEnd = () => this.router.countTransaction(tenant.id);
    this.sessionState = state;
    this.readyForQuery = true;
    this.result = 'ok';
    clearTimeout(this.timer);
    const backend = session.socket;
    const onClient = (chunk: Buffer): void => {
      const forward = state.fromClient(chunk);
      if (forward === 0) return;
      if (!backend.write(forward === chunk.length ? chunk : chunk.subarray(0, forward))) {
        this.socket.pause();
        backend.once('drain', () => this.socket.resume());
      }
    };
    const onServer = (chunk: Buffer): void => {
      state.fromServer(chunk);
      this.onBackendData(backend, chunk);
    };
    // The server ended the session (or died): end the client's side cleanly (TLS close_notify), as a backend of its own would.
    const onServerEnd = (): void => { this.socket.end(); };
    const onServerGone = (): void => {
      if (this.socket.writableEnded) setTimeout(() => this.destroy(), 1_000).unref();
      else this.destroy();
    };
    this.unpipeSession = () => {
      this.socket.off('data', onClient);
      backend.off('data', onServer);
      backend.off('end', onServerEnd);
      backend.off('close', onServerGone);
    };
    this.socket.on('data', onClient);
    backend.on('data', onServer);
    backend.on('end', onServerEnd);
    backend.on('close', onServerGone);
    if (rest.length > 0) onClient(rest);
    this.socket.resume(); // paused since authentication
  }

  private unpipeSession: (() => void) | undefined;

  /** An ErrorResponse the server gave at start-up, passed on as it is (no such database, say). */
  private refuseAsServer(fields: ErrorFields): void {
    if (this.done) return;
    this.result = 'refused';
    clearTimeout(this.timer);
    this.socket.end(serializeErrorResponse(fields), () => this.destroy());
    setTimeout(() => this.destroy(), 1_000).unref();
  }

  // --- phase 3b: authentication, the router's own ---

  /**
   * SCRAM-SHA-256(-PLUS) with the client against the role's verifier. On
   * success AuthenticationSASLFinal has been sent (the server's AuthenticationOk
   * follows) and the bytes the client sent after its last SASL message are
   * returned; on failure the client was refused (after a delay) and the result is undefined.
   */
  private async authenticate(tenantId: string, user: string, rest: Buffer): Promise<{ verifier: ScramVerifier; live: boolean; rest: Buffer } | undefined> {
    const began = performance.now();
    // PostgreSQL would cut a longer name to its first 63 bytes; no role can be checked under one name and
    // logged in under another, so a longer name can never log in (the mock exchange runs for it).
    const role = Buffer.byteLength(user, 'utf8') > MAX_NAME_BYTES ? undefined : user;
    const found = role === undefined ? { verifier: undefined, live: false } : await this.router.verifier(tenantId, role);
    if (this.done || this.result === 'refused') return undefined;
    const scram = new ScramServer({ verifier: found.verifier, mockSalt: mockSalt(this.router.authSecret, tenantId, user), certificateHash: this.certificateHash });
    const messages = new ClientMessages(this.socket, rest);
    try {
      this.socket.write(authMessage(AUTH_SASL, Buffer.from(`${scram.mechanisms.join('\0')}\0\0`)));
      const initial = await messages.next();
      if (!initial) return this.gone();
      const { mechanism, data } = parseSASLInitialResponse(initial);
      this.socket.write(authMessage(AUTH_SASL_CONTINUE, Buffer.from(scram.start(mechanism, data))));
      const response = await messages.next();
      if (!response) return this.gone();
      if (response.type !== FrontendMessage.SASLResponse) throw new ScramError('08P01', `expected SASL response, got message type ${response.type}`);
      const serverFinal = scram.finish(response.payload.toString('utf8'));
      if (serverFinal === undefined || !found.verifier) {
        messages.stop(); // nothing more is read from this client
        this.router.observer?.authentication('failed', (performance.now() - began) / 1000);
        await this.failLogin(tenantId, user, found.verifier ? 'wrong password' : 'no such login role with a SCRAM password');
        return undefined;
      }
      this.socket.write(authMessage(AUTH_SASL_FINAL, Buffer.from(serverFinal)));
      this.router.observer?.authentication('ok', (performance.now() - began) / 1000);
      return { verifier: found.verifier, live: found.live, rest: messages.stop() };
    } catch (err) {
      messages.stop();
      if (this.done) return undefined;
      this.router.observer?.authentication('protocol_error', (performance.now() - began) / 1000);
      if (err instanceof ScramError) {
        this.refuse({ reason: 'protocol_violation', code: err.code, message: err.message, detail: err.detail });
      } else {
        this.refuse({ reason: 'protocol_violation', message: `invalid authentication message: ${(err as Error).message}` });
      }
      return undefined;
    }
  }

  /** The client went away mid-exchange. */
  private gone(): undefined {
    this.destroy();
    return undefined;
  }

  /** PostgreSQL's answer to a failed login, after a wait that grows with recent failures from the address or against the tenant. */
  private async failLogin(tenantId: string, user: string, why: string): Promise<void> {
    const delay = this.router.failures.note([`a:${this.raw.remoteAddress ?? ''}`, `t:${tenantId}`]);
    this.router.log.info('login failed', { tenant: tenantId, role: user, address: this.raw.remoteAddress, why });
    await new Promise((resolve) => setTimeout(resolve, delay));
    this.refuse({ reason: 'auth_failed', message: `password authentication failed for user "${user}"` });
  }

  // --- phase 4: authentication relay, phase 5: pipe ---

  /** Whether `backend` is a connection to a server on this host (closed by closeServerSocket, its slot counted). */
  private backendLocal = false;

  /**
   * A backend of the client's own, its start-up (`first`) relayed, into a slot of the server's
   * (server-slots.ts). Should the server still refuse for want of a slot before it said anything
   * else, it is asked again until the slot wait's end; then pgs refuses (53300 naming the limit).
   */
  private async connectOwnBackend(tenant: TenantRoute, socketPath: string, first: Buffer): Promise<void> {
    const deadline = Date.now() + this.router.slotTimeoutMs;
    for (;;) {
      let release: () => void;
      try {
        release = await this.router.serverSlot(tenant, deadline);
      } catch (err) {
        if (err instanceof ServerFull) this.refuse({ reason: 'too_many_connections', message: err.message, hint: err.hint });
        else this.destroy();
        return;
      }
      if (this.done) {
        release();
        return;
      }
      const noSlot = await new Promise<boolean>((resolve) => this.connectBackend(socketPath, first, release, resolve));
      if (!noSlot || this.done) return;
      if (Date.now() >= deadline) {
        const full = new ServerFull(tenant.id, tenant.maxConnections ?? 0);
        this.refuse({ reason: 'too_many_connections', message: full.message, hint: full.hint });
        return;
      }
      this.router.log.info('the server has no free slot yet; trying again', { tenant: tenant.id });
      await new Promise((r) => setTimeout(r, 20));
      if (this.done) return;
    }
  }

  /**
   * Connects, relays the start-up, then pipes. `started(true)`: the server's first answer was a
   * refusal for want of a slot (nothing of it reached the client; the connection is being
   * closed), `started(false)`: anything else.
   */
  private connectBackend(socketPath: string, first: Buffer, release: () => void, started: (noSlot: boolean) => void): void {
    const backend = net.connect(socketPath);
    this.router.slots.bind(backend, release);
    this.backend = backend;
    this.backendLocal = true;
    const reader = new MessageReader();
    let answered = false;
    const answer = (noSlot: boolean): void => {
      if (answered) return;
      answered = true;
      started(noSlot);
    };
    backend.once('connect', () => {
      if (this.backendAsked) this.router.observer?.backendConnect((performance.now() - this.backendAsked.began) / 1000, this.backendAsked.woke);
      backend.write(first);
    });
    backend.on('error', (err) => {
      answer(false);
      if (this.backend !== backend) return; // one given up (the server had no slot), being closed
      if (!this.readyForQuery) {
        this.router.log.warn('backend connection failed', { tenant: this.tenantId, error: err.message });
        this.refuse({ reason: 'tenant_unavailable', message: `the server of tenant ${this.tenantId} is not available` });
      } else {
        this.destroy();
      }
    });
    backend.on('close', () => {
      answer(false);
      if (this.readyForQuery || this.done || this.backend !== backend) return;
      if (!this.forwarded) {
        this.refuse({ reason: 'tenant_unavailable', message: `the server of tenant ${this.tenantId} closed the connection during start-up` });
        return;
      }
      // What the server said (an authentication error, say) was forwarded: end, and make sure we let go.
      this.socket.end();
      setTimeout(() => this.destroy(), 1_000).unref();
    });
    const onBackendData = (chunk: Buffer): void => {
      reader.push(chunk);
      try {
        for (let message = reader.next(); message; message = reader.next()) {
          if (!this.forwarded) {
            if (message.type === BackendMessage.ErrorResponse && serverHasNoSlot(parseErrorFields(message.payload))) {
              // Not the client's to see: pgs asks again (or refuses with its own limit).
              backend.off('data', onBackendData);
              this.backend = undefined;
              this.backendLocal = false;
              closeServerSocket(backend);
              answer(true);
              return;
            }
            // The client's bytes go to the server from its first answer on (the router did the authentication: the server's start-up needs none of them).
            this.forwarded = true;
            answer(false);
            this.socket.on('data', this.onClientDataDuringAuth);
            this.socket.resume();
          }
          if (message.type === BackendMessage.BackendKeyData) {
            this.socket.write(this.rewriteKey(socketPath, message.payload));
          } else if (message.type === BackendMessage.ReadyForQuery && this.loginNotice !== undefined) {
            this.socket.write(noticeBytes(this.loginNotice));
            this.socket.write(typed(message.type, message.payload));
          } else {
            this.socket.write(typed(message.type, message.payload));
          }
          if (message.type === BackendMessage.ReadyForQuery) {
            backend.off('data', onBackendData);
            const leftover = reader.drain();
            if (leftover.length > 0) {
              this.boundaries.consume(leftover);
              this.socket.write(leftover);
            }
            this.startPipe(backend);
            return;
          }
        }
      } catch (err) {
        answer(false);
        this.router.log.warn('backend protocol error', { tenant: this.tenantId, error: (err as Error).message });
        this.destroy();
      }
    };
    backend.on('data', onBackendData);
  }

  private readyForQuery = false;
  private backendAsked: { began: number; woke: boolean } | undefined;

  private forwarded = false;

  private readonly onClientDataDuringAuth = (chunk: Buffer): void => {
    const backend = this.backend;
    if (backend && !backend.write(chunk)) {
      // Back-pressure before authentication too: a client cannot make the router buffer without bound.
      this.socket.pause();
      backend.once('drain', () => this.socket.resume());
    }
  };

  /** Hands the client our own key; the real one stays here for cancel requests. */
  private rewriteKey(address: BackendAddress, payload: Buffer): Buffer {
    const secret = Buffer.from(payload.subarray(4));
    return this.ownKey({ address, pid: payload.readInt32BE(0), secret }, secret.length);
  }

  /** A BackendKeyData of the router's own, whose cancel requests go to `route`. */
  private ownKey(route: CancelRoute, secretLength: number): Buffer {
    if (this.cancelKey !== undefined) this.router.unregisterCancelKey(this.cancelKey);
    const mine = this.router.registerCancelKey(route, secretLength);
    if (this.done) {
      this.router.unregisterCancelKey(mine.key); // forget() already ran
    } else {
      this.cancelKey = mine.key;
    }
    const out = Buffer.allocUnsafe(4 + mine.secret.length);
    out.writeInt32BE(mine.pid, 0);
    mine.secret.copy(out, 4);
    return typed(BackendMessage.BackendKeyData, out);
  }

  private startPipe(backend: net.Socket): void {
    this.readyForQuery = true;
    this.result = 'ok';
    clearTimeout(this.timer);
    this.socket.off('data', this.onClientDataDuringAuth);
    this.socket.pipe(backend);
    // Server to client by hand rather than pipe(): the router keeps track of where the
    // server's messages end, so that a FATAL of its own can go in between (closeWith).
    backend.on('data', (chunk: Buffer) => this.onBackendData(backend, chunk));
    backend.on('end', () => this.socket.end());
  }

  private readonly boundaries = new MessageBoundaries((type) => {
    if (type === BackendMessage.ReadyForQuery && this.tenantId !== undefined && this.readyForQuery) this.router.countTransaction(this.tenantId);
  });
  private closingWith: Refusal | undefined;

  /** A WARNING for this session: now if the server's stream stands between messages, else right after the one in flight. */
  notify(message: string): void {
    if (this.done || this.closingWith) return;
    if (!this.readyForQuery) {
      this.loginNotice ??= message;
      return;
    }
    if (this.pooled) {
      this.pooled.betweenMessages(() => {
        if (!this.done && !this.closingWith && this.socket.writable) this.socket.write(noticeBytes(message));
      });
      return;
    }
    this.pendingNotice = message;
    if (this.boundaries.atBoundary) this.flushNotice();
  }

  private flushNotice(): void {
    const message = this.pendingNotice;
    this.pendingNotice = undefined;
    if (message !== undefined && this.socket.writable) this.socket.write(noticeBytes(message));
  }

  private onBackendData(backend: net.Socket, chunk: Buffer): void {
    if (this.closingWith) {
      const taken = this.boundaries.consume(chunk, true);
      if (taken > 0) this.socket.write(chunk.subarray(0, taken));
      if (this.boundaries.atBoundary || this.boundaries.broken) this.finishClose();
      return;
    }
    this.boundaries.consume(chunk);
    const flowing = this.socket.write(chunk);
    if (this.pendingNotice !== undefined && this.boundaries.atBoundary) this.flushNotice();
    if (!flowing) {
      backend.pause();
      this.socket.once('drain', () => backend.resume());
    }
  }

  /**
   * Ends the session with an ErrorResponse of the router's own: at once when
   * the server's stream stands between two messages, else right after the
   * message in flight (given at most a second). Before the session is
   * established this is a refusal like any other.
   */
  closeWith(refusal: Refusal): void {
    if (this.done || this.closingWith) return;
    if (!this.readyForQuery) {
      this.refuse(refusal);
      return;
    }
    this.closingWith = refusal;
    this.router.log.info('session closed', { tenant: this.tenantId, reason: refusal.reason, message: refusal.message });
    if (this.pooled) {
      this.pooled.betweenMessages(() => this.finishClose());
      setTimeout(() => this.destroy(), 1_000).unref();
    } else if (this.boundaries.atBoundary) this.finishClose();
    else setTimeout(() => this.destroy(), 1_000).unref();
  }

  private finishClose(): void {
    const refusal = this.closingWith;
    if (!refusal || this.done) return;
    this.backend?.pause();
    if (this.pooled) this.socket.off('data', this.pooled.onData);
    this.socket.unpipe();
    if (this.socket.writable) {
      this.socket.end(refusalBytes(refusal), () => this.destroy());
      setTimeout(() => this.destroy(), 1_000).unref();
    } else {
      this.destroy();
    }
  }
}
