import { createHash } from 'node:crypto';
import type net from 'node:net';
import { serializeErrorResponse, typed } from '../protocol/messages.js';
import { DROP, MessageScanner, Output, PASS, WHOLE, type ScanHandler, type Verdict } from '../protocol/scanner.js';
import type { ErrorFields } from '../protocol/messages.js';
import { escapeLiteral, type ServerSession, TX_IDLE } from './server-sessions.js';
import { ServerFull } from './server-slots.js';
import { type Change, classifySet, quoteIdent, splitStatements, type Statement } from './session-settings.js';

/**
 * Transaction pooling: a tenant's clients share a few server sessions, each
 * client holding one only from the first message of a transaction to the
 * ReadyForQuery that says it is idle again. What a client believes of its
 * session is carried from one server session to the next:
 *
 * - the settings the server reports (ParameterStatus) that a client may set,
 *   as the client last saw them, its start-up settings, and the other
 *   settings it changed with SET or RESET outside a transaction block (run on
 *   the session it held then, so the server validated them, and recorded once
 *   they succeeded), are set on each server session it gets where they differ;
 * - its named prepared statements (protocol level) live under names of the
 *   router's own, one per statement text, prepared on whichever server session
 *   runs them: a session that has one already is not asked again (the client
 *   is answered ParseComplete by the router), one that lacks it gets a Parse
 *   just before the message that uses it, whose answer the client never sees.
 *
 * Session state that cannot be carried (LISTEN, SQL PREPARE, session advisory
 * locks, WITH HOLD cursors, temporary tables that outlive a transaction, SET
 * ROLE) is refused when a statement begins with it, with an
 * error of the server's own (it runs `DO … RAISE`), so the transaction's state
 * stays what the server says.
 */

/** Settings the server reports that no client sets (the rest of what it reports is carried from session to session). */
const NOT_CARRIED = new Set(['server_version', 'server_encoding', 'integer_datetimes', 'is_superuser', 'session_authorization', 'in_hot_standby']);
const carried = (lower: string): boolean => !NOT_CARRIED.has(lower);

/** How a client wants a setting the server does not report: a start-up value, or the SQL of the SET that set it. */
export type Wanted = string | { sql: string };
const wantedKey = (w: Wanted): string => (typeof w === 'string' ? `=${w}` : `;${w.sql}`);
/** In PooledState.applied: a value the router no longer knows (set within a transaction block, or by a SET that failed). */
const UNKNOWN = '\0?';

/** Statements the router keeps prepared per server session; past it the least recently used is closed. */
const MAX_PREPARED = 200;
const STATEMENT_PREFIX = 'pgs_';

/** A server session of the transaction pool: the statements prepared on it, and the start-up settings set on it. */
interface PooledState {
  prepared: Map<string, true>;
  /** Settings the server does not report that differ from its defaults on this session, by name: wantedKey, or UNKNOWN. */
  applied: Map<string, string>;
  /** Its session state is no longer what the router believes (DISCARD, DEALLOCATE): closed when given back. */
  tainted: boolean;
  /** The settings key of the client that last had it set up or held it (see PooledClient.settings). */
  settings?: string | undefined;
  /** What the server reported when the session opened (no client's settings), by lower-case name. */
  defaults: Map<string, string>;
}

const states = new WeakMap<ServerSession, PooledState>();

function stateOf(session: ServerSession): PooledState {
  let state = states.get(session);
  if (!state) {
    state = { prepared: new Map(), applied: new Map(), tainted: false, defaults: new Map([...session.params].map(([k, v]) => [k.toLowerCase(), v])) };
    states.set(session, state);
  }
  return state;
}

/** No server session became free in time. */
export class PoolTimeout extends Error {}

/** Told of the session a client gets (at once, or when one is free), or of why it gets none. */
export type Handed = (err: Error | undefined, session?: ServerSession) => void;

interface Waiter {
  key: string;
  open: () => Promise<ServerSession>;
  handed: Handed;
  /** When it stops waiting (ms since the epoch). */
  deadline: number;
  timeoutMs: number;
  gone: () => boolean;
  /** Served, timed out or gone: skipped when its turn comes. */
  done: boolean;
}

interface Idle {
  session: ServerSession;
  since: number;
}

interface TenantPool {
  /** The most sessions, as the last client asked (the tenant's setting when it logged in). */
  size: number;
  /** Most recently given back last. */
  idle: Idle[];
  /** Sessions held by clients or being opened. */
  busy: number;
  /** Waiting clients in order of arrival; `head` is the first not yet dequeued. */
  waiters: Waiter[];
  head: number;
}

/**
 * The server sessions of the tenants in transaction mode: at most `size` per
 * tenant (idle, held or being opened), any database and role; a client that
 * finds none free waits its turn, at most `timeoutMs`. Time-outs of waiting
 * clients and of idle sessions are found by one sweep every 250 ms rather than
 * a timer each (thousands of hand-overs a second would make and clear as many).
 */
export class TransactionPool {
  private readonly tenants = new Map<string, TenantPool>();
  private readonly watched = new WeakSet<ServerSession>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(private readonly options: { idleMs: number }) {}

