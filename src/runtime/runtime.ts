/**
 * How a tenant's server is made to exist. `native` (child processes from the
 * npm PostgreSQL binaries) is the first; docker and kubernetes runtimes will
 * implement the same interface. A runtime knows nothing of routing or the CLI.
 */
import type { ResourceLimits, ResourceUsage } from './cgroups.js';
import type { ArchiveTarget, RecoverySettings } from './server-config.js';

export interface TenantServerSpec {
  id: string;
  maxConnections: number;
  /** Memory and CPU its server may use (enforced with cgroups where the runtime can). */
  limits?: ResourceLimits;
  /**
   * Over its disk quota: `soft` makes every transaction read-only by default
   * (a session may lift it to delete); `standby` starts the server in recovery
   * with no WAL source, so that nothing can be written.
   */
  readOnly?: 'soft' | 'standby';
  /** Where its finished WAL segments go; absent: archiving stays unconfigured (the server keeps its WAL). */
  archive?: ArchiveTarget;
  /** Start as a restore: replay archived WAL to the target, then become a primary. */
  recovery?: RecoverySettings;
  /** Only pgs's admin role may log in (a restored server before its roles are checked); `updateAuthFiles` opens it. */
  adminOnly?: boolean;
}

/** A data folder made from a backup, before its first start. */
export interface MaterializedFolder {
  /** Configuration and files the backup held that pgs dropped (see runtime/restored-folder.ts). */
  dropped: string[];
  /** It holds a backup_label (an online backup): replay must reach the backup's end. */
  online: boolean;
}

/** What a base backup covers, as PostgreSQL reports it (WAL positions as "X/Y"). */
export interface BackupResult {
  /** online: BASE_BACKUP of the running server; offline: the files of the stopped one. */
  kind: 'online' | 'offline';
  startLsn: string;
  endLsn: string;
  timeline: number;
  /** The WAL position right after the backup: the data has not changed while the server's position is still this. */
  afterLsn: string;
}

export interface ArchiverStatus {
  archivedCount: number;
  failedCount: number;
  lastArchivedWal: string | null;
  lastArchivedAt: string | null;
  lastFailedWal: string | null;
  lastFailedAt: string | null;
  /** Finished segments waiting to be archived. */
  pending: number;
  /** Every file the server has marked ready and not yet archived (history files too), their bytes, and when the oldest was marked. */
  readyFiles?: number;
  readyBytes?: number;
  oldestReadyAt?: string | null;
}

/** The part of ArchiverStatus read from the data folder alone (cheap, and true of a stopped server too). */
export type ReadyFiles = Required<Pick<ArchiverStatus, 'pending' | 'readyFiles' | 'readyBytes' | 'oldestReadyAt'>>;

/** A role that may log in, as its server has it: its verifier (PostgreSQL's stored text) and expiry. */
export interface LoginRole {
  name: string;
  /** `SCRAM-SHA-256$…`; an MD5 hash or null can never pass pgs's check. */
  verifier: string | null;
  /** VALID UNTIL in ms since the epoch; null: no expiry. */
  validUntil: number | null;
}

export type ServerState = 'running' | 'starting' | 'stopping' | 'stopped';

export interface ServerStatus {
  state: ServerState;
  pid?: number;
  /** When the running server started. */
  startedAt?: Date;
}

/** One normalised statement, as pg_stat_statements counts it since the last reset (times in milliseconds). */
export interface QueryStat {
  queryId: string;
  query: string;
  calls: number;
  totalMs: number;
  meanMs: number;
  rows: number;
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
  /**
   * Every tenant folder on disk; `unfinished`: made by a create that never reached finishCreate.
   * With `tidy` (the default; a daemon's start), partial copies go and a swap a dead restore left
   * half done is put back first; without it (pgs doctor) nothing is touched.
   */
  dataFolders(options?: { tidy?: boolean }): Promise<{ id: string; unfinished: boolean }[]>;
  /** What pgs's own work left on disk beside the tenants' folders (see Leftover); nothing is changed. */
  leftovers(): Promise<Leftover[]>;
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

