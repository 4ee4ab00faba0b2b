import type { Log } from '../core/log.js';
import type { ScramVerifier } from '../auth/scram.js';
import type { RefusalReason } from '../protocol/refusals.js';
import type { BackendAddress } from './server-sessions.js';
import type { ShedInterval, ShedWhy } from './admission.js';

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