  /** An idle session for `key`, at once, or undefined (then `acquire`). */
  take(tenant: string, key: string, size: number): ServerSession | undefined {
    const pool = this.tenants.get(tenant);
    if (!pool) return undefined;
    pool.size = size;
    this.trim(pool);
    const idle = pool.idle;
    for (let at = idle.length - 1; at >= 0; at--) {
      const entry = idle[at] as Idle;
      if (entry.session.key !== key) continue;
      if (at === idle.length - 1) idle.pop();
      else idle.splice(at, 1);
      pool.busy++;
      return entry.session;
    }
    return undefined;
  }

  /**
   * A session for `key`: an idle one (`handed` is called before this returns),
   * a new one while the pool has room, or the next one given back, in order of
   * asking (`handed` is called from `release`, so that a waiting client's
   * query goes to the server in the same turn the last one's answer ended).
   */
  acquire(tenant: string, key: string, size: number, timeoutMs: number, open: () => Promise<ServerSession>, gone: () => boolean, handed: Handed): void {
    const ready = this.take(tenant, key, size);
    if (ready) {
      handed(undefined, ready);
      return;
    }
    const pool = this.poolOf(tenant);
    pool.size = size;
    if (pool.idle.length + pool.busy >= size && pool.idle.length > 0) {
      // Full, but an idle session for another database or role can make room.
      (pool.idle.shift() as Idle).session.destroy();
    }
    if (pool.idle.length + pool.busy < size) {
      pool.busy++;
      this.open(tenant, open, handed);
      return;
    }
    pool.waiters.push({ key, open, handed, gone, timeoutMs, deadline: Date.now() + timeoutMs, done: false });
    this.sweepSoon();
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
    const waiter = this.nextWaiter(pool);
    if (waiter) {
      pool.busy++;
      if (waiter.key === session.key) {
        waiter.handed(undefined, session);
      } else {
        // The next client wants another database or role: this session's slot serves it.
        session.destroy();
        this.open(session.tenant, waiter.open, waiter.handed);
      }
      return;
    }
    if (pool.idle.length + pool.busy >= pool.size) {
      // The pool was made smaller.
      session.destroy();
      this.forgetIfEmpty(session.tenant, pool);
      return;
    }
    pool.idle.push({ session, since: Date.now() });
    this.sweepSoon();
    if (!this.watched.has(session)) {
      // Gone while idle (the server stopped or was killed): out of the pool at once.
      this.watched.add(session);
      session.socket.once('close', () => this.remove(session));
    }
  }

  idleCount(tenant: string): number {
    return this.tenants.get(tenant)?.idle.length ?? 0;
  }

  /** Closes the tenant's idle session that waited longest (its server needs the connection slot); false when it has none. */
  dropOldest(tenant: string): boolean {
    const pool = this.tenants.get(tenant);
    const oldest = pool?.idle.shift();
    if (!pool || !oldest) return false;
    oldest.session.destroy();
    this.forgetIfEmpty(tenant, pool);
    return true;
  }

  /** Closes the tenant's idle sessions; returns how many. */
  drop(tenant: string): number {
    const pool = this.tenants.get(tenant);
    if (!pool) return 0;
    const idle = pool.idle;
    pool.idle = [];
    for (const entry of idle) entry.session.destroy();
    this.forgetIfEmpty(tenant, pool);
    return idle.length;
  }

