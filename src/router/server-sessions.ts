import net from 'node:net';
import tls from 'node:tls';
import { AUTH_OK, BackendMessage, PROTOCOL_3_0 } from '../protocol/constants.js';
import { MessageReader, parseErrorFields, serializeCancelRequest, serializeQuery, serializeSSLRequest, typed, type ErrorFields } from '../protocol/messages.js';
import { encodeStartup, splitOptions } from '../protocol/startup.js';
import { openRemoteBackend, RemoteLoginError, type RemoteTarget } from './remote-backend.js';

/**
 * Where a tenant's server is: the path of its unix socket on this host (the
 * router is trusted there), or a server over the network that the router logs
 * in to with a password of its own (a kubernetes runtime's cluster).
 */
export type BackendAddress = string | RemoteAddress;
/** A server over the network; `database`: the name the tenant's database has there, when not the one its clients ask for. */
export type RemoteAddress = Omit<RemoteTarget, 'database'> & { kind: 'remote'; database?: string };

export function isRemote(address: BackendAddress): address is RemoteAddress {
  return typeof address !== 'string';
}

/** Whether two addresses reach the same server (a failover moves a tenant's address: sessions kept for the old one are of no use). */
export function sameServer(a: BackendAddress, b: BackendAddress): boolean {
  if (!isRemote(a) || !isRemote(b)) return a === b;
  return a.host === b.host && a.port === b.port && a.servername === b.servername;
}

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

/** A ParameterStatus payload (name NUL value NUL) into `params`. */
function keepParameterStatus(params: Map<string, string>, payload: Buffer): void {
  const nul = payload.indexOf(0);
  if (nul <= 0) return;
  const end = payload.indexOf(0, nul + 1);
  params.set(payload.toString('utf8', 0, nul), payload.toString('utf8', nul + 1, end < 0 ? payload.length : end));
}

/** Sends a CancelRequest for backend `pid` to the server: over its socket, or over TLS to a server on the network. */
export function cancelOn(address: BackendAddress, pid: number, secret: Buffer): void {
  if (!isRemote(address)) {
    const socket = net.connect(address);
    socket.on('error', () => socket.destroy());
    socket.end(serializeCancelRequest(pid, secret));
    return;
  }
  const raw = net.connect({ host: address.host, port: address.port });
  raw.setTimeout(10_000, () => raw.destroy());
  raw.on('error', () => raw.destroy());
  raw.once('connect', () => raw.write(serializeSSLRequest()));
  raw.once('data', (answer: Buffer) => {
    if (answer.length !== 1 || answer[0] !== 0x53) {
      raw.destroy();
      return;
    }
    const secure = tls.connect({ socket: raw, servername: address.servername, ca: address.ca, minVersion: 'TLSv1.2' });
    secure.on('error', () => secure.destroy());
    secure.once('secureConnect', () => secure.end(serializeCancelRequest(pid, secret)));
  });
}

export function poolKey(tenant: string, database: string, role: string): string {
  return `${tenant}\0${database}\0${role}`;
}

/**
 * The idle sessions of each tenant, per (database, role), most recently used
 * last. At most `keep` idle ones per tenant; one idle for `idleMs` is closed.
 */
export class ServerSessionPool {
  private readonly idle = new Map<string, IdleSession[]>();
  private readonly watched = new WeakSet<ServerSession>();

  constructor(private readonly options: { keep: number; idleMs: number }) {}

  take(tenant: string, key: string): ServerSession | undefined {
    const list = this.idle.get(tenant) ?? [];
    for (let at = list.length - 1; at >= 0; at--) {
      const entry = list[at] as IdleSession;
      if (entry.session.key !== key) continue;
      this.forget(tenant, at);
      if (entry.session.usable) return entry.session;
    }
    return undefined;
  }

  /** Keeps a clean, idle session (or closes it when the tenant has enough). */
  give(session: ServerSession): void {
    const list = this.idle.get(session.tenant) ?? [];
    if (!session.usable || list.length >= this.options.keep) {
      session.destroy();
      return;
    }
    const timer = setTimeout(() => this.remove(session), this.options.idleMs);
    timer.unref();
    list.push({ session, timer });
    this.idle.set(session.tenant, list);
    if (!this.watched.has(session)) {
      // Gone while idle (the server stopped or was killed): out of the pool at once.
      this.watched.add(session);
      session.socket.once('close', () => this.remove(session));
    }
  }

  /** Idle sessions the tenant's server has for the pool (not a client's activity). */
  idleCount(tenant: string): number {
    return this.idle.get(tenant)?.length ?? 0;
  }

  /** Closes the tenant's idle sessions (before its server is suspended or stopped); returns how many. */
  drop(tenant: string): number {
    const list = this.idle.get(tenant) ?? [];
    this.idle.delete(tenant);
    for (const entry of list) {
      clearTimeout(entry.timer);
      entry.session.destroy();
    }
    return list.length;
  }

