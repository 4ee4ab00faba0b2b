import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { constants as fsConstants, createReadStream, promises as fs, openSync, closeSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { debuglog } from 'node:util';
import { PgsError, errnoCode } from '../core/errors.js';
import { fsyncDir, pathExists, tail, writeAtomic } from '../core/files.js';
import { homeTag } from '../core/paths.js';
import { AdminClient, AdminQueryError } from './admin-client.js';
import { Cgroups, type ResourceUsage } from './cgroups.js';
import type { PgBinaries } from './binaries.js';
import { isPostgresProcess, readPostmasterPid, type PostmasterPid } from './postmaster.js';
import { childPids, cpuSeconds, isLiveProcessNamed, pssBytes, processState, someProcessWorksIn } from '../core/proc.js';
import type { ArchiverStatus, BackupResult, HealthCheckOptions, Leftover, LocalEndpoint, LoginRole, MaterializedFolder, QueryStat, ServerStatus, TenantRuntime, TenantServerSpec } from './runtime.js';
import {
  ADMIN_DATABASE, ADMIN_ROLE, ARCHIVE_CONF, ARCHIVE_INCLUDE, ARCHIVE_MIGRATION, RECOVERY_CONF, SERVER_PORT, SOCKET_SUBDIR, serverMaxConnections, TEMPLATE_DATABASE, TEMPLATE_MARKER,
  QUERY_STATS_EXTENSION, QUERY_STATS_SCHEMA, TEMPLATE_VERSION, TENANT_ROLE, archiveConfText, hbaConfText, identConfText, quoteIdent, quoteLiteral, recoveryConfText, serverConfText, socketDirOf, socketPath,
} from './server-config.js';
import { MANIFEST_FILE, buildManifest, checkTarMembers, parseManifest, verifyTree } from '../backup/manifest.js';
import { CATALOG_FINGERPRINT_SQL, neutralize } from './neutralize.js';
import { cleanRestoredFolder } from './restored-folder.js';
import { redactSecrets } from './redact.js';
import { readControl } from '../backup/control.js';
import { tenantBackupsDir } from '../backup/layout.js';
import { SEGMENT_NAME, formatLsn, segmentNumber } from '../backup/wal.js';
import type { ServerUser } from './system-user.js';
import { TENANT_UID_FIRST, UidAllocator, isTenantUid, type Identity } from './tenant-users.js';

/** Unix socket paths longer than this do not fit `sockaddr_un.sun_path` (108 bytes with the NUL). */
export const MAX_SOCKET_PATH = 107;
const MAX_TENANT_ID = 40;
/** Each tenant folder's own record of who it belongs to (its catalog entry), for re-adoption when the catalog loses it. */
export const TENANT_META_FILE = 'pgs-tenant.json';
const debug = debuglog('pgs');
const READY_POLL_MS = 3;
/**
 * How long an adopted server (a previous daemon's, not our child) counts as
 * running without a look at /proc. Its health session closing (the backend
 * exits when the postmaster dies) makes the next look immediate; this is the
 * backstop. 1,000 reads of /proc/<pid>/stat cost ~25 ms of CPU.
 */
const ADOPTED_RECHECK_MS = 10_000;
/** Running spares live in spares/.warm-<name>; the name is their key in the maps below. */
const WARM_PREFIX = '.warm-';
/** An in-place restore unpacks into tenants/.restore-<id> before it swaps folders. */
export const RESTORE_PREFIX = '.restore-';
/** A process's own working directory, which for a server is its data folder. */
const CWD = '/proc/self/cwd';
/** How long a restore may replay WAL before its server counts as failed to start. */
const RECOVERY_TIMEOUT_MS = 6 * 60 * 60_000;
/** A spare copy still unfinished after this long belongs to a refill that died. */
const SPARE_COPY_STALE_MS = 10 * 60_000;

export interface NativeRuntimeOptions {
  /** Holds `template/`, `tenants/<id>/` (data + socket) and `logs/<id>.log`. */
  dataRoot: string;
  /** pgs's home: what this runtime names on the host (control groups, containers) carries its tag. */
  home: string;
  serverUser: ServerUser;
  binaries: PgBinaries;
  /** How long a server may take to accept connections (crash recovery included). Default 60 s. */
  startTimeoutMs?: number;
  /** How long a fast shutdown may take before it becomes an immediate one. Default 60 s. */
  stopTimeoutMs?: number;
  /** Ready copies of the template kept in spares/ so that create need not copy. Default 2; 0 turns the pool off. */
  spareServers?: number;
  /** Load pg_stat_statements into every server at its start (default true; PGS_QUERY_STATS=off turns it off). */
  queryStats?: boolean;
}

export class NativeRuntime implements TenantRuntime {
  readonly kind: string = 'native';
  protected readonly dataRoot: string;
  /** The home's tag (see core/paths.ts homeTag). */
  protected readonly homeTag: string;
  private readonly user: ServerUser;
  protected readonly bin: PgBinaries;
  protected readonly startTimeoutMs: number;
  protected readonly stopTimeoutMs: number;
  private readonly spareServers: number;
  protected readonly queryStatsOn: boolean;
  /** Servers this process spawned: their exit is observed directly (no zombie is mistaken for a live server). */
  private readonly children = new Map<string, ChildProcess>();
  /**
   * Servers seen ready: their state needs no file read until they exit or are
   * stopped. An own child's exit is an event; an adopted server (a previous
   * daemon's, or one a CLI command started) is checked with one read of
   * /proc/<pid>/stat at most every ADOPTED_RECHECK_MS, and at once after its
   * health session closed. A daemon with 1,000 tenants asks for every state
   * each second.
   */
  protected readonly known = new Map<string, { pid: number; startedAt: Date; own: boolean; checkedAt: number }>();
  /** The admin session `check` keeps open per server, with the pid of the server it belongs to. */
  private readonly healthSessions = new Map<string, { pid: number; client: AdminClient; openedAt: number }>();
  /** The key (tenant id, or a running spare's) each child runs under now: a spare's changes when a create takes it. */
  private readonly childKeys = new WeakMap<ChildProcess, { id: string }>();
  /**
   * Spare servers already running, each with an admin session open in pgs_admin: a create
   * takes one (a rename of its folder, one transaction on the open session) instead of
   * starting a server. Only the daemon keeps them (keepWarm); they cost an idle server each.
   */
  private readonly warm: { key: string; maxConnections: number; session: AdminClient; pid: number }[] = [];
  private warmTarget = 0;
  private warmMaxConnections = 0;
  private warming: Promise<void> | undefined;
  private warmClosed = false;
  /** As root: each tenant's own uid (see tenant-users.ts). */
  private readonly uids: UidAllocator;

  constructor(options: NativeRuntimeOptions) {
    this.dataRoot = options.dataRoot;
    this.homeTag = homeTag(options.home);
    this.user = options.serverUser;
    this.uids = new UidAllocator(options.dataRoot);
    this.bin = options.binaries;
    this.startTimeoutMs = options.startTimeoutMs ?? 60_000;
    this.stopTimeoutMs = options.stopTimeoutMs ?? 60_000;
    this.spareServers = options.spareServers ?? 2;
    this.queryStatsOn = options.queryStats ?? true;
  }

  private get templateDir(): string {
    return path.join(this.dataRoot, 'template');
  }

  tenantDir(id: string): string {
    // A running spare's key is its folder name in spares/ (it starts with a dot: never a tenant id).
    if (id.startsWith(WARM_PREFIX)) return path.join(this.sparesDir, id);
    return path.join(this.dataRoot, 'tenants', id);
  }

  dataDir(id: string): string {
    return this.tenantDir(id);
  }

  private version: string | undefined;

  serverVersion(): string {
    this.version ??= this.postgresVersion();
    return this.version;
  }

  logFile(id: string): string {
    return path.join(this.dataRoot, 'logs', `${id}.log`);
  }

  localEndpoint(id: string): LocalEndpoint {
    return { host: this.socketDir(id), port: SERVER_PORT };
  }

  /** The folder of the server's socket (see SOCKET_SUBDIR); a server an older pgs started has it in its data folder. */
  socketDir(id: string): string {
    return this.topLevelSocket.has(id) ? this.tenantDir(id) : socketDirOf(this.tenantDir(id));
  }

  /** Running servers an older pgs started (adopted), whose socket is in the data folder's top level until their next start. */
  private readonly topLevelSocket = new Set<string>();

  async prepare(): Promise<string[]> {
    const done: string[] = [];
    const longest = socketPath(this.socketDir('x'.repeat(MAX_TENANT_ID)));
    if (Buffer.byteLength(longest) > MAX_SOCKET_PATH) {
      throw new PgsError('PATH_TOO_LONG', `the data folder ${this.dataRoot} is too long for unix socket paths (${Buffer.byteLength(longest)} > ${MAX_SOCKET_PATH} bytes): set PGS_DATA to a shorter folder and run "pgs setup" again`);
    }
    await this.mkdirRoot();
    for (const area of ['tenants', 'spares', 'trash', 'backups']) await this.mkdirShared(path.join(this.dataRoot, area));
    await this.mkdirShared(path.join(this.dataRoot, 'logs'), 0o700); // written by pgs: servers get their log as an open file
    this.assertReachable();
    this.emptyTrash(); // what an earlier daemon did not finish
    const templateMajor = (await fs.readFile(path.join(this.templateDir, 'PG_VERSION'), 'utf8').catch(() => '')).trim();
    if (!(await this.templateIsCurrent()) || templateMajor !== this.binariesMajor()) {
      await this.buildTemplate();
      done.push(`made the template cluster in ${this.templateDir}`);
    }
    await this.refillSpares();
    return done;
  }

  async create(spec: TenantServerSpec, passwordVerifier: string): Promise<void> {
    if (!(await this.templateIsCurrent())) {
      throw new PgsError('NOT_SET_UP', 'the template cluster is missing or out of date: run "pgs setup"');
    }
    const dir = this.tenantDir(spec.id);
    const t0 = performance.now();
    const since = () => `${(performance.now() - t0).toFixed(1)} ms`;
    // A name whose backups remain (a removed tenant's) keeps their uid: a running spare has its own.
    const sticky = await this.backupsOwner(spec.id);
    let warm = spec.maxConnections === this.warmMaxConnections && !sticky ? this.warm.shift() : undefined;
    if (warm && !this.warmUsable(warm)) {
      // Died since it was started: let it go and make the tenant the ordinary way.
      warm.session.destroy();
      void this.stop(warm.key, { immediate: true }).catch(() => undefined);
      this.refillWarm();
      warm = undefined;
    }
    if (warm) {
      try {
        await this.takeWarm(warm, spec, passwordVerifier);
      } catch (err) {
        await this.stop(warm.key, { immediate: true }).catch(() => undefined);
        await this.remove(spec.id).catch(() => undefined);
        throw err;
      } finally {
        this.refillWarm();
      }
      debug('create %s: took a running spare, named and set the password at %s', spec.id, since());
      return;
    }
    try {
      const spare = await this.takeSpare(dir);
      debug('create %s: %s at %s (process at %s ms)', spec.id, spare ? 'took a spare' : 'no spare', since(), performance.now().toFixed(1));
      if (!spare) {
        // Copied beside, then renamed: a folder under its tenant's name is always a whole copy.
        const partial = path.join(path.dirname(dir), `.tmp-${spec.id}-${randomBytes(4).toString('hex')}`);
        await this.copyTree(this.templateDir, partial, sticky ?? (await this.uids.next()));
        // A copy that the page cache still holds would not survive a power cut.
        // syncfs (one journal commit) costs ~40 ms here; initdb --sync-only's fsync per file ~190 ms.
        await this.run('sync', ['-f', '--', partial]);
        await fs.rename(partial, dir);
        await fsyncDir(path.dirname(dir));
      }
      // The template's marker stays until finishCreate: a folder in tenants/ that still has it is a
      // create that did not finish (the daemon died), which the next daemon removes.
      await this.start(spec);
      debug('create %s: server ready at %s', spec.id, since());
      // Not connected to the database being renamed (the tenant's own sessions cannot exist yet).
      await this.withAdmin(spec.id, ADMIN_DATABASE, async (client) => {
        // One simple-query message is one transaction: one WAL flush instead of two.
        await client.query(
          `ALTER DATABASE ${quoteIdent(TEMPLATE_DATABASE)} RENAME TO ${quoteIdent(spec.id)};` +
            `ALTER ROLE ${quoteIdent(TENANT_ROLE)} WITH LOGIN PASSWORD ${quoteLiteral(passwordVerifier)}`,
        );
      });
    } catch (err) {
      await this.remove(spec.id).catch(() => undefined);
      throw err;
    }
    debug('create %s: database named, password set at %s', spec.id, since());
    await this.refillSpares();
    debug('create %s: refill at %s', spec.id, since());
  }

  /**
   * Written in a folder the server user owns: a new file under a random name,
   * opened without following a symlink, handed to the server user through its
   * open handle (a backup it takes must read it), then renamed over the old one.
   */
  async writeMeta(id: string, meta: unknown): Promise<void> {
    await this.writeOwnedFile(this.tenantDir(id), TENANT_META_FILE, `${JSON.stringify(meta, null, 2)}\n`);
  }

  /** `content` as `dir/name`, 0600, owned by whoever owns `dir` (the tenant's uid), replaced whole (see writeMeta). */
  async writeOwnedFile(dir: string, name: string, content: string): Promise<void> {
    const file = path.join(dir, name);
    const tmp = `${file}.tmp-${randomBytes(8).toString('hex')}`;
    const owner = this.user.switchTo ? await fs.lstat(dir) : undefined;
    const handle = await fs.open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
    try {
      await handle.writeFile(content);
      await handle.sync();
      if (owner) await handle.chown(owner.uid, owner.gid);
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, file);
  }

  async readMeta(id: string): Promise<unknown> {
    try {
      return JSON.parse(await fs.readFile(path.join(this.tenantDir(id), TENANT_META_FILE), 'utf8')) as unknown;
    } catch {
      return undefined;
    }
  }

  /**
   * Moves a running spare's folder to the tenant's name (PostgreSQL works
   * relative to its data folder, its working directory: the move does not
   * disturb it, and its socket moves with the folder), then names its database
   * and sets the password on the admin session that is already open, which
   * stays as the tenant's health session.
   */
  private async takeWarm(warm: { key: string; session: AdminClient; pid: number }, spec: TenantServerSpec, passwordVerifier: string): Promise<void> {
    const id = spec.id;
    const from = this.tenantDir(warm.key);
    const to = this.tenantDir(id);
    const child = this.children.get(warm.key);
    if (!child || !this.warmUsable(warm)) throw new Error('the running spare is gone');
    await fs.rename(from, to);
    await fsyncDir(path.dirname(to));
    await fsyncDir(path.dirname(from));
    await fs.rename(this.logFile(warm.key), this.logFile(id)).catch(() => undefined);
    const slot = this.childKeys.get(child);
    if (slot) slot.id = id;
    this.children.delete(warm.key);
    this.children.set(id, child);
    const known = this.known.get(warm.key);
    this.known.delete(warm.key);
    if (known) this.known.set(id, known);
    await warm.session.query(
      `ALTER DATABASE ${quoteIdent(TEMPLATE_DATABASE)} RENAME TO ${quoteIdent(id)};` +
        `ALTER ROLE ${quoteIdent(TENANT_ROLE)} WITH LOGIN PASSWORD ${quoteLiteral(passwordVerifier)}`,
      { timeoutMs: 30_000 },
    );
    // The spare ran with archiving unconfigured (it kept its WAL, though an idle one finishes no
    // segment): from now on it archives as this tenant, from the first segment it kept.
    await this.configureArchive(spec);
    this.keepHealthSession(id, warm.pid, warm.session);
  }

  private warmUsable(warm: { key: string; session: AdminClient }): boolean {
    const child = this.children.get(warm.key);
    return child !== undefined && child.exitCode === null && child.signalCode === null && warm.session.usable;
  }

  /** Tenants whose servers go into control groups (they have limits). */
  protected readonly limited = new Set<string>();
  /** The postmaster pid of each server that went into its control groups as it started (so they hold all its memory). */
  private readonly groupedFromStart = new Map<string, number>();
  private cgroupsState: Cgroups | string | undefined;

  private get cgroups(): Cgroups | undefined {
    this.cgroupsState ??= Cgroups.detect(this.homeTag);
    return typeof this.cgroupsState === 'string' ? undefined : this.cgroupsState;
  }

  /** What runs the servers, for pgs status. */
  describe(): string {
    return 'native: each server a process pgs starts';
  }

  serverUsers(): { perTenant: boolean; detail: string } {
    return this.user.switchTo
      ? { perTenant: true, detail: `a uid of its own per tenant (from ${TENANT_UID_FIRST}, no /etc/passwd entry)` }
      : { perTenant: false, detail: `all as ${this.user.name} (pgs does not run as root)` };
  }

  limitsSupport(): { enforced: true; how: string } | { enforced: false; why: string } {
    const cgroups = this.cgroups;
    return cgroups ? { enforced: true, how: `cgroup v${cgroups.version}` } : { enforced: false, why: this.cgroupsState as string };
  }

  /** Makes the tenant's control groups with its limits before its server starts; lifts them when it has none. */
  protected async limitGroups(spec: TenantServerSpec): Promise<void> {
    const limits = spec.limits;
    const cgroups = limits && (limits.memoryBytes !== undefined || limits.cpus !== undefined) ? this.cgroups : undefined;
    if (!cgroups || !limits) {
      this.limited.delete(spec.id);
      return;
    }
    // Processes too: the postmaster, its workers, one per session (max_connections), and some room.
    await cgroups.apply(spec.id, { ...limits, pids: serverMaxConnections(spec.maxConnections) + 32 });
    this.limited.add(spec.id);
  }

  protected attachServer(id: string, pid: number): void {
    const cgroups = this.cgroups;
    if (!cgroups) return;
    let children: number[] = [];
    try {
      children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      // exited, or no such file: only the postmaster
    }
    cgroups.attach(id, [pid, ...children]);
  }

  async applyLimits(spec: TenantServerSpec): Promise<void> {
    const dir = this.tenantDir(spec.id);
    if (!(await pathExists(dir))) return;
    await this.writeOwnedFile(dir, ARCHIVE_CONF, archiveConfText(spec.maxConnections, spec.archive, undefined, spec.limits?.memoryBytes, spec.readOnly, this.queryStatsOn));
    const pidFile = await this.postmasterOf(spec.id, dir);
    if (!pidFile || !(await isPostgresProcess(pidFile.pid))) {
      // Not running: its groups are made at its next start (start applies the spec), none linger meanwhile.
      await this.releaseGroups(spec.id);
      return;
    }
    await this.limitGroups(spec);
    if (this.limited.has(spec.id)) this.attachServer(spec.id, pidFile.pid);
    else await this.cgroups?.apply(spec.id, {}).catch(() => undefined); // lifted: no limit for processes already in the group
    this.signal(pidFile.pid, 'SIGHUP'); // work_mem and the rest follow the memory limit
  }

  /**
   * Control groups an older pgs made without the home's tag (pgs/<id>): a running
   * server's processes in one move to its tagged group (with its limits, or none),
   * then the untagged group goes unless another home's processes are left in it.
   */
  async moveToHomeNames(specs: TenantServerSpec[]): Promise<string[]> {
    const cgroups = this.cgroups;
    if (!cgroups) return [];
    const done: string[] = [];
    for (const spec of specs) {
      if ((await cgroups.untaggedGroups(spec.id)).length === 0) continue;
      const pidFile = await this.postmasterOf(spec.id).catch(() => undefined);
      const pid = pidFile && (await isPostgresProcess(pidFile.pid)) ? pidFile.pid : undefined;
      const inside = pid !== undefined && (await cgroups.inUntagged(spec.id, pid));
      if (inside) {
        await this.limitGroups(spec);
        if (!this.limited.has(spec.id)) await cgroups.apply(spec.id, {});
      }
      const removed = await cgroups.leaveUntagged(spec.id, inside ? pid : undefined);
      if (inside || removed.length > 0) done.push(`${spec.id}: ${inside ? 'moved its server into its home\'s control group' : 'removed its old control group'}${removed.length === 0 ? ' (the old one stays: another home\'s processes are in it)' : ''}`);
    }
    // detect made the home's folder; it stays only while a tenant's group is in it (apply makes it again).
    await cgroups.removeHomeIfEmpty().catch(() => undefined);
    return done;
  }

  /**
   * Memory in use: its control group's count when the server has been in its
   * group since its start. One moved in while it ran (a running spare that a
   * create took, limits set later) was charged elsewhere for what it had
   * touched before (cgroups do not move charges), so its group reads a few
   * hundred KiB: then, as for a server without a group, the sum of its
   * processes' PSS, and CPU from /proc.
   */
  async resourceUsage(id: string): Promise<ResourceUsage | undefined> {
    const pidFile = await this.postmasterOf(id).catch(() => undefined);
    const pid = pidFile && (await isPostgresProcess(pidFile.pid)) ? pidFile.pid : undefined;
    if (pid === undefined) return undefined;
    const group = this.groupedFromStart.get(id) === pid ? await this.cgroups?.usage(id) : undefined;
    if (group) return { ...group, memorySource: 'cgroup' };
    const children = await childPids(pid);
    const pss = await Promise.all([pid, ...children].map((p) => pssBytes(p)));
    const cpu = await Promise.all([cpuSeconds(pid, true), ...children.map((p) => cpuSeconds(p, false))]);
    const sum = (xs: (number | undefined)[]) => xs.reduce<number>((a, x) => a + (x ?? 0), 0);
    if (pss[0] === undefined) return undefined; // exited, or not ours to read
    return { memoryBytes: sum(pss), cpuSeconds: Math.round(sum(cpu) * 100) / 100, memorySource: 'pss' };
  }

  runningSpares(): number {
    return this.warm.length;
  }

  async keepWarm(count: number, maxConnections: number): Promise<void> {
    this.warmTarget = count;
    this.warmMaxConnections = maxConnections;
    this.warmClosed = false;
    this.refillWarm();
  }

  async stopWarm(): Promise<void> {
    this.warmClosed = true;
    await this.warming?.catch(() => undefined);
    for (const w of this.warm.splice(0)) w.session.destroy();
    // Every running spare, also one an earlier (killed) daemon left that this one had not reached yet.
    const names = await fs.readdir(this.sparesDir).catch(() => [] as string[]);
    await Promise.all(names.filter((n) => n.startsWith(WARM_PREFIX)).map((key) => this.stop(key).catch(() => undefined)));
  }

  /** Starts running spares up to the target, one at a time, in the background. */
  private refillWarm(): void {
    if (this.warming || this.warmClosed || this.warm.length >= this.warmTarget) return;
    this.warming = (async () => {
      while (!this.warmClosed && this.warm.length < this.warmTarget) {
        if (!(await this.warmOne())) {
          await sleep(1_000); // no cold spare yet: the refill copy is still running
        }
      }
    })().catch((err: Error) => debug('running spare failed: %s', err.message)).finally(() => {
      this.warming = undefined;
    });
  }

  /** One more running spare: a stopped one left by an earlier daemon, else a cold spare. False when none is at hand. */
  private async warmOne(): Promise<boolean> {
    await this.mkdirShared(this.sparesDir);
    const inPool = new Set(this.warm.map((w) => w.key));
    const marker = this.templateMarker();
    let key: string | undefined;
    for (const name of await fs.readdir(this.sparesDir)) {
      // Skip this daemon's own spares, also one a create is taking right now (no longer in the pool).
      if (!name.startsWith(WARM_PREFIX) || inPool.has(name) || this.children.has(name)) continue;
      const made = await fs.readFile(path.join(this.sparesDir, name, TEMPLATE_MARKER), 'utf8').catch(() => '');
      await this.stop(name, { immediate: true }); // an earlier daemon's, left running when it was killed
      if (made.trim() !== marker) {
        await this.removeTree(path.join(this.sparesDir, name));
        continue;
      }
      key = name;
      break;
    }
    if (key === undefined) {
      key = `${WARM_PREFIX}${randomBytes(6).toString('hex')}`;
      if (!(await this.takeSpare(this.tenantDir(key)))) {
        await this.refillSpares();
        return false;
      }
      await this.refillSpares();
    }
    await this.writeOwnedFile(this.tenantDir(key), ARCHIVE_CONF, archiveConfText(this.warmMaxConnections, undefined, undefined, undefined, undefined, this.queryStatsOn));
    await this.writeOwnedFile(this.tenantDir(key), RECOVERY_CONF, recoveryConfText(undefined));
    await this.spawnServer(key, this.tenantDir(key), []);
    const pid = this.children.get(key)?.pid;
    if (pid === undefined) throw new Error('the running spare exited at once');
    const session = await AdminClient.connect(this.socketDir(key), SERVER_PORT, ADMIN_ROLE, ADMIN_DATABASE, { timeoutMs: 10_000 });
    if (this.warmClosed) {
      session.destroy();
      await this.stop(key);
      return true;
    }
    this.warm.push({ key, maxConnections: this.warmMaxConnections, session, pid });
    return true;
  }

  async finishCreate(id: string): Promise<void> {
    await fs.rm(path.join(this.tenantDir(id), TEMPLATE_MARKER), { force: true });
    await fsyncDir(this.tenantDir(id));
  }

  async folderState(id: string): Promise<'none' | 'unfinished' | 'finished'> {
    if (!(await pathExists(this.tenantDir(id)))) return 'none';
    return (await pathExists(path.join(this.tenantDir(id), TEMPLATE_MARKER))) ? 'unfinished' : 'finished';
  }

  /** Also deletes the partial copies (`.tmp-*`) of creates that died while copying. */
  async dataFolders(options: { tidy?: boolean } = {}): Promise<{ id: string; unfinished: boolean }[]> {
    let names = await fs.readdir(path.join(this.dataRoot, 'tenants')).catch(() => [] as string[]);
    if (options.tidy !== false) {
      for (const name of names.filter((n) => n.startsWith('.tmp-') || n.startsWith(RESTORE_PREFIX))) await this.removeTree(path.join(this.dataRoot, 'tenants', name));
      // An in-place restore that died between its two renames: the tenant's old folder goes back.
      for (const name of names.filter((n) => n.startsWith('.prerestore-'))) {
        const id = name.slice('.prerestore-'.length);
        if (!(await pathExists(this.tenantDir(id)))) await fs.rename(path.join(this.dataRoot, 'tenants', name), this.tenantDir(id));
      }
      names = await fs.readdir(path.join(this.dataRoot, 'tenants')).catch(() => [] as string[]);
    }
    return Promise.all(names.filter((n) => !n.startsWith('.')).map(async (id) => ({ id, unfinished: await pathExists(path.join(this.tenantDir(id), TEMPLATE_MARKER)) })));
  }

  async leftovers(): Promise<Leftover[]> {
    const out: Leftover[] = [];
    const add = async (file: string, kind: Leftover['kind'], note: string) => out.push({ path: file, kind, bytes: await treeBytes(file), note });
    const tenants = path.join(this.dataRoot, 'tenants');
    for (const name of (await fs.readdir(tenants).catch(() => [] as string[])).sort()) {
      const file = path.join(tenants, name);
      if (name.startsWith('.tmp-')) await add(file, 'partial-copy', 'a create, branch or clone that did not finish copying: the daemon deletes it at its next start');
      else if (name.startsWith(RESTORE_PREFIX)) await add(file, 'restore-staging', `an in-place restore's new folder for ${name.slice(RESTORE_PREFIX.length)}: it becomes the tenant's when the restore commits; one a dead daemon left is finished or undone by the next start`);
      else if (name.startsWith('.prerestore-')) await add(file, 'pre-restore', `${name.slice('.prerestore-'.length)}'s folder from before an in-place restore: deleted once the restore commits, put back by the next start if it did not`);
    }
    const trash = path.join(this.dataRoot, 'trash');
    for (const name of (await fs.readdir(trash).catch(() => [] as string[])).sort()) await add(path.join(trash, name), 'trash', 'deleted (a removed tenant, a restore\'s old folder): the daemon empties the trash in the background and at its start');
    const journals = path.join(this.dataRoot, 'restores');
    for (const name of (await fs.readdir(journals).catch(() => [] as string[])).filter((n) => n.endsWith('.json')).sort()) {
      await add(path.join(journals, name), 'restore-journal', `the journal of an in-place restore of ${name.slice(0, -'.json'.length)}: removed when it ends; the next daemon start finishes or undoes one a dead daemon left`);
    }
    const backups = path.join(this.dataRoot, 'backups');
    for (const id of (await fs.readdir(backups).catch(() => [] as string[])).filter((n) => !n.startsWith('.')).sort()) {
      for (const name of (await fs.readdir(path.join(backups, id)).catch(() => [] as string[])).filter((n) => n.startsWith('.pgwal-')).sort()) {
        await add(path.join(backups, id, name), 'borrowed-wal', `WAL a restore of ${id} borrowed from its server: removed when the restore ends, or at the next daemon start`);
      }
    }
    return out;
  }

  async start(spec: TenantServerSpec): Promise<void> {
    const current = await this.status(spec.id);
    if (current.state === 'running' || current.state === 'starting') return;
    const dir = this.tenantDir(spec.id);
    await this.awaitDeadServer(dir);
    await this.clearZombieLock(dir);
    const owner = await this.settleOwner(spec.id);
    const lender = owner && spec.recovery ? await this.walLender(spec.recovery.walDirs, owner) : undefined;
    if (owner && lender) return this.recoverAsLender(spec, owner, lender);
    await this.prepareFolder(spec);
    await this.limitGroups(spec);
    // A restore replays as much WAL as it needs: no start-up deadline but the one for recovery.
    await this.launch(spec.id, dir, spec.recovery ? RECOVERY_TIMEOUT_MS : undefined);
  }

  /**
   * As root, before a start: the tenant's files are its own uid's. That is the
   * uid of its backups when it has some (they stay when a tenant is removed, and
   * one restored or created under that name again reads and extends them), else
   * its folder's. A folder still owned by the shared server user (made by an
   * older pgs) gets a uid of its own here, its backups too.
   */
  private async settleOwner(id: string): Promise<Identity | undefined> {
    if (!this.user.switchTo) return undefined;
    const dir = this.tenantDir(id);
    const folder = await fs.lstat(dir);
    const wanted = (await this.ownerFor(id, folder)) as Identity;
    if (folder.uid !== wanted.uid || folder.gid !== wanted.gid) await this.chownTree(dir, wanted);
    const backups = tenantBackupsDir(this.dataRoot, id);
    const held = await fs.lstat(backups).catch(() => undefined);
    if (held?.isDirectory() && (held.uid !== wanted.uid || held.gid !== wanted.gid)) await this.chownTree(backups, wanted);
    return wanted;
  }

  /** The uid of a tenant's backups folder, when it has one of its own. */
  private async backupsOwner(id: string): Promise<Identity | undefined> {
    if (!this.user.switchTo) return undefined;
    const stat = await fs.lstat(tenantBackupsDir(this.dataRoot, id)).catch(() => undefined);
    return stat?.isDirectory() && isTenantUid(stat.uid) ? { uid: stat.uid, gid: stat.gid } : undefined;
  }

  /** The owner of the first WAL folder a recovery reads that is not `owner`'s (another tenant's archive: a restore --as, a branch --at). */
  private async walLender(walDirs: string[], owner: Identity): Promise<Identity | undefined> {
    for (const dir of walDirs) {
      const stat = await fs.lstat(dir).catch(() => undefined);
      if (stat && stat.uid !== owner.uid) return { uid: stat.uid, gid: stat.gid };
    }
    return undefined;
  }

  /**
   * A new tenant made from another's backups replays WAL from the other's
   * archive, which only the other's uid can read. Its folder is lent to that
   * uid for the replay (archiving off: its own archive is not that uid's), the
   * promoted server is stopped cleanly, and the folder becomes its own uid's
   * again before the server starts for good.
   */
  private async recoverAsLender(spec: TenantServerSpec, owner: Identity, lender: Identity): Promise<void> {
    const dir = this.tenantDir(spec.id);
    const replay: TenantServerSpec = { ...spec };
    delete replay.archive;
    await this.chownTree(dir, lender);
    try {
      await this.prepareFolder(replay);
      await this.limitGroups(spec);
      await this.launch(spec.id, dir, RECOVERY_TIMEOUT_MS);
      await this.shutdown(spec.id, { immediate: false });
    } catch (err) {
      await this.shutdown(spec.id, { immediate: true }).catch(() => undefined);
      await this.chownTree(dir, owner);
      throw err;
    }
    await this.chownTree(dir, owner);
    const primary: TenantServerSpec = { ...spec };
    delete primary.recovery;
    await this.prepareFolder(primary);
    await this.launch(spec.id, dir);
  }

  /**
   * Before every start: a folder made from an older template gets what this
   * version needs (archiving settings, the replication line for BASE_BACKUP),
   * and the archive settings are written afresh, so a copied folder (restore,
   * branch, import) never archives into its source's archive.
   */
  private async prepareFolder(spec: TenantServerSpec): Promise<void> {
    const dir = this.tenantDir(spec.id);
    const conf = await fs.readFile(path.join(dir, 'postgresql.conf'), 'utf8');
    if (!conf.includes(ARCHIVE_INCLUDE)) {
      const lines = ['', '# --- pgs: continuous archiving (added by a newer pgs) ---'];
      for (const [name, value] of Object.entries(ARCHIVE_MIGRATION)) lines.push(`${name} = ${value}`);
      lines.push(ARCHIVE_INCLUDE, '');
      await this.writeOwnedFile(dir, 'postgresql.conf', conf + lines.join('\n'));
    }
    await this.writeAuthFiles(dir, spec.adminOnly === true);
    if (spec.archive) await this.mkdirOwnedPath(spec.archive.directory);
    await this.writeOwnedFile(dir, ARCHIVE_CONF, archiveConfText(spec.maxConnections, spec.archive, spec.recovery, spec.limits?.memoryBytes, spec.readOnly, this.queryStatsOn));
    await this.writeOwnedFile(dir, RECOVERY_CONF, recoveryConfText(spec.recovery));
    if (spec.recovery) await this.writeOwnedFile(dir, 'recovery.signal', '');
    // Past its hard disk limit a tenant runs as a standby with no WAL source: reads work, nothing is written.
    // Leaving it (the quota was raised) is a start without the file: the same timeline goes on.
    if (spec.readOnly === 'standby' && !spec.recovery) await this.writeOwnedFile(dir, 'standby.signal', '');
    else await fs.rm(path.join(dir, 'standby.signal'), { force: true });
  }

  /** pg_hba.conf and pg_ident.conf as this version has them (a folder from an older template gets them before its start). Returns whether anything changed. */
  private async writeAuthFiles(dir: string, adminOnly = false): Promise<boolean> {
    let changed = false;
    for (const [name, text] of [['pg_hba.conf', hbaConfText(adminOnly)], ['pg_ident.conf', identConfText()]] as const) {
      if ((await fs.readFile(path.join(dir, name), 'utf8').catch(() => '')) === text) continue;
      await this.writeOwnedFile(dir, name, text);
      changed = true;
    }
    return changed;
  }

  async updateAuthFiles(id: string): Promise<void> {
    const dir = this.tenantDir(id);
    if (!(await this.writeAuthFiles(dir))) return;
    const pidFile = await this.postmasterOf(id, dir);
    if (pidFile && (await isPostgresProcess(pidFile.pid))) this.signal(pidFile.pid, 'SIGHUP');
  }

  async configureArchive(spec: TenantServerSpec, { reload = true }: { reload?: boolean } = {}): Promise<void> {
    const dir = this.tenantDir(spec.id);
    if (spec.archive) await this.mkdirOwnedPath(spec.archive.directory);
    await this.writeOwnedFile(dir, ARCHIVE_CONF, archiveConfText(spec.maxConnections, spec.archive, undefined, spec.limits?.memoryBytes, spec.readOnly, this.queryStatsOn));
    if (!reload) return;
    const pidFile = await this.postmasterOf(spec.id, dir);
    // SIGHUP: the server (its archiver too) reads its settings again.
    if (pidFile && (await isPostgresProcess(pidFile.pid))) this.signal(pidFile.pid, 'SIGHUP');
  }

  /**
   * Online: BASE_BACKUP on a replication session; the server writes base.tar
   * and the manifest (SHA-256 per file) into `targetDir` itself, with the WAL
   * the backup needs inside the tar, so a backup restores without the archive.
   * Offline: a tar of the stopped server's folder and a manifest made here.
   */
  async backup(id: string, targetDir: string, label: string): Promise<BackupResult> {
    const status = await this.status(id, { fresh: true });
    if (status.state === 'running') return this.onlineBackup(id, targetDir, label);
    if (status.state !== 'stopped') throw new PgsError('INVALID_STATE', `the server of tenant ${id} is ${status.state}: try the backup again in a moment`);
    return this.offlineBackup(id, targetDir);
  }

  private async onlineBackup(id: string, targetDir: string, label: string): Promise<BackupResult> {
    await this.mkdirOwnedPath(path.dirname(targetDir)); // the server makes targetDir itself
    const client = await AdminClient.connect(this.socketDir(id), SERVER_PORT, ADMIN_ROLE, ADMIN_DATABASE, { replication: true, timeoutMs: 10_000 });
    try {
      const rows = await client.query(
        `BASE_BACKUP (LABEL ${quoteLiteral(label)}, TARGET 'server', TARGET_DETAIL ${quoteLiteral(targetDir)}, CHECKPOINT 'fast', ` +
          "WAL true, WAIT false, MANIFEST 'yes', MANIFEST_CHECKSUMS 'SHA256')",
      );
      const start = rows[0];
      const end = rows[rows.length - 1];
      if (!start?.[0] || !end?.[0]) throw new PgsError('BACKUP_FAILED', `BASE_BACKUP answered ${JSON.stringify(rows)}`);
      const [after] = await client.query('SELECT pg_current_wal_insert_lsn()');
      return { kind: 'online', startLsn: start[0], endLsn: end[0], timeline: Number(start[1] ?? end[1] ?? 1), afterLsn: after?.[0] ?? end[0] };
    } catch (err) {
      if (err instanceof AdminQueryError) {
        const message = err.fields.M ?? err.message;
        // A short write is how PostgreSQL reports a full disk ("wrote only 15872 of 32768 bytes").
        if (/wrote only \d+ of \d+ bytes|No space left on device/i.test(message)) {
          throw new PgsError('BACKUP_FAILED', `the disk that holds ${path.dirname(targetDir)} is full (${message})`);
        }
        throw new PgsError('BACKUP_FAILED', `the server could not take the backup: ${message}`);
      }
      throw err;
    } finally {
      client.destroy();
    }
  }

  private async offlineBackup(id: string, targetDir: string): Promise<BackupResult> {
    const dir = this.tenantDir(id);
    const control = await readControl(dir);
    await this.mkdirOwnedPath(targetDir);
    const skipped = new Set(['postmaster.pid', 'postmaster.opts']);
    // ustar has 7 octal digits for a uid (a tenant's is larger): the archive names root, a restore gives the files their own.
    await this.run('tar', ['--format=ustar', '--numeric-owner', '--owner=0', '--group=0', '-cf', path.join(targetDir, 'base.tar'), '--exclude=./postmaster.pid', '--exclude=./postmaster.opts', '-C', dir, '.'], { as: await this.identityOf(dir) });
    const lsn = formatLsn(control.checkpoint);
    const manifest = await buildManifest(dir, (rel) => skipped.has(rel) || rel === 'pg_wal' || rel.startsWith('pg_wal/'), { timeline: control.timeline, start: formatLsn(control.redo), end: lsn }, control.systemIdentifier);
    await this.writeOwnedFile(targetDir, MANIFEST_FILE, manifest);
    return { kind: 'offline', startLsn: formatLsn(control.redo), endLsn: lsn, timeline: control.timeline, afterLsn: lsn };
  }

  async walPosition(id: string): Promise<string> {
    if ((await this.status(id, { fresh: true })).state === 'running') {
      const [row] = await this.withAdmin(id, ADMIN_DATABASE, (client) => client.query('SELECT pg_current_wal_insert_lsn()'));
      if (row?.[0]) return row[0];
    }
    return formatLsn((await readControl(this.tenantDir(id))).checkpoint);
  }

  /**
   * A transaction id taken makes a commit record: a restore to any time up to
   * now then finds a record after it (recovery to a time stops at the first
   * commit past it). The switch finishes the segment; its archiving is awaited.
   */
  async flushArchive(id: string, timeoutMs: number): Promise<void> {
    await this.withAdmin(id, ADMIN_DATABASE, async (client) => {
      await client.query('SELECT pg_current_xact_id()');
      // The segment the switch finished (or, when nothing was written since the last switch, the one before).
      const [row] = await client.query('SELECT pg_walfile_name(pg_switch_wal() - 1)');
      const target = row?.[0];
      if (!target) return;
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const [done] = await client.query('SELECT last_archived_wal FROM pg_stat_archiver');
        const archived = done?.[0] ?? '';
        if (SEGMENT_NAME.test(archived) && segmentNumber(archived) >= segmentNumber(target)) return;
        if (Date.now() > deadline) throw new PgsError('BACKUP_FAILED', `WAL segment ${target} of tenant ${id} was not archived within ${timeoutMs / 1000} s (archiving fails? see pgs status ${id})`);
        await sleep(50);
      }
    });
  }

  async archiverStatus(id: string): Promise<ArchiverStatus | undefined> {
    if ((await this.status(id)).state !== 'running') return undefined;
    const session = this.healthSessions.get(id);
    const query = "SELECT archived_count, failed_count, last_archived_wal, last_archived_time, last_failed_wal, last_failed_time FROM pg_stat_archiver";
    const rows = session?.client.usable ? await session.client.query(query, { timeoutMs: 5_000 }) : await this.withAdmin(id, ADMIN_DATABASE, (c) => c.query(query, { timeoutMs: 5_000 }));
    const row = rows[0] ?? [];
    const statusDir = path.join(this.tenantDir(id), 'pg_wal', 'archive_status');
    const ready = (await fs.readdir(statusDir).catch(() => [] as string[])).filter((n) => n.endsWith('.ready'));
    // What the server has finished and not yet archived here: the segments' sizes, and when the oldest was marked.
    let pendingBytes = 0;
    let oldest = Infinity;
    for (const name of ready) {
      const [segment, marked] = await Promise.all([
        fs.stat(path.join(this.tenantDir(id), 'pg_wal', name.slice(0, -'.ready'.length))).catch(() => undefined),
        fs.stat(path.join(statusDir, name)).catch(() => undefined),
      ]);
      pendingBytes += segment?.size ?? 0;
      if (marked) oldest = Math.min(oldest, marked.mtimeMs);
    }
    const iso = (v: string | null | undefined) => (v ? new Date(v.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00')).toISOString() : null);
    return {
      archivedCount: Number(row[0] ?? 0),
      failedCount: Number(row[1] ?? 0),
      lastArchivedWal: row[2] ?? null,
      lastArchivedAt: iso(row[3]),
      lastFailedWal: row[4] ?? null,
      lastFailedAt: iso(row[5]),
      pending: ready.filter((n) => !n.includes('.history')).length,
      readyFiles: ready.length,
      readyBytes: pendingBytes,
      oldestReadyAt: Number.isFinite(oldest) ? new Date(oldest).toISOString() : null,
    };
  }

  async materialize(key: string, backupDir: string, backupName: string, options: { finished: boolean }): Promise<MaterializedFolder> {
    const dest = this.tenantDir(key);
    if (await pathExists(dest)) throw new PgsError('TENANT_EXISTS', `a data folder for ${key} exists already (${dest})`);
    const manifest = parseManifest(await fs.readFile(path.join(backupDir, MANIFEST_FILE), 'utf8'), `the manifest of backup ${backupName}`);
    const owner = await this.ownerFor(key.startsWith(RESTORE_PREFIX) ? key.slice(RESTORE_PREFIX.length) : key);
    await this.mkdirOwned(dest, owner);
    try {
      if (!options.finished) await this.writeOwnedFile(dest, TEMPLATE_MARKER, 'restore\n');
      await checkTarMembers(path.join(backupDir, 'base.tar'), backupName); // before tar makes anything of an untrusted file
      try {
        // Read here, unpacked by tar as the tenant's uid: the backup's files need not be readable by
        // that uid, and an imported (untrusted) tar never writes anything as root.
        await this.run('tar', ['-xf', '-', '-C', dest, '--no-same-owner', '--no-same-permissions'], { stdinFile: path.join(backupDir, 'base.tar'), as: owner });
      } catch (err) {
        throw new PgsError('BACKUP_DAMAGED', `backup ${backupName} could not be unpacked: ${(err as Error).message.split('\n').slice(-1)[0] ?? ''}`);
      }
      await verifyTree(dest, manifest, backupName);
      await removeServerLeftovers(dest);
      const dropped = await cleanRestoredFolder(dest, this.templateDir, this);
      if (!options.finished) await this.writeOwnedFile(dest, TEMPLATE_MARKER, 'restore\n'); // the tar may hold a marker of its own
      else await fs.rm(path.join(dest, TEMPLATE_MARKER), { force: true });
      await this.run('sync', ['-f', '--', dest]);
      // An online backup's folder has a backup_label: its replay must reach the backup's end. An offline one is a clean shutdown's files.
      return { dropped, online: await pathExists(path.join(dest, 'backup_label')) };
    } catch (err) {
      await this.removeTree(dest).catch(() => undefined);
      throw err;
    }
  }

  async clone(id: string, key: string): Promise<{ online: boolean }> {
    const dest = this.tenantDir(key);
    if (await pathExists(dest)) throw new PgsError('TENANT_EXISTS', `a data folder for ${key} exists already (${dest})`);
    const running = (await this.status(id, { fresh: true })).state === 'running';
    if (!running) {
      // A stopped server's files are consistent as they are: a copy starts like the original would.
      const partial = path.join(path.dirname(dest), `.tmp-${key}-${randomBytes(4).toString('hex')}`);
      try {
        await this.copyTree(this.tenantDir(id), partial, await this.ownerFor(key));
        await removeServerLeftovers(partial);
        await fs.rm(path.join(partial, TENANT_META_FILE), { force: true });
        await this.writeOwnedFile(partial, TEMPLATE_MARKER, 'clone\n');
        await this.run('sync', ['-f', '--', partial]);
        await fs.rename(partial, dest);
        await fsyncDir(path.dirname(dest));
      } catch (err) {
        await this.removeTree(partial).catch(() => undefined);
        throw err;
      }
      return { online: false };
    }
    await this.mkdirOwned(dest, await this.ownerFor(key));
    try {
      await this.writeOwnedFile(dest, TEMPLATE_MARKER, 'clone\n');
      await this.streamBackupInto(id, dest);
      await removeServerLeftovers(dest);
      await fs.rm(path.join(dest, TENANT_META_FILE), { force: true });
      await this.writeOwnedFile(dest, TEMPLATE_MARKER, 'clone\n');
      await this.run('sync', ['-f', '--', dest]);
    } catch (err) {
      await this.removeTree(dest).catch(() => undefined);
      throw err;
    }
    return { online: true };
  }

  /**
   * BASE_BACKUP without a target: the tar comes over the replication session
   * and goes straight into tar -x (as `dest`'s owner) in `dest`, never to a
   * file in between; the manifest is kept in memory and every file checked.
   */
  private async streamBackupInto(id: string, dest: string): Promise<void> {
    const tar = spawn('tar', ['-xf', '-', '-C', dest, '--no-same-owner', '--no-same-permissions'], { stdio: ['pipe', 'ignore', 'pipe'], env: this.serverEnv(), ...spawnAs(await this.identityOf(dest)) });
    let tarError = '';
    tar.stderr?.setEncoding('utf8').on('data', (t: string) => { tarError += t; });
    const tarDone = new Promise<void>((resolve, reject) => {
      tar.once('error', reject);
      tar.once('close', (code) => (code === 0 ? resolve() : reject(new PgsError('BACKUP_FAILED', `tar could not unpack the stream (exit ${code}): ${tarError.trim().split('\n').slice(-1)[0] ?? ''}`))));
    });
    tar.stdin?.on('error', () => undefined); // tar's own exit says why
    const manifest: Buffer[] = [];
    let part: 'none' | 'archive' | 'manifest' = 'none';
    const client = await AdminClient.connect(this.socketDir(id), SERVER_PORT, ADMIN_ROLE, ADMIN_DATABASE, { replication: true, timeoutMs: 10_000 });
    try {
      await client.copyOut(
        // No checksums: the copy goes from the server straight into the folder over a local socket,
        // with nothing at rest in between to go bad; every file is still checked for presence and size.
        `BASE_BACKUP (LABEL ${quoteLiteral(`pgs clone of ${id}`)}, CHECKPOINT 'fast', WAL true, WAIT false, MANIFEST 'yes', MANIFEST_CHECKSUMS 'NONE')`,
        (payload) => {
          const kind = payload[0];
          if (kind === 0x6e) part = 'archive'; // 'n': a new archive (one: no tablespaces)
          else if (kind === 0x6d) part = 'manifest'; // 'm': the manifest follows
          else if (kind === 0x64) { // 'd': data of the current part
            const data = payload.subarray(1);
            if (part === 'manifest') manifest.push(Buffer.from(data));
            else if (part === 'archive') return tar.stdin?.write(data) ?? true;
          }
          return true; // 'p': progress
        },
        () => new Promise((resolve) => tar.stdin?.once('drain', resolve)),
      );
    } catch (err) {
      tar.kill();
      if (err instanceof AdminQueryError) throw new PgsError('BACKUP_FAILED', `the server could not stream its backup: ${err.fields.M ?? err.message}`);
      throw err;
    } finally {
      client.destroy();
    }
    tar.stdin?.end();
    await tarDone;
    const parsed = parseManifest(Buffer.concat(manifest).toString('utf8'), `the manifest of the clone of ${id}`);
    await verifyTree(dest, parsed, `of ${id} (streamed)`);
  }

  async replaceData(id: string, stagingKey: string): Promise<{ undo(): Promise<void>; commit(): Promise<void> }> {
    const live = this.tenantDir(id);
    const staged = this.tenantDir(stagingKey);
    const old = this.tenantDir(`.prerestore-${id}`);
    if (stagingKey !== `${RESTORE_PREFIX}${id}`) throw new Error(`the staged data of ${id} must be ${RESTORE_PREFIX}${id}`);
    await this.removeTree(old);
    await fs.rename(live, old);
    await fs.rename(staged, live);
    await fsyncDir(path.dirname(live));
    return {
      undo: async () => {
        await this.stop(id, { immediate: true }).catch(() => undefined);
        await this.removeTree(live);
        await fs.rename(old, live);
        await fsyncDir(path.dirname(live));
      },
      commit: () => this.toTrash(old, `${id}-prerestore`),
    };
  }

  async settleRestore(id: string, keep: 'restored' | 'previous', hadFolder: boolean): Promise<string[]> {
    const live = this.tenantDir(id);
    const old = this.tenantDir(`.prerestore-${id}`);
    const done: string[] = [];
    const trash = async (dir: string, what: string) => {
      await this.toTrash(dir, `${id}-${what}`);
      done.push(`the ${what} folder of ${id} deleted`);
    };
    const restoredHere = hadFolder ? await pathExists(old) : true; // without .prerestore, the folder in place is the one from before
    if (keep === 'restored') {
      if (await pathExists(old)) await trash(old, 'pre-restore');
    } else {
      // The restored server may run (its daemon died under it): stopped before its folder goes.
      if (restoredHere && (await pathExists(live))) {
        await this.stop(id, { immediate: true });
        await trash(live, 'half-restored');
      }
      if (hadFolder && (await pathExists(old))) {
        await fs.rename(old, live);
        done.push(`the folder of ${id} from before the restore put back`);
      }
    }
    await fsyncDir(path.dirname(live));
    return done;
  }

  async adoptFile(file: string): Promise<void> {
    if (!this.user.switchTo) return;
    const folder = await fs.lstat(path.dirname(file));
    await fs.lchown(file, folder.uid, folder.gid);
  }

  async removeOwned(dir: string): Promise<void> {
    const relative = path.relative(this.dataRoot, dir);
    if (relative === '' || relative.startsWith('..') || path.isAbsolute(relative)) throw new Error(`${dir} is not inside the data folder`);
    await this.removeTree(dir);
  }

  async copyWal(id: string, dir: string): Promise<void> {
    await this.mkdirOwnedPath(dir);
    const walFolder = path.join(this.tenantDir(id), 'pg_wal');
    const names = (await fs.readdir(walFolder)).filter((n) => /^[0-9A-F]{24}$/.test(n) || /^[0-9A-F]{8}\.history$/.test(n));
    if (names.length > 0) await this.run('cp', ['-p', '--', ...names.map((n) => path.join(walFolder, n)), dir], { as: await this.identityOf(this.tenantDir(id)) });
  }

  async tenantVerifier(id: string): Promise<string | null> {
    const [row] = await this.withAdmin(id, ADMIN_DATABASE, (c) => c.query(`SELECT rolpassword FROM pg_authid WHERE rolname = ${quoteLiteral(TENANT_ROLE)}`));
    return row?.[0] ?? null;
  }

  async loginRoles(id: string, role?: string): Promise<LoginRole[]> {
    const validUntil = "CASE WHEN rolvaliduntil IS NULL OR rolvaliduntil = 'infinity' THEN NULL WHEN rolvaliduntil = '-infinity' THEN 0 ELSE floor(extract(epoch FROM rolvaliduntil) * 1000)::bigint END";
    const sql = `SELECT rolname, rolpassword, ${validUntil} FROM pg_authid WHERE rolcanlogin AND rolname <> ${quoteLiteral(ADMIN_ROLE)}${role === undefined ? '' : ` AND rolname = ${quoteLiteral(role)}`}`;
    // Over the health check's open session where there is one (no new backend per login).
    const session = this.healthSessions.get(id);
    const rows = session?.client.usable ? await session.client.query(sql, { timeoutMs: 5_000 }) : await this.withAdmin(id, ADMIN_DATABASE, (c) => c.query(sql, { timeoutMs: 5_000 }));
    return rows.map((row) => ({ name: row[0] ?? '', verifier: row[1] ?? null, validUntil: row[2] === null || row[2] === undefined ? null : Number(row[2]) }));
  }

  beforeStop: ((id: string) => Promise<void>) | undefined;

  async queryStats(id: string, limit: number): Promise<QueryStat[]> {
    this.assertQueryStats(id);
    if (!Number.isSafeInteger(limit) || limit < 1) throw new PgsError('INVALID_REQUEST', `invalid limit ${limit}`);
    const stats = `${quoteIdent(QUERY_STATS_SCHEMA)}.pg_stat_statements(true)`;
    const sql = 'SELECT queryid::text, query, calls, total_exec_time, mean_exec_time, rows FROM (' +
      'SELECT s.*, row_number() OVER (ORDER BY total_exec_time DESC) AS by_total, row_number() OVER (ORDER BY mean_exec_time DESC) AS by_mean, row_number() OVER (ORDER BY calls DESC) AS by_calls ' +
      `FROM ${stats} s WHERE s.toplevel AND s.userid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = ${quoteLiteral(TENANT_ROLE)}) ` +
      `AND s.dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = ${quoteLiteral(id)})) t ` +
      `WHERE by_total <= ${limit} OR by_mean <= ${limit} OR by_calls <= ${limit} ORDER BY total_exec_time DESC`;
    const rows = await this.onQueryStats(id, sql);
    return rows.map((row) => ({
      queryId: row[0] ?? '',
      query: redactSecrets(row[1] ?? ''),
      calls: Number(row[2] ?? 0),
      totalMs: Number(row[3] ?? 0),
      meanMs: Number(row[4] ?? 0),
      rows: Number(row[5] ?? 0),
    }));
  }

  async resetQueryStats(id: string): Promise<void> {
    this.assertQueryStats(id);
    const dir = this.tenantDir(id);
    const pidFile = await this.postmasterOf(id, dir);
    if (pidFile && (await isPostgresProcess(pidFile.pid))) {
      await this.onQueryStats(id, `SELECT ${quoteIdent(QUERY_STATS_SCHEMA)}.pg_stat_statements_reset()`);
      return;
    }
    // A stopped server keeps its statistics in this file (written at its clean shutdown, read at its next start).
    await fs.rm(path.join(dir, 'pg_stat', 'pg_stat_statements.stat'), { force: true });
  }

  private assertQueryStats(id: string): void {
    if (!this.queryStatsOn) throw new PgsError('QUERY_STATS_UNAVAILABLE', `query statistics are off on this host (PGS_QUERY_STATS=off): tenant ${id}'s server runs without pg_stat_statements`);
  }

  /**
   * A statement on pgs's copy of pg_stat_statements in pgs_admin, over the health check's open
   * session where there is one. A server from an older template has no copy yet: it is made
   * (in a schema of its own, see neutralize.ts remakeQueryStats) and the statement tried again.
   */
  private async onQueryStats(id: string, sql: string): Promise<(string | null)[][]> {
    const run = async (client: AdminClient) => {
      try {
        return await client.query(sql, { timeoutMs: 10_000 });
      } catch (err) {
        if (!(err instanceof AdminQueryError)) throw err;
        if (err.fields.C === '3F000' || err.fields.C === '42883' || err.fields.C === '42P01') {
          const [exists] = await client.query(`SELECT count(*) FROM pg_catalog.pg_extension WHERE extname = ${quoteLiteral(QUERY_STATS_EXTENSION)}`);
          if (exists?.[0] !== '0') throw err; // there, somewhere else: not pgs's to move
          await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(QUERY_STATS_SCHEMA)}`);
          await client.query(`CREATE EXTENSION ${quoteIdent(QUERY_STATS_EXTENSION)} SCHEMA ${quoteIdent(QUERY_STATS_SCHEMA)}`);
          return client.query(sql, { timeoutMs: 10_000 });
        }
        // 55000: "pg_stat_statements must be loaded via shared_preload_libraries".
        if (err.fields.C === '55000') throw new PgsError('QUERY_STATS_UNAVAILABLE', `tenant ${id}'s server was started without pg_stat_statements (by an older pgs, or with PGS_QUERY_STATS=off): it counts statements after its next restart`);
        throw err;
      }
    };
    const session = this.healthSessions.get(id);
    if (session?.client.usable) return run(session.client);
    return this.withAdmin(id, ADMIN_DATABASE, run);
  }

  /** Where setup keeps CATALOG_FINGERPRINT_SQL's answer on the template: what every restored cluster's built-ins must match. */
  private get fingerprintFile(): string {
    return path.join(this.dataRoot, 'template-catalog.md5');
  }

  async neutralize(id: string): Promise<string[]> {
    const fingerprint = (await fs.readFile(this.fingerprintFile, 'utf8').catch(() => '')).trim();
    if (fingerprint === '') throw new PgsError('NOT_SET_UP', `the template's catalog fingerprint (${this.fingerprintFile}) is missing: run "pgs setup" again`);
    const sessions = new Map<string, AdminClient>();
    try {
      return await neutralize(async (database, sql) => {
        let client = sessions.get(database);
        if (!client) {
          client = await AdminClient.connect(this.socketDir(id), SERVER_PORT, ADMIN_ROLE, database, { timeoutMs: 10_000 });
          sessions.set(database, client);
        }
        return client.query(sql, { timeoutMs: 60_000 });
      }, { fingerprint, modulePath: (extension) => this.extensionModule(extension) });
    } catch (err) {
      if (err instanceof AdminQueryError) throw new PgsError('BACKUP_DAMAGED', `not restored: pgs could not check its roles and functions: ${err.fields.M ?? err.message}`);
      throw err;
    } finally {
      for (const client of sessions.values()) await client.close().catch(() => undefined);
    }
  }

  /** An extension's library as its control file names it (module_pathname), from the binaries' share folder. */
  private extensionModule(extension: string): string | undefined {
    if (!/^[A-Za-z0-9_-]+$/.test(extension)) return undefined;
    try {
      const control = readFileSync(path.join(this.bin.binDir, '..', 'share', 'postgresql', 'extension', `${extension}.control`), 'utf8');
      return /^\s*module_pathname\s*=\s*'([^']*)'/m.exec(control)?.[1];
    } catch {
      return undefined;
    }
  }

  async renameDatabase(id: string, from: string): Promise<void> {
    if (from === id) return;
    await this.withAdmin(id, ADMIN_DATABASE, (c) => c.query(`ALTER DATABASE ${quoteIdent(from)} RENAME TO ${quoteIdent(id)}`, { timeoutMs: 30_000 }));
  }

  /**
   * After a postmaster was killed its backends and workers exit on their own
   * within milliseconds (they watch for postmaster death), but a new postmaster
   * started before they are gone refuses ("pre-existing shared memory block is
   * still in use"). When the lock names a dead postmaster, wait for them (at
   * most 5 s): the first restart then works, instead of failing into back-off.
   */
  protected async awaitDeadServer(dir: string): Promise<void> {
    const pidFile = await readPostmasterPid(dir);
    if (!pidFile || (await processState(pidFile.pid)) === 'alive') return;
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline && (await someProcessWorksIn(dir))) await sleep(10);
  }

  /** Called when a server this process started exits, however it ended (the supervisor reacts at once). */
  onServerExit: ((id: string) => void) | undefined;

  /**
   * A postmaster killed with SIGKILL whose parent is gone stays a zombie where
   * PID 1 does not reap (some containers and VMs). PostgreSQL then sees its pid
   * "alive" and refuses to start. When the lock's pid is a zombie and no live
   * process works in the data folder any more (every PostgreSQL process has
   * it as its working directory), the lock is stale: remove it. Crash recovery
   * then replays the WAL as after any crash; no data file is touched.
   */
  protected async clearZombieLock(dir: string): Promise<void> {
    const pidFile = await readPostmasterPid(dir);
    if (!pidFile || (await processState(pidFile.pid)) !== 'zombie') return;
    if (await someProcessWorksIn(dir)) return; // old backends still exiting: let PostgreSQL refuse, the caller retries
    await fs.rm(path.join(dir, 'postmaster.pid'), { force: true });
  }

  async stop(id: string, options: { immediate?: boolean } = {}): Promise<void> {
    if (this.beforeStop && !options.immediate && !id.startsWith(WARM_PREFIX) && (await this.status(id)).state === 'running') {
      const hook = this.beforeStop(id).catch(() => undefined);
      // At most 5 s; the timer is unref'd so that it never keeps a stopping daemon alive.
      await Promise.race([hook, sleep(5_000, undefined, { ref: false })]);
    }
    await this.shutdown(id, options);
  }

  /** Stops the server (see stop) without the beforeStop hook. */
  protected async shutdown(id: string, options: { immediate?: boolean }): Promise<void> {
    this.known.delete(id);
    this.healthSessions.get(id)?.client.destroy();
    this.healthSessions.delete(id);
    const pidFile = await this.postmasterOf(id);
    if (!pidFile || !(await isPostgresProcess(pidFile.pid))) return;
    if (!options.immediate) {
      // SIGINT is PostgreSQL's fast shutdown: roll back open transactions, checkpoint, exit.
      this.signal(pidFile.pid, 'SIGINT');
      if (await this.waitForExit(id, pidFile.pid, this.stopTimeoutMs)) return this.releaseGroups(id);
    }
    // SIGQUIT is immediate shutdown; crash recovery at the next start replays the WAL, nothing committed is lost.
    this.signal(pidFile.pid, 'SIGQUIT');
    if (await this.waitForExit(id, pidFile.pid, 10_000)) return this.releaseGroups(id);
    throw new PgsError('PG_STOP_FAILED', `the server of tenant ${id} (pid ${pidFile.pid}) did not stop; see ${this.logFile(id)}`);
  }

  /** A stopped server's control groups go (the postmaster exits after its last child: they are empty); its next start makes them again. */
  protected async releaseGroups(id: string): Promise<void> {
    // Also a group whose limits were lifted while the server ran (its processes stayed in it, unlimited).
    if (typeof this.cgroupsState === 'object') await this.cgroupsState.remove(id).catch(() => undefined);
  }

  async remove(id: string): Promise<void> {
    await this.stop(id, { immediate: true }); // its data is deleted next: no checkpoint worth waiting for
    await fs.rm(this.logFile(id), { force: true });
    if (typeof this.cgroupsState === 'object') {
      await this.cgroupsState.remove(id).catch(() => undefined);
      await this.cgroupsState.removeUntagged(id).catch(() => undefined);
    }
    this.limited.delete(id);
    try {
      await this.toTrash(this.tenantDir(id), id);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return;
      throw err;
    }
  }

  /**
   * Deletes a folder tree. As root, what is inside is deleted by the folder's
   * owner (a tenant's uid): root never walks a tree another user can change
   * under it (a directory swapped for a symlink mid-walk), and that uid can
   * delete only its own files. Root then removes the emptied folder from its
   * parent, which is root's (tenants/, trash/). A tree the owner cannot empty
   * (a copy that died half-owned) is root's to delete.
   */
  private async removeTree(target: string): Promise<void> {
    const stat = await fs.lstat(target).catch(() => undefined);
    if (!stat) return;
    if (this.user.switchTo && stat.isDirectory() && stat.uid !== 0) {
      const emptied = await this.run('find', [target, '-mindepth', '1', '-delete'], { as: { uid: stat.uid, gid: stat.gid } }).then(() => true, () => false);
      if (emptied) {
        await fs.rmdir(target).catch(() => fs.rm(target, { recursive: true, force: true }));
        return;
      }
    }
    await fs.rm(target, { recursive: true, force: true });
  }

  private trashing: Promise<void> | undefined;
  private trashAgain = false;

  /**
   * Deletes everything in trash/ in the background, each folder by its owner
   * (removeTree), one at a time; what a daemon that died left is deleted by
   * the next one (prepare).
   */
  /**
   * Moves `dir` into trash/ at once and deletes it in the background: unlinking
   * 1,300 files takes ~140 ms on ext4 with discard, a rename none.
   */
  private async toTrash(dir: string, label: string): Promise<void> {
    const trash = path.join(this.dataRoot, 'trash');
    await this.mkdirShared(trash);
    await fs.rename(dir, path.join(trash, `${label}-${randomBytes(4).toString('hex')}`));
    await fsyncDir(path.dirname(dir));
    this.emptyTrash();
  }

  private emptyTrash(): void {
    if (this.trashing) {
      this.trashAgain = true;
      return;
    }
    const trash = path.join(this.dataRoot, 'trash');
    this.trashing = (async () => {
      do {
        this.trashAgain = false;
        for (const name of await fs.readdir(trash).catch(() => [] as string[])) await this.removeTree(path.join(trash, name));
      } while (this.trashAgain);
    })().catch((err: Error) => debug('emptying the trash failed: %s', err.message)).finally(() => {
      this.trashing = undefined;
    });
  }

  async status(id: string, options: { fresh?: boolean } = {}): Promise<ServerStatus> {
    const known = this.known.get(id);
    if (known) {
      const now = Date.now();
      if (known.own || (!options.fresh && now - known.checkedAt < ADOPTED_RECHECK_MS)) return { state: 'running', pid: known.pid, startedAt: known.startedAt };
      if (isLiveProcessNamed(known.pid, 'postgres')) {
        known.checkedAt = now;
        return { state: 'running', pid: known.pid, startedAt: known.startedAt };
      }
    }
    this.known.delete(id);
    const pidFile = await this.postmasterOf(id);
    if (!pidFile) return { state: 'stopped' };
    const child = this.children.get(id);
    const own = child !== undefined && child.pid === pidFile.pid;
    const alive = own ? child.exitCode === null && child.signalCode === null : await isPostgresProcess(pidFile.pid);
    if (!alive) return { state: 'stopped' };
    // A standby started as one (a tenant past its hard disk limit: standby.signal) takes read-only sessions: it runs.
    // A restore's recovery also says "standby" once consistent, but takes no session until it is a primary.
    const standby = pidFile.status === 'standby' && (await pathExists(path.join(this.tenantDir(id), 'standby.signal')));
    const state = pidFile.status === 'ready' || standby ? 'running' : pidFile.status === 'stopping' ? 'stopping' : 'starting';
    const startedAt = new Date(pidFile.startedAt * 1000);
    // postmaster.pid names the socket's folder as the server was told it.
    if (pidFile.socketDir === CWD || pidFile.socketDir === this.tenantDir(id)) this.topLevelSocket.add(id);
    else this.topLevelSocket.delete(id);
    if (state === 'running') this.known.set(id, { pid: pidFile.pid, startedAt, own, checkedAt: Date.now() });
    return { state, pid: pidFile.pid, startedAt };
  }

  forgetObserved(): void {
    for (const [id, known] of this.known) if (!known.own) this.known.delete(id);
  }

  /**
   * `SELECT 1` over one admin session per server, kept open between checks: a
   * new backend costs ~30 ms of CPU on this 2-core VM (fork, page faults,
   * catalog caches), which at 1,000 servers checked each minute would be a
   * quarter of the machine; a query on an open session costs well under 1 ms.
   * The session is opened again when the server was restarted, when it broke,
   * and once it is `maxSessionAgeMs` old: that new connection shows that the
   * postmaster still lets clients in, which a query on an old session cannot.
   */
  async check(id: string, { timeoutMs, maxSessionAgeMs }: HealthCheckOptions): Promise<void> {
    const server = await this.status(id);
    if (server.state !== 'running' || server.pid === undefined) throw new Error(`the server is ${server.state}`);
    let session = this.healthSessions.get(id);
    if (session && (session.pid !== server.pid || !session.client.usable || Date.now() - session.openedAt > maxSessionAgeMs)) {
      session.client.destroy();
      this.healthSessions.delete(id);
      session = undefined;
    }
    if (!session) {
      const client = await AdminClient.connect(this.socketDir(id), SERVER_PORT, ADMIN_ROLE, ADMIN_DATABASE, { timeoutMs });
      session = this.keepHealthSession(id, server.pid, client);
    }
    try {
      const rows = await session.client.query('SELECT 1', { timeoutMs });
      if (rows[0]?.[0] !== '1') throw new Error(`SELECT 1 answered ${JSON.stringify(rows)}`);
    } catch (err) {
      session.client.destroy();
      if (this.healthSessions.get(id) === session) this.healthSessions.delete(id);
      throw err;
    }
  }


  private keepHealthSession(id: string, pid: number, client: AdminClient): { pid: number; client: AdminClient; openedAt: number } {
    const opened = { pid, client, openedAt: Date.now() };
    this.healthSessions.set(id, opened);
    // A backend exits when its postmaster dies: the session closing is the first news of an adopted server's death.
    client.onClose(() => {
      if (this.healthSessions.get(id) === opened) this.healthSessions.delete(id);
      const known = this.known.get(id);
      if (known?.pid === opened.pid) known.checkedAt = 0;
    });
    return opened;
  }

  /**
   * Counts the postmaster's children that are client backends: their process
   * title is "postgres: <user> <database> [local] ..." (auxiliary processes say
   * "postgres: checkpointer" and so on). Reads /proc; no connection is made.
   */
  async clientSessions(id: string): Promise<number> {
    const pidFile = await this.postmasterOf(id);
    if (!pidFile) return 0;
    const children = await fs.readFile(`/proc/${pidFile.pid}/task/${pidFile.pid}/children`, 'utf8').catch(() => '');
    let sessions = 0;
    for (const child of children.split(' ').filter((c) => c.length > 0)) {
      const title = await fs.readFile(`/proc/${child}/cmdline`, 'utf8').catch(() => '');
      // pgs's own admin sessions (health checks, passwd) are not a tenant's activity.
      if (/^postgres: \S+ \S+ \[local\]/.test(title) && !title.startsWith(`postgres: ${ADMIN_ROLE} `)) sessions++;
    }
    return sessions;
  }

  async runScript(id: string, password: string, sql: string, timeoutMs: number): Promise<void> {
    const client = await AdminClient.connect(this.socketDir(id), SERVER_PORT, TENANT_ROLE, id, { password, timeoutMs: 10_000 });
    try {
      await client.query(sql, { timeoutMs });
    } finally {
      await client.close().catch(() => undefined);
    }
  }

  async setPassword(id: string, passwordVerifier: string): Promise<void> {
    await this.withAdmin(id, ADMIN_DATABASE, async (client) => {
      await client.query(`ALTER ROLE ${quoteIdent(TENANT_ROLE)} WITH LOGIN PASSWORD ${quoteLiteral(passwordVerifier)}`);
    });
  }

  // --- internals ---

  /** Where the postmaster of `id` says it is, its pid as this process sees it (a container's is translated). */
  protected async postmasterOf(id: string, dir = this.tenantDir(id)): Promise<PostmasterPid | undefined> {
    return readPostmasterPid(dir);
  }

  /** Starts the server in `dir` and waits until it takes sessions (the template's build is always a child process). */
  protected launch(id: string, dir: string, startTimeoutMs = this.startTimeoutMs): Promise<void> {
    return this.spawnServer(id, dir, [], startTimeoutMs);
  }

  protected async spawnServer(id: string, dir: string, extraArgs: string[], startTimeoutMs = this.startTimeoutMs): Promise<void> {
    const logFile = id === '' ? path.join(this.dataRoot, 'logs', 'template.log') : this.logFile(id);
    // As the folder's owner: a tenant's own uid (the template's: the server user).
    const identity = await this.identityOf(dir);
    await this.ensureSocketDir(dir, identity);
    this.topLevelSocket.delete(id);
    const logFd = openSync(logFile, 'a', 0o600);
    let child: ChildProcess;
    try {
      // The data folder is named to PostgreSQL through its working directory (/proc/self/cwd, each
      // process's own): PostgreSQL keeps the data folder's path and reopens files by it (pg_control
      // at every checkpoint, the settings at a reload, the socket at shutdown). A running spare taken
      // by a create is renamed to its tenant's folder; through the working directory, which moves
      // with the folder, every later path still leads to it.
      child = spawn(this.bin.postgres, ['-D', CWD, '-k', `${CWD}/${SOCKET_SUBDIR}`, ...extraArgs], {
        cwd: dir,
        detached: true,
        stdio: ['ignore', logFd, logFd],
        env: this.serverEnv(),
        ...spawnAs(identity),
      });
    } finally {
      closeSync(logFd);
    }
    // Into the tenant's control groups at once, before the postmaster forks its first worker.
    if (child.pid !== undefined && this.limited.has(id)) {
      this.attachServer(id, child.pid);
      this.groupedFromStart.set(id, child.pid);
    }
    const exited = new Promise<string>((resolve) => {
      child.once('exit', (code, signal) => resolve(signal ? `killed by ${signal}` : `exited with code ${code}`));
      child.once('error', (err) => resolve(`could not be spawned: ${err.message}`));
    });
    let exitReason: string | undefined;
    void exited.then((reason) => { exitReason = reason; });
    const deadline = Date.now() + startTimeoutMs;
    let startedAt = new Date();
    for (;;) {
      if (exitReason !== undefined) {
        throw new PgsError('PG_START_FAILED', `the server of ${id === '' ? 'the template' : `tenant ${id}`} ${exitReason}; last lines of ${logFile}:\n${await tail(logFile, 8)}`);
      }
      const pidFile = await readPostmasterPid(dir);
      // "standby" is ready only for a server started as one (a tenant past its disk quota, standby.signal):
      // a restore's recovery says it too, at consistency, long before it takes sessions.
      if (pidFile && pidFile.pid === child.pid && (pidFile.status === 'ready' || (pidFile.status === 'standby' && (await pathExists(path.join(dir, 'standby.signal')))))) {
        startedAt = new Date(pidFile.startedAt * 1000);
        break;
      }
      if (Date.now() > deadline) {
        child.kill('SIGQUIT');
        throw new PgsError('PG_START_FAILED', `the server of tenant ${id} was not ready after ${startTimeoutMs} ms; see ${logFile}`);
      }
      await sleep(READY_POLL_MS);
    }
    // Any process forked before the move above follows it now.
    if (child.pid !== undefined && this.limited.has(id)) this.attachServer(id, child.pid);
    if (id !== '') {
      this.children.set(id, child);
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) this.known.set(id, { pid: child.pid, startedAt, own: true, checkedAt: Date.now() });
    }
    const slot = { id };
    this.childKeys.set(child, slot);
    child.once('exit', () => {
      const key = slot.id; // a running spare taken by a create exits under its tenant's id
      if (this.children.get(key) === child) this.children.delete(key);
      if (this.known.get(key)?.pid === child.pid) this.known.delete(key);
      if (key.startsWith(WARM_PREFIX)) {
        const at = this.warm.findIndex((w) => w.key === key);
        if (at >= 0) this.warm.splice(at, 1)[0]?.session.destroy();
        this.refillWarm();
      } else if (key !== '') {
        this.onServerExit?.(key);
      }
    });
    child.unref();
  }

  /** initdb makes the socket's folder; a folder that lacks it (made otherwise, or emptied by hand) gets it, the server's. */
  protected async ensureSocketDir(dir: string, owner: Identity | undefined): Promise<void> {
    const socketDir = socketDirOf(dir);
    const stat = await fs.lstat(socketDir).catch(() => undefined);
    if (stat?.isDirectory()) return;
    if (stat) throw new PgsError('PG_START_FAILED', `${socketDir} is not a folder: the server's socket goes there`);
    await fs.mkdir(socketDir, { mode: 0o700 });
    if (this.user.switchTo && owner) await fs.chown(socketDir, owner.uid, owner.gid);
  }

  private async waitForExit(id: string, pid: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const child = this.children.get(id);
      const ownChildGone = child !== undefined && child.pid === pid && (child.exitCode !== null || child.signalCode !== null);
      // isPostgresProcess is false for a zombie too, so an unreaped exit still counts.
      if (ownChildGone || !(await isPostgresProcess(pid))) return true;
      await sleep(READY_POLL_MS);
    }
    return false;
  }

  protected signal(pid: number, signal: NodeJS.Signals): void {
    try {
      process.kill(pid, signal);
    } catch (err) {
      if (errnoCode(err) !== 'ESRCH') throw err;
    }
  }

  private async withAdmin<T>(id: string, database: string, fn: (client: AdminClient) => Promise<T>): Promise<T> {
    const host = id === '' ? socketDirOf(this.templateBuildDir) : this.socketDir(id);
    const client = await AdminClient.connect(host, SERVER_PORT, ADMIN_ROLE, database);
    try {
      return await fn(client);
    } finally {
      await client.close();
    }
  }

  private get templateBuildDir(): string {
    return path.join(this.dataRoot, 'template.new');
  }

  private get sparesDir(): string {
    return path.join(this.dataRoot, 'spares');
  }

  /**
   * A spare is a finished, fsynced copy of the template waiting in spares/.
   * Taking one is a rename, so a create does not wait for a 30 MB copy; two
   * creates cannot take the same spare (the loser's rename fails with ENOENT).
   */
  private async takeSpare(dest: string): Promise<boolean> {
    let names: string[];
    try {
      names = await fs.readdir(this.sparesDir);
    } catch {
      return false;
    }
    const marker = this.templateMarker();
    for (const name of names) {
      if (name.startsWith('.')) continue;
      const spare = path.join(this.sparesDir, name);
      const made = await fs.readFile(path.join(spare, TEMPLATE_MARKER), 'utf8').catch(() => '');
      if (made.trim() !== marker) continue;
      try {
        await fs.rename(spare, dest);
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') continue;
        throw err;
      }
      await fsyncDir(path.dirname(dest));
      await fsyncDir(this.sparesDir);
      return true;
    }
    return false;
  }

  /**
   * Tops the pool up to `spareServers` in a detached shell (cp, fsync, rename)
   * that outlives this process: the next create finds a spare ready.
   */
  async refillSpares(): Promise<void> {
    if (this.spareServers <= 0) return;
    await this.mkdirShared(this.sparesDir);
    const names = await fs.readdir(this.sparesDir);
    const marker = this.templateMarker();
    let have = 0;
    for (const name of names) {
      const spare = path.join(this.sparesDir, name);
      if (name.startsWith(WARM_PREFIX)) continue; // running spares, or ones kept for the next daemon
      if (name.startsWith('.tmp-')) {
        const stat = await fs.stat(spare).catch(() => undefined);
        if (stat && Date.now() - stat.mtimeMs < SPARE_COPY_STALE_MS) have++;
        else await this.removeTree(spare);
        continue;
      }
      const made = await fs.readFile(path.join(spare, TEMPLATE_MARKER), 'utf8').catch(() => '');
      if (made.trim() === marker) have++;
      else await this.removeTree(spare);
    }
    for (let i = have; i < this.spareServers; i++) {
      const name = randomBytes(6).toString('hex');
      // As root: the template is the server user's, the copy its future tenant's uid (see copyTree).
      const owner = this.user.switchTo ? await this.uids.next() : undefined;
      const script = 'set -e; umask 077; mkdir -- "$2/.tmp-$3"; cp -a --reflink=auto -- "$1/." "$2/.tmp-$3/"; ' +
        'if [ -n "$4" ]; then chown -R -h -- "$4" "$2/.tmp-$3"; fi; sync -f -- "$2/.tmp-$3"; mv -- "$2/.tmp-$3" "$2/$3"; sync -- "$2"';
      const child = spawn('/bin/sh', ['-c', script, 'pgs-spare', this.templateDir, this.sparesDir, name, owner ? `${owner.uid}:${owner.gid}` : ''], {
        detached: true,
        stdio: 'ignore',
        env: this.serverEnv(),
      });
      child.on('error', () => undefined);
      child.unref();
    }
  }

  private async templateIsCurrent(): Promise<boolean> {
    try {
      const marker = await fs.readFile(path.join(this.templateDir, TEMPLATE_MARKER), 'utf8');
      return marker.trim() === this.templateMarker();
    } catch {
      return false;
    }
  }

  private templateMarker(): string {
    return `pgs-template ${TEMPLATE_VERSION}`;
  }

  private postgresVersion(): string {
    const out = spawnSync(this.bin.postgres, ['--version'], { encoding: 'utf8', env: this.serverEnv(), ...spawnAs(this.serverIdentity()) });
    return /\(PostgreSQL\) (\d+(?:\.\d+)?)/.exec(out.stdout ?? '')?.[1] ?? 'unknown';
  }

  /** The major version of the binaries, from `postgres --version` ("postgres (PostgreSQL) 18.1"). */
  private binariesMajor(): string {
    // As the server user: the answer also shows that it can load the binaries' libraries.
    const out = spawnSync(this.bin.postgres, ['--version'], { encoding: 'utf8', env: this.serverEnv(), ...spawnAs(this.serverIdentity()) });
    const match = /\(PostgreSQL\) (\d+)/.exec(out.stdout ?? '');
    if (!match?.[1]) throw new PgsError('PG_BINARIES_MISSING', `${this.bin.postgres} --version did not answer as PostgreSQL: ${(out.stderr || out.stdout || String(out.error)).trim()}`);
    return match[1];
  }

  /**
   * initdb once; every tenant is a copy of this cluster. Small WAL segments keep
   * the copy small. Built beside the old one and swapped in only when complete.
   */
  private async buildTemplate(): Promise<void> {
    const build = this.templateBuildDir;
    await this.removeTree(build);
    await this.mkdirOwned(build, this.serverIdentity()); // initdb fills an empty folder; the data root is not the server user's to write
    await this.run(this.bin.initdb, [
      '-D', build, '-U', ADMIN_ROLE, '--auth=peer', '--wal-segsize=1', '--no-sync', '--no-instructions',
      '--no-locale', '--locale-provider=builtin', '--builtin-locale=C.UTF-8', '--encoding=UTF8',
    ], { as: this.serverIdentity() });
    await fs.appendFile(path.join(build, 'postgresql.conf'), serverConfText());
    await fs.writeFile(path.join(build, 'pg_hba.conf'), hbaConfText());
    await fs.writeFile(path.join(build, 'pg_ident.conf'), identConfText());
    await this.spawnServer('', build, []);
    let walSegment: string | undefined;
    let fingerprint: string | undefined;
    try {
      await this.withAdmin('', 'template1', async (client) => {
        await client.query(`CREATE ROLE ${quoteIdent(TENANT_ROLE)} NOLOGIN NOSUPERUSER CREATEDB CREATEROLE NOREPLICATION NOBYPASSRLS`);
        await client.query(`CREATE DATABASE ${quoteIdent(TEMPLATE_DATABASE)} OWNER ${quoteIdent(TENANT_ROLE)}`);
        // A tenant has template0, template1, its own database, and pgs's (initdb's `postgres`, renamed).
        await client.query(`ALTER DATABASE postgres RENAME TO ${quoteIdent(ADMIN_DATABASE)}`);
        await client.query(`REVOKE CONNECT, TEMPORARY ON DATABASE ${quoteIdent(ADMIN_DATABASE)} FROM PUBLIC`);
        // template1 stays the template of CREATE DATABASE (which needs no connection to it) but,
        // like template0, takes no connections (below): no session there ever gives it activity
        // statistics, so autovacuum passes it by (see the removal of pgstat.stat below). Frozen,
        // it needs no anti-wraparound vacuum for ~200 million transactions.
        await client.query('VACUUM (FREEZE)');
      });
      // Query statistics: the tenant's own view in its database, and pgs's copy, which it reads as superuser, in a schema of its own.
      await this.withAdmin('', TEMPLATE_DATABASE, async (client) => {
        await client.query(`CREATE EXTENSION ${quoteIdent(QUERY_STATS_EXTENSION)} SCHEMA public`);
      });
      await this.withAdmin('', ADMIN_DATABASE, async (client) => {
        await client.query(`CREATE SCHEMA ${quoteIdent(QUERY_STATS_SCHEMA)}`);
        await client.query(`CREATE EXTENSION ${quoteIdent(QUERY_STATS_EXTENSION)} SCHEMA ${quoteIdent(QUERY_STATS_SCHEMA)}`);
        const [print] = await client.query(CATALOG_FINGERPRINT_SQL);
        fingerprint = print?.[0] ?? undefined;
        await client.query('ALTER DATABASE template1 WITH ALLOW_CONNECTIONS false'); // not from inside template1
        await client.query('CHECKPOINT');
        const [row] = await client.query('SELECT pg_walfile_name(pg_current_wal_insert_lsn())');
        walSegment = row?.[0] ?? undefined;
      });
    } finally {
      const pidFile = await readPostmasterPid(build);
      if (pidFile) {
        this.signal(pidFile.pid, 'SIGINT');
        const deadline = Date.now() + this.stopTimeoutMs;
        while ((await pathExists(path.join(build, 'postmaster.pid'))) && Date.now() < deadline) await sleep(READY_POLL_MS);
      }
    }
    await fs.rm(path.join(build, 'postmaster.opts'), { force: true });
    // The activity statistics the clean shutdown saved: without them a new server starts as after
    // a crash, with none. Autovacuum's launcher sends a worker (a fork and ~20 ms of CPU) each
    // naptime to every database that has statistics, whether or not anything changed there; with
    // the build's statistics that was template1, the tenant's database and pgs_admin on every idle
    // server. Now only databases that see sessions get them: pgs_admin (the health checks) and the
    // tenant's database once the tenant uses it.
    await fs.rm(path.join(build, 'pg_stat', 'pgstat.stat'), { force: true });
    if (walSegment) await trimWal(path.join(build, 'pg_wal'), walSegment);
    // The build's own segments' marks (.ready, as it had no archive): a copy whose archiver found
    // them would warn of each as an orphan (its segment trimmed) or of an unconfigured archive.
    const statusDir = path.join(build, 'pg_wal', 'archive_status');
    for (const name of await fs.readdir(statusDir).catch(() => [] as string[])) await fs.rm(path.join(statusDir, name), { force: true });
    await this.run(this.bin.initdb, ['--sync-only', '-D', build], { as: this.serverIdentity() });
    await fs.writeFile(path.join(build, TEMPLATE_MARKER), `${this.templateMarker()}\n`);
    if (fingerprint === undefined) throw new PgsError('PG_COMMAND_FAILED', 'the template server did not answer for its catalog fingerprint');
    await writeAtomic(this.fingerprintFile, `${fingerprint}\n`, 0o644);
    await this.removeTree(this.templateDir);
    await fs.rename(build, this.templateDir);
    // Copies of the old template; running spares (.warm-*) are a daemon's: it replaces them itself.
    for (const name of await fs.readdir(this.sparesDir).catch(() => [] as string[])) {
      if (!name.startsWith(WARM_PREFIX)) await this.removeTree(path.join(this.sparesDir, name));
    }
  }

  /**
   * The data root is pgs's own (as root: root's, 0755), so that the server user
   * cannot swap its folders (pg/, trash/) for symlinks under root's feet; the
   * folders it writes (tenants/, logs/, spares/, trash/) are the server user's, 0700.
   */
  private async mkdirRoot(): Promise<void> {
    await fs.mkdir(this.dataRoot, { recursive: true, mode: 0o755 });
    if (!this.user.switchTo) {
      await fs.chmod(this.dataRoot, 0o700);
      return;
    }
    await fs.chown(this.dataRoot, process.getuid?.() ?? 0, process.getgid?.() ?? 0);
    await fs.chmod(this.dataRoot, 0o755);
  }

  /**
   * A folder under the data root, made at every level below the root that is
   * missing. In a tenant's backups (`backups/<id>/…`, where its server writes
   * WAL and base backups) the new folders are the tenant's uid's, 0700.
   */
  async mkdirOwnedPath(dir: string): Promise<void> {
    const relative = path.relative(this.dataRoot, dir);
    if (relative === '' || relative.startsWith('..') || path.isAbsolute(relative)) throw new Error(`${dir} is outside the data folder`);
    const parts = relative.split(path.sep);
    const [area, id] = parts;
    if (area !== 'backups' || id === undefined || id.startsWith('.')) throw new Error(`${dir} is not in a tenant's backups`);
    await this.mkdirShared(path.join(this.dataRoot, area));
    const top = path.join(this.dataRoot, area, id);
    // The backups folder's own uid; a new one gets the tenant's (see settleOwner).
    const existing = this.user.switchTo ? await fs.lstat(top).catch(() => undefined) : undefined;
    const owner = existing ? { uid: existing.uid, gid: existing.gid } : await this.ownerFor(id);
    let at = path.join(this.dataRoot, area);
    for (const part of parts.slice(1)) {
      at = path.join(at, part);
      if (await pathExists(at)) continue;
      await this.mkdirOwned(at, owner);
    }
  }

  /** The folder itself is 0700 and `owner`'s; parents made on the way stay traversable (0755). */
  private async mkdirOwned(dir: string, owner: Identity | undefined): Promise<void> {
    await fs.mkdir(path.dirname(dir), { recursive: true, mode: 0o755 });
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    if (this.user.switchTo && owner) await fs.chown(dir, owner.uid, owner.gid);
    await fs.chmod(dir, 0o700);
  }

  /**
   * A folder that holds tenants' folders (tenants/, spares/, backups/, trash/):
   * pgs's own, so that no tenant can rename or replace another's folder; as
   * root 0711, so that each tenant's uid reaches its own folder by name
   * (its archive, from its server) and lists none.
   */
  private async mkdirShared(dir: string, mode = 0o711): Promise<void> {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    if (!this.user.switchTo) return;
    const stat = await fs.lstat(dir);
    const me = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
    if (stat.uid !== me.uid || stat.gid !== me.gid) await fs.chown(dir, me.uid, me.gid);
    if ((stat.mode & 0o777) !== mode) await fs.chmod(dir, mode);
  }

  /** The server user and the binaries must be reachable: a data folder under /root is not. */
  private assertReachable(): void {
    if (!this.user.switchTo) return;
    const tenants = path.join(this.dataRoot, 'tenants');
    const result = spawnSync('test', ['-x', tenants], { ...spawnAs(this.serverIdentity()) });
    if (result.status !== 0) {
      throw new PgsError('PATH_TOO_LONG', `the server user ${this.user.name} cannot reach ${this.dataRoot} (a parent folder is closed to it): set PGS_DATA to a folder it can traverse and run "pgs setup" again`);
    }
    const binaries = spawnSync('test', ['-x', this.bin.initdb, '-a', '-x', this.bin.postgres], { ...spawnAs(this.serverIdentity()) });
    if (binaries.status !== 0) {
      throw new PgsError('PG_BINARIES_MISSING', `the server user ${this.user.name} cannot run ${this.bin.postgres} (a parent folder is closed to it): let "pgs setup" copy the binaries into the data folder (PGS_PG_BIN unset), or set PGS_PG_BIN to a folder it can reach`);
    }
  }

  /** The user that builds the template (initdb cannot run as root); undefined when pgs is not root. */
  private serverIdentity(): Identity | undefined {
    return this.user.switchTo ? { uid: this.user.uid, gid: this.user.gid } : undefined;
  }

  /** Who works in `dir`: its owner, as root (undefined otherwise: pgs's own user). Never root. */
  protected async identityOf(dir: string): Promise<Identity | undefined> {
    if (!this.user.switchTo) return undefined;
    const stat = await fs.lstat(dir);
    if (stat.uid === 0) throw new PgsError('SYSTEM_USER', `${dir} is owned by root: a server never runs as root`);
    return { uid: stat.uid, gid: stat.gid };
  }

  /**
   * The uid tenant `id`'s files are, or a new folder of it gets: its backups'
   * when it has some (they outlive a removed tenant), else its folder's (`folder`
   * when the caller has looked already), else a new one.
   */
  private async ownerFor(id: string, folder?: { uid: number; gid: number }): Promise<Identity | undefined> {
    if (!this.user.switchTo) return undefined;
    const backups = await this.backupsOwner(id);
    if (backups) return backups;
    const own = folder ?? (await fs.lstat(this.tenantDir(id)).catch(() => undefined));
    return own && isTenantUid(own.uid) ? { uid: own.uid, gid: own.gid } : this.uids.next();
  }

  /**
   * A copy of `from` as `to` (which must not exist), owned by `owner`: copied by
   * root into a folder only root can enter (from's owner runs nothing meanwhile:
   * the template's never does, a tenant's server is stopped), then handed over.
   * `cp` opens nothing through a symlink and `chown -R` follows none.
   */
  private async copyTree(from: string, to: string, owner: Identity | undefined): Promise<void> {
    await fs.mkdir(to, { mode: 0o700 });
    await this.run('cp', ['-a', '--reflink=auto', '--', `${from}/.`, `${to}/`]);
    if (owner) await this.chownTree(to, owner);
    await fs.chmod(to, 0o700);
  }

  private async chownTree(dir: string, owner: Identity): Promise<void> {
    await this.run('chown', ['-R', '-h', '--', `${owner.uid}:${owner.gid}`, dir]);
  }

  private serverEnv(): NodeJS.ProcessEnv {
    return { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C', TZ: 'UTC' };
  }

  /** Runs a command (as `as`, else as pgs itself); its output becomes the error on failure. */
  private run(command: string, args: string[], { stdinFile, as }: { stdinFile?: string; as?: Identity | undefined } = {}): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = spawn(command, args, { stdio: [stdinFile === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: this.serverEnv(), ...spawnAs(as) });
      if (stdinFile !== undefined && child.stdin) {
        const input = createReadStream(stdinFile, { highWaterMark: 1 << 20 });
        input.on('error', (err) => child.stdin?.destroy(err));
        child.stdin.on('error', () => undefined); // tar exiting early closes it; its exit code says why
        input.pipe(child.stdin);
      }
      const output: Buffer[] = [];
      child.stdout?.on('data', (chunk: Buffer) => output.push(chunk));
      child.stderr?.on('data', (chunk: Buffer) => output.push(chunk));
      child.once('error', (err) => reject(new PgsError('PG_COMMAND_FAILED', `${path.basename(command)} could not run: ${err.message}`)));
      child.once('close', (code, signal) => {
        if (code === 0) return resolve();
        const text = Buffer.concat(output).toString('utf8').trim().split('\n').slice(-8).join('\n');
        reject(new PgsError('PG_COMMAND_FAILED', `${path.basename(command)} failed (${signal ?? `exit ${code}`}): ${text}`));
      });
    });
  }
}


