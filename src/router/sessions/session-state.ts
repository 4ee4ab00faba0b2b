import { TxStatus } from '../../protocol/codes.js';
import { mentionsDatabase } from '../../protocol/sql-statements.js';
import { ClientCursor, ServerCursor } from './stream-cursors.js';

/** ReadyForQuery's transaction status when no transaction is open ('I'). */
export const TX_IDLE = TxStatus.Idle;

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
  status: number = TX_IDLE;
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