  /** Closes the tenant's idle session that waited longest (its server needs the connection slot); false when it has none. */
  dropOldest(tenant: string): boolean {
    const oldest = this.idle.get(tenant)?.[0];
    if (oldest) this.remove(oldest.session);
    return oldest !== undefined;
  }

  closeAll(): void {
    for (const tenant of [...this.idle.keys()]) this.drop(tenant);
  }

  private remove(session: ServerSession): void {
    const at = this.idle.get(session.tenant)?.findIndex((e) => e.session === session) ?? -1;
    if (at < 0) return;
    this.forget(session.tenant, at);
    session.destroy();
  }

  private forget(tenant: string, at: number): void {
    const list = this.idle.get(tenant) as IdleSession[];
    const [entry] = list.splice(at, 1);
    if (entry) clearTimeout(entry.timer);
    if (list.length === 0) this.idle.delete(tenant);
  }
}

interface IdleSession {
  session: ServerSession;
  timer: NodeJS.Timeout;
}

/**
 * Where a client's session stands, from both directions of its stream: whether
 * every query it sent was answered, whether it sent something that still waits
 * for a Sync, and what ReadyForQuery said last. Its session is clean enough to
 * reset and reuse only when the client ended between two exchanges. The
 * server's ParameterStatus messages keep `params` true to the session (after
 * `DISCARD ALL` the server reports only what differs from what it last sent).
 */
export class SessionState {
  /** Queries (Q), Syncs (S) and function calls (F) sent, less ReadyForQuery messages received. */
  pending = 0;
  /** Extended-protocol messages sent since the last Sync (they need one before the server is idle). */
  unsynced = false;
  /** The transaction status of the last ReadyForQuery: I, T or E. */
  status = TX_IDLE;
  /** The client sent Terminate. */
  terminated = false;
  /**
   * Called when a query or statement the client sends names DATABASE: CREATE
   * DATABASE … TEMPLATE, ALTER DATABASE … RENAME and DROP DATABASE fail while
   * another session is connected to that database, idle kept ones included, so
   * the router closes the tenant's idle ones first (PostgreSQL waits up to 5 s
   * for other sessions to go).
   */
  onDatabaseStatement: (() => void) | undefined;
  /** Called at each ReadyForQuery that says idle: a transaction (or a statement outside one) ended. */
  onTransactionEnd: (() => void) | undefined;
  private readonly client = new ClientCursor((sql) => {
    if (this.onDatabaseStatement && mentionsDatabase(sql)) this.onDatabaseStatement();
  });
  private readonly server: ServerCursor;

  constructor(params: Map<string, string>) {
    this.server = new ServerCursor(params, (status) => {
      this.pending--;
      this.status = status;
      if (status === TX_IDLE) this.onTransactionEnd?.();
    });
  }

  /**
   * Takes the client's bytes; returns how many to forward (a Terminate and
   * anything after it stay here: the server session outlives the client).
   */
  fromClient(chunk: Buffer): number {
    if (this.terminated) return 0;
    return this.client.walk(chunk, (type) => {
      switch (type) {
        case 0x51: // Query
        case 0x46: // FunctionCall
        case 0x53: // Sync
          this.pending++;
          this.unsynced = false;
          return true;
        case 0x58: // Terminate
          this.terminated = true;
          return false;
        case 0x64: // CopyData
        case 0x63: // CopyDone
        case 0x66: // CopyFail
          return true;
        default: // Parse, Bind, Describe, Execute, Close, Flush…
          this.unsynced = true;
          return true;
      }
    });
  }

  fromServer(chunk: Buffer): void {
    this.server.walk(chunk);
  }

  /** The client ended between exchanges: its session can be rolled back if need be, reset and reused. */
  get reusable(): boolean {
    return this.pending === 0 && !this.unsynced && this.client.atBoundary && this.server.atBoundary && !this.client.broken && !this.server.broken;
  }
}

export const TX_IDLE = 0x49;

function mentionsDatabase(sql: Buffer): boolean {
  return sql.indexOf('DATABASE') >= 0 || sql.indexOf('database') >= 0 || sql.indexOf('Database') >= 0;
}

/** A message header (type byte, Int32 length) gathered across chunks. */
class Header {
  private readonly bytes = Buffer.alloc(5);
  seen = 0;

  /** Takes what it still needs from `chunk` at `at`; returns how many bytes it took. */
  take(chunk: Buffer, at: number): number {
    const n = Math.min(5 - this.seen, chunk.length - at);
    chunk.copy(this.bytes, this.seen, at, at + n);
    this.seen += n;
    return n;
  }

  get complete(): boolean {
    return this.seen === 5;
  }

  /** The type and the length (which counts itself), and the header starts over. */
  finish(): { type: number; length: number } {
    this.seen = 0;
    return { type: this.bytes[0] as number, length: this.bytes.readInt32BE(1) };
  }
}

/** Message boundaries of the client's stream, with each message's type; the part of a Query or Parse in the same chunk goes to `onSql`. */
class ClientCursor {
  private remaining = 0;
  private readonly header = new Header();
  broken = false;