function spawnAs(identity: Identity | undefined): { uid?: number; gid?: number } {
  return identity ? { uid: identity.uid, gid: identity.gid } : {};
}

/** What belonged to the server a folder was copied from: its pid file, its socket's lock file, its settings, its recovery state. */
async function removeServerLeftovers(dir: string): Promise<void> {
  // In the socket's folder, and in the top level where an older pgs had it.
  const socketLocks = async (at: string) => (await fs.readdir(at).catch(() => [] as string[])).filter((n) => n.startsWith('.s.PGSQL.')).map((n) => path.join(at, n));
  const stale = ['postmaster.pid', 'postmaster.opts', 'recovery.signal', 'standby.signal', ARCHIVE_CONF, RECOVERY_CONF].map((n) => path.join(dir, n));
  for (const file of [...stale, ...(await socketLocks(dir)), ...(await socketLocks(socketDirOf(dir)))]) await fs.rm(file, { force: true });
}

/**
 * After a clean shutdown only the segment holding the shutdown checkpoint (the
 * insert position's, or the next if it crossed over) is needed; recycled future
 * segments and older ones would only make every copy of the template larger.
 * Names are TTTTTTTT LLLLLLLL SSSSSSSS; with 1 MB segments a log file holds 4096.
 */
export async function trimWal(walDir: string, current: string): Promise<void> {
  const seq = (name: string) => Number.parseInt(name.slice(8, 16), 16) * 4096 + Number.parseInt(name.slice(16, 24), 16);
  const keep = seq(current);
  for (const name of await fs.readdir(walDir)) {
    if (!/^[0-9A-F]{24}$/.test(name) || name.slice(0, 8) !== current.slice(0, 8)) continue;
    const n = seq(name);
    if (n < keep || n > keep + 1) await fs.rm(path.join(walDir, name));
  }
}

/** Bytes of a file or of everything under a folder (links not followed); stops counting past 100,000 entries. */
async function treeBytes(file: string): Promise<number> {
  let total = 0;
  let seen = 0;
  const walk = async (at: string): Promise<void> => {
    if (++seen > 100_000) return;
    const stat = await fs.lstat(at).catch(() => undefined);
    if (!stat) return;
    if (!stat.isDirectory()) {
      total += stat.size;
      return;
    }
    for (const name of await fs.readdir(at).catch(() => [] as string[])) await walk(path.join(at, name));
  };
  await walk(file);
  return total;
}
