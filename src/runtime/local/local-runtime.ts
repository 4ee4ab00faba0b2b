/**
 * A TenantRuntime whose tenants' files are on this host: the shared parts
 * (parts.ts: folders, template and spares, backups, WAL, restores, owners,
 * admin SQL) joined with a ServerHost, which runs the postmasters (as child
 * processes: NativeRuntime; as containers: DockerRuntime). Nothing here knows
 * which host it has.
 */
import { promises as fs } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { debuglog } from 'node:util';
import { PgsError, errnoCode } from '../../core/errors.js';
import { fsyncDir, pathExists } from '../../core/files.js';
import type { ResourceUsage } from '../cgroups.js';
import { isPostgresProcess } from '../postmaster.js';
import type {
  ArchiverStatus, BackupResult, HealthCheckOptions, Leftover, LocalEndpoint, LoginRole, MaterializedFolder, QueryStat, ReadyFiles, ServerStatus, TenantRuntime, TenantServerSpec,
} from '../runtime.js';
import { ARCHIVE_CONF, SERVER_PORT } from '../server-config.js';
import { TENANT_UID_FIRST, type Identity } from '../tenant-users.js';
import { runCommand } from './commands.js';
import { signalProcess } from './host-processes.js';
import { PARTIAL_PREFIX, SHARED_AREAS, WARM_PREFIX, socketPathProblem } from './layout.js';
import { localParts, type LocalParts, type LocalRuntimeOptions } from './parts.js';
import type { ServerHost } from './server-host.js';
import { clientSessionsOf } from './server-watch.js';

const debug = debuglog('pgs');
/** How long a restore may replay WAL before its server counts as failed to start. */
const RECOVERY_TIMEOUT_MS = 6 * 60 * 60_000;

/** What a ServerHost may ask of the runtime it serves. */
export interface HostContext {
  stop(id: string, options?: { immediate?: boolean }): Promise<void>;
  configureArchive(spec: TenantServerSpec): Promise<void>;
  /** A server this host watches has exited (a stop, or a death). */
  serverExited(id: string): void;
}

export class LocalRuntime implements TenantRuntime {
  readonly kind: string;
  protected readonly parts: LocalParts;
  protected readonly host: ServerHost;
  /** Called when a server this process started exits, however it ended (the supervisor reacts at once). */
  onServerExit: ((id: string) => void) | undefined;
  beforeStop: ((id: string) => Promise<void>) | undefined;

  constructor(options: LocalRuntimeOptions, makeHost: (parts: LocalParts, context: HostContext) => ServerHost) {
    this.parts = localParts(options);
    this.host = makeHost(this.parts, {
      stop: (id, stopOptions) => this.stop(id, stopOptions),
      configureArchive: (spec) => this.configureArchive(spec),
      serverExited: (id) => this.onServerExit?.(id),
    });
    this.kind = this.host.kind;
  }

  tenantDir(id: string): string {
    return this.parts.layout.tenantDir(id);
  }

  dataDir(id: string): string {
    return this.tenantDir(id);
  }

  logFile(id: string): string {
    return this.parts.layout.logFile(id);
  }

  /** The folder of the server's socket (see SOCKET_SUBDIR); a server an older pgs started has it in its data folder. */
  socketDir(id: string): string {
    return this.parts.watch.socketDir(id);
  }

  localEndpoint(id: string): LocalEndpoint {
    return { host: this.socketDir(id), port: SERVER_PORT };
  }

  serverVersion(): string {
    return this.parts.template.serverVersion();
  }

  async prepare(): Promise<string[]> {
    await this.host.check();
    const { layout, folders, template } = this.parts;
    const done: string[] = [];
    const problem = socketPathProblem(layout);
    if (problem) throw new PgsError('PATH_TOO_LONG', problem);
    await folders.mkdirRoot();
    for (const area of SHARED_AREAS) await folders.mkdirShared(path.join(layout.dataRoot, area));
    await folders.mkdirShared(layout.logsDir, 0o700); // written by pgs: servers get their log as an open file
    folders.assertReachable(this.parts.bin);
    folders.emptyTrash(); // what an earlier daemon did not finish
    if (!(await template.isUsable())) {
      await template.build();
      done.push(`made the template cluster in ${layout.templateDir}`);
    }
    await this.refillSpares();
    return done;
  }

  /** Tops the pool of cold spares up (see spares.ts). */
  refillSpares(): Promise<void> {
    return this.parts.cold.refill();
  }

