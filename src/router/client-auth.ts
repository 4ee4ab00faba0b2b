import type net from 'node:net';
import type { ScramVerifier } from '../auth/scram.js';
import { ScramError, ScramServer, mockSalt } from '../auth/scram-server.js';
import { AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL, BackendMessage, FrontendMessage } from '../protocol/constants.js';
import { MessageReader, typed, type Message } from '../protocol/messages.js';
import type { Refusal } from '../protocol/refusals.js';
import type { RouterObserver } from './contract.js';

/** NAMEDATALEN - 1: the longest role name PostgreSQL keeps. */
const MAX_NAME_BYTES = 63;

export interface ClientAuthentication {
  /** The client's (TLS) socket, paused since its start-up packet. */
  socket: net.Socket;
  tenantId: string;
  user: string;
  /** What the client sent after its start-up packet. */
  rest: Buffer;
  /** tls-server-end-point data of the certificate the client was served (for SCRAM-SHA-256-PLUS). */
  certificateHash: Buffer | undefined;
  /** The secret of the mock exchange's salts. */
  authSecret: Buffer;
  verifier: (role: string) => Promise<{ verifier: ScramVerifier | undefined; live: boolean }>;
  observer: RouterObserver | undefined;
  /** Whether the connection still waits on the exchange (not closed or refused meanwhile). */
  waiting: () => boolean;
}

/**
 * How the exchange ended: `ok` (AuthenticationSASLFinal was sent; `rest` is what the client sent
 * after its last SASL message), `failed` (the password or role is wrong: the client is yet to be
 * told), `refused` (a protocol violation), `gone` (the client went away mid-exchange), or
 * `abandoned` (the connection was closed or refused meanwhile: nothing is left to do).
 */
export type ClientLogin =
  | { kind: 'ok'; verifier: ScramVerifier; live: boolean; rest: Buffer }
  | { kind: 'failed'; why: string }
  | { kind: 'refused'; refusal: Refusal }
  | { kind: 'gone' }
  | { kind: 'abandoned' };

/**
 * SCRAM-SHA-256(-PLUS) with the client against the role's verifier; a role
 * without one (or none at all) gets the same exchange with a mock salt, so that
 * whether a role exists cannot be told from the outside.
 */
export async function authenticateClient(auth: ClientAuthentication): Promise<ClientLogin> {
  const { socket, tenantId, user, observer } = auth;
  const began = performance.now();
  const seconds = (): number => (performance.now() - began) / 1000;
  // PostgreSQL would cut a longer name to its first 63 bytes; no role can be checked under one name and
  // logged in under another, so a longer name can never log in (the mock exchange runs for it).
  const role = Buffer.byteLength(user, 'utf8') > MAX_NAME_BYTES ? undefined : user;
  const found = role === undefined ? { verifier: undefined, live: false } : await auth.verifier(role);
  if (!auth.waiting()) return { kind: 'abandoned' };
  const scram = new ScramServer({ verifier: found.verifier, mockSalt: mockSalt(auth.authSecret, tenantId, user), certificateHash: auth.certificateHash });
  const messages = new ClientMessages(socket, auth.rest);
  try {
    socket.write(authMessage(AUTH_SASL, Buffer.from(`${scram.mechanisms.join('\0')}\0\0`)));
    const initial = await messages.next();
    if (!initial) return { kind: 'gone' };
    const { mechanism, data } = parseSASLInitialResponse(initial);
    socket.write(authMessage(AUTH_SASL_CONTINUE, Buffer.from(scram.start(mechanism, data))));
    const response = await messages.next();
    if (!response) return { kind: 'gone' };
    if (response.type !== FrontendMessage.SASLResponse) throw new ScramError('08P01', `expected SASL response, got message type ${response.type}`);
    const serverFinal = scram.finish(response.payload.toString('utf8'));
    if (serverFinal === undefined || !found.verifier) {
      messages.stop(); // nothing more is read from this client
      observer?.authentication('failed', seconds());
      return { kind: 'failed', why: found.verifier ? 'wrong password' : 'no such login role with a SCRAM password' };
    }
    socket.write(authMessage(AUTH_SASL_FINAL, Buffer.from(serverFinal)));
    observer?.authentication('ok', seconds());
    return { kind: 'ok', verifier: found.verifier, live: found.live, rest: messages.stop() };
  } catch (err) {
    messages.stop();
    if (!auth.waiting()) return { kind: 'abandoned' };
    observer?.authentication('protocol_error', seconds());
    const refusal: Refusal = err instanceof ScramError
      ? { reason: 'protocol_violation', code: err.code, message: err.message, detail: err.detail }
      : { reason: 'protocol_violation', message: `invalid authentication message: ${(err as Error).message}` };
    return { kind: 'refused', refusal };
  }
}

/** An Authentication message: its code, then its data. */
export function authMessage(code: number, data: Buffer): Buffer {
  const payload = Buffer.allocUnsafe(4 + data.length);
  payload.writeInt32BE(code, 0);
  data.copy(payload, 4);
  return typed(BackendMessage.Authentication, payload);
}

/** SASLInitialResponse: the mechanism (a C string), then the length of the data (-1: none) and the data. */
export function parseSASLInitialResponse(message: Message): { mechanism: string; data: string } {
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