  closeAll(): void {
    for (const [tenant, pool] of [...this.tenants]) {
      for (let waiter = this.nextWaiter(pool); waiter; waiter = this.nextWaiter(pool)) waiter.handed(new Error('pgs is shutting down'));
      this.drop(tenant);
    }
    clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  private poolOf(tenant: string): TenantPool {
    let pool = this.tenants.get(tenant);
    if (!pool) {
      pool = { size: 1, idle: [], busy: 0, waiters: [], head: 0 };
      this.tenants.set(tenant, pool);
    }
    return pool;
  }

  /** The first waiting client still there, off the queue. */
  private nextWaiter(pool: TenantPool): Waiter | undefined {
    while (pool.head < pool.waiters.length) {
      const waiter = pool.waiters[pool.head++] as Waiter;
      if (waiter.done) continue;
      waiter.done = true;
      if (waiter.gone()) continue;
      return waiter;
    }
    pool.waiters = [];
    pool.head = 0;
    return undefined;
  }

  /** Closes idle sessions beyond the size (oldest first). */
  private trim(pool: TenantPool): void {
    while (pool.idle.length > 0 && pool.idle.length + pool.busy > pool.size) (pool.idle.shift() as Idle).session.destroy();
  }

  private forgetIfEmpty(tenant: string, pool: TenantPool): void {
    if (pool.idle.length === 0 && pool.busy === 0 && pool.head >= pool.waiters.length) this.tenants.delete(tenant);
  }

  /** Opens a session in a slot already counted as busy. */
  private open(tenant: string, open: () => Promise<ServerSession>, handed: Handed): void {
    open().then((session) => {
      stateOf(session); // its defaults, before any client changes them
      handed(undefined, session);
    }, (err: Error) => {
      const pool = this.poolOf(tenant);
      pool.busy--;
      this.serve(tenant, pool);
      handed(err);
    });
  }

  /** A slot was freed: it serves the next waiting client with a new session. */
  private serve(tenant: string, pool: TenantPool): void {
    const waiter = this.nextWaiter(pool);
    if (!waiter) {
      this.forgetIfEmpty(tenant, pool);
      return;
    }
    pool.busy++;
    this.open(tenant, waiter.open, waiter.handed);
  }

  private remove(session: ServerSession): void {
    const pool = this.tenants.get(session.tenant);
    const at = pool?.idle.findIndex((e) => e.session === session) ?? -1;
    if (!pool || at < 0) return;
    pool.idle.splice(at, 1);
    session.destroy();
    this.forgetIfEmpty(session.tenant, pool);
  }

  private sweepSoon(): void {
    if (this.sweeper) return;
    this.sweeper = setInterval(() => this.sweep(), 250);
    this.sweeper.unref();
  }

  /** Refuses clients that waited too long, closes sessions idle too long; stops when nothing is left to watch. */
  private sweep(): void {
    const now = Date.now();
    for (const [tenant, pool] of [...this.tenants]) {
      for (let at = pool.head; at < pool.waiters.length; at++) {
        const waiter = pool.waiters[at] as Waiter;
        if (waiter.done || waiter.deadline > now) continue;
        waiter.done = true;
        waiter.handed(new PoolTimeout(`no server session became free within ${Math.round(waiter.timeoutMs / 1000)} s`));
      }
      if (pool.head > 1024 && pool.head * 2 > pool.waiters.length) {
        pool.waiters = pool.waiters.slice(pool.head);
        pool.head = 0;
      }
      while (pool.idle.length > 0 && now - (pool.idle[0] as Idle).since >= this.options.idleMs) (pool.idle.shift() as Idle).session.destroy();
      this.forgetIfEmpty(tenant, pool);
    }
    if (this.tenants.size === 0) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }
}

/** What a pooled client needs from its connection. */
export interface PooledClientHost {
  /** The client's socket (TLS). */
  readonly socket: net.Socket;
  /** An idle server session for the client's (database, role), at once, if the pool has one. */
  take(): ServerSession | undefined;
  /** A server session for the client's (database, role), from the pool (maybe after a wait). */
  acquire(handed: Handed): void;
  release(session: ServerSession, clean: boolean): void;
  /** The client must go: a FATAL with these fields (undefined: just close). */
  fail(fields: Record<string, string> | undefined): void;
  /** A statement names DATABASE: idle sessions of the tenant go first (they would block it). */
  databaseStatement(): void;
  /** A ReadyForQuery said idle: a transaction (or a statement outside one) ended. */
  transactionEnded(): void;
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
  /** Q, E: the changes to the session's settings it makes if it succeeds. */
  changes?: Change[];
}

interface ClientStatement {
  server: string;
  /** The Parse message that prepares it under the server name. */
  parse: Buffer;
  /** What executing it changes in the session's settings (a SET prepared by name). */
  changes?: Change[] | undefined;
}

const PARSE_COMPLETE = typed(0x31, Buffer.alloc(0));
/** The longest client message read whole; of a longer one only the first 64 KiB are (the rest streams on). */
const WHOLE_MAX = 1024 * 1024;
/** What a client may send while it waits for a server session before it is paused. */
const WAITING_MAX = 256 * 1024;
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
  /**
   * The client sent extended-protocol messages since its last Sync: the session
   * is not given back before the ReadyForQuery that Sync brings (a Parse
   * answered after a Flush leaves an unnamed statement the next Bind needs).
   */
  private unsynced = false;
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
  /** Bytes in `waiting`: past WAITING_MAX the client is paused. */
  private waitingBytes = 0;
  /** What this client's settings come to, as one string (undefined: to be worked out again). */
  private settingsKey: string | undefined;
  /** Settings the server does not report that the client changed with SET (by lower-case name; reported ones follow `seen`). */
  private readonly sets = new Map<string, Wanted>();
  /** Changes that succeeded since the last ReadyForQuery: recorded at the next one if it says idle and no error came. */
  private tentative: Change[] = [];
  private failed = false;
  /** The held session's settings changed while held: its settings key is not this client's any more. */
  private touched = false;
  /** What the unnamed statement changes in the settings, and portals bound to a statement that changes them. */
  private unnamedChanges: Change[] | undefined;
  private readonly portalChanges = new Map<string, Change[]>();

  /**
   * `seen`: the ParameterStatus values the client was given; `fixed`: its start-up
   * settings beyond those (set on each session it gets, reset on others).
   */
  constructor(private readonly host: PooledClientHost, private readonly seen: Map<string, string>, private readonly fixed: Map<string, string>) {
    this.fromClient = new MessageScanner(this.clientHandler, WHOLE_MAX);
    this.fromServer = new MessageScanner(this.serverHandler);
  }

  /** The backend running the client's transaction now, for a cancel request. */
  get current(): ServerSession | undefined {
    return this.session;
  }

  /** Takes the client's bytes. */
  readonly onData = (chunk: Buffer): void => {
    if (this.closed) return;
    if (this.session) {
      this.scanClient(chunk);
      return;
    }
    if (!this.attaching) {
      if (this.fromClient.atBoundary && chunk[0] === 0x58) {
        this.close(); // Terminate with nothing under way
        this.host.fail(undefined);
        return;
      }
      // The common case: an idle session set as this client expects, taken without waiting for anything.
      const ready = this.host.take();
      if (ready && stateOf(ready).settings === this.settings()) {
        this.use(ready);
        this.scanClient(chunk);
        return;
      }
      this.queue(chunk);
      void this.attach(ready);
      return;
    }
    this.queue(chunk);
  };