  async create(spec: TenantServerSpec, passwordVerifier: string): Promise<void> {
    const { template, owners, cold, layout, sql } = this.parts;
    if (!(await template.isCurrent())) throw new PgsError('NOT_SET_UP', 'the template cluster is missing or out of date: run "pgs setup"');
    const dir = this.tenantDir(spec.id);
    const t0 = performance.now();
    const since = () => `${(performance.now() - t0).toFixed(1)} ms`;
    // A name whose backups remain (a removed tenant's) keeps their uid: a running spare has its own.
    const sticky = await owners.backupsOwner(spec.id);
    if (!sticky && (await this.host.warm?.take(spec, passwordVerifier, (id) => this.remove(id)))) {
      debug('create %s: took a running spare, named and set the password at %s', spec.id, since());
      return;
    }
    try {
      const spare = await cold.take(dir);
      debug('create %s: %s at %s', spec.id, spare ? 'took a spare' : 'no spare', since());
      if (!spare) {
        // Copied beside, then renamed: a folder under its tenant's name is always a whole copy.
        const partial = path.join(path.dirname(dir), `${PARTIAL_PREFIX}${spec.id}-${randomBytes(4).toString('hex')}`);
        const owner: Identity | undefined = sticky ?? (owners.perTenant ? await owners.newUid() : undefined);
        await owners.copyTree(layout.templateDir, partial, owner);
        // A copy that the page cache still holds would not survive a power cut.
        // syncfs (one journal commit) costs ~40 ms here; initdb --sync-only's fsync per file ~190 ms.
        await runCommand('sync', ['-f', '--', partial]);
        await fs.rename(partial, dir);
        await fsyncDir(path.dirname(dir));
      }
      // The template's marker stays until finishCreate: a folder in tenants/ that still has it is a
      // create that did not finish (the daemon died), which the next daemon removes.
      await this.start(spec);
      debug('create %s: server ready at %s', spec.id, since());
      await sql.nameTenant(spec.id, passwordVerifier);
    } catch (err) {
      await this.remove(spec.id).catch(() => undefined);
      throw err;
    }
    debug('create %s: database named, password set at %s', spec.id, since());
    await this.refillSpares();
  }

  writeMeta(id: string, meta: unknown): Promise<void> {
    return this.parts.inventory.writeMeta(id, meta);
  }

  readMeta(id: string): Promise<unknown> {
    return this.parts.inventory.readMeta(id);
  }

  finishCreate(id: string): Promise<void> {
    return this.parts.inventory.finishCreate(id);
  }

  folderState(id: string): Promise<'none' | 'unfinished' | 'finished'> {
    return this.parts.inventory.folderState(id);
  }

  dataFolders(options: { tidy?: boolean } = {}): Promise<{ id: string; unfinished: boolean }[]> {
    return this.parts.inventory.dataFolders(options);
  }

  leftovers(): Promise<Leftover[]> {
    return this.parts.inventory.leftovers();
  }

  async keepWarm(count: number, maxConnections: number): Promise<void> {
    this.host.warm?.keep(count, maxConnections);
  }

  async stopWarm(): Promise<void> {
    await this.host.warm?.stopAll();
  }

  runningSpares(): number {
    return this.host.warm?.running ?? 0;
  }

  async start(spec: TenantServerSpec): Promise<void> {
    const current = await this.status(spec.id);
    if (current.state === 'running' || current.state === 'starting') return;
    const dir = this.tenantDir(spec.id);
    await this.host.clearDead(dir);
    const owner = await this.parts.owners.settleOwner(spec.id);
    const lender = owner && spec.recovery ? await this.parts.owners.walLender(spec.recovery.walDirs, owner) : undefined;
    if (owner && lender) return this.recoverAsLender(spec, owner, lender);
    await this.parts.files.prepare(spec);
    // A restore replays as much WAL as it needs: no start-up deadline but the one for recovery.
    await this.host.launch(spec, dir, spec.recovery ? RECOVERY_TIMEOUT_MS : this.parts.startTimeoutMs);
  }

  /**
   * A new tenant made from another's backups replays WAL from the other's
   * archive, which only the other's uid can read. Its folder is lent to that
   * uid for the replay (archiving off: its own archive is not that uid's), the
   * promoted server is stopped cleanly, and the folder becomes its own uid's
   * again before the server starts for good.
   */
  private async recoverAsLender(spec: TenantServerSpec, owner: Identity, lender: Identity): Promise<void> {
    const { owners, files } = this.parts;
    const dir = this.tenantDir(spec.id);
    const replay: TenantServerSpec = { ...spec };
    delete replay.archive;
    await owners.chownTree(dir, lender);
    try {
      await files.prepare(replay);
      await this.host.launch(spec, dir, RECOVERY_TIMEOUT_MS);
      await this.shutdown(spec.id, { immediate: false });
    } catch (err) {
      await this.shutdown(spec.id, { immediate: true }).catch(() => undefined);
      await owners.chownTree(dir, owner);
      throw err;
    }
    await owners.chownTree(dir, owner);
    const primary: TenantServerSpec = { ...spec };
    delete primary.recovery;
    await files.prepare(primary);
    await this.host.launch(spec, dir, this.parts.startTimeoutMs);
  }

