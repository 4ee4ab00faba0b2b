/**
 * One client in transaction mode after its greeting, on its sockets: it gets
 * a server session when it starts a transaction (set up as it expects),
 * holds it while its exchange with the server is under way, and gives it back
 * at the ReadyForQuery that ends the transaction. What goes between the two
 * is the PooledExchange's business.
 */
import type net from 'node:net';
import { Frontend, TxStatus } from '../../protocol/codes.js';
import type { ErrorFields } from '../../protocol/messages.js';
import type { ServerSession } from '../server-sessions.js';
import { ServerFull } from '../server-slots.js';
import { ClientSettings } from './client-settings.js';
import { PooledExchange, type ExchangeHost } from './exchange.js';
import { PoolTimeout, type Handed } from './pool.js';
import { applySettings, stateOf } from './server-state.js';

/** What a pooled client needs from its connection. */
export interface PooledClientHost extends ExchangeHost {
  /** The client's socket (TLS). */
  readonly socket: net.Socket;
  /** An idle server session for the client's (database, role), at once, if the pool has one. */
  take(): ServerSession | undefined;
  /** A server session for the client's (database, role), from the pool (maybe after a wait). */
  acquire(handed: Handed): void;
  release(session: ServerSession, clean: boolean): void;
  /** The client must go: a FATAL with these fields (undefined: just close). */
  fail(fields: Record<string, string> | undefined): void;
}

/** What a client may send while it waits for a server session before it is paused. */
const WAITING_MAX = 256 * 1024;

export class PooledClient {
  private session: ServerSession | undefined;
  private attaching = false;
  private closed = false;
  /** Chunks the client sent while it waited for a server session. */
  private waiting: Buffer[] = [];
  /** Bytes in `waiting`: past WAITING_MAX the client is paused. */
  private waitingBytes = 0;
  /** Run at the next point between two of the server's messages to the client. */
  private atNextBoundary: (() => void)[] = [];
  private readonly exchange: PooledExchange;
  private readonly settings: ClientSettings;

  /**
   * `seen`: the ParameterStatus values the client was given; `fixed`: its start-up
   * settings beyond those (set on each session it gets, reset on others).
   */
  constructor(private readonly host: PooledClientHost, seen: Map<string, string>, fixed: Map<string, string>) {
    this.settings = new ClientSettings(seen, fixed);
    this.exchange = new PooledExchange(host, this.settings);
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
      if (this.exchange.clientAtBoundary && chunk[0] === Frontend.Terminate) {
        this.close(); // Terminate with nothing under way
        this.host.fail(undefined);
        return;
      }
      // The common case: an idle session set as this client expects, taken without waiting for anything.
      const ready = this.host.take();
      if (ready && stateOf(ready).settings === this.settings.key()) {
        this.use(ready);
        this.scanClient(chunk);
        return;
      }
      this.queue(chunk);
      this.attach(ready);
      return;
    }
    this.queue(chunk);
  };

  private queue(chunk: Buffer): void {
    this.waiting.push(chunk);
    this.waitingBytes += chunk.length;
    if (this.waitingBytes > WAITING_MAX) this.host.socket.pause();
  }

  /** The client is gone (or is being closed): its session, if it holds one, is made clean and given back, or closed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const session = this.session;
    if (!session) return;
    session.reclaim();
    if (this.exchange.idle) {
      this.host.release(session, true);
      return;
    }
    if (this.exchange.underWay) {
      // Something is under way on the server (or an exchange was left without its Sync): cancelled, and the session closed.
      this.host.release(session, false);
      return;
    }
    session.query('ROLLBACK').then(
      (r) => this.host.release(session, r.status === TxStatus.Idle && !r.error),
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
    if (stateOf(session).settings === this.settings.key()) {
      this.begin(session);
      return;
    }
    applySettings(session, this.settings.seen, this.settings.wanted(), this.settings.key()).then(
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
    this.exchange.attach(stateOf(session));
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
    const bytes = this.exchange.fromClient(chunk);
    const answers = this.exchange.takeAnswers();
    if (answers) this.host.socket.write(answers);
    if (bytes && !this.closed && session.usable && !session.socket.write(bytes)) {
      this.host.socket.pause();
      session.socket.once('drain', () => {
        if (!this.closed) this.host.socket.resume();
      });
    }
    if (this.exchange.terminated) {
      this.close();
      this.host.fail(undefined);
      return;
    }
    if (this.releasable()) this.release(session);
  }

  /** Runs `fn` now if the server's stream to the client stands between two messages, else once a chunk of it ends between two. */
  betweenMessages(fn: () => void): void {
    if (!this.session || this.exchange.serverAtBoundary) fn();
    else this.atNextBoundary.push(fn);
  }

  private scanServer(chunk: Buffer): void {
    const session = this.session;
    if (!session) return;
    const bytes = this.exchange.fromServer(chunk);
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
    if (this.atNextBoundary.length > 0 && this.exchange.serverAtBoundary) {
      const waiting = this.atNextBoundary;
      this.atNextBoundary = [];
      for (const fn of waiting) fn();
    }
  }

  /** Between transactions with nothing under way. */
  private releasable(): boolean {
    return this.session !== undefined && !this.closed && this.exchange.idle;
  }

  /** The session goes back to the pool (or straight to the next client waiting for it). */
  private release(session: ServerSession): void {
    session.reclaim();
    this.session = undefined;
    this.settings.released(stateOf(session));
    this.exchange.detach();
    this.host.release(session, true);
  }
}
