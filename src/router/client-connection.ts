import type net from 'node:net';
import tls from 'node:tls';
import type { Log } from '../core/log.js';
import { BackendMessage, PROTOCOL_3_0 } from '../protocol/constants.js';
import { serializeErrorResponse, typed, type ErrorFields } from '../protocol/messages.js';
import { refusalBytes, type Refusal, type RefusalReason } from '../protocol/refusals.js';
import { decodeFirstPacket, encodeStartup, takeEndpointOption, type FirstPacket } from '../protocol/startup.js';
import type { AuthFailures } from './auth-failures.js';
import type { CancelKeys, CancelRoute } from './cancel-keys.js';
import { authenticateClient } from './client-auth.js';
import { greetingBytes } from './client-messages.js';
import type { ClientSide, ServerSide } from './client-side.js';
import { BackendUnavailable, type ConnectionResult, type RouterBackends, type RouterObserver } from './contract.js';
import { useKeptSession } from './kept-session.js';
import { OwnBackend } from './own-backend.js';
import type { ServerAccess } from './server-access.js';
import { clientSettings, isRemote } from './server-sessions.js';
import type { StartupGate } from './startup-gate.js';
import type { TenantConnections } from './tenant-connections.js';
import { noSuchTenant, refusalBeforeLogin, tenantLabel } from './tenant-choice.js';
import type { TlsFront } from './tls-front.js';
import { usePool } from './transaction-client.js';

const SSL_ACCEPT = Buffer.from('S');
const GSSENC_REFUSE = Buffer.from('N');
const ALPN_POSTGRESQL = 'postgresql';

/** What a client connection uses of the router (router.ts is it). */
export interface ClientContext {
  readonly log: Log;
  readonly observer: RouterObserver | undefined;
  readonly front: TlsFront;
  readonly gate: StartupGate;
  readonly cancels: CancelKeys;
  readonly tenants: TenantConnections<ClientConnection>;
  readonly servers: ServerAccess;
  readonly backends: RouterBackends;
  readonly authSecret: Buffer;
  readonly failures: AuthFailures;
  readonly reservedUsers: ReadonlySet<string>;
  readonly startupPacketTimeoutMs: number;
  readonly authTimeoutMs: number;
  countRefusal(reason: RefusalReason): void;
  isClosing(): boolean;
  /** A cancel request with a key of the router's: sent on to its backend, if it has one. */
  forwardCancel(pid: number, secret: Buffer): void;
  /** The connection closed: out of every count. */
  forget(client: ClientConnection): void;
}

/**
 * One client connection through its phases: plain first packet, TLS, start-up
 * packet, routing and the router's own authentication, then whatever serves it
 * (own-backend.ts, kept-session.ts, transaction-client.ts) until it closes.
 */
export class ClientConnection implements ClientSide {
  private readonly raw: net.Socket;
  socket: net.Socket | tls.TLSSocket;
  private pending: Buffer = Buffer.alloc(0);
  private timer: NodeJS.Timeout;
  private done = false;
  private result: ConnectionResult = 'closed';
  /** Set once admitted (it counts against the tenant's connections). */
  tenantId: string | undefined;
  /** The tenant the client asked for, once known (before authentication and admission). */
  private routed: string | undefined;
  loginNotice: string | undefined;
  cancelKey: string | undefined;
  /** Where it comes from (admission.ts counts its start-up by these). */
  readonly address: string;
  readonly network: string;
  /** What serves it, once there is something. */
  private server: ServerSide | undefined;
  private readyForQuery = false;
  private closingWith: Refusal | undefined;
  private backendAsked: { began: number; woke: boolean } | undefined;
  private secured = false;
  private gssencAnswered = false;
  /** tls-server-end-point data of the certificate this connection is served. */
  private certificateHash: Buffer | undefined;

