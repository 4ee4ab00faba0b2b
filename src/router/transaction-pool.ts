import { createHash } from 'node:crypto';
import type net from 'node:net';
import { serializeErrorResponse, typed } from '../protocol/messages.js';
import { DROP, MessageScanner, Output, PASS, WHOLE, type ScanHandler, type Verdict } from '../protocol/scanner.js';
import type { ErrorFields } from '../protocol/messages.js';
import { escapeLiteral, type ServerSession, TX_IDLE } from './server-sessions.js';

/**
 * Transaction pooling: a tenant's clients share a few server sessions, each
 * client holding one only from the first message of a transaction to the
 * ReadyForQuery that says it is idle again. What a client believes of its
 * session is carried from one server session to the next:
 *
 * - the settings the server reports (ParameterStatus) that clients rely on
 *   (application_name, client_encoding, DateStyle, IntervalStyle, TimeZone,
 *   standard_conforming_strings, search_path), as the client last saw them,
 *   and its start-up settings, are set on each server session it gets when
 *   they differ there;
 * - its named prepared statements (protocol level) live under names of the
 *   router's own, one per statement text, prepared on whichever server session
 *   runs them: a session that has one already is not asked again (the client
 *   is answered ParseComplete by the router), one that lacks it gets a Parse
 *   just before the message that uses it, whose answer the client never sees.
 *
 * Session state that cannot be carried (LISTEN, SQL PREPARE, session advisory
 * locks, WITH HOLD cursors, temporary tables that outlive a transaction, SET
 * of other settings) is refused when a statement begins with it, with an
 * error of the server's own (it runs `DO … RAISE`), so the transaction's state
 * stays what the server says.
 */

/** Settings re-applied on each server session a client gets (when the server reports them). */
const CARRIED = new Set(['application_name', 'client_encoding', 'datestyle', 'intervalstyle', 'timezone', 'standard_conforming_strings', 'search_path']);

/** Statements the router keeps prepared per server session; past it the least recently used is closed. */
const MAX_PREPARED = 200;
const STATEMENT_PREFIX = 'pgs_';

/** A server session of the transaction pool: the statements prepared on it, and the start-up settings set on it. */
interface PooledState {
  prepared: Map<string, true>;
  applied: Map<string, string>;
  /** Its session state is no longer what the router believes (DISCARD, DEALLOCATE, RESET): closed when given back. */
  tainted: boolean;
}

const states = new WeakMap<ServerSession, PooledState>();

function stateOf(session: ServerSession): PooledState {
  let state = states.get(session);
  if (!state) {
    state = { prepared: new Map(), applied: new Map(), tainted: false };
    states.set(session, state);
  }
  return state;
}

/** No server session became free in time. */
export class PoolTimeout extends Error {}

interface Waiter {
  key: string;
  open: () => Promise<ServerSession>;
  resolve: (session: ServerSession) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
  gone: () => boolean;
}

interface TenantPool {
  /** The most sessions, as the last client asked (the tenant's setting when it logged in). */
  size: number;
  idle: { session: ServerSession; timer: NodeJS.Timeout }[];
  /** Sessions held by clients or being opened. */
  busy: number;
  waiters: Waiter[];
}

/**
 * The server sessions of the tenants in transaction mode: at most `size` per
 * tenant (idle, held or being opened), any database and role; a client that
 * finds none free waits its turn, at most `timeoutMs`.
 */
export class TransactionPool {
  private readonly tenants = new Map<string, TenantPool>();
  private readonly watched = new WeakSet<ServerSession>();

  constructor(private readonly options: { idleMs: number }) {}

