/**
 * How a tenant's server is made to exist. `native` (child processes from the
 * npm PostgreSQL binaries) is the first; docker and kubernetes runtimes will
 * implement the same interface. A runtime knows nothing of routing or the CLI.
 */
export interface TenantServerSpec {
  id: string;
  maxConnections: number;
}

export type ServerState = 'running' | 'starting' | 'stopping' | 'stopped';

export interface ServerStatus {
  state: ServerState;
  pid?: number;
  /** When the running server started. */
  startedAt?: Date;
}

/** Where a local superuser-free client reaches the server: a libpq host (socket folder) and port. */
export interface LocalEndpoint {
  host: string;
  port: number;
}

export interface HealthCheckOptions {
  /** No answer by then is a failure. */
  timeoutMs: number;
  /** A session kept open between checks is replaced by a new connection once this old. */
  maxSessionAgeMs: number;
}

export interface TenantRuntime {
  readonly kind: string;
  /** Makes everything tenants need (folders, template); idempotent. Returns what it did, for the user. */
  prepare(): Promise<string[]>;
  /** Makes the server, starts it, names its database `id` and sets the tenant role's password verifier. */
  create(spec: TenantServerSpec, passwordVerifier: string): Promise<void>;
  /**
   * Keeps `count` spare servers running (each with `maxConnections`) so that a create with that
   * limit takes one instead of starting a server; 0 turns it off. stopWarm stops them.
   */
  keepWarm(count: number, maxConnections: number): Promise<void>;
  stopWarm(): Promise<void>;
  /** Keeps `meta` (the tenant's catalog entry) in its own folder; undefined when there is none or it does not parse. */
  writeMeta(id: string, meta: unknown): Promise<void>;
  readMeta(id: string): Promise<unknown>;
  /** The tenant is in the catalog: its folder is no longer an unfinished create. */
  finishCreate(id: string): Promise<void>;
  /** Whether a tenant folder exists for this id, and whether it is an unfinished create. */
  folderState(id: string): Promise<'none' | 'unfinished' | 'finished'>;
  /** Every tenant folder on disk; `unfinished`: made by a create that never reached finishCreate. */
  dataFolders(): Promise<{ id: string; unfinished: boolean }[]>;
  start(spec: TenantServerSpec): Promise<void>;
  /**
   * Fast shutdown: clients are disconnected, everything committed is kept.
   * `immediate` skips the shutdown checkpoint (crash recovery replays the WAL at the next start).
   */
  stop(id: string, options?: { immediate?: boolean }): Promise<void>;
  /** Stops the server and deletes its data and log. */
  remove(id: string): Promise<void>;
  /**
   * A runtime may answer from what it last saw of a server it did not start itself (for a few
   * seconds); `fresh`: look now (the router does, before it connects a client).
   */
  status(id: string, options?: { fresh?: boolean }): Promise<ServerStatus>;
  /** Set by the supervisor: a server this process started has exited (a stop, or a death). */
  onServerExit: ((id: string) => void) | undefined;
  /** Drops what was last seen of servers this process did not start (another process, e.g. the CLI, may have started or stopped them). */
  forgetObserved(): void;
  /** Client sessions the server has right now, however they came (router or local socket). */
  clientSessions(id: string): Promise<number>;
  setPassword(id: string, passwordVerifier: string): Promise<void>;
  /**
   * Runs SQL as the tenant role in its database, logged in with its password over the socket
   * (one simple-query message: one transaction unless the script says otherwise).
   */
  runScript(id: string, password: string, sql: string, timeoutMs: number): Promise<void>;
  /**
   * A real query over the server's socket (the admin role, `SELECT 1`, on a
   * session kept open between checks); throws why when it fails or takes over `timeoutMs`.
   */
  check(id: string, options: HealthCheckOptions): Promise<void>;
  localEndpoint(id: string): LocalEndpoint;
  logFile(id: string): string;
  /** The folder that holds the tenant's data (sized from disk for metrics). */
  dataDir(id: string): string;
  /** The PostgreSQL version the servers run ("18.1"). */
  serverVersion(): string;
}