  async stop(id: string, options: { immediate?: boolean } = {}): Promise<void> {
    if (this.beforeStop && !options.immediate && !id.startsWith(WARM_PREFIX) && (await this.status(id)).state === 'running') {
      const hook = this.beforeStop(id).catch(() => undefined);
      await Promise.race([hook, sleep(5_000, undefined, { ref: false })]);
    }
    await this.shutdown(id, options);
  }

  /** Stops the server (see stop) without the beforeStop hook. */
  private async shutdown(id: string, options: { immediate?: boolean }): Promise<void> {
    this.parts.watch.gone(id);
    await this.parts.sessions.drop(id, options.immediate ? 0 : 1_000);
    const pid = await this.runningPid(id);
    if (pid === undefined) return;
    if (!options.immediate) {
      // SIGINT is PostgreSQL's fast shutdown: roll back open transactions, checkpoint, exit.
      signalProcess(pid, 'SIGINT');
      if (await this.host.waitForExit(id, pid, this.parts.stopTimeoutMs)) return this.host.stopped(id);
    }
    // SIGQUIT is immediate shutdown; crash recovery at the next start replays the WAL, nothing committed is lost.
    signalProcess(pid, 'SIGQUIT');
    if (await this.host.waitForExit(id, pid, 10_000)) return this.host.stopped(id);
    throw new PgsError('PG_STOP_FAILED', `the server of tenant ${id} (pid ${pid}) did not stop; see ${this.logFile(id)}`);
  }

  async remove(id: string): Promise<void> {
    await this.stop(id, { immediate: true }); // its data is deleted next: no checkpoint worth waiting for
    await fs.rm(this.logFile(id), { force: true });
    await this.host.removed(id);
    try {
      await this.parts.folders.toTrash(this.tenantDir(id), id);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return;
      throw err;
    }
  }

  async status(id: string, options: { fresh?: boolean } = {}): Promise<ServerStatus> {
    const { watch } = this.parts;
    const cached = watch.cached(id, options.fresh === true);
    if (cached) return cached;
    const pidFile = await this.host.postmasterOf(id, this.tenantDir(id));
    if (!pidFile) return { state: 'stopped' };
    const own = this.host.childAlive(id, pidFile.pid);
    if (!(own ?? (await isPostgresProcess(pidFile.pid)))) return { state: 'stopped' };
    const standby = pidFile.status === 'standby' && (await pathExists(path.join(this.tenantDir(id), 'standby.signal')));
    return watch.observe(id, pidFile, own !== undefined, standby);
  }

  forgetObserved(): void {
    this.parts.watch.forgetObserved();
  }

  async check(id: string, options: HealthCheckOptions): Promise<void> {
    await this.parts.sessions.check(id, await this.status(id), options);
  }

  /** Client backends of the server, read from /proc (no connection is made). */
  async clientSessions(id: string): Promise<number> {
    const pidFile = await this.host.postmasterOf(id, this.tenantDir(id));
    return pidFile ? clientSessionsOf(pidFile.pid) : 0;
  }

  setPassword(id: string, passwordVerifier: string): Promise<void> {
    return this.parts.sql.setPassword(id, passwordVerifier);
  }

  runScript(id: string, password: string, sql: string, timeoutMs: number): Promise<void> {
    return this.parts.sql.runScript(id, password, sql, timeoutMs);
  }

  tenantVerifier(id: string): Promise<string | null> {
    return this.parts.sql.tenantVerifier(id);
  }

  loginRoles(id: string, role?: string): Promise<LoginRole[]> {
    return this.parts.sql.loginRoles(id, role);
  }

  queryStats(id: string, limit: number): Promise<QueryStat[]> {
    return this.parts.sql.queryStats(id, limit);
  }

  async resetQueryStats(id: string): Promise<void> {
    await this.parts.sql.resetQueryStats(id, (await this.runningPid(id)) !== undefined);
  }

  renameDatabase(id: string, from: string): Promise<void> {
    return this.parts.sql.renameDatabase(id, from);
  }

  neutralize(id: string): Promise<string[]> {
    return this.parts.sql.neutralize(id);
  }

  async configureArchive(spec: TenantServerSpec, { reload = true }: { reload?: boolean } = {}): Promise<void> {
    await this.parts.files.writeArchiveConf(spec);
    if (reload) await this.reload(spec.id); // the server (its archiver too) reads its settings again
  }

  async updateAuthFiles(id: string): Promise<void> {
    if (await this.parts.files.writeAuthFiles(this.tenantDir(id))) await this.reload(id);
  }