  private queue(chunk: Buffer): void {
    this.waiting.push(chunk);
    this.waitingBytes += chunk.length;
    if (this.waitingBytes > WAITING_MAX) this.host.socket.pause();
  }

  /** This client's settings as one string: a session whose last settings were the same needs none set. */
  private settings(): string {
    if (this.settingsKey === undefined) {
      const parts: string[] = [];
      for (const [name, value] of this.seen) if (carried(name.toLowerCase())) parts.push(name, value);
      parts.push('\0');
      for (const [name, wanted] of this.wanted()) parts.push(name, wantedKey(wanted));
      this.settingsKey = parts.join('\0');
    }
    return this.settingsKey;
  }

  /** Its start-up settings, and over them what it SET since. */
  private wanted(): Map<string, Wanted> {
    return this.sets.size === 0 ? this.fixed : new Map<string, Wanted>([...this.fixed, ...this.sets]);
  }

  /** The client is gone (or is being closed): its session, if it holds one, is made clean and given back, or closed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const session = this.session;
    if (!session) return;
    session.reclaim();
    if (this.pending.length === 0 && this.fromClient.atBoundary && this.fromServer.atBoundary && this.status === TX_IDLE && !this.unsynced) {
      this.host.release(session, true);
      return;
    }
    if (this.pending.length > 0 || this.unsynced || !this.fromClient.atBoundary || !this.fromServer.atBoundary) {
      // Something is under way on the server (or an exchange was left without its Sync): cancelled, and the session closed.
      this.host.release(session, false);
      return;
    }
    session.query('ROLLBACK').then(
      (r) => this.host.release(session, r.status === TX_IDLE && !r.error),
      () => this.host.release(session, false),
    );
  }

  private attach(ready: ServerSession | undefined): void {
    this.attaching = true;
    if (ready) this.handed(undefined, ready);
    else this.host.acquire(this.handed);
  }

  private readonly handed: Handed = (err, session) => {
    if (err || !session) {
      this.attaching = false;
      if (this.closed) return;
      this.closed = true;
      if (err instanceof PoolTimeout) {
        this.host.fail({ S: 'FATAL', V: 'FATAL', C: '53300', M: `${err.message} for tenant ${this.host.tenantId} (its transaction pool is full)`, H: `pgs config ${this.host.tenantId} --pool-size N allows more server sessions` });
      } else if (err instanceof ServerFull) {
        this.host.fail(err.fields);
      } else {
        this.host.fail({ S: 'FATAL', V: 'FATAL', C: '57P03', M: `the server of tenant ${this.host.tenantId} is not available: ${err?.message ?? 'no session'}` });
      }
      return;
    }
    if (this.closed) {
      this.attaching = false;
      this.host.release(session, true);
      return;
    }
    if (stateOf(session).settings === this.settings()) {
      this.begin(session);
      return;
    }
    applySettings(session, this.seen, this.wanted(), this.settings()).then(
      (error) => (error ? this.setupFailed(session, error) : this.begin(session)),
      (e: Error) => this.setupFailed(session, { C: '08006', M: `the server session of tenant ${this.host.tenantId} ended: ${e.message}` }),
    );
  };

  private setupFailed(session: ServerSession, error: ErrorFields): void {
    this.attaching = false;
    this.host.release(session, false);
    if (this.closed) return;
    this.closed = true;
    this.host.fail({ ...(error as Record<string, string>), S: 'FATAL', V: 'FATAL' });
  }

  /** The session is set up for this client: what it sent while waiting goes to the server. */
  private begin(session: ServerSession): void {
    this.attaching = false;
    if (this.closed) {
      this.host.release(session, true);
      return;
    }
    this.use(session);
    const waiting = this.waiting;
    this.waiting = [];
    const paused = this.waitingBytes > WAITING_MAX;
    this.waitingBytes = 0;
    for (const chunk of waiting) {
      if (this.session !== session) {
        // Given back already (the transaction ended within what was waiting): the rest needs another one.
        this.onData(chunk);
      } else {
        this.scanClient(chunk);
      }
    }
    if (paused && !this.closed) this.host.socket.resume();
  }

  /** The client holds `session` from now on: its bytes come here. */
  private use(session: ServerSession): void {
    this.session = session;
    this.state = stateOf(session);
    this.status = TX_IDLE;
    session.lend(this.onServerData, this.onServerGone);
  }

  private readonly onServerData = (chunk: Buffer): void => this.scanServer(chunk);

