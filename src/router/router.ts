import type net from 'node:net';
import type tls from 'node:tls';
import type { ScramVerifier } from '../auth/scram.js';
import { QUIET_LOG } from '../core/log.js';
import type { RefusalReason } from '../protocol/refusals.js';
import { AuthFailures } from './auth-failures.js';
import { CancelKeys } from './cancel-keys.js';
import { ClientConnection, type ClientContext } from './client-connection.js';
import type { AddressAllowList, RouterBackends, RouterLog, RouterObserver, RouterOptions, TenantRoute } from './contract.js';
import { ServerAccess } from './server-access.js';
import { cancelOn, type BackendAddress } from './server-sessions.js';
import { StartupGate, type Sheddable } from './startup-gate.js';
import { TenantConnections } from './tenant-connections.js';
import { TlsFront } from './tls-front.js';
import type { Startups } from './admission.js';

export { BackendUnavailable } from './contract.js';
export type { AddressAllowList, AuthResult, ConnectionResult, RouterBackends, RouterLog, RouterObserver, RouterOptions, TenantRoute } from './contract.js';
export { AuthFailures } from './auth-failures.js';

/**
 * The PostgreSQL wire protocol up to the end of start-up, then a byte pipe.
 * It owns TLS, routing by SNI host name, authentication (SCRAM-SHA-256 with
 * the client itself, before any server is woken), access control, cancel
 * routing, limits and time-outs. It asks `RouterBackends` for a role's
 * verifier and for a ready server's socket, and never starts processes itself.
 * This class holds the parts together (the listener, admission, cancel keys,
 * the tenants' connections, the server sessions) and is what the daemon sees;
 * each connection is a ClientConnection (client-connection.ts).
 */
export class Router implements ClientContext {
  readonly backends: RouterBackends;
  readonly front: TlsFront;
  readonly gate: StartupGate;
  readonly cancels = new CancelKeys();
  readonly tenants: TenantConnections<ClientConnection>;
  readonly servers: ServerAccess;
  private readonly handshakeTimeoutMs: number;
  readonly startupPacketTimeoutMs: number;
  readonly authTimeoutMs: number;
  readonly reservedUsers: ReadonlySet<string>;
  readonly log: RouterLog;
  readonly observer: RouterObserver | undefined;
  readonly authSecret: Buffer;
  readonly failures: AuthFailures;
  private readonly clients = new Set<ClientConnection>();
  readonly refusals = new Map<RefusalReason, number>();
  private closing = false;

  constructor(backends: RouterBackends, options: RouterOptions) {
    this.backends = backends;
    const startupTimeoutMs = options.startupTimeoutMs ?? 10_000;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? startupTimeoutMs;
    this.startupPacketTimeoutMs = options.startupPacketTimeoutMs ?? startupTimeoutMs;
    this.authTimeoutMs = options.authTimeoutMs ?? 60_000;
    this.tenants = new TenantConnections(options.maxConnections ?? 10_000, options.maxConnectionsPerTenant ?? 1_000);
    this.reservedUsers = new Set(options.reservedUsers ?? []);
    this.log = options.log ?? QUIET_LOG;
    this.observer = options.observer;
    this.gate = new StartupGate({
      maxPending: options.maxPendingStartups ?? 1_000,
      maxPerAddress: options.maxStartupsPerAddress ?? 64,
      ...(options.shedIntervalMs !== undefined ? { intervalMs: options.shedIntervalMs } : {}),
      waitMs: this.handshakeTimeoutMs,
      log: this.log,
      observer: this.observer,
      onShed: () => this.countRefusal('too_many_connections'),
      start: (socket, source) => this.startClient(socket, source),
    });
    this.front = new TlsFront(options.domain, options.cert, options.key, (socket) => this.onConnection(socket));
    this.authSecret = options.authSecret;
    this.failures = new AuthFailures(options.authDelayStepMs ?? 100, options.authDelayMaxMs ?? 2_000);
    this.servers = new ServerAccess({
      keep: options.serverSessions?.keep ?? 2,
      idleMs: options.serverSessions?.idleMs ?? 60_000,
      poolTimeoutMs: options.poolTimeoutMs ?? 30_000,
      slotTimeoutMs: options.slotTimeoutMs ?? 10_000,
      loginTimeoutMs: this.authTimeoutMs,
      log: this.log,
    });
  }

  /** Connections still starting up, by address and network (admission.ts). */
  get startups(): Startups<Sheddable> {
    return this.gate.startups;
  }

  /** Idle server sessions the router keeps for the tenant (its server counts them as sessions; they are no activity). */
  idleServerSessions(id: string): number {
    return this.servers.idleCount(id);
  }

  /** Closes the tenant's idle server sessions (before its server is suspended or stopped). */
  dropServerSessions(id: string): number {
    return this.servers.drop(id);
  }

  listen(port: number, host?: string): Promise<net.AddressInfo> {
    return this.front.listen(port, host);
  }

