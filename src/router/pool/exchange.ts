/**
 * The messages between one pooled client and the server session it holds,
 * the pure core of PooledClient: chunks of either stream in (cut anywhere),
 * bytes for the other side out. The client's statement names are rewritten to
 * the router's own (prepared on the session first where it lacks them), what
 * pooling cannot carry is refused, settings changes are followed, and each
 * client message waits in `pending` for its answer, so that the router's own
 * answers go in their turn and the answers to its own messages are dropped.
 * No sockets, no timers: PooledClient does the I/O.
 */
import { createHash } from 'node:crypto';
import { Backend, Frontend, Target, TxStatus } from '../../protocol/codes.js';
import { serializeErrorResponse, typed } from '../../protocol/messages.js';
import { DROP, MessageScanner, Output, PASS, WHOLE, type ScanHandler, type Verdict } from '../../protocol/scanner.js';
import { escapeLiteral } from '../../protocol/sql-lexer.js';
import { inspectStatements, type Change } from '../../protocol/sql-statements.js';
import type { ClientSettings } from './client-settings.js';
import type { PooledState } from './server-state.js';

/** What the exchange tells its client's connection. */
export interface ExchangeHost {
  readonly tenantId: string;
  /** A statement names DATABASE: idle sessions of the tenant go first (they would block it). */
  databaseStatement(): void;
  /** A ReadyForQuery said idle: a transaction (or a statement outside one) ended. */
  transactionEnded(): void;
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

/** Statements the router keeps prepared per server session; past it the least recently used is closed. */
const MAX_PREPARED = 200;
export const STATEMENT_PREFIX = 'pgs_';
/** The longest client message read whole; of a longer one only the first 64 KiB are (the rest streams on). */
export const WHOLE_MAX = 1024 * 1024;
const PARSE_COMPLETE = typed(Backend.ParseComplete, Buffer.alloc(0));
const CLOSE_COMPLETE = typed(Backend.CloseComplete, Buffer.alloc(0));

export class PooledExchange {
  /** The held session's state (undefined between transactions). */
  private state: PooledState | undefined;
  private readonly pending: Pending[] = [];
  /** The transaction status of the last ReadyForQuery. */
  status: number = TxStatus.Idle;
  private readonly statements = new Map<string, ClientStatement>();
  /**
   * The client sent extended-protocol messages since its last Sync: the session
   * is not given back before the ReadyForQuery that Sync brings (a Parse
   * answered after a Flush leaves an unnamed statement the next Bind needs).
   */
  private unsynced = false;
  /** The client sent Terminate: nothing after it is read. */
  terminated = false;
  /** An error of the router's own was sent: the client's messages up to its Sync are dropped, as the server would. */
  private discarding = false;
  private readonly fromClientScanner: MessageScanner;
  private readonly fromServerScanner: MessageScanner;
  private readonly clientOut = new Output();
  private readonly serverOut = new Output();
  /** The router's answers to the client that nothing was ahead of, during the last fromClient. */
  private answers: Buffer[] = [];

  constructor(private readonly host: ExchangeHost, readonly settings: ClientSettings) {
    this.fromClientScanner = new MessageScanner(this.clientHandler, WHOLE_MAX);
    this.fromServerScanner = new MessageScanner(this.serverHandler);
  }

  /** The client holds a server session of `state` from now on. */
  attach(state: PooledState): void {
    this.state = state;
    this.status = TxStatus.Idle;
  }

  /** The session is given back: `state` is no longer this client's. */
  detach(): void {
    this.state = undefined;
  }

  get clientAtBoundary(): boolean {
    return this.fromClientScanner.atBoundary;
  }

  get serverAtBoundary(): boolean {
    return this.fromServerScanner.atBoundary;
  }

  /** Between transactions with nothing under way: the session can go back. */
  get idle(): boolean {
    return !this.unsynced && this.pending.length === 0 && this.status === TxStatus.Idle && this.fromClientScanner.atBoundary && this.fromServerScanner.atBoundary;
  }

  /** Something is under way on the server, or an exchange was left without its Sync. */
  get underWay(): boolean {
    return this.pending.length > 0 || this.unsynced || !this.fromClientScanner.atBoundary || !this.fromServerScanner.atBoundary;
  }