  /** The held session's server ended it (or died): the client goes too. */
  private readonly onServerGone = (): void => {
    const session = this.session;
    if (!session) return;
    session.reclaim();
    this.session = undefined;
    this.host.release(session, false);
    if (!this.closed) {
      this.closed = true;
      this.host.fail(undefined);
    }
  };


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
    // The session goes back before the answer is sent on: the next client's query reaches the server
    // while this answer is encrypted and written.
    const done = this.releasable();
    if (done) this.release(session);
    if (bytes && !this.host.socket.write(bytes) && !done) {
      session.socket.pause();
      this.host.socket.once('drain', () => {
        if (this.session === session) session.socket.resume();
      });
    }
    if (this.atNextBoundary.length > 0 && this.fromServer.atBoundary) {
      const waiting = this.atNextBoundary;
      this.atNextBoundary = [];
      for (const fn of waiting) fn();
    }
  }

  /** Between transactions with nothing under way. */
  private releasable(): boolean {
    return this.session !== undefined && !this.closed && !this.unsynced && this.pending.length === 0 && this.status === TX_IDLE && this.fromClient.atBoundary && this.fromServer.atBoundary;
  }

  private maybeRelease(): void {
    if (this.releasable()) this.release(this.session as ServerSession);
  }

  /** The session goes back to the pool (or straight to the next client waiting for it). */
  private release(session: ServerSession): void {
    session.reclaim();
    this.session = undefined;
    (this.state as PooledState).settings = this.touched ? undefined : this.settings();
    this.touched = false;
    this.state = undefined;
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
          this.unsynced = true;
          return WHOLE;
        case 0x51: // Query
        case 0x58: // Terminate
          return WHOLE;
        case 0x53: // Sync
          this.discarding = false;
          this.unsynced = false;
          this.pending.push({ type });
          return PASS;
        case 0x45: // Execute
          this.unsynced = true;
          if (this.portalChanges.size > 0) return WHOLE; // which portal it runs decides
          this.pending.push({ type });
          return PASS;
        case 0x46: // FunctionCall
          this.pending.push({ type });
          return PASS;
        case 0x48: // Flush
          this.unsynced = true;
          return PASS;
        default: // CopyData, CopyDone, CopyFail
          return PASS;
      }
    },
    whole: (type: number, payload: Buffer, out: Output): boolean => {
      switch (type) {
        case 0x50: return this.parse(payload, out);
        case 0x42: return this.bind(payload, out);
        case 0x44: return this.describe(payload, out);
        case 0x43: return this.closeMessage(payload);
        case 0x51: return this.query(payload, out);
        case 0x45: return this.execute(payload);
        default: // Terminate: the server session outlives the client
          this.terminated = true;
          return false;
      }
    },
    ended: (): void => undefined,
    head: (type, length, head, out) => this.longMessage(type, length, head, out),
  };

  /**
   * A message longer than WHOLE_MAX (a Bind with large parameters, a long
   * query): its head is enough to rewrite or look at, and the rest streams on.
   * A named statement this long is refused: the router would have to hold its
   * text to prepare it on other sessions.
   */
  private longMessage(type: number, length: number, head: Buffer, out: Output): 'pass' | 'replaced' | 'drop' {
    if (type === 0x51 || (type === 0x50 && head[0] === 0)) {
      const start = type === 0x50 ? 1 : 0;
      const end = head.indexOf(0, start);
      const { refusal, changes } = this.inspect(head.toString('utf8', start, end < 0 ? head.length : end));
      this.pending.push({ type });
      if (type === 0x50) this.unnamedChanges = changes;
      if (refusal === undefined) return 'pass';
      out.push(type === 0x51 ? typed(0x51, Buffer.from(`${refusal}\0`)) : typed(0x50, Buffer.from(`\0${refusal}\0\0\0`)));
      return 'drop';
    }
    if (type === 0x50) {
      const id = this.host.tenantId;
      const name = head.toString('utf8', 0, Math.max(0, head.indexOf(0)));
      this.refuseUntilSync({ S: 'ERROR', V: 'ERROR', C: '54000', M: `prepared statement "${name}" is ${length} bytes long: transaction pooling keeps named statements of at most ${WHOLE_MAX} bytes`, H: `Use an unnamed statement for it, or have tenant ${id} pool by session (pgs config ${id} --pool session).` });
      return 'drop';
    }
    const portalEnd = head.indexOf(0);
    const nameEnd = head.indexOf(0, portalEnd + 1);
    if (type !== 0x42 || portalEnd < 0 || nameEnd < 0 || nameEnd === portalEnd + 1) {
      // An unnamed Bind as it is; a Describe, Close or Execute this long is malformed, and the server says so.
      if (type === 0x42 && portalEnd >= 0) this.bound(head.toString('utf8', 0, portalEnd), '');
      if (type === 0x42 || type === 0x44 || type === 0x43 || type === 0x45) this.pending.push({ type });
      return 'pass';
    }
    this.bound(head.toString('utf8', 0, portalEnd), head.toString('utf8', portalEnd + 1, nameEnd));
    const server = this.statementOn(head.toString('utf8', portalEnd + 1, nameEnd), out);
    this.pending.push({ type: 0x42 });
    const rewritten = Buffer.concat([head.subarray(0, portalEnd + 1), Buffer.from(`${server}\0`), head.subarray(nameEnd + 1)]);
    const header = Buffer.allocUnsafe(5);
    header[0] = 0x42;
    header.writeInt32BE(length - head.length + rewritten.length + 4, 1);
    out.push(Buffer.concat([header, rewritten]));
    return 'replaced';
  }

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
    whole: (type: number, payload: Buffer): boolean => {
      if (type === 0x5a) {
        this.status = payload[0] ?? TX_IDLE;
        if (this.status === TX_IDLE) this.host.transactionEnded();
      } else {
        const nul = payload.indexOf(0);
        if (nul > 0) {
          const name = payload.toString('utf8', 0, nul);
          const end = payload.indexOf(0, nul + 1);
          const value = payload.toString('utf8', nul + 1, end < 0 ? payload.length : end);
          this.session?.params.set(name, value);
          this.seen.set(name, value);
          this.settingsKey = undefined;
        }
      }
      return true;
    },
    ended: (type: number, out: Output): void => {
      const head = this.pending[0];
      switch (type) {
        case 0x5a: // ReadyForQuery
          if (head?.type === 0x51 && head.changes) this.tentative.push(...head.changes);
          this.settle();
          this.pending.shift();
          break;
        case 0x31: // ParseComplete
        case 0x32: // BindComplete
        case 0x33: // CloseComplete
          this.pending.shift();
          break;
        case 0x54: // RowDescription
        case 0x6e: // NoData
          if (head?.type === 0x44) this.pending.shift();
          break;
        case 0x43: // CommandComplete
          if (head?.type === 0x45 && head.changes) this.tentative.push(...head.changes);
          if (head?.type === 0x45) this.pending.shift();
          break;
        case 0x49: // EmptyQueryResponse
        case 0x73: // PortalSuspended
          if (head?.type === 0x45) this.pending.shift();
          break;
        case 0x45: // ErrorResponse: the server skips to the next Sync
          this.failed = true;
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

  /** Returns true when the message goes on as it came. */
  private parse(payload: Buffer, out: Output): boolean {
    const nameEnd = payload.indexOf(0);
    const queryEnd = payload.indexOf(0, nameEnd + 1);
    if (nameEnd < 0 || queryEnd < 0) {
      this.pending.push({ type: 0x50 });
      return true;
    }
    const { refusal, changes } = this.inspect(payload.toString('utf8', nameEnd + 1, queryEnd));
    if (nameEnd === 0) {
      this.unnamedChanges = changes;
      this.pending.push({ type: 0x50 });
      if (refusal === undefined) return true;
      out.push(typed(0x50, Buffer.concat([Buffer.from(`\0${refusal}\0`), payload.subarray(queryEnd + 1)])));
      return false;
    }
    const body = refusal === undefined ? payload.subarray(nameEnd + 1) : Buffer.concat([Buffer.from(`${refusal}\0`), payload.subarray(queryEnd + 1)]);
    const name = payload.toString('utf8', 0, nameEnd);
    if (this.statements.has(name)) {
      this.refuseUntilSync({ S: 'ERROR', V: 'ERROR', C: '42P05', M: `prepared statement "${name}" already exists` });
      return false;
    }
    const server = `${STATEMENT_PREFIX}${createHash('sha1').update(body).digest('hex').slice(0, 24)}`;
    const parse = typed(0x50, Buffer.concat([Buffer.from(`${server}\0`), body]));
    this.statements.set(name, { server, parse, changes });
    const prepared = (this.state as PooledState).prepared;
    if (prepared.has(server)) {
      prepared.delete(server);
      prepared.set(server, true); // most recently used last
      this.answer(0x50, PARSE_COMPLETE);
      return false;
    }
    this.prepareOn(server, parse, out, false);
    return false;
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

  private bind(payload: Buffer, out: Output): boolean {
    const portalEnd = payload.indexOf(0);
    const nameEnd = payload.indexOf(0, portalEnd + 1);
    if (portalEnd < 0 || nameEnd < 0 || nameEnd === portalEnd + 1) {
      if (portalEnd >= 0) this.bound(payload.toString('utf8', 0, portalEnd), '');
      this.pending.push({ type: 0x42 });
      return true;
    }
    this.bound(payload.toString('utf8', 0, portalEnd), payload.toString('utf8', portalEnd + 1, nameEnd));
    const server = this.statementOn(payload.toString('utf8', portalEnd + 1, nameEnd), out);
    this.pending.push({ type: 0x42 });
    out.push(typed(0x42, Buffer.concat([payload.subarray(0, portalEnd + 1), Buffer.from(`${server}\0`), payload.subarray(nameEnd + 1)])));
    return false;
  }

  private describe(payload: Buffer, out: Output): boolean {
    if (payload[0] !== 0x53 || payload.length <= 2) {
      this.pending.push({ type: 0x44 });
      return true;
    }
    const server = this.statementOn(payload.toString('utf8', 1, payload.length - 1), out);
    this.pending.push({ type: 0x44 });
    out.push(typed(0x44, Buffer.from(`S${server}\0`)));
    return false;
  }

  private closeMessage(payload: Buffer): boolean {
    if (payload[0] !== 0x53 || payload.length <= 2) {
      this.pending.push({ type: 0x43 });
      return true;
    }
    // The statement stays prepared on the server sessions for other clients; the client's name goes.
    this.statements.delete(payload.toString('utf8', 1, payload.length - 1));
    this.answer(0x43, CLOSE_COMPLETE);
    return false;
  }

  private query(payload: Buffer, out: Output): boolean {
    const { refusal, changes } = this.inspect(payload.toString('utf8', 0, Math.max(0, payload.length - 1)));
    this.pending.push(changes ? { type: 0x51, changes } : { type: 0x51 });
    if (refusal === undefined) return true;
    out.push(typed(0x51, Buffer.from(`${refusal}\0`)));
    return false;
  }

  /** An error of the router's own in the extended protocol: the client's messages up to its Sync go unanswered, as after a server's error. */
  private refuseUntilSync(fields: Record<string, string>): void {
    this.answer(0x45, serializeErrorResponse(fields));
    this.discarding = true;
  }

  /** Execute (read whole only while some portal was bound to a statement that changes settings). */
  private execute(payload: Buffer): boolean {
    const changes = this.portalChanges.get(payload.toString('utf8', 0, Math.max(0, payload.indexOf(0))));
    this.pending.push(changes ? { type: 0x45, changes } : { type: 0x45 });
    return true;
  }

  /** A Bind of `statement` (a client's name) to `portal`: Execute of the portal makes the statement's changes. */
  private bound(portal: string, statement: string): void {
    const changes = statement === '' ? this.unnamedChanges : this.statements.get(statement)?.changes;
    if (changes) this.portalChanges.set(portal, changes);
    else if (this.portalChanges.size > 0) this.portalChanges.delete(portal);
  }

  /**
   * At a ReadyForQuery: the settings changed since the last one become the
   * client's when it says idle and no error came (a SET outside a transaction
   * block). Otherwise (inside a block, or rolled back) the server session's
   * value is no longer known, and the next transaction on it sets it again.
   */
  private settle(): void {
    const changes = this.tentative;
    const kept = !this.failed && this.status === TX_IDLE;
    this.tentative = [];
    this.failed = false;
    if (this.status === TX_IDLE && this.portalChanges.size > 0) this.portalChanges.clear();
    const state = this.state;
    if (changes.length === 0 || !state || !this.session) return;
    this.touched = true;
    this.settingsKey = undefined;
    const params = this.session.params;
    const reported = (name: string): boolean => [...params.keys()].some((k) => k.toLowerCase() === name);
    for (const change of changes) {
      if (change.kind === 'reset-all' || change.kind === 'discard-all') {
        if (!kept) {
          state.tainted = true;
          continue;
        }
        this.sets.clear();
        state.applied.clear();
        if (change.kind === 'discard-all') this.statements.clear();
      } else if (reported(change.name)) {
        continue; // its ParameterStatus told the client (and `seen`)
      } else if (!kept) {
        state.applied.set(change.name, UNKNOWN);
      } else if (change.kind === 'set') {
        const wanted = { sql: change.sql };
        this.sets.set(change.name, wanted);
        state.applied.set(change.name, wantedKey(wanted));
      } else {
        this.sets.delete(change.name);
        state.applied.delete(change.name);
      }
    }
  }

  /**
   * Looks at a statement the client sends: one that would leave session state
   * behind is replaced by a DO block that raises the error (`refusal`); ones
   * that make the router's view of the session wrong mark it to be closed
   * after use; `changes` are what it changes in the session's settings.
   */
  private inspect(sql: string): { refusal?: string | undefined; changes?: Change[] | undefined } {
    const found = inspectStatements(sql);
    if (found.taint && this.state) this.state.tainted = true;
    if (found.database) this.host.databaseStatement();
    if (found.refusal === undefined) return { changes: found.changes };
    const id = this.host.tenantId;
    const message = `${found.refusal} is not supported with transaction pooling: the next transaction may run on another server session`;
    const hint = `Use it within one transaction (SET LOCAL, pg_advisory_xact_lock, ON COMMIT DROP), or have tenant ${id} pool by session (pgs config ${id} --pool session).`;
    return { refusal: `DO $pgs$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = ${escapeLiteral(message)}, HINT = ${escapeLiteral(hint)}; END$pgs$` };
  }
}

/**
 * Sets `session` as a client expects it (see settingsSql); returns the
 * server's error, if any. Rejects when the session ends.
 */
export async function applySettings(session: ServerSession, seen: ReadonlyMap<string, string>, wanted: ReadonlyMap<string, Wanted>, key?: string): Promise<ErrorFields | undefined> {
  const state = stateOf(session);
  if (key !== undefined && state.settings === key) return undefined;
  // A reported setting the client never gave goes back to the session's own value, not another client's.
  const reported = new Map(state.defaults);
  for (const [name, value] of seen) reported.set(name.toLowerCase(), value);
  const sql = settingsSql(session.params, state.applied, reported, wanted);
  if (sql !== undefined) {
    const result = await session.query(sql);
    if (result.error) return result.error;
    if (result.status !== TX_IDLE) return { S: 'ERROR', C: '08P01', M: 'setting up the server session left a transaction open' };
    state.applied = new Map([...wanted].map(([name, w]) => [name, wantedKey(w)]));
  }
  state.settings = key;
  return undefined;
}

/**
 * The SQL that sets a server session as the client expects it: the carried
 * settings the client last saw where the server's differ, and the others it
 * wants (start-up values, SETs) where the session was given other ones (or
 * RESET where it wants none). Undefined when nothing differs.
 */
export function settingsSql(server: ReadonlyMap<string, string>, applied: ReadonlyMap<string, string>, seen: ReadonlyMap<string, string>, wanted: ReadonlyMap<string, Wanted>): string | undefined {
  const calls: string[] = [];
  const statements: string[] = [];
  const resets: string[] = [];
  const serverLower = new Map<string, string>();
  for (const [name, value] of server) serverLower.set(name.toLowerCase(), value);
  for (const [name, value] of seen) {
    const lower = name.toLowerCase();
    if (!carried(lower) || wanted.has(lower)) continue;
    if (serverLower.has(lower) && serverLower.get(lower) !== value) calls.push(`pg_catalog.set_config(${escapeLiteral(name)}, ${escapeLiteral(value)}, false)`);
  }
  for (const [name, w] of wanted) {
    if (applied.get(name) === wantedKey(w)) continue;
    if (typeof w === 'string') calls.push(`pg_catalog.set_config(${escapeLiteral(name)}, ${escapeLiteral(w)}, false)`);
    else statements.push(w.sql);
  }
  for (const name of applied.keys()) if (!wanted.has(name)) resets.push(`RESET ${quoteIdent(name)}`);
  if (calls.length === 0 && statements.length === 0 && resets.length === 0) return undefined;
  return [...resets, ...statements, ...(calls.length > 0 ? [`SELECT ${calls.join(', ')}`] : [])].join('; ');
}

/** The client's start-up settings split: the carried ones the server reports (compared with what it reports) and the rest. Names in lower case. */
export function splitSettings(settings: Map<string, string>, reported: Map<string, string>): { carried: Map<string, string>; fixed: Map<string, string> } {
  const carriedOnes = new Map<string, string>();
  const fixed = new Map<string, string>();
  const names = new Set([...reported.keys()].map((k) => k.toLowerCase()));
  for (const [name, value] of settings) {
    const lower = name.toLowerCase();
    (carried(lower) && names.has(lower) ? carriedOnes : fixed).set(lower, value);
  }
  return { carried: carriedOnes, fixed };
}

/** What the router makes of a client's statement (or statements, in a simple Query). */
export interface Inspection {
  /** Session state pooling cannot carry: the phrase for the error. */
  refusal?: string;
  /** What it changes in the session's settings, recorded once it succeeds outside a transaction block. */
  changes?: Change[];
  /** It makes the router's view of the server session wrong (DISCARD, DEALLOCATE): closed when given back. */
  taint?: boolean;
  /** It names DATABASE: the tenant's idle sessions go first. */
  database?: boolean;
}

/**
 * Looks at a query's statements (those in its first 64 KiB; the first words
 * of each, and for advisory locks the whole text). SET, RESET and DISCARD ALL
 * are tracked when they are the query's only statements.
 */
export function inspectStatements(sql: string): Inspection {
  if (ADVISORY_LOCK.test(sql)) return { refusal: 'a session advisory lock' };
  if (!sql.includes(';') && !WATCHED.has(firstWord(sql))) return {};
  const { statements, more } = splitStatements(sql);
  const found: Inspection = {};
  const changes: Change[] = [];
  let others = more ? 1 : 0;
  for (const statement of statements) {
    const first = statement.tokens[0]?.kind === 'word' ? statement.tokens[0].value : '';
    if (first === 'set' || first === 'reset' || first === 'discard') {
      const set = classifySet(statement.tokens);
      if (set.kind === 'refused') return { refusal: set.what };
      if (set.kind === 'change') {
        changes.push(...set.changes);
        if (set.changes.some((c) => c.kind === 'discard-all')) found.taint = true;
        continue;
      }
    }
    others++;
    const use = statementUse(first, statement);
    if (use === 'discard') found.taint = true;
    else if (use === 'database') found.database = true;
    else if (use !== undefined) return { refusal: use };
  }
  if (changes.length > 0) {
    if (others > 0) return { refusal: 'SET or RESET in a query with other statements (send it as a query of its own)' };
    found.changes = changes;
  }
  return found;
}

/** inspectStatements as one phrase (`discard`, `database`, a refusal), or undefined: for the tests. */
export function sessionStateUse(sql: string): string | undefined {
  const found = inspectStatements(sql);
  return found.refusal ?? (found.taint ? 'discard' : found.database ? 'database' : undefined);
}

function statementUse(first: string, statement: Statement): string | undefined {
  const text = statement.text;
  const second = statement.tokens[1]?.kind === 'word' ? statement.tokens[1].value : '';
  switch (first) {
    case 'listen':
      return 'LISTEN';
    case 'prepare':
      return second === 'transaction' ? undefined : 'PREPARE (prepared statements of the protocol work)';
    case 'declare':
      return /\bwith\s+hold\b/i.test(text) ? 'a cursor WITH HOLD' : undefined;
    case 'create':
      if (/^create\s+(global\s+|local\s+)?(temp|temporary)\s/i.test(text) && !/\bon\s+commit\s+drop\b/i.test(text)) return 'a temporary table that outlives its transaction';
      return second === 'database' ? 'database' : undefined;
    case 'drop':
    case 'alter':
      return second === 'database' ? 'database' : undefined;
    case 'discard':
    case 'deallocate':
      return 'discard';
    case 'load':
      return 'LOAD';
    default:
      return undefined;
  }
}

const ADVISORY_LOCK = /\bpg_(try_)?advisory_lock(_shared)?\s*\(/i;
/** First words of statements that sessionStateUse looks at further. */
const WATCHED = new Set(['listen', 'prepare', 'declare', 'create', 'drop', 'alter', 'discard', 'deallocate', 'reset', 'load', 'set']);

/** The first word of a statement (after comments and spaces), lower-cased. */
function firstWord(sql: string): string {
  const text = skipComments(sql);
  let end = 0;
  while (end < text.length && end < 12 && isLetter(text.charCodeAt(end))) end++;
  return text.slice(0, end).toLowerCase();
}

function isLetter(code: number): boolean {
  return (code >= 0x61 && code <= 0x7a) || (code >= 0x41 && code <= 0x5a);
}

function skipComments(sql: string): string {
  let at = 0;
  for (;;) {
    while (at < sql.length && (sql.charCodeAt(at) <= 0x20 || sql.charCodeAt(at) === 0xa0)) at++;
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