  /**
   * Moves to another port: the new listener is opened first, and the old one
   * closed only once it works (open connections stay). On failure nothing changed.
   */
  move(port: number, host?: string): Promise<net.AddressInfo> {
    return this.front.move(port, host);
  }

  /** The port it listens on now. */
  get port(): number {
    return this.front.port;
  }

  /** New connections are routed under this domain. */
  setDomain(domain: string): void {
    this.front.setDomain(domain);
  }

  get domain(): string {
    return this.front.domain;
  }

  /** Swaps the certificate for new connections; a pair that does not load throws and the old one stays. */
  setCertificate(cert: string | Buffer, key: string | Buffer): void {
    this.front.setCertificate(cert, key);
  }

  /** The channel-binding data of the certificate connections get now (tls-server-end-point). */
  get certificateHash(): Buffer | undefined {
    return this.front.certificateHash;
  }

  get context(): tls.SecureContext {
    return this.front.context;
  }

  /**
   * Ends every open session of a tenant (access disabled, tenant removed) with a
   * FATAL 57P01 saying `message`, sent between two of the server's messages.
   * Returns how many.
   */
  closeTenant(id: string, message = `the session of tenant ${id} was closed by pgs`): number {
    this.dropServerSessions(id);
    return this.tenants.closeAll(id, message);
  }

  /** Ends, as closeTenant does, the tenant's sessions from addresses `allow` does not let in (its allow-list changed). Returns how many. */
  closeUnallowed(id: string, allow: AddressAllowList): number {
    return this.tenants.closeUnallowed(id, allow);
  }

  /** Sends every open session of a tenant a WARNING (a NoticeResponse), between two of the server's messages. Returns how many. */
  noticeTenant(id: string, message: string): number {
    return this.tenants.notice(id, message);
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

  /** Counts a transaction of the tenant's that ended (a ReadyForQuery saying idle). */
  countTransaction(id: string): void {
    this.tenants.countTransaction(id);
  }

  /**
   * Transactions of the tenant's clients through the router that ended since the daemon started
   * (statements outside a transaction count one each; a connection with a backend of its own
   * counts every ReadyForQuery).
   */
  transactionCount(id: string): number {
    return this.tenants.transactionCount(id);
  }

  /** When a client connection to the tenant last opened or closed (ms since the epoch). */
  lastUsed(id: string): number | undefined {
    return this.tenants.lastUsed(id);
  }

  connectionCount(id?: string): number {
    return id === undefined ? this.clients.size : this.tenants.count(id);
  }

  /** Resolves once the tenant has no open session through the router (at most `timeoutMs`). */
  async drained(id: string, timeoutMs = 1_500): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.tenants.count(id) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }

  /** Stops accepting, closes every client connection, resolves when the listener is closed. */
  async close(): Promise<void> {
    this.closing = true;
    this.servers.closeAll();
    const closed = this.front.close();
    this.gate.close();
    for (const client of [...this.clients]) client.closeWith({ reason: 'shutting_down', message: 'pgs is shutting down' });
    await closed;
  }

  lookup(label: string): TenantRoute | undefined {
    return this.backends.lookup(label);
  }

  backend(id: string): Promise<{ address: BackendAddress; woke: boolean }> {
    return this.backends.backend(id);
  }

  verifier(id: string, role: string, options: { fresh?: boolean } = {}): Promise<{ verifier: ScramVerifier | undefined; live: boolean }> {
    return this.backends.verifier(id, role, options);
  }

  // --- ClientContext: used by ClientConnection ---

  isClosing(): boolean {
    return this.closing;
  }

  countRefusal(reason: RefusalReason): void {
    this.refusals.set(reason, (this.refusals.get(reason) ?? 0) + 1);
  }

  forwardCancel(pid: number, secret: Buffer): void {
    const { known, target } = this.cancels.find(pid, secret);
    this.observer?.cancelRequest(known ? 'forwarded' : 'unknown_key');
    // A forged or stale key: do nothing, say nothing (as PostgreSQL does).
    if (target) cancelOn(target.address, target.pid, target.secret);
  }

  forget(client: ClientConnection): void {
    this.clients.delete(client);
    this.gate.done(client);
    this.tenants.forget(client);
    if (client.cancelKey !== undefined) this.cancels.unregister(client.cancelKey);
  }

  private onConnection(socket: net.Socket): void {
    // Connections still starting up cost memory and a timer each: bound them, per address and in all, fairly (admission.ts).
    const remote = socket.remoteAddress;
    if (this.closing || remote === undefined) {
      socket.destroy();
      return;
    }
    this.gate.admit(socket, remote);
  }

  /** A connection's start-up begins: TLS, the start-up packet, the password. */
  private startClient(socket: net.Socket, source: { address: string; network: string }): void {
    if (this.closing || socket.destroyed) {
      socket.destroy();
      return;
    }
    const client = new ClientConnection(this, socket, source, this.handshakeTimeoutMs);
    this.clients.add(client);
    this.gate.started(client);
  }
}
