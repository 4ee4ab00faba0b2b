import net from 'node:net';
import { AUTH_OK, BackendMessage, PROTOCOL_3_0 } from '../../protocol/constants.js';
import { MessageReader, parseErrorFields, serializeQuery, typed, type ErrorFields } from '../../protocol/messages.js';
import { encodeStartup } from '../../protocol/startup.js';
import { openRemoteBackend, RemoteLoginError } from '../remote-backend.js';
import { isRemote, type BackendAddress } from './backend-address.js';
import { cancelOn } from './cancel-request.js';
import { keepParameterStatus } from './parameter-status.js';

/**
 * Server sessions the router keeps for reuse ("warm" sessions): a backend of a
 * tenant's server, logged in as one role to one database over the unix socket,
 * idle, with no state of any client left in it. A client authenticated by the
 * router gets one that is already there instead of waiting for a backend to
 * start (~20 ms of fork, catalog caches and start-up on this kind of host), and
 * gives it back when it leaves, after `DISCARD ALL`.
 *
 * A session is opened with nothing in its start-up packet but the role and the
 * database, so that what `RESET ALL` returns to is the server's defaults and
 * never an earlier client's start-up parameters; each client's own parameters
 * are then set with `set_config`, as the server would have applied them from
 * its start-up packet.
 */
export class ServerSession {
  /** ParameterStatus values as the server last reported them (its start-up, and every change since). */
  readonly params = new Map<string, string>();
  /** BackendKeyData payload: the backend's pid and cancel secret. */
  backendKey: Buffer = Buffer.alloc(0);
  private readonly reader = new MessageReader();
  private waiter: { resolve: () => void; reject: (err: Error) => void } | undefined;
  private closed = false;
  private closeReason = 'the server closed the connection';

  private constructor(readonly socket: net.Socket, readonly key: string, readonly tenant: string, readonly address: BackendAddress) {
    socket.on('data', this.onData);
    socket.on('error', (err) => this.fail(err.message));
    socket.on('close', () => this.fail('the server closed the connection'));
  }