  /** The client's bytes (a session attached): returns what goes to the server; the router's own answers wait in takeAnswers. */
  fromClient(chunk: Buffer): Buffer | undefined {
    const out = this.clientOut;
    out.begin(chunk);
    this.fromClientScanner.scan(chunk, out);
    return out.take();
  }

  /** Answers of the router's own to send to the client now (after fromClient). */
  takeAnswers(): Buffer | undefined {
    const answers = this.answers;
    if (answers.length === 0) return undefined;
    this.answers = [];
    return answers.length === 1 ? answers[0] : Buffer.concat(answers);
  }

  /** The server's bytes: returns what goes to the client. */
  fromServer(chunk: Buffer): Buffer | undefined {
    const out = this.serverOut;
    out.begin(chunk);
    this.fromServerScanner.scan(chunk, out);
    return out.take();
  }

  /** A message the router answers itself: now if nothing is ahead of it, else in its turn. */
  private answer(type: number, bytes: Buffer): void {
    if (this.pending.length === 0 && this.fromServerScanner.atBoundary) this.answers.push(bytes);
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
      if (this.terminated || (this.discarding && type !== Frontend.Sync)) return DROP;
      switch (type) {
        case Frontend.Parse:
        case Frontend.Bind:
        case Frontend.Describe:
        case Frontend.Close:
          this.unsynced = true;
          return WHOLE;
        case Frontend.Query:
        case Frontend.Terminate:
          return WHOLE;
        case Frontend.Sync:
          this.discarding = false;
          this.unsynced = false;
          this.pending.push({ type });
          return PASS;
        case Frontend.Execute:
          this.unsynced = true;
          if (this.settings.portalsChange) return WHOLE; // which portal it runs decides
          this.pending.push({ type });
          return PASS;
        case Frontend.FunctionCall:
          this.pending.push({ type });
          return PASS;
        case Frontend.Flush:
          this.unsynced = true;
          return PASS;
        default: // CopyData, CopyDone, CopyFail
          return PASS;
      }
    },
    whole: (type: number, payload: Buffer, out: Output): boolean => {
      switch (type) {
        case Frontend.Parse: return this.parse(payload, out);
        case Frontend.Bind: return this.bind(payload, out);
        case Frontend.Describe: return this.describe(payload, out);
        case Frontend.Close: return this.closeMessage(payload);
        case Frontend.Query: return this.query(payload, out);
        case Frontend.Execute: return this.execute(payload);
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
    if (type === Frontend.Query || (type === Frontend.Parse && head[0] === 0)) {
      const start = type === Frontend.Parse ? 1 : 0;
      const end = head.indexOf(0, start);
      const { refusal, changes } = this.inspect(head.toString('utf8', start, end < 0 ? head.length : end));
      this.pending.push({ type });
      if (type === Frontend.Parse) this.settings.unnamedChanges = changes;
      if (refusal === undefined) return 'pass';
      out.push(type === Frontend.Query ? typed(Frontend.Query, Buffer.from(`${refusal}\0`)) : typed(Frontend.Parse, Buffer.from(`\0${refusal}\0\0\0`)));
      return 'drop';
    }
    if (type === Frontend.Parse) {
      const id = this.host.tenantId;
      const name = head.toString('utf8', 0, Math.max(0, head.indexOf(0)));
      this.refuseUntilSync({ S: 'ERROR', V: 'ERROR', C: '54000', M: `prepared statement "${name}" is ${length} bytes long: transaction pooling keeps named statements of at most ${WHOLE_MAX} bytes`, H: `Use an unnamed statement for it, or have tenant ${id} pool by session (pgs config ${id} --pool session).` });
      return 'drop';
    }
    const portalEnd = head.indexOf(0);
    const nameEnd = head.indexOf(0, portalEnd + 1);
    if (type !== Frontend.Bind || portalEnd < 0 || nameEnd < 0 || nameEnd === portalEnd + 1) {
      // An unnamed Bind as it is; a Describe, Close or Execute this long is malformed, and the server says so.
      if (type === Frontend.Bind && portalEnd >= 0) this.bound(head.toString('utf8', 0, portalEnd), '');
      if (type === Frontend.Bind || type === Frontend.Describe || type === Frontend.Close || type === Frontend.Execute) this.pending.push({ type });
      return 'pass';
    }
    this.bound(head.toString('utf8', 0, portalEnd), head.toString('utf8', portalEnd + 1, nameEnd));
    const server = this.statementOn(head.toString('utf8', portalEnd + 1, nameEnd), out);
    this.pending.push({ type: Frontend.Bind });
    const rewritten = Buffer.concat([head.subarray(0, portalEnd + 1), Buffer.from(`${server}\0`), head.subarray(nameEnd + 1)]);
    const header = Buffer.allocUnsafe(5);
    header[0] = Frontend.Bind;
    header.writeInt32BE(length - head.length + rewritten.length + 4, 1);
    out.push(Buffer.concat([header, rewritten]));
    return 'replaced';
  }

  private readonly serverHandler: ScanHandler = {
    verdict: (type: number): Verdict => {
      switch (type) {
        case Backend.ReadyForQuery:
        case Backend.ParameterStatus:
          return WHOLE;
        case Backend.ParseComplete:
        case Backend.CloseComplete:
          return this.pending[0]?.skip ? DROP : PASS;
        default:
          return PASS;
      }
    },
    whole: (type: number, payload: Buffer): boolean => {
      if (type === Backend.ReadyForQuery) {
        this.status = payload[0] ?? TxStatus.Idle;
        if (this.status === TxStatus.Idle) this.host.transactionEnded();
      } else {
        const nul = payload.indexOf(0);
        if (nul > 0) {
          const name = payload.toString('utf8', 0, nul);
          const end = payload.indexOf(0, nul + 1);
          const value = payload.toString('utf8', nul + 1, end < 0 ? payload.length : end);
          this.state?.params.set(name, value);
          this.settings.reported(name, value);
        }
      }
      return true;
    },
    ended: (type: number, out: Output): void => {
      const head = this.pending[0];
      switch (type) {
        case Backend.ReadyForQuery:
          if (head?.type === Frontend.Query && head.changes) this.settings.completed(head.changes);
          if (this.settings.settle(this.status, this.state)) this.statements.clear();
          this.pending.shift();
          break;
        case Backend.ParseComplete:
        case Backend.BindComplete:
        case Backend.CloseComplete:
          this.pending.shift();
          break;
        case Backend.RowDescription:
        case Backend.NoData:
          if (head?.type === Frontend.Describe) this.pending.shift();
          break;
        case Backend.CommandComplete:
          if (head?.type === Frontend.Execute && head.changes) this.settings.completed(head.changes);
          if (head?.type === Frontend.Execute) this.pending.shift();
          break;
        case Backend.EmptyQueryResponse:
        case Backend.PortalSuspended:
          if (head?.type === Frontend.Execute) this.pending.shift();
          break;
        case Backend.ErrorResponse: // the server skips to the next Sync
          this.settings.errored();
          if (head && head.type !== Frontend.Sync && head.type !== Frontend.Query && head.type !== Frontend.FunctionCall) this.skipToSync();
          break;
      }
      this.answersAtHead(out);
    },
  };

  /** After an error in the extended protocol: what the server will not answer comes off the line. */
  private skipToSync(): void {
    const prepared = this.state?.prepared;
    while (this.pending.length > 0 && (this.pending[0] as Pending).type !== Frontend.Sync) {
      const entry = this.pending.shift() as Pending;
      if (entry.statement === undefined || !prepared) continue;
      if (entry.type === Frontend.Parse) prepared.delete(entry.statement);
      else if (entry.type === Frontend.Close) prepared.set(entry.statement, true);
    }
  }

  // --- the client's messages that are read whole ---

  /** Returns true when the message goes on as it came. */
  private parse(payload: Buffer, out: Output): boolean {
    const nameEnd = payload.indexOf(0);
    const queryEnd = payload.indexOf(0, nameEnd + 1);
    if (nameEnd < 0 || queryEnd < 0) {
      this.pending.push({ type: Frontend.Parse });
      return true;
    }
    const { refusal, changes } = this.inspect(payload.toString('utf8', nameEnd + 1, queryEnd));
    if (nameEnd === 0) {
      this.settings.unnamedChanges = changes;
      this.pending.push({ type: Frontend.Parse });
      if (refusal === undefined) return true;
      out.push(typed(Frontend.Parse, Buffer.concat([Buffer.from(`\0${refusal}\0`), payload.subarray(queryEnd + 1)])));
      return false;
    }
    const body = refusal === undefined ? payload.subarray(nameEnd + 1) : Buffer.concat([Buffer.from(`${refusal}\0`), payload.subarray(queryEnd + 1)]);
    const name = payload.toString('utf8', 0, nameEnd);
    if (this.statements.has(name)) {
      this.refuseUntilSync({ S: 'ERROR', V: 'ERROR', C: '42P05', M: `prepared statement "${name}" already exists` });
      return false;
    }
    const server = `${STATEMENT_PREFIX}${createHash('sha1').update(body).digest('hex').slice(0, 24)}`;
    const parse = typed(Frontend.Parse, Buffer.concat([Buffer.from(`${server}\0`), body]));
    this.statements.set(name, { server, parse, changes });
    const prepared = (this.state as PooledState).prepared;
    if (prepared.has(server)) {
      prepared.delete(server);
      prepared.set(server, true); // most recently used last
      this.answer(Frontend.Parse, PARSE_COMPLETE);
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
      out.push(typed(Frontend.Close, Buffer.from(`S${oldest}\0`)));
      this.pending.push({ type: Frontend.Close, skip: true, statement: oldest });
    }
    prepared.set(server, true);
    out.push(parse);
    this.pending.push({ type: Frontend.Parse, statement: server, ...(skip ? { skip } : {}) });
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
      this.pending.push({ type: Frontend.Bind });
      return true;
    }
    this.bound(payload.toString('utf8', 0, portalEnd), payload.toString('utf8', portalEnd + 1, nameEnd));
    const server = this.statementOn(payload.toString('utf8', portalEnd + 1, nameEnd), out);
    this.pending.push({ type: Frontend.Bind });
    out.push(typed(Frontend.Bind, Buffer.concat([payload.subarray(0, portalEnd + 1), Buffer.from(`${server}\0`), payload.subarray(nameEnd + 1)])));
    return false;
  }