  // --- backups and restores ---
  /** Rewrites where the server archives (a running one reloads its settings unless `reload` is false). */
  configureArchive(spec: TenantServerSpec, options?: { reload?: boolean }): Promise<void>;
  /**
   * A consistent base backup into `targetDir` (which must not exist): base.tar and
   * backup_manifest. Online when the server runs; from its files when it is stopped
   * (the caller keeps it from starting meanwhile).
   */
  backup(id: string, targetDir: string, label: string): Promise<BackupResult>;
  /** The server's WAL position now (running: where it inserts; stopped: its last checkpoint). */
  walPosition(id: string): Promise<string>;
  /** Finishes the current WAL segment (if anything was written) and waits until it is archived. */
  flushArchive(id: string, timeoutMs: number): Promise<void>;
  archiverStatus(id: string): Promise<ArchiverStatus | undefined>;
  /** What waits in the server's archive_status now, without asking the server; absent where the runtime has no local folder. */
  readyFiles?(id: string): Promise<ReadyFiles>;
  /**
   * Makes a data folder for `key` from a backup folder: extracts base.tar, checks every
   * file against the manifest (BACKUP_DAMAGED names the first bad one), and marks it
   * unfinished (like a create's) unless `finished`. Nothing is left behind on failure.
   */
  materialize(key: string, backupDir: string, backupName: string, options: { finished: boolean }): Promise<MaterializedFolder>;
  /**
   * Takes from the running server what no tenant may have (see runtime/neutralize.ts):
   * superuser and replication roles, grants of predefined roles, settings that load code,
   * C functions, untrusted extensions and languages, event triggers. Returns what it took.
   */
  neutralize(id: string): Promise<string[]>;
  /**
   * A new data folder for `key` (marked unfinished) with the data of `id`: from a running server,
   * its BASE_BACKUP streamed straight into the folder and checked against the manifest (the
   * server keeps running: start it with a recovery to 'immediate'); from a stopped one, a copy
   * of its files (reflinks where the file system has them), which starts as it is.
   */
  clone(id: string, key: string): Promise<{ online: boolean }>;
  /** Puts the folder of `stagingKey` in place of `id`'s; `undo` brings the old one back, `commit` discards it. */
  replaceData(id: string, stagingKey: string): Promise<{ undo(): Promise<void>; commit(): Promise<void> }>;
  /**
   * Ends an in-place restore that a dead daemon left (see the restore journal in daemon/restore-journal.ts):
   * `restored` keeps the restored folder and deletes the one from before; `previous` stops the restored
   * server and puts the folder from before back (`hadFolder` false: there was none, and none is left).
   * A restore that never swapped the folders leaves nothing to undo. Returns what it did.
   */
  settleRestore(id: string, keep: 'restored' | 'previous', hadFolder: boolean): Promise<string[]>;
  /** Makes `dir` (and the folders above it, below the data root) the runtime's own. */
  mkdirOwnedPath(dir: string): Promise<void>;
  /** Writes a whole file into the runtime's storage (the backups tree), replacing it at once. */
  writeOwnedFile(dir: string, name: string, content: string): Promise<void>;
  /** Makes a file pgs wrote into the runtime's storage (a WAL segment fetched from S3) the servers' own. */
  adoptFile(file: string): Promise<void>;
  /** Deletes a folder tree in the runtime's storage. */
  removeOwned(dir: string): Promise<void>;
  /** Copies the WAL files of a stopped server (what it has not archived yet, too) into `dir`. */
  copyWal(id: string, dir: string): Promise<void>;
  /** The tenant role's password verifier, read from the running server. */
  tenantVerifier(id: string): Promise<string | null>;
  /** Whether memory and CPU limits are enforced here, and why not. */
  limitsSupport(): { enforced: true; how: string } | { enforced: false; why: string };
  /** Whether each tenant's server runs as an OS user of its own, and as whom they run. */
  serverUsers(): { perTenant: boolean; detail: string };
  /** What runs the servers, in a line (pgs status). */
  describe(): string;
  /** Writes the server's limits and the settings that follow them; a running server gets them at once. */
  applyLimits(spec: TenantServerSpec): Promise<void>;
  /**
   * At the daemon's start: what an older pgs named on the host by tenant id alone (control groups,
   * containers) takes the names that carry the home's tag; running servers are moved, not restarted.
   * Returns what it did.
   */
  moveToHomeNames?(specs: TenantServerSpec[]): Promise<string[]>;
  /** What the tenant's server uses now (its control group's count, or its processes' PSS); undefined when it does not run. */
  resourceUsage(id: string): Promise<ResourceUsage | undefined>;
  /** Spare servers running now (they count against the running budget). */
  runningSpares(): number;
  /** Brings a server's pg_hba.conf and pg_ident.conf up to this version's (and reloads it when it runs): a server started by an older pgs. */
  updateAuthFiles(id: string): Promise<void>;
  /** The roles that may log in (all but pgs's admin role), or just `role`, read from the running server. */
  loginRoles(id: string, role?: string): Promise<LoginRole[]>;
  /** Called before a running tenant's server is stopped, however (pgs keeps a copy of its login roles then); at most 5 s, errors ignored. */
  beforeStop: ((id: string) => Promise<void>) | undefined;
  /**
   * The running server's statistics of the tenant role's statements in the tenant's database
   * (never pgs's own), read as pgs's admin role: the first `limit` by total time, by mean time
   * and by calls, together. QUERY_STATS_UNAVAILABLE when the server runs without pg_stat_statements.
   */
  queryStats(id: string, limit: number): Promise<QueryStat[]>;
  /** Empties the server's statistics (pg_stat_statements_reset()); a stopped server's saved ones are deleted, without starting it. */
  resetQueryStats(id: string): Promise<void>;
  /** Renames the tenant database `from` to `id` (a restored copy of another tenant). */
  renameDatabase(id: string, from: string): Promise<void>;
}

/**
 * A file or folder pgs's own work leaves for a while (a restore's working
 * folders, a create's partial copy, deleted folders waiting in the trash, a
 * restore's journal): what it is, how large, and what removes it.
 */
export interface Leftover {
  path: string;
  kind: 'partial-copy' | 'restore-staging' | 'pre-restore' | 'trash' | 'restore-journal' | 'borrowed-wal';
  bytes: number;
  /** What becomes of it: who removes or settles it, and when. */
  note: string;
}