  acquire(tenant: string, key: string, size: number, timeoutMs: number, open: () => Promise<ServerSession>, gone: () => boolean): Promise<ServerSession> {
    const pool = this.poolOf(tenant);
    pool.size = size;
    this.trim(pool);
    for (let at = pool.idle.length - 1; at >= 0; at--) {
      const entry = pool.idle[at] as TenantPool['idle'][number];
      if (entry.session.key !== key) continue;
      pool.idle.splice(at, 1);
      clearTimeout(entry.timer);
      pool.busy++;
      return Promise.resolve(entry.session);
    }
    if (pool.idle.length + pool.busy >= size && pool.idle.length > 0) {
      // Full, but an idle session for another database or role can make room.
      const entry = pool.idle.shift() as TenantPool['idle'][number];
      clearTimeout(entry.timer);
      entry.session.destroy();
    }
    if (pool.idle.length + pool.busy < size) {
      pool.busy++;
      return this.opened(tenant, open);
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        key, open, resolve, reject, gone,
        timer: setTimeout(() => {
          pool.waiters.splice(pool.waiters.indexOf(waiter), 1);
          reject(new PoolTimeout(`no server session became free within ${Math.round(timeoutMs / 1000)} s`));
        }, timeoutMs),
      };
      pool.waiters.push(waiter);
    });
  }

  /** A client is done with `session`: to the next client waiting, kept idle, or closed when it is not `clean`. */
  release(session: ServerSession, clean: boolean): void {
    const pool = this.poolOf(session.tenant);
    pool.busy--;
    if (!clean || !session.usable || stateOf(session).tainted) {
      session.destroy();
      this.serve(session.tenant, pool);
      return;
    }
    pool.waiters = pool.waiters.filter((w) => !w.gone() || (clearTimeout(w.timer), false));
    const same = pool.waiters.findIndex((w) => w.key === session.key);
    if (same >= 0) {
      const [waiter] = pool.waiters.splice(same, 1) as [Waiter];
      clearTimeout(waiter.timer);
      pool.busy++;
      waiter.resolve(session);
      return;
    }
    if (pool.waiters.length > 0) {
      // The next client wants another database or role: this session's slot serves it.
      session.destroy();
      this.serve(session.tenant, pool);
      return;
    }
    if (pool.idle.length + pool.busy >= pool.size) {
      // The pool was made smaller.
      session.destroy();
      return;
    }
    const timer = setTimeout(() => this.remove(session), this.options.idleMs);
    timer.unref();
    pool.idle.push({ session, timer });
    if (!this.watched.has(session)) {
      // Gone while idle (the server stopped or was killed): out of the pool at once.
      this.watched.add(session);
      session.socket.once('close', () => this.remove(session));
    }
  }

  idleCount(tenant: string): number {
    return this.tenants.get(tenant)?.idle.length ?? 0;
  }

  /** Sessions clients hold now (or that are being opened for them). */
  busyCount(tenant: string): number {
    return this.tenants.get(tenant)?.busy ?? 0;
  }

  /** Closes the tenant's idle sessions; returns how many. */
  drop(tenant: string): number {
    const pool = this.tenants.get(tenant);
    if (!pool) return 0;
    const idle = pool.idle;
    pool.idle = [];
    for (const entry of idle) {
      clearTimeout(entry.timer);
      entry.session.destroy();
    }
    this.forgetIfEmpty(tenant, pool);
    return idle.length;
  }

  closeAll(): void {
    for (const [tenant, pool] of [...this.tenants]) {
      for (const waiter of pool.waiters) {
        clearTimeout(waiter.timer);
        waiter.reject(new Error('pgs is shutting down'));
      }
      pool.waiters = [];
      this.drop(tenant);
    }
  }

  private poolOf(tenant: string): TenantPool {
    let pool = this.tenants.get(tenant);
    if (!pool) {
      pool = { size: 1, idle: [], busy: 0, waiters: [] };
      this.tenants.set(tenant, pool);
    }
    return pool;
  }

  /** Closes idle sessions beyond the size (oldest first). */
  private trim(pool: TenantPool): void {
    while (pool.idle.length > 0 && pool.idle.length + pool.busy > pool.size) {
      const entry = pool.idle.shift() as TenantPool['idle'][number];
      clearTimeout(entry.timer);
      entry.session.destroy();
    }
  }

  private forgetIfEmpty(tenant: string, pool: TenantPool): void {
    if (pool.idle.length === 0 && pool.busy === 0 && pool.waiters.length === 0) this.tenants.delete(tenant);
  }

  private opened(tenant: string, open: () => Promise<ServerSession>): Promise<ServerSession> {
    return open().catch((err: Error) => {
      const pool = this.poolOf(tenant);
      pool.busy--;
      this.serve(tenant, pool);
      throw err;
    });
  }

  /** Opens sessions for waiting clients while the pool has room. */
  private serve(tenant: string, pool: TenantPool): void {
    // The size is the waiting clients' concern: one slot freed serves one of them.
    while (pool.waiters.length > 0) {
      const waiter = pool.waiters.shift() as Waiter;
      clearTimeout(waiter.timer);
      if (waiter.gone()) continue;
      pool.busy++;
      this.opened(tenant, waiter.open).then(waiter.resolve, waiter.reject);
      return;
    }
    this.forgetIfEmpty(tenant, pool);
  }

  private remove(session: ServerSession): void {
    const pool = this.tenants.get(session.tenant);
    const at = pool?.idle.findIndex((e) => e.session === session) ?? -1;
    if (!pool || at < 0) return;
    const [entry] = pool.idle.splice(at, 1);
    if (entry) clearTimeout(entry.timer);
    session.destroy();
    this.forgetIfEmpty(session.tenant, pool);
  }
}