  private describe(payload: Buffer, out: Output): boolean {
    if (payload[0] !== Target.Statement || payload.length <= 2) {
      this.pending.push({ type: Frontend.Describe });
      return true;
    }
    const server = this.statementOn(payload.toString('utf8', 1, payload.length - 1), out);
    this.pending.push({ type: Frontend.Describe });
    out.push(typed(Frontend.Describe, Buffer.from(`S${server}\0`)));
    return false;
  }

  private closeMessage(payload: Buffer): boolean {
    if (payload[0] !== Target.Statement || payload.length <= 2) {
      this.pending.push({ type: Frontend.Close });
      return true;
    }
    // The statement stays prepared on the server sessions for other clients; the client's name goes.
    this.statements.delete(payload.toString('utf8', 1, payload.length - 1));
    this.answer(Frontend.Close, CLOSE_COMPLETE);
    return false;
  }

  private query(payload: Buffer, out: Output): boolean {
    const { refusal, changes } = this.inspect(payload.toString('utf8', 0, Math.max(0, payload.length - 1)));
    this.pending.push(changes ? { type: Frontend.Query, changes } : { type: Frontend.Query });
    if (refusal === undefined) return true;
    out.push(typed(Frontend.Query, Buffer.from(`${refusal}\0`)));
    return false;
  }

  /** An error of the router's own in the extended protocol: the client's messages up to its Sync go unanswered, as after a server's error. */
  private refuseUntilSync(fields: Record<string, string>): void {
    this.answer(Frontend.Parse, serializeErrorResponse(fields));
    this.discarding = true;
  }

  /** Execute (read whole only while some portal was bound to a statement that changes settings). */
  private execute(payload: Buffer): boolean {
    const changes = this.settings.changesOf(payload.toString('utf8', 0, Math.max(0, payload.indexOf(0))));
    this.pending.push(changes ? { type: Frontend.Execute, changes } : { type: Frontend.Execute });
    return true;
  }

  /** A Bind of `statement` (a client's name) to `portal`: Execute of the portal makes the statement's changes. */
  private bound(portal: string, statement: string): void {
    this.settings.bound(portal, statement === '' ? this.settings.unnamedChanges : this.statements.get(statement)?.changes);
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

