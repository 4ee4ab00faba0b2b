import { connect, type Socket } from 'node:net';
import { AUTH_OK, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL, BackendMessage } from '../protocol/constants.js';
import {
  MessageReader, parseDataRow, parseErrorFields, serializeQuery, serializeSASLInitialResponse, serializeSASLResponse, serializeStartup, serializeTerminate,
  type ErrorFields,
} from '../protocol/messages.js';
import { SCRAM_SHA_256, ScramClient } from '../auth/scram-client.js';
import { ADMIN_ROLE, ADMIN_SESSION_SETTINGS, socketPath } from './server-config.js';

/**
 * A minimal simple-query client for the admin role over a server's unix
 * socket, where peer authentication needs no password. It does the few
 * statements pgs runs itself (rename the database, set a password verifier)
 * without loading a full driver into every CLI command.
 */
/** CopyData ('d'): a chunk of a COPY stream. */
const COPY_DATA = 0x64;

export class AdminQueryError extends Error {
  readonly fields: ErrorFields;
  constructor(fields: ErrorFields) {
    super(`${fields.S ?? 'ERROR'} ${fields.C ?? ''}: ${fields.M ?? 'unknown error'}`);
    this.name = 'AdminQueryError';
    this.fields = fields;
  }
}

interface Pending {
  rows: (string | null)[][];
  /** COPY OUT data goes here (BASE_BACKUP streamed to the client); false: wait for `drained` before reading on. */
  copy?: { onData: (payload: Buffer) => boolean; drained: () => Promise<void> };
  error?: AdminQueryError;
  resolve(rows: (string | null)[][]): void;
  reject(err: Error): void;
}