/** What a pooled client needs from its connection. */
export interface PooledClientHost {
  /** The client's socket (TLS). */
  readonly socket: net.Socket;
  /** A server session for the client's (database, role), from the pool (maybe after a wait). */
  acquire(): Promise<ServerSession>;
  release(session: ServerSession, clean: boolean): void;
  /** The client must go: a FATAL with these fields (undefined: just close). */
  fail(fields: Record<string, string> | undefined): void;
  /** A statement names DATABASE: idle sessions of the tenant go first (they would block it). */
  databaseStatement(): void;
  tenantId: string;
}

interface Pending {
  /** The client message this answers: P, B, D, E, C, S, Q or F. */
  type: number;
  /** Sent by the router, not the client: its answer is dropped. */
  skip?: boolean;
  /** Not sent at all: the router answers this in its turn. */
  answer?: Buffer;
  /** P: the statement it prepares (forgotten if it is skipped after an error); C with skip: the statement it closes. */
  statement?: string;
}

interface ClientStatement {
  server: string;
  /** The Parse message that prepares it under the server name. */
  parse: Buffer;
}

const PARSE_COMPLETE = typed(0x31, Buffer.alloc(0));
const CLOSE_COMPLETE = typed(0x33, Buffer.alloc(0));

/**
 * One client in transaction mode after its greeting: reads its messages,
 * gets it a server session when it starts a transaction, rewrites the
 * statement names, and gives the session back at the ReadyForQuery that ends
 * it. The server's messages pass through as they are, but for the answers to
 * the router's own messages (dropped) and the router's own answers (put in
 * their turn).
 */
export class PooledClient {
  private session: ServerSession | undefined;
  private state: PooledState | undefined;
  private attaching = false;
  private closed = false;
  /** Chunks the client sent while it waited for a server session. */
  private waiting: Buffer[] = [];
  private readonly pending: Pending[] = [];
  private status = TX_IDLE;
  private readonly statements = new Map<string, ClientStatement>();
  /** The client sent Terminate: nothing after it is read. */
  private terminated = false;
  /** Run at the next point between two of the server's messages to the client. */
  private atNextBoundary: (() => void)[] = [];
  /** An error of the router's own was sent: the client's messages up to its Sync are dropped, as the server would. */
  private discarding = false;
  private readonly fromClient: MessageScanner;
  private readonly fromServer: MessageScanner;
  private readonly clientOut = new Output();
  private readonly serverOut = new Output();
  private detachServer: (() => void) | undefined;

  /**
   * `seen`: the ParameterStatus values the client was given; `fixed`: its start-up
   * settings beyond those (set on each session it gets, reset on others).
   */
  constructor(private readonly host: PooledClientHost, private readonly seen: Map<string, string>, private readonly fixed: Map<string, string>) {
    this.fromClient = new MessageScanner(this.clientHandler);
    this.fromServer = new MessageScanner(this.serverHandler);
  }

  /** The backend running the client's transaction now, for a cancel request. */
  get current(): ServerSession | undefined {
    return this.session;
  }

