import type net from 'node:net';
import type tls from 'node:tls';
import type { ErrorFields } from '../protocol/messages.js';
import type { Refusal } from '../protocol/refusals.js';
import type { CancelRoute } from './cancel-keys.js';

/**
 * A logged-in client's connection as what serves it sees it (own-backend.ts,
 * kept-session.ts, pooled-client.ts): its socket, how to refuse or end it, and
 * how to tell it that its session is established.
 */
export interface ClientSide {
  /** The client's TLS socket, paused since authentication. */
  readonly socket: net.Socket | tls.TLSSocket;
  /** Closed: nothing more is done for it. */
  readonly gone: boolean;
  /** Being ended with pgs's own FATAL (closeWith). */
  readonly closing: boolean;
  /** Its session reached ReadyForQuery. */
  readonly established: boolean;
  /** A warning it gets right after logging in. */
  readonly loginNotice: string | undefined;
  /** A FATAL of pgs's own, then closed. */
  refuse(refusal: Refusal): void;
  /** An ErrorResponse the server gave at start-up, passed on as it is (no such database, say). */
  refuseAsServer(fields: ErrorFields): void;
  destroy(): void;
  /** A BackendKeyData of the router's own, whose cancel requests go to `route`. */
  ownKey(route: CancelRoute, secretLength: number): Buffer;
  /** The end of a start-up for a client served from a session the router holds (client-messages.ts greetingBytes), written. */
  greet(parameters: Buffer, route: CancelRoute, secretLength: number): void;
  /** A server was reached for it (the observer hears how long that took since it asked). */
  backendReached(): void;
  /** Its session is established, served by `server`: no more start-up deadline. */
  establish(server: ServerSide): void;
  /** What serves it from now on (before `establish`, for a backend still starting). */
  serve(server: ServerSide): void;
}

/** What serves a client: how pgs's own messages get in between the server's, and what becomes of it when the client goes. */
export interface ServerSide {
  /** A WARNING for the client: now if the server's stream stands between two messages, else right after the one in flight. */
  notify(message: string): void;
  /** Calls `then` once the server's stream stands between two messages (now, if it does). */
  betweenMessages(then: () => void): void;
  /** Nothing more goes from one to the other (pgs's FATAL is next). */
  stop(): void;
  /** The client is gone: the server's side is kept for reuse, given back, or closed. `closing`: pgs ended the session. */
  release(closing: boolean): void;
}