  constructor(private readonly ctx: ClientContext, socket: net.Socket, source: { address: string; network: string }, handshakeTimeoutMs: number) {
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

  get gone(): boolean {
    return this.done;
  }

  get closing(): boolean {
    return this.closingWith !== undefined;
  }

  get established(): boolean {
    return this.readyForQuery;
  }

  destroy(): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.socket.destroy();
    this.raw.destroy();
    this.server?.release(this.closingWith !== undefined);
    this.ctx.forget(this);
    this.ctx.observer?.connectionClosed(this.result, this.raw.bytesRead, this.raw.bytesWritten);
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
      this.ctx.gate.done(this); // its slot is free now, not once the goodbye is written
    } else {
      this.destroy();
    }
  }

  private onStartupTimeout(): void {
    // Before TLS the client reads plain text; during the handshake nothing can be said.
    const handshaking = this.socket instanceof tls.TLSSocket && !this.secured;
    this.refuse({ reason: 'startup_timeout', message: 'start-up took too long' }, !handshaking);
  }

  /** Sends a FATAL ErrorResponse (only over TLS, or before TLS to a plain client) and closes. */
  refuse(refusal: Refusal, send = true): void {
    if (this.done) return;
    this.result = 'refused';
    this.ctx.countRefusal(refusal.reason);
    this.ctx.log.info('refused', { reason: refusal.reason, message: refusal.message, tenant: this.tenantId ?? this.routed });
    clearTimeout(this.timer);
    this.endWith(send ? refusalBytes(refusal) : undefined);
  }

  /** An ErrorResponse the server gave at start-up, passed on as it is (no such database, say). */
  refuseAsServer(fields: ErrorFields): void {
    if (this.done) return;
    this.result = 'refused';
    clearTimeout(this.timer);
    this.endWith(serializeErrorResponse(fields));
  }

  /** Writes `last` (if the socket still takes it), ends, and closes once it is written (at most a second). */
  private endWith(last: Buffer | undefined): void {
    const socket = this.socket;
    if (last !== undefined && socket.writable) {
      socket.end(last, () => this.destroy());
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
          this.ctx.countRefusal('protocol_violation');
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
        this.ctx.forwardCancel(packet.pid, packet.secret);
        this.destroy();
        return;
      case 'startup':
        this.refuse({
          reason: 'tls_required',
          message: 'SSL/TLS required: connect with sslmode=require',
          hint: `pgs accepts only TLS connections; the host name (SNI) chooses the tenant: host=<id>-<suffix>.${this.ctx.front.domain}`,
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
    this.certificateHash = this.ctx.front.certificateHash;
    const secure = new tls.TLSSocket(this.raw, {
      isServer: true,
      secureContext: this.ctx.front.context,
      ALPNProtocols: [ALPN_POSTGRESQL],
    });
    this.socket = secure;
    const began = performance.now();
    secure.on('error', () => this.destroy());
    secure.on('close', () => this.destroy());
    secure.once('secure', () => {
      this.secured = true;
      this.ctx.observer?.tlsHandshake((performance.now() - began) / 1000);
      // Each phase has its own deadline: the start-up packet's starts now.
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.refuse({ reason: 'startup_timeout', message: 'start-up took too long: no start-up packet after the TLS handshake' }), this.ctx.startupPacketTimeoutMs);
      // Direct TLS has no SSLRequest to say "this is PostgreSQL": ALPN must (PostgreSQL 17 requires the same).
      if (direct && secure.alpnProtocol !== ALPN_POSTGRESQL) {
        this.ctx.countRefusal('protocol_violation');
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
      this.ctx.forwardCancel(packet.pid, packet.secret);
      this.destroy();
      return;
    }
    if (packet.kind !== 'startup') {
      const reason = packet.kind === 'invalid' ? packet.reason : `${packet.kind} request inside TLS`;
      this.refuse({ reason: 'protocol_violation', message: `invalid start-up packet: ${reason}` });
      return;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refuse({ reason: 'startup_timeout', message: 'authentication took too long' }), this.ctx.authTimeoutMs);
    try {
      await this.route(packet.version, packet.params, rest);
    } catch (err) {
      this.ctx.log.warn('routing failed', { tenant: this.tenantId ?? this.routed, error: (err as Error).message });
      const message = err instanceof BackendUnavailable ? err.message : `the server of tenant ${this.tenantId ?? this.routed ?? ''} is not available`;
      const hint = err instanceof BackendUnavailable ? err.hint : undefined;
      this.refuse({ reason: err instanceof BackendUnavailable ? err.reason : 'tenant_unavailable', message, ...(hint !== undefined ? { hint } : {}) });
    }
  }

  // --- phase 3: routing and authentication ---

  private async route(version: number, params: Map<string, string>, rest: Buffer): Promise<void> {
    const { ctx } = this;
    const secure = this.socket as tls.TLSSocket & { servername?: string | false };
    const sni = typeof secure.servername === 'string' ? secure.servername : undefined;
    const { endpoint, rest: options } = takeEndpointOption(params.get('options'));
    const domain = ctx.front.domain;
    const chosen = tenantLabel(sni, endpoint, domain);
    if ('refusal' in chosen) {
      this.refuse(chosen.refusal);
      return;
    }
    const tenant = ctx.backends.lookup(chosen.label);
    if (!tenant) {
      this.refuse(noSuchTenant(sni, chosen.label, domain));
      return;
    }
    this.routed = tenant.id;
    this.loginNotice = tenant.notice;
    const user = params.get('user') ?? '';
    const early = refusalBeforeLogin(tenant, this.address, user, ctx.reservedUsers, ctx.isClosing());
    if (early) {
      this.refuse(early);
      return;
    }
    // The password is checked here, before anything is woken or admitted: a failed login costs no server and no slot.
    const login = await authenticateClient({
      socket: this.socket,
      tenantId: tenant.id,
      user,
      rest,
      certificateHash: this.certificateHash,
      authSecret: ctx.authSecret,
      verifier: (role) => ctx.backends.verifier(tenant.id, role, {}),
      observer: ctx.observer,
      waiting: () => !this.done && this.result !== 'refused',
    });
    if (login.kind === 'gone') this.destroy();
    else if (login.kind === 'failed') await this.failLogin(tenant.id, user, login.why);
    else if (login.kind === 'refused') this.refuse(login.refusal);
    if (login.kind !== 'ok' || this.result === 'refused') return; // refused meanwhile: shed, or timed out
    const full = ctx.tenants.admit(this, tenant);
    if (full) {
      this.refuse(full);
      return;
    }
    ctx.gate.done(this); // logged in: never shed
    const began = performance.now();
    const { address, woke } = await ctx.backends.backend(tenant.id);
    if (this.done) return;
    if (!login.live) {
      // Checked against the copy kept while the server was down: make sure the server still has that verifier.
      const now = await ctx.backends.verifier(tenant.id, user, { fresh: true });
      if (this.done) return;
      if (!now.verifier || !now.verifier.storedKey.equals(login.verifier.storedKey)) {
        await this.failLogin(tenant.id, user, 'the password changed while the tenant was stopped');
        return;
      }
    }
    this.backendAsked = { began, woke };
    if (options === undefined) params.delete('options');
    else params.set('options', options);
    const countTransaction = (): void => ctx.tenants.countTransaction(tenant.id);
    const connectOwn = (why?: string): void => {
      if (isRemote(address)) {
        // A server on the network is logged in to by the router only: no client's start-up reaches it as it is.
        this.refuse({ reason: 'tenant_unavailable', code: '0A000', message: `tenant ${tenant.id} cannot serve this connection: ${why ?? 'protocol 3.2 is not supported for it yet (connect with protocol 3.0, the default)'}` });
        return;
      }
      ctx.observer?.serverSession?.('own');
      void new OwnBackend(this, tenant, address, ctx.servers, ctx.log, countTransaction).start(Buffer.concat([encodeStartup(version, params), login.rest]));
    };
    const settings = version === PROTOCOL_3_0 ? clientSettings(params) : undefined;
    const database = params.get('database') || user;
    const common = { tenant, user, database, rest: login.rest, servers: ctx.servers, log: ctx.log, observer: ctx.observer, countTransaction };
    if (settings && tenant.pool === 'transaction') {
      await usePool(this, { ...common, settings, backend: () => ctx.backends.backend(tenant.id), dropServerSessions: () => ctx.servers.drop(tenant.id) });
    } else if (settings && (ctx.servers.pool || isRemote(address))) {
      await useKeptSession(this, { ...common, address, settings, connectOwn });
    } else connectOwn();
  }

  /** PostgreSQL's answer to a failed login, after a wait that grows with recent failures from the address or against the tenant. */
  private async failLogin(tenantId: string, user: string, why: string): Promise<void> {
    const delay = this.ctx.failures.note([`a:${this.raw.remoteAddress ?? ''}`, `t:${tenantId}`]);
    this.ctx.log.info('login failed', { tenant: tenantId, role: user, address: this.raw.remoteAddress, why });
    await new Promise((resolve) => setTimeout(resolve, delay));
    this.refuse({ reason: 'auth_failed', message: `password authentication failed for user "${user}"` });
  }

  // --- phase 4: served (ClientSide) ---

  backendReached(): void {
    if (this.backendAsked) this.ctx.observer?.backendConnect((performance.now() - this.backendAsked.began) / 1000, this.backendAsked.woke);
  }

  serve(server: ServerSide): void {
    this.server = server;
  }

  establish(server: ServerSide): void {
    this.server = server;
    this.readyForQuery = true;
    this.result = 'ok';
    clearTimeout(this.timer);
  }

  ownKey(route: CancelRoute, secretLength: number): Buffer {
    const cancels = this.ctx.cancels;
    if (this.cancelKey !== undefined) cancels.unregister(this.cancelKey);
    const mine = cancels.register(route, secretLength);
    if (this.done) {
      cancels.unregister(mine.key); // forget() already ran
    } else {
      this.cancelKey = mine.key;
    }
    const out = Buffer.allocUnsafe(4 + mine.secret.length);
    out.writeInt32BE(mine.pid, 0);
    mine.secret.copy(out, 4);
    return typed(BackendMessage.BackendKeyData, out);
  }

  greet(parameters: Buffer, route: CancelRoute, secretLength: number): void {
    this.socket.write(greetingBytes(parameters, this.ownKey(route, secretLength), this.loginNotice));
  }

  /** A WARNING for this session: now if the server's stream stands between messages, else right after the one in flight. */
  notify(message: string): void {
    if (this.done || this.closingWith) return;
    if (!this.readyForQuery || !this.server) {
      this.loginNotice ??= message;
      return;
    }
    this.server.notify(message);
  }

  /**
   * Ends the session with an ErrorResponse of the router's own: at once when
   * the server's stream stands between two messages, else right after the
   * message in flight (given at most a second). Before the session is
   * established this is a refusal like any other.
   */
  closeWith(refusal: Refusal): void {
    if (this.done || this.closingWith) return;
    if (!this.readyForQuery || !this.server) {
      this.refuse(refusal);
      return;
    }
    this.closingWith = refusal;
    this.ctx.log.info('session closed', { tenant: this.tenantId, reason: refusal.reason, message: refusal.message });
    this.server.betweenMessages(() => this.finishClose());
    setTimeout(() => this.destroy(), 1_000).unref();
  }

  private finishClose(): void {
    const refusal = this.closingWith;
    if (!refusal || this.done) return;
    this.server?.stop();
    this.socket.unpipe();
    this.endWith(refusalBytes(refusal));
  }
}