  /** Takes the client's bytes. */
  readonly onData = (chunk: Buffer): void => {
    if (this.closed) return;
    if (!this.session) {
      if (this.waiting.length === 0 && this.fromClient.atBoundary && chunk[0] === 0x58) {
        this.close(); // Terminate with nothing under way
        return;
      }
      this.waiting.push(chunk);
      if (!this.attaching) void this.attach();
      return;
    }
    this.scanClient(chunk);
  };

  /** The client is gone (or is being closed): its session, if it holds one, is made clean and given back, or closed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const session = this.session;
    if (!session) return;
    this.unhook();
    if (this.pending.length === 0 && this.fromClient.atBoundary && this.fromServer.atBoundary && this.status === TX_IDLE) {
      this.host.release(session, true);
      return;
    }
    if (this.pending.length > 0 || !this.fromClient.atBoundary || !this.fromServer.atBoundary) {
      // Something is under way on the server: cancelled, and the session closed.
      this.host.release(session, false);
      return;
    }
    session.attach();
    session.socket.resume();
    session.query('ROLLBACK').then(
      (r) => this.host.release(session, r.status === TX_IDLE && !r.error),
      () => this.host.release(session, false),
    );
  }

  private async attach(): Promise<void> {
    this.attaching = true;
    this.host.socket.pause();
    let session: ServerSession;
    try {
      session = await this.host.acquire();
    } catch (err) {
      this.attaching = false;
      if (this.closed) return;
      this.closed = true;
      if (err instanceof PoolTimeout) {
        this.host.fail({ S: 'FATAL', V: 'FATAL', C: '53300', M: `${err.message} for tenant ${this.host.tenantId} (its transaction pool is full)`, H: `pgs config ${this.host.tenantId} --pool-size N allows more server sessions` });
      } else {
        this.host.fail({ S: 'FATAL', V: 'FATAL', C: '57P03', M: `the server of tenant ${this.host.tenantId} is not available: ${(err as Error).message}` });
      }
      return;
    }
    if (this.closed) {
      this.attaching = false;
      this.host.release(session, true);
      return;
    }
    const error = await applySettings(session, this.seen, this.fixed).catch((err: Error) => ({ S: 'FATAL', V: 'FATAL', C: '08006', M: `the server session of tenant ${this.host.tenantId} ended: ${err.message}` }));
    if (error) {
      this.attaching = false;
      this.host.release(session, false);
      if (!this.closed) {
        this.closed = true;
        this.host.fail({ ...(error as Record<string, string>), S: 'FATAL', V: 'FATAL' });
      }
      return;
    }
    this.attaching = false;
    if (this.closed) {
      this.host.release(session, true);
      return;
    }
    session.detach();
    this.session = session;
    this.state = stateOf(session);
    this.status = TX_IDLE;
    this.hook(session);
    const waiting = this.waiting;
    this.waiting = [];
    for (const chunk of waiting) {
      if (this.session !== session) {
        // Given back already (the transaction ended within what was waiting): the rest needs another one.
        this.onData(chunk);
      } else {
        this.scanClient(chunk);
      }
    }
    if (!this.closed) this.host.socket.resume();
  }

  private hook(session: ServerSession): void {
    const socket = session.socket;
    const onData = (chunk: Buffer): void => this.scanServer(chunk);
    const onGone = (): void => {
      if (this.session !== session) return;
      this.unhook();
      this.session = undefined;
      this.host.release(session, false);
      if (!this.closed) {
        this.closed = true;
        this.host.fail(undefined);
      }
    };
    socket.on('data', onData);
    socket.on('close', onGone);
    this.detachServer = () => {
      socket.off('data', onData);
      socket.off('close', onGone);
    };
  }

  private unhook(): void {
    this.detachServer?.();
    this.detachServer = undefined;
  }

  private scanClient(chunk: Buffer): void {
    const session = this.session as ServerSession;
    const out = this.clientOut;
    out.begin(chunk);
    this.fromClient.scan(chunk, out);
    const bytes = out.take();
    if (bytes && !this.closed && session.usable && !session.socket.write(bytes)) {
      this.host.socket.pause();
      session.socket.once('drain', () => {
        if (!this.closed) this.host.socket.resume();
      });
    }
    if (this.terminated) {
      this.close();
      this.host.fail(undefined);
      return;
    }
    this.maybeRelease();
  }

  /** Runs `fn` now if the server's stream to the client stands between two messages, else once a chunk of it ends between two. */
  betweenMessages(fn: () => void): void {
    if (!this.session || this.fromServer.atBoundary) fn();
    else this.atNextBoundary.push(fn);
  }