export class AdminClient {
  private readonly socket: Socket;
  private readonly reader = new MessageReader();
  private pending: Pending | undefined;
  private failure: Error | undefined;
  /** Set when logging in with a password (SCRAM-SHA-256); peer authentication needs none. */
  private scram: ScramClient | undefined;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('the server closed the connection')));
  }

  /**
   * Connects to `<socketDir>/.s.PGSQL.<port>` and waits for ReadyForQuery.
   * `timeoutMs`: give up (and close) when the server says nothing for that long.
   */
  static async connect(socketDir: string, port: number, user: string, database: string, options: { timeoutMs?: number; password?: string; replication?: boolean } = {}): Promise<AdminClient> {
    const socket = connect(socketPath(socketDir, port));
    const client = new AdminClient(socket);
    if (options.password !== undefined) client.scram = new ScramClient(options.password);
    const timer = options.timeoutMs === undefined ? undefined : client.deadline(options.timeoutMs);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
      // replication=database: a walsender session that also takes replication commands (BASE_BACKUP).
      await client.exchange(serializeStartup({ user, database, application_name: 'pgs', ...(user === ADMIN_ROLE ? ADMIN_SESSION_SETTINGS : {}), ...(options.replication ? { replication: 'database' } : {}) }));
    } finally {
      clearTimeout(timer);
    }
    return client;
  }

  /**
   * Runs one statement (simple query protocol); returns its rows as text.
   * `timeoutMs`: without an answer by then the connection is closed and the query fails.
   */
  async query(sql: string, options: { timeoutMs?: number } = {}): Promise<(string | null)[][]> {
    const timer = options.timeoutMs === undefined ? undefined : this.deadline(options.timeoutMs);
    try {
      return await this.exchange(serializeQuery(sql));
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Runs a command that answers with a COPY OUT stream (BASE_BACKUP without a
   * target): each CopyData payload goes to `onData` in order; when it returns
   * false, reading pauses until `drained` resolves (back-pressure from a pipe).
   * Returns the rows of the result sets around the stream.
   */
  copyOut(sql: string, onData: (payload: Buffer) => boolean, drained: () => Promise<void>): Promise<(string | null)[][]> {
    return this.exchange(serializeQuery(sql), { onData, drained });
  }

  /** False once the connection failed or closed. */
  get usable(): boolean {
    return this.failure === undefined && !this.socket.destroyed;
  }

  /** Calls `listener` once when the connection closes, for whatever reason (the server's process exited, too). */
  onClose(listener: () => void): void {
    if (this.socket.destroyed) queueMicrotask(listener);
    else this.socket.once('close', listener);
  }

  destroy(): void {
    this.fail(new Error('the connection was closed by pgs'));
    this.socket.destroy();
  }

  private deadline(ms: number): NodeJS.Timeout {
    return setTimeout(() => {
      const err = new Error(`the server did not answer within ${ms} ms`);
      this.fail(err);
      this.socket.destroy(err);
    }, ms);
  }

  /**
   * Says Terminate and waits (at most `graceMs`) for the server to close the connection:
   * PostgreSQL keeps it open until the backend has exited, so that the connection slot it
   * used is free again when this resolves (the tenant's slots are counted on that).
   */
  async close(graceMs = 2_000): Promise<void> {
    if (this.socket.destroyed) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, graceMs);
      this.socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.socket.resume();
      this.socket.end(serializeTerminate());
    });
    this.socket.destroy();
  }

  /** Queries wait for the one before (a session shared by health checks and login lookups). */
  private queue: Promise<unknown> = Promise.resolve();

  private exchange(bytes: Buffer, copy?: Pending['copy']): Promise<(string | null)[][]> {
    const run = (): Promise<(string | null)[][]> => {
      if (this.failure) return Promise.reject(this.failure);
      return new Promise((resolve, reject) => {
        this.pending = { rows: [], resolve, reject, ...(copy ? { copy } : {}) };
        this.socket.write(bytes);
      });
    };
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private onData(chunk: Buffer): void {
    this.reader.push(chunk);
    try {
      for (let message = this.reader.next(); message; message = this.reader.next()) this.onMessage(message.type, message.payload);
    } catch (err) {
      this.fail(err as Error);
      this.socket.destroy();
    }
  }

  private onMessage(type: number, payload: Buffer): void {
    const pending = this.pending;
    switch (type) {
      case BackendMessage.Authentication:
        this.onAuthentication(payload);
        return;
      case BackendMessage.DataRow:
        pending?.rows.push(parseDataRow(payload));
        return;
      case COPY_DATA: {
        const copy = pending?.copy;
        if (copy && !copy.onData(payload) && !this.socket.isPaused()) {
          this.socket.pause();
          copy.drained().then(() => this.socket.resume(), (err: Error) => this.fail(err));
        }
        return;
      }
      case BackendMessage.ErrorResponse: {
        const error = new AdminQueryError(parseErrorFields(payload));
        if (pending) pending.error = error;
        // A FATAL during start-up is followed by the server closing: settle now.
        if (error.fields.S === 'FATAL') this.fail(error);
        return;
      }
      case BackendMessage.ReadyForQuery:
        this.pending = undefined;
        if (!pending) return;
        if (pending.error) pending.reject(pending.error);
        else pending.resolve(pending.rows);
        return;
      default:
        return; // ParameterStatus, BackendKeyData, RowDescription, CommandComplete, notices
    }
  }

  private onAuthentication(payload: Buffer): void {
    const code = payload.readInt32BE(0);
    const data = payload.subarray(4).toString('utf8');
    if (code === AUTH_OK) return;
    if (!this.scram) throw new Error(`the server asked for authentication method ${code}; this session has no password (peer authentication expected)`);
    if (code === AUTH_SASL) {
      if (!data.split('\0').includes(SCRAM_SHA_256)) throw new Error(`the server offers no ${SCRAM_SHA_256}`);
      this.socket.write(serializeSASLInitialResponse(SCRAM_SHA_256, this.scram.clientFirst()));
    } else if (code === AUTH_SASL_CONTINUE) {
      this.socket.write(serializeSASLResponse(this.scram.clientFinal(data)));
    } else if (code === AUTH_SASL_FINAL) {
      this.scram.verifyServerFinal(data);
    } else {
      throw new Error(`the server asked for authentication method ${code}; only SCRAM-SHA-256 is supported`);
    }
  }

  private fail(err: Error): void {
    this.failure ??= err;
    const pending = this.pending;
    this.pending = undefined;
    pending?.reject(pending.error ?? err);
  }
}