  constructor(private readonly onSql: (sql: Buffer) => void) {}

  get atBoundary(): boolean {
    return this.remaining === 0 && this.header.seen === 0;
  }

  /** Returns the offset where `onMessage` said stop (false) at a message's start, else the chunk's length. */
  walk(chunk: Buffer, onMessage: (type: number) => boolean): number {
    let at = 0;
    while (at < chunk.length) {
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, chunk.length - at);
        this.remaining -= take;
        at += take;
        continue;
      }
      const start = at;
      const whole = this.header.seen === 0; // the header starts in this chunk
      at += this.header.take(chunk, at);
      if (!this.header.complete) continue;
      const { type, length } = this.header.finish();
      if (length < 4) {
        this.broken = true;
        return chunk.length;
      }
      this.remaining = length - 4;
      if ((type === 0x51 || type === 0x50) && this.remaining > 0) this.onSql(chunk.subarray(at, Math.min(chunk.length, at + this.remaining)));
      if (!onMessage(type)) {
        // Part of this message went on with the previous chunk: the stream is no longer whole.
        if (!whole) this.broken = true;
        return whole ? start : 0;
      }
    }
    return at;
  }
}

/** Message boundaries of the server's stream; ParameterStatus messages are read into `params`, ReadyForQuery's status reported. */
class ServerCursor {
  private remaining = 0;
  private readonly header = new Header();
  /** The payload of a ParameterStatus being read. */
  private parameter: Buffer[] | undefined;
  /** The next payload byte is a ReadyForQuery's transaction status. */
  private statusNext = false;
  broken = false;

  constructor(private readonly params: Map<string, string>, private readonly onReady: (status: number) => void) {}

  get atBoundary(): boolean {
    return this.remaining === 0 && this.header.seen === 0;
  }

  walk(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.remaining > 0) {
        if (this.statusNext) {
          this.statusNext = false;
          this.onReady(chunk[at] as number);
        }
        const take = Math.min(this.remaining, chunk.length - at);
        this.parameter?.push(chunk.subarray(at, at + take));
        this.remaining -= take;
        at += take;
        if (this.remaining === 0 && this.parameter) {
          keepParameterStatus(this.params, Buffer.concat(this.parameter));
          this.parameter = undefined;
        }
        continue;
      }
      at += this.header.take(chunk, at);
      if (!this.header.complete) continue;
      const { type, length } = this.header.finish();
      if (length < 4) {
        this.broken = true;
        return;
      }
      this.remaining = length - 4;
      if (type === BackendMessage.ReadyForQuery) {
        if (this.remaining > 0) this.statusNext = true;
        else this.onReady(TX_IDLE);
      } else if (type === BackendMessage.ParameterStatus && this.remaining > 0) {
        this.parameter = [];
      }
    }
  }
}

/**
 * Makes a session a client left clean again and keeps it: ROLLBACK when it was
 * in a transaction, then DISCARD ALL (temporary tables, prepared statements,
 * cursors, LISTEN, advisory locks, every SET). Any trouble closes it instead.
 */
export async function recycle(pool: ServerSessionPool, session: ServerSession, status: number): Promise<void> {
  try {
    if (status !== TX_IDLE) {
      const rollback = await session.query('ROLLBACK');
      if (rollback.status !== TX_IDLE) throw new Error('ROLLBACK left a transaction open');
    }
    const reset = await session.query('DISCARD ALL');
    if (reset.error || reset.status !== TX_IDLE) throw new Error(reset.error?.M ?? 'DISCARD ALL left a transaction open');
    pool.give(session);
  } catch {
    session.destroy();
  }
}

/**
 * The start-up parameters a kept session must be given with set_config, or
 * undefined when the client's start-up cannot be reproduced that way
 * (replication, protocol extensions, options other than `-c name=value` and
 * `--name=value`).
 */
export function clientSettings(params: Map<string, string>): Map<string, string> | undefined {
  const out = new Map<string, string>();
  for (const [name, value] of params) {
    if (name === 'user' || name === 'database') continue;
    if (name === 'replication' || name.startsWith('_pq_.')) return undefined;
    if (name !== 'options') {
      out.set(name, value);
      continue;
    }
    const tokens = splitOptions(value);
    for (let i = 0; i < tokens.length; i++) {
      const token = tokens[i] as string;
      const setting = token === '-c' ? tokens[++i] : token.startsWith('-c') ? token.slice(2) : token.startsWith('--') ? token.slice(2) : undefined;
      const eq = setting?.indexOf('=') ?? -1;
      if (setting === undefined || eq <= 0) return undefined;
      // As PostgreSQL reads them: dashes in the name are underscores.
      out.set(setting.slice(0, eq).replace(/-/g, '_'), setting.slice(eq + 1));
    }
  }
  return out;
}

/** A string literal that reads the same whatever standard_conforming_strings says. */
export function escapeLiteral(value: string): string {
  return `E'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}