  private scanServer(chunk: Buffer): void {
    const session = this.session;
    if (!session) return;
    const out = this.serverOut;
    out.begin(chunk);
    this.fromServer.scan(chunk, out);
    const bytes = out.take();
    if (bytes && !this.host.socket.write(bytes)) {
      session.socket.pause();
      this.host.socket.once('drain', () => session.socket.resume());
    }
    if (this.atNextBoundary.length > 0 && this.fromServer.atBoundary) {
      const waiting = this.atNextBoundary;
      this.atNextBoundary = [];
      for (const fn of waiting) fn();
    }
    this.maybeRelease();
  }

  /** Between transactions with nothing under way: the session goes back to the pool. */
  private maybeRelease(): void {
    const session = this.session;
    if (!session || this.closed) return;
    if (this.pending.length > 0 || this.status !== TX_IDLE || !this.fromClient.atBoundary || !this.fromServer.atBoundary) return;
    this.unhook();
    this.session = undefined;
    this.state = undefined;
    session.attach();
    session.socket.resume();
    this.host.release(session, true);
  }

  /** A message the router answers itself: now if nothing is ahead of it, else in its turn. */
  private answer(type: number, bytes: Buffer): void {
    if (this.pending.length === 0 && this.fromServer.atBoundary) this.host.socket.write(bytes);
    else this.pending.push({ type, answer: bytes });
  }

  /** Sends answers of the router's own that have come to the head of the line. */
  private answersAtHead(out: Output): void {
    for (let head = this.pending[0]; head?.answer; head = this.pending[0]) {
      this.pending.shift();
      out.push(head.answer);
    }
  }

  private readonly clientHandler: ScanHandler = {
    verdict: (type: number): Verdict => {
      if (this.terminated || (this.discarding && type !== 0x53)) return DROP;
      switch (type) {
        case 0x50: // Parse
        case 0x42: // Bind
        case 0x44: // Describe
        case 0x43: // Close
        case 0x51: // Query
        case 0x58: // Terminate
          return WHOLE;
        case 0x53: // Sync
          this.discarding = false;
          this.pending.push({ type });
          return PASS;
        case 0x45: // Execute
        case 0x46: // FunctionCall
          this.pending.push({ type });
          return PASS;
        default: // Flush, CopyData, CopyDone, CopyFail
          return PASS;
      }
    },
    whole: (type: number, payload: Buffer, out: Output): void => {
      switch (type) {
        case 0x50: this.parse(payload, out); return;
        case 0x42: this.bind(payload, out); return;
        case 0x44: this.describe(payload, out); return;
        case 0x43: this.closeMessage(payload, out); return;
        case 0x51: this.query(payload, out); return;
        case 0x58: // Terminate: the server session outlives the client
          this.terminated = true;
          return;
      }
    },
    ended: (): void => undefined,
  };

  private readonly serverHandler: ScanHandler = {
    verdict: (type: number): Verdict => {
      switch (type) {
        case 0x5a: // ReadyForQuery
        case 0x53: // ParameterStatus
          return WHOLE;
        case 0x31: // ParseComplete
        case 0x33: // CloseComplete
          return this.pending[0]?.skip ? DROP : PASS;
        default:
          return PASS;
      }
    },
    whole: (type: number, payload: Buffer, out: Output): void => {
      if (type === 0x5a) {
        this.status = payload[0] ?? TX_IDLE;
      } else {
        const nul = payload.indexOf(0);
        if (nul > 0) {
          const name = payload.toString('utf8', 0, nul);
          const end = payload.indexOf(0, nul + 1);
          const value = payload.toString('utf8', nul + 1, end < 0 ? payload.length : end);
          this.session?.params.set(name, value);
          this.seen.set(name, value);
        }
      }
      out.push(typed(type, Buffer.from(payload)));
    },
    ended: (type: number, out: Output): void => {
      const head = this.pending[0];
      switch (type) {
        case 0x31: // ParseComplete
        case 0x32: // BindComplete
        case 0x33: // CloseComplete
        case 0x5a: // ReadyForQuery
          this.pending.shift();
          break;
        case 0x54: // RowDescription
        case 0x6e: // NoData
          if (head?.type === 0x44) this.pending.shift();
          break;
        case 0x43: // CommandComplete
        case 0x49: // EmptyQueryResponse
        case 0x73: // PortalSuspended
          if (head?.type === 0x45) this.pending.shift();
          break;
        case 0x45: // ErrorResponse: the server skips to the next Sync
          if (head && head.type !== 0x53 && head.type !== 0x51 && head.type !== 0x46) this.skipToSync();
          break;
      }
      this.answersAtHead(out);
    },
  };