  async applyLimits(spec: TenantServerSpec): Promise<void> {
    const dir = this.tenantDir(spec.id);
    if (!(await pathExists(dir))) return;
    await this.parts.folders.writeOwnedFile(dir, ARCHIVE_CONF, this.parts.files.archiveConf(spec));
    // Not running: its limits apply at its next start (start applies the spec).
    const pid = await this.runningPid(spec.id);
    await this.host.applyLimits(spec, pid);
    if (pid !== undefined) signalProcess(pid, 'SIGHUP'); // work_mem and the rest follow the memory limit
  }

  moveToHomeNames(specs: TenantServerSpec[]): Promise<string[]> {
    return this.host.moveToHomeNames(specs);
  }

  resourceUsage(id: string): Promise<ResourceUsage | undefined> {
    return this.host.resourceUsage(id);
  }

  describe(): string {
    return this.host.describe();
  }

  limitsSupport(): { enforced: true; how: string } | { enforced: false; why: string } {
    return this.host.limitsSupport();
  }

  serverUsers(): { perTenant: boolean; detail: string } {
    const user = this.parts.owners.user;
    return this.host.serverUsers(user.switchTo
      ? { perTenant: true, detail: `a uid of its own per tenant (from ${TENANT_UID_FIRST}, no /etc/passwd entry)` }
      : { perTenant: false, detail: `all as ${user.name} (pgs does not run as root)` });
  }

  async backup(id: string, targetDir: string, label: string): Promise<BackupResult> {
    const status = await this.status(id, { fresh: true });
    if (status.state === 'running') return this.parts.backups.online(id, targetDir, label);
    if (status.state !== 'stopped') throw new PgsError('INVALID_STATE', `the server of tenant ${id} is ${status.state}: try the backup again in a moment`);
    return this.parts.backups.offline(id, targetDir);
  }

  async walPosition(id: string): Promise<string> {
    return this.parts.backups.walPosition(id, (await this.status(id, { fresh: true })).state === 'running');
  }

  flushArchive(id: string, timeoutMs: number): Promise<void> {
    return this.parts.backups.flushArchive(id, timeoutMs);
  }

  async archiverStatus(id: string): Promise<ArchiverStatus | undefined> {
    if ((await this.status(id)).state !== 'running') return undefined;
    return this.parts.backups.archiverStatus(id);
  }

  readyFiles(id: string): Promise<ReadyFiles> {
    return this.parts.backups.readyFiles(id);
  }

  copyWal(id: string, dir: string): Promise<void> {
    return this.parts.backups.copyWal(id, dir);
  }

  materialize(key: string, backupDir: string, backupName: string, options: { finished: boolean }): Promise<MaterializedFolder> {
    return this.parts.restores.materialize(key, backupDir, backupName, options);
  }

  async clone(id: string, key: string): Promise<{ online: boolean }> {
    if (await pathExists(this.tenantDir(key))) throw new PgsError('TENANT_EXISTS', `a data folder for ${key} exists already (${this.tenantDir(key)})`);
    return this.parts.restores.clone(id, key, (await this.status(id, { fresh: true })).state === 'running');
  }

  replaceData(id: string, stagingKey: string): Promise<{ undo(): Promise<void>; commit(): Promise<void> }> {
    return this.parts.restores.replaceData(id, stagingKey, (i) => this.stop(i, { immediate: true }));
  }

  settleRestore(id: string, keep: 'restored' | 'previous', hadFolder: boolean): Promise<string[]> {
    return this.parts.restores.settleRestore(id, keep, hadFolder, (i) => this.stop(i, { immediate: true }));
  }

  mkdirOwnedPath(dir: string): Promise<void> {
    return this.parts.folders.mkdirOwnedPath(dir);
  }

  writeOwnedFile(dir: string, name: string, content: string): Promise<void> {
    return this.parts.folders.writeOwnedFile(dir, name, content);
  }

  adoptFile(file: string): Promise<void> {
    return this.parts.owners.adoptFile(file, path.dirname(file));
  }

  removeOwned(dir: string): Promise<void> {
    return this.parts.folders.removeOwned(dir);
  }

  /** The pid of the server of `id` when it runs (as this process sees it), else undefined. */
  private async runningPid(id: string): Promise<number | undefined> {
    const pidFile = await this.host.postmasterOf(id, this.tenantDir(id));
    return pidFile && (await isPostgresProcess(pidFile.pid)) ? pidFile.pid : undefined;
  }

  /** SIGHUP to a running server: it reads its settings files again. */
  private async reload(id: string): Promise<void> {
    const pid = await this.runningPid(id);
    if (pid !== undefined) signalProcess(pid, 'SIGHUP');
  }
}