  /**
   * Opens a backend for `role` in `database` and reads its start-up to the
   * first ReadyForQuery. Over the network the router logs in as the address's
   * own role (the database's owner) whatever the client's role is.
   */
  static async open(address: BackendAddress, tenant: string, role: string, database: string, timeoutMs: number, onSocket?: (socket: net.Socket) => void): Promise<ServerSession> {
    if (isRemote(address)) {
      let remote;
      try {
        remote = await openRemoteBackend({ ...address, database: address.database ?? database }, new Map(), timeoutMs);
      } catch (err) {
        if (err instanceof RemoteLoginError && err.sqlState) throw new ServerSessionError({ S: 'FATAL', V: 'FATAL', C: err.sqlState, M: err.message });
        throw err;
      }
      const session = new ServerSession(remote.socket, poolKey(tenant, database, role), tenant, address);
      for (const [name, value] of remote.params) session.params.set(name, value);
      session.backendKey = remote.backendKey;
      if (remote.rest.length > 0) session.reader.push(remote.rest);
      return session;
    }
    const socket = net.connect(address);
    onSocket?.(socket);
    const session = new ServerSession(socket, poolKey(tenant, database, role), tenant, address);
    const timer = setTimeout(() => session.fail(`the server did not answer within ${timeoutMs} ms`), timeoutMs);
    try {
      socket.write(encodeStartup(PROTOCOL_3_0, new Map([['user', role], ['database', database]])));
      const error = await session.readUntilReady((m) => {
        if (m.type === BackendMessage.Authentication && m.payload.readInt32BE(0) !== AUTH_OK) {
          throw new Error(`the server asked for authentication (code ${m.payload.readInt32BE(0)})`);
        }
        if (m.type === BackendMessage.BackendKeyData) session.backendKey = Buffer.from(m.payload);
      });
      if (error) throw new ServerSessionError(error);
      return session;
    } catch (err) {
      session.destroy();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  get usable(): boolean {
    return !this.closed && !this.socket.destroyed;
  }

  /**
   * One simple query, read to its ReadyForQuery; ParameterStatus messages update
   * `params`. Returns the first ErrorResponse's fields, if any, and the
   * transaction status ReadyForQuery gave.
   */
  async query(sql: string): Promise<{ error: ErrorFields | undefined; status: number }> {
    this.socket.write(serializeQuery(sql));
    let status = 0;
    const error = await this.readUntilReady((m) => {
      if (m.type === BackendMessage.ReadyForQuery) status = m.payload[0] ?? 0;
    });
    return { error, status };
  }

  /** Stops reading here: from now on the socket's data goes wherever the caller sends it. */
  detach(): void {
    this.socket.off('data', this.onData);
    const rest = this.reader.drain();
    if (rest.length > 0) this.socket.unshift(rest);
  }

  /** Reads here again (a session a client gave back). */
  attach(): void {
    this.socket.on('data', this.onData);
  }

  /** Where the server's bytes go while a client holds the session (transaction pooling: no listener is added or removed per transaction). */
  private sink: ((chunk: Buffer) => void) | undefined;
  /** Called once if the session ends while lent. */
  private onLentGone: (() => void) | undefined;

  /** Sends the server's bytes to `sink` from now on (and any it had read but not taken), and `gone` if the session ends. */
  lend(sink: (chunk: Buffer) => void, gone: () => void): void {
    this.sink = sink;
    this.onLentGone = gone;
    const rest = this.reader.drain();
    if (rest.length > 0) sink(rest);
  }

  /** Reads the server's bytes here again. */
  reclaim(): void {
    this.sink = undefined;
    this.onLentGone = undefined;
    if (this.socket.isPaused()) this.socket.resume();
  }

  /**
   * Closes the session. On this host the server is told (end of stream) and the socket stays
   * open until the server closes its side, that is until its backend has exited and given
   * back its connection slot (server-slots.ts counts the slot until then).
   */
  destroy(): void {
    if (this.closed) {
      if (isRemote(this.address)) this.socket.destroy();
      return;
    }
    this.closed = true;
    if (isRemote(this.address)) {
      this.socket.destroy();
      return;
    }
    closeServerSocket(this.socket);
    // As a destroyed socket would: whoever waits on the session learns at once that it is gone.
    setImmediate(() => this.settle('the connection was closed by pgs'));
  }

  /** Where a cancel request for this backend goes, once its key is known. */
  get cancelTarget(): { address: BackendAddress; pid: number; secret: Buffer } | undefined {
    return this.backendKey.length >= 8 ? { address: this.address, pid: this.backendKey.readInt32BE(0), secret: this.backendKey.subarray(4) } : undefined;
  }

  /** Cancels what the backend runs now (PostgreSQL notices a gone client only when it writes). */
  cancel(): void {
    const target = this.cancelTarget;
    if (this.usable && target) cancelOn(target.address, target.pid, target.secret);
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.sink) {
      this.sink(chunk);
      return;
    }
    this.reader.push(chunk);
    this.waiter?.resolve();
  };

  private fail(reason: string): void {
    if (!this.closed) this.closeReason = reason;
    this.closed = true;
    this.socket.destroy();
    this.settle(reason);
  }

  /** Rejects the reader waiting, tells the client the session was lent to. */
  private settle(reason: string): void {
    if (!this.closed) this.closeReason = reason;
    this.closed = true;
    this.waiter?.reject(new Error(this.closeReason));
    const gone = this.onLentGone;
    this.onLentGone = undefined;
    gone?.();
  }

  /** Reads messages to the next ReadyForQuery; `each` sees every one. */
  private async readUntilReady(each: (m: { type: number; payload: Buffer }) => void): Promise<ErrorFields | undefined> {
    let error: ErrorFields | undefined;
    for (;;) {
      for (let m = this.reader.next(); m; m = this.reader.next()) {
        if (m.type === BackendMessage.ParameterStatus) {
          keepParameterStatus(this.params, m.payload);
        } else if (m.type === BackendMessage.ErrorResponse) {
          error ??= parseErrorFields(m.payload);
          if (error.S === 'FATAL' || error.S === 'PANIC') {
            // The server ends the session: its socket closes when its backend is gone (and its slot free).
            this.closeReason = error.M ?? 'the server ended the session';
            this.destroy();
            return error;
          }
        }
        each(m);
        if (m.type === BackendMessage.ReadyForQuery) return error;
      }
      if (this.closed) throw new Error(this.closeReason);
      await new Promise<void>((resolve, reject) => {
        this.waiter = { resolve, reject };
      }).finally(() => {
        this.waiter = undefined;
      });
    }
  }

  /** The start-up messages a client sees for this session: AuthenticationOk and every ParameterStatus. */
  greeting(): Buffer {
    const parts = [typed(BackendMessage.Authentication, Buffer.from([0, 0, 0, 0]))];
    for (const [name, value] of this.params) parts.push(typed(BackendMessage.ParameterStatus, Buffer.from(`${name}\0${value}\0`)));
    return Buffer.concat(parts);
  }
}

/**
 * Ends a connection to a server on this host without letting go of it first:
 * what the server still sends is read and dropped, the stream is ended (the
 * backend exits at end of stream, or once its query is cancelled), and the
 * socket closes when the server closes its side: PostgreSQL keeps it open
 * until its backend is gone, so that its slot is free again by then. A server
 * that does not close within `graceMs` is cut off.
 */
export function closeServerSocket(socket: net.Socket, graceMs = 10_000): void {
  if (socket.destroyed) return;
  socket.removeAllListeners('data');
  socket.on('data', () => undefined);
  socket.on('error', () => socket.destroy());
  if (socket.isPaused()) socket.resume();
  const timer = setTimeout(() => socket.destroy(), graceMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  socket.end();
}

/** The server refused the session at start-up (no such database, too many connections…): its own ErrorResponse. */
export class ServerSessionError extends Error {
  constructor(readonly fields: ErrorFields) {
    super(fields.M ?? 'the server refused the session');
  }
}

/** What a kept session is kept under, and what a client asks for: its tenant, database and role. */
export function poolKey(tenant: string, database: string, role: string): string {
  return `${tenant}\0${database}\0${role}`;
}