  /** After an error in the extended protocol: what the server will not answer comes off the line. */
  private skipToSync(): void {
    const prepared = this.state?.prepared;
    while (this.pending.length > 0 && (this.pending[0] as Pending).type !== 0x53) {
      const entry = this.pending.shift() as Pending;
      if (entry.statement === undefined || !prepared) continue;
      if (entry.type === 0x50) prepared.delete(entry.statement);
      else if (entry.type === 0x43) prepared.set(entry.statement, true);
    }
  }

  // --- the client's messages that are read whole ---

  private parse(payload: Buffer, out: Output): void {
    const nameEnd = payload.indexOf(0);
    const queryEnd = payload.indexOf(0, nameEnd + 1);
    if (nameEnd < 0 || queryEnd < 0) {
      this.forward(0x50, payload, out);
      return;
    }
    let body = payload.subarray(nameEnd + 1);
    const sql = payload.toString('utf8', nameEnd + 1, queryEnd);
    const refusal = this.inspect(sql);
    if (refusal !== undefined) body = Buffer.concat([Buffer.from(`${refusal}\0`), payload.subarray(queryEnd + 1)]);
    const name = payload.toString('utf8', 0, nameEnd);
    if (name === '') {
      this.forward(0x50, Buffer.concat([Buffer.from([0]), body]), out);
      return;
    }
    if (this.statements.has(name)) {
      this.refuseUntilSync({ S: 'ERROR', V: 'ERROR', C: '42P05', M: `prepared statement "${name}" already exists` });
      return;
    }
    const server = `${STATEMENT_PREFIX}${createHash('sha1').update(body).digest('hex').slice(0, 24)}`;
    const parse = typed(0x50, Buffer.concat([Buffer.from(`${server}\0`), body]));
    this.statements.set(name, { server, parse });
    const prepared = (this.state as PooledState).prepared;
    if (prepared.has(server)) {
      prepared.delete(server);
      prepared.set(server, true); // most recently used last
      this.answer(0x50, PARSE_COMPLETE);
      return;
    }
    this.prepareOn(server, parse, out, false);
  }

  /** Sends `parse` (ParseComplete dropped when `skip`), closing the least recently used statement past the limit. */
  private prepareOn(server: string, parse: Buffer, out: Output, skip: boolean): void {
    const prepared = (this.state as PooledState).prepared;
    if (prepared.size >= MAX_PREPARED) {
      const oldest = prepared.keys().next().value as string;
      prepared.delete(oldest);
      out.push(typed(0x43, Buffer.from(`S${oldest}\0`)));
      this.pending.push({ type: 0x43, skip: true, statement: oldest });
    }
    prepared.set(server, true);
    out.push(parse);
    this.pending.push({ type: 0x50, statement: server, ...(skip ? { skip } : {}) });
  }

  /** The server name of the client's statement `name` (prepared on this session first if need be), or the name as it is when the client has none. */
  private statementOn(name: string, out: Output): string {
    if (name === '') return name;
    const statement = this.statements.get(name);
    if (!statement) return name.startsWith(STATEMENT_PREFIX) ? `${name}?` : name;
    const prepared = (this.state as PooledState).prepared;
    if (prepared.has(statement.server)) {
      prepared.delete(statement.server);
      prepared.set(statement.server, true);
    } else {
      this.prepareOn(statement.server, statement.parse, out, true);
    }
    return statement.server;
  }

  private bind(payload: Buffer, out: Output): void {
    const portalEnd = payload.indexOf(0);
    const nameEnd = payload.indexOf(0, portalEnd + 1);
    if (portalEnd < 0 || nameEnd < 0 || nameEnd === portalEnd + 1) {
      this.forward(0x42, payload, out);
      return;
    }
    const server = this.statementOn(payload.toString('utf8', portalEnd + 1, nameEnd), out);
    this.forward(0x42, Buffer.concat([payload.subarray(0, portalEnd + 1), Buffer.from(`${server}\0`), payload.subarray(nameEnd + 1)]), out);
  }

  private describe(payload: Buffer, out: Output): void {
    if (payload[0] !== 0x53 || payload.length <= 2) {
      this.forward(0x44, payload, out);
      return;
    }
    const server = this.statementOn(payload.toString('utf8', 1, payload.length - 1), out);
    this.forward(0x44, Buffer.from(`S${server}\0`), out);
  }

  private closeMessage(payload: Buffer, out: Output): void {
    if (payload[0] !== 0x53 || payload.length <= 2) {
      this.forward(0x43, payload, out);
      return;
    }
    // The statement stays prepared on the server sessions for other clients; the client's name goes.
    this.statements.delete(payload.toString('utf8', 1, payload.length - 1));
    this.answer(0x43, CLOSE_COMPLETE);
  }

  private query(payload: Buffer, out: Output): void {
    const sql = payload.toString('utf8', 0, Math.max(0, payload.length - 1));
    const refusal = this.inspect(sql);
    this.pending.push({ type: 0x51 });
    out.push(refusal === undefined ? typed(0x51, Buffer.from(payload)) : typed(0x51, Buffer.from(`${refusal}\0`)));
  }

  private forward(type: number, payload: Buffer, out: Output): void {
    this.pending.push({ type });
    out.push(typed(type, Buffer.from(payload)));
  }

  /** An error of the router's own in the extended protocol: the client's messages up to its Sync go unanswered, as after a server's error. */
  private refuseUntilSync(fields: Record<string, string>): void {
    this.answer(0x45, serializeErrorResponse(fields));
    this.discarding = true;
  }

  /**
   * Looks at a statement the client sends: one that would leave session state
   * behind is replaced by a DO block that raises the error (returned); ones that
   * make the router's view of the session wrong mark it to be closed after use.
   */
  private inspect(sql: string): string | undefined {
    const use = sessionStateUse(sql, this.session?.params);
    if (use === 'discard') {
      if (this.state) this.state.tainted = true;
      return undefined;
    }
    if (use === 'database') {
      this.host.databaseStatement();
      return undefined;
    }
    if (use === undefined) return undefined;
    const id = this.host.tenantId;
    const message = `${use} is not supported with transaction pooling: the next transaction may run on another server session`;
    const hint = `Use it within one transaction (SET LOCAL, pg_advisory_xact_lock, ON COMMIT DROP), or have tenant ${id} pool by session (pgs config ${id} --pool session).`;
    return `DO $pgs$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = ${escapeLiteral(message)}, HINT = ${escapeLiteral(hint)}; END$pgs$`;
  }
}

/**
 * Sets `session` as a client expects it (see settingsSql); returns the
 * server's error, if any. Rejects when the session ends.
 */
export async function applySettings(session: ServerSession, seen: Map<string, string>, fixed: Map<string, string>): Promise<ErrorFields | undefined> {
  const state = stateOf(session);
  const sql = settingsSql(session.params, state.applied, seen, fixed);
  if (sql === undefined) return undefined;
  const result = await session.query(sql);
  if (result.error) return result.error;
  if (result.status !== TX_IDLE) return { S: 'ERROR', C: '08P01', M: 'setting up the server session left a transaction open' };
  state.applied = new Map(fixed);
  return undefined;
}

/**
 * The SQL that sets a server session as the client expects it: the carried
 * settings the client last saw where the server's differ, and its start-up
 * settings where the session was given other ones (or RESET where it has
 * none). Undefined when nothing differs.
 */
export function settingsSql(server: Map<string, string>, applied: Map<string, string>, seen: Map<string, string>, fixed: Map<string, string>): string | undefined {
  const sets: string[] = [];
  const resets: string[] = [];
  const serverLower = new Map<string, string>();
  for (const [name, value] of server) serverLower.set(name.toLowerCase(), value);
  for (const [name, value] of seen) {
    const lower = name.toLowerCase();
    if (!CARRIED.has(lower) || fixed.has(lower)) continue;
    if (serverLower.has(lower) && serverLower.get(lower) !== value) sets.push(`pg_catalog.set_config(${escapeLiteral(name)}, ${escapeLiteral(value)}, false)`);
  }
  for (const [name, value] of fixed) {
    if (applied.get(name) !== value) sets.push(`pg_catalog.set_config(${escapeLiteral(name)}, ${escapeLiteral(value)}, false)`);
  }
  for (const name of applied.keys()) if (!fixed.has(name)) resets.push(`RESET ${quoteIdent(name)}`);
  if (sets.length === 0 && resets.length === 0) return undefined;
  return [...resets, ...(sets.length > 0 ? [`SELECT ${sets.join(', ')}`] : [])].join('; ');
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** The client's start-up settings split: the carried ones the server reports (compared with what it reports) and the rest. Names in lower case. */
export function splitSettings(settings: Map<string, string>, reported: Map<string, string>): { carried: Map<string, string>; fixed: Map<string, string> } {
  const carried = new Map<string, string>();
  const fixed = new Map<string, string>();
  const names = new Set([...reported.keys()].map((k) => k.toLowerCase()));
  for (const [name, value] of settings) {
    const lower = name.toLowerCase();
    (CARRIED.has(lower) && names.has(lower) ? carried : fixed).set(lower, value);
  }
  return { carried, fixed };
}

/**
 * What session state a statement's text would leave behind for the next
 * transaction on the same server session (a phrase for the error), `discard`
 * when it resets what the router set up, `database` when it names DATABASE, or
 * undefined. Only the statement's first words are looked at (and, for
 * advisory locks, the whole text).
 */
export function sessionStateUse(sql: string, reported?: Map<string, string>): string | undefined {
  const text = skipComments(sql);
  const words = text.slice(0, 200).toLowerCase().split(/[\s(;=]+/);
  const [first = '', second = '', third = ''] = words;
  if (/\bpg_(try_)?advisory_lock(_shared)?\s*\(/i.test(sql)) return 'a session advisory lock';
  switch (first) {
    case 'listen':
      return 'LISTEN';
    case 'prepare':
      return 'PREPARE (prepared statements of the protocol work)';
    case 'declare':
      return /\bwith\s+hold\b/i.test(text) ? 'a cursor WITH HOLD' : undefined;
    case 'create':
      if (/^create\s+(global\s+|local\s+)?(temp|temporary)\s/i.test(text) && !/\bon\s+commit\s+drop\b/i.test(text)) return 'a temporary table that outlives its transaction';
      return /^create\s+database\b/i.test(text) ? 'database' : undefined;
    case 'drop':
    case 'alter':
      return second === 'database' ? 'database' : undefined;
    case 'discard':
    case 'deallocate':
    case 'reset':
      return 'discard';
    case 'load':
      return 'LOAD';
    case 'set': {
      if (second === 'local' || second === 'transaction' || second === 'constraints') return undefined;
      let name = second === 'session' ? third : second;
      if (name === 'characteristics' || name === 'authorization' || name === 'role') return `SET ${second === 'session' ? 'SESSION ' : ''}${name.toUpperCase()}`;
      if (name === 'time') name = 'timezone';
      if (name === 'names') name = 'client_encoding';
      name = name.replace(/^"|"$/g, '');
      const carried = CARRIED.has(name) && (reported === undefined || [...reported.keys()].some((k) => k.toLowerCase() === name));
      return carried ? undefined : `SET ${name} (a setting of the session)`;
    }
    default:
      return undefined;
  }
}

function skipComments(sql: string): string {
  let at = 0;
  for (;;) {
    while (at < sql.length && /\s/.test(sql[at] as string)) at++;
    if (sql.startsWith('--', at)) {
      const end = sql.indexOf('\n', at);
      if (end < 0) return '';
      at = end + 1;
    } else if (sql.startsWith('/*', at)) {
      const end = sql.indexOf('*/', at + 2);
      if (end < 0) return '';
      at = end + 2;
    } else {
      return sql.slice(at);
    }
  }
}
