/**
 * The docker runtime: each tenant's postmaster runs in a container of its own
 * (`pgs-<home tag>-<id>`, no network, its limits as the container's), everything else is
 * the native runtime's. The tenant's data folder, its archive and its log are
 * host folders bind-mounted at the same paths, so backups, archiving, restores,
 * branches and the router's unix socket work on the files exactly as natively;
 * only starting, stopping and limiting a server differ.
 *
 * The container's first process is the postmaster itself (through `sh -c
 * exec`, which points its output at the tenant's log file): its host pid is
 * the container's State.Pid, which is what pgs signals and watches in /proc.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgsError } from '../core/errors.js';
import { pathExists, tail } from '../core/files.js';
import type { DockerApi} from './docker-api.js';
import { type ContainerInspect } from './docker-api.js';
import { NativeRuntime, type NativeRuntimeOptions } from './native.js';
import { POSTMASTER_PID_FILE, readPostmasterPid, type PostmasterPid } from './postmaster.js';
import { tenantBackupsDir } from '../backup/layout.js';
import type { ResourceUsage } from './cgroups.js';
import type { TenantServerSpec } from './runtime.js';
import { SERVER_PORT, SOCKET_SUBDIR, serverMaxConnections, socketDirOf } from './server-config.js';

export const DEFAULT_IMAGE = 'postgres:18';
/** Where the official image has PostgreSQL 18's server binary. */
export const DEFAULT_PG_BIN_PATH = '/usr/lib/postgresql/18/bin';
const LABEL_TENANT = 'pgs.tenant';
const LABEL_HOME = 'pgs.home';
const LABEL_SPEC = 'pgs.spec';
const READY_POLL_MS = 5;

export interface DockerRuntimeOptions extends NativeRuntimeOptions {
  docker: DockerApi;
  image: string;
  pgBinPath: string;
}

/** A tenant's container: named by its home's tag (core/paths.ts homeTag) and its id, so that two homes' tenants of one id never meet. */
export function containerName(tag: string, id: string): string {
  return `pgs-${tag}-${id}`;
}

/** The name an older pgs gave a tenant's container, by id alone. */
export function untaggedContainerName(id: string): string {
  return `pgs-${id}`;
}

const SECOND_NS = 1e9;

/**
 * The container's health check, for whoever looks with `docker ps`: pg_isready
 * on the server's socket where the image has it (the official image does),
 * else the state the postmaster writes in postmaster.pid. It informs only:
 * restarting is pgs's supervisor's, which hears of a death from the engine.
 */
export function healthcheck(): Record<string, unknown> {
  // It runs in the container's working folder, the tenant's data folder: no path to quote.
  const check = [
    `if command -v pg_isready >/dev/null 2>&1; then exec pg_isready -q -h "$PWD/${SOCKET_SUBDIR}" -p ${SERVER_PORT}; fi`,
    'n=0',
    `while IFS= read -r line; do n=$((n+1)); if [ $n -eq 8 ]; then case "$line" in ready*) exit 0;; esac; exit 1; fi; done < ${POSTMASTER_PID_FILE}`,
    'exit 1',
  ].join('; ');
  return { Test: ['CMD-SHELL', check], Interval: 30 * SECOND_NS, Timeout: 5 * SECOND_NS, Retries: 3, StartPeriod: 10 * SECOND_NS };
}

export class DockerRuntime extends NativeRuntime {
  override readonly kind = 'docker';
  private readonly docker: DockerApi;
  private readonly image: string;
  private readonly pgBinPath: string;
  /** Containers are labelled with it, so that two pgs homes on one engine never take each other's. */
  private readonly home: string;
  private readonly specs = new Map<string, TenantServerSpec>();
  private events: { stop(): void } | undefined;
  /** When each tenant's container was last started (ns since the epoch), to tell old events from new. */
  private readonly launchedAt = new Map<string, bigint>();

  constructor(options: DockerRuntimeOptions) {
    super({ ...options, spareServers: options.spareServers });
    this.docker = options.docker;
    this.image = options.image;
    this.pgBinPath = options.pgBinPath;
    this.home = options.home;
  }

  override async prepare(): Promise<string[]> {
    await this.docker.version();
    if (!(await this.docker.imageExists(this.image))) {
      throw new PgsError('IMAGE_MISSING', `the Docker image ${this.image} is not on this host: pull or build it first (docker pull ${this.image}), or name another with pgs setup --image`);
    }
    return super.prepare();
  }

  /** Running spares are processes of the native runtime; the docker runtime keeps cold spares only. */
  override async keepWarm(): Promise<void> {
    // nothing: a container's bind mounts name its folder, which a create would rename
  }

  override serverUsers(): { perTenant: boolean; detail: string } {
    const own = super.serverUsers();
    return { perTenant: own.perTenant, detail: `${own.perTenant ? 'a uid of its own per tenant' : own.detail}, in container ${containerName(this.homeTag, '<id>')}` };
  }

  override describe(): string {
    return `docker: a container per tenant from ${this.image} (engine at ${this.docker.socketPath})`;
  }

  override limitsSupport(): { enforced: true; how: string } {
    return { enforced: true, how: 'the container\'s resource limits' };
  }

  /** Limits are the container's: made with it, changed with an update while it runs. */
  protected override async limitGroups(spec: TenantServerSpec): Promise<void> {
    this.specs.set(spec.id, spec);
  }

  protected override attachServer(): void {
    // the container holds every process of the server
  }

  protected override async releaseGroups(): Promise<void> {
    // nothing outside the container
  }

  override async applyLimits(spec: TenantServerSpec): Promise<void> {
    this.specs.set(spec.id, spec);
    await super.applyLimits(spec);
    const c = await this.docker.inspect(this.nameOf(spec.id));
    if (c?.State.Running) await this.docker.update(this.nameOf(spec.id), this.liftedResources(spec));
  }

  override async resourceUsage(id: string): Promise<ResourceUsage | undefined> {
    const stats = await this.docker.stats(this.nameOf(id)).catch(() => undefined);
    if (!stats?.memory_stats?.usage) return undefined;
    const cache = stats.memory_stats.stats?.inactive_file ?? stats.memory_stats.stats?.cache ?? 0;
    return { memoryBytes: stats.memory_stats.usage - cache, cpuSeconds: (stats.cpu_stats?.cpu_usage?.total_usage ?? 0) / 1e9, memorySource: 'cgroup' };
  }

  override async remove(id: string): Promise<void> {
    await super.remove(id);
    await this.docker.remove(this.nameOf(id));
    this.specs.delete(id);
  }

  protected override async awaitDeadServer(): Promise<void> {
    // a container's processes end with it
  }

  protected override async clearZombieLock(): Promise<void> {
    // the engine reaps a container's first process
  }

  /** postmaster.pid as the server wrote it, with the postmaster's pid as the host sees it (-1 when its container is not running). */
  protected override async postmasterOf(id: string, dir = this.tenantDir(id)): Promise<PostmasterPid | undefined> {
    this.watchEvents();
    const file = await readPostmasterPid(dir);
    if (!file) return undefined;
    const c = await this.docker.inspect(this.nameOf(id)).catch(() => undefined);
    return { ...file, pid: c?.State.Running && this.ours(c) ? c.State.Pid : -1 };
  }

  private nameOf(id: string): string {
    return containerName(this.homeTag, id);
  }

  /**
   * Containers of this home that an older pgs named by tenant id alone take
   * their tagged names; a running one keeps running. Another home's keep theirs.
   */
  override async moveToHomeNames(): Promise<string[]> {
    const done: string[] = [];
    for (const c of await this.docker.list(`${LABEL_HOME}=${this.home}`)) {
      const id = c.Labels[LABEL_TENANT];
      if (!id || !c.Names.includes(`/${untaggedContainerName(id)}`)) continue;
      try {
        if (await this.takeTaggedName(id)) done.push(`${id}: renamed container ${untaggedContainerName(id)} to ${this.nameOf(id)}`);
      } catch (err) {
        done.push(`${id}: container ${untaggedContainerName(id)} not renamed: ${(err as Error).message}`);
      }
    }
    return done;
  }

  /**
   * Renames this home's untagged container of `id`, if there is one. A stopped
   * container already under the tagged name gives way to it; a running one
   * beside it would be two servers on one folder, which is refused.
   */
  private async takeTaggedName(id: string): Promise<boolean> {
    const old = await this.docker.inspect(untaggedContainerName(id));
    if (!old || !this.ours(old) || old.Config.Labels?.[LABEL_TENANT] !== id) return false;
    const name = this.nameOf(id);
    const current = await this.docker.inspect(name);
    if (current) {
      if (current.State.Running && old.State.Running) throw new PgsError('INVALID_STATE', `tenant ${id} has two running containers, ${untaggedContainerName(id)} and ${name}: stop one ("docker stop")`);
      if (current.State.Running) return false;
      await this.docker.remove(name);
    }
    return this.docker.rename(old.Id, name);
  }

  private ours(c: ContainerInspect): boolean {
    return c.Config.Labels?.[LABEL_HOME] === this.home;
  }

  private resources(spec: TenantServerSpec): Record<string, number> {
    const limits = spec.limits ?? {};
    return {
      Memory: limits.memoryBytes ?? 0,
      MemorySwap: limits.memoryBytes !== undefined ? limits.memoryBytes : 0,
      NanoCpus: limits.cpus !== undefined ? Math.round(limits.cpus * 1e9) : 0,
      PidsLimit: serverMaxConnections(spec.maxConnections) + 32,
    };
  }

  /**
   * For an update: the engine takes 0 as "unchanged" and refuses -1, so a lifted
   * limit is one no server reaches (2^53 bytes, every core of the host); the next
   * start recreates the container without it (its spec hash differs).
   */
  private liftedResources(spec: TenantServerSpec): Record<string, number> {
    const r = this.resources(spec);
    if (r.Memory === 0) r.Memory = r.MemorySwap = 2 ** 53;
    if (r.NanoCpus === 0) r.NanoCpus = availableParallelism() * 1e9;
    return r;
  }

  /**
   * The folders the server reads or writes besides its own: all of its tenant's
   * backups (it archives WAL into one generation and writes online backups
   * beside it, into generations made while it runs), and a restore's WAL sources.
   */
  private async mounts(spec: TenantServerSpec, dir: string): Promise<string[]> {
    const binds = [`${dir}:${dir}`, `${this.logFile(spec.id)}:/var/log/pgs/server.log`];
    const backups = tenantBackupsDir(this.dataRoot, spec.id);
    const within = (p: string) => p === backups || p.startsWith(`${backups}/`);
    if (await pathExists(backups)) binds.push(`${backups}:${backups}`);
    const archive = spec.archive?.directory;
    if (archive && !within(archive) && (await pathExists(archive))) binds.push(`${archive}:${archive}`);
    for (const wal of spec.recovery?.walDirs ?? []) {
      if (!within(wal) && wal !== archive && (await pathExists(wal))) binds.push(`${wal}:${wal}:ro`);
    }
    return binds;
  }

  protected override async launch(id: string, dir: string, startTimeoutMs = this.startTimeoutMs): Promise<void> {
    this.watchEvents();
    const spec = this.specs.get(id) ?? { id, maxConnections: 20 };
    const identity = await this.identityOf(dir);
    await this.ensureSocketDir(dir, identity);
    const logFile = this.logFile(id);
    const fd = await fs.open(logFile, 'a', 0o600);
    await fd.close();
    if (identity) await fs.chown(logFile, identity.uid, identity.gid);
    const binds = await this.mounts(spec, dir);
    const body = {
      Image: this.image,
      User: identity ? `${identity.uid}:${identity.gid}` : undefined,
      WorkingDir: dir,
      Entrypoint: ['/bin/sh', '-c', 'exec "$@" >>/var/log/pgs/server.log 2>&1', 'sh'],
      Cmd: [path.posix.join(this.pgBinPath, 'postgres'), '-D', dir, '-k', socketDirOf(dir)],
      Labels: { [LABEL_TENANT]: id, [LABEL_HOME]: this.home },
      StopSignal: 'SIGINT',
      Healthcheck: healthcheck(),
      HostConfig: {
        NetworkMode: 'none',
        Binds: binds,
        ShmSize: 64 * 2 ** 20,
        ...this.resources(spec),
        RestartPolicy: { Name: 'no' },
        SecurityOpt: ['no-new-privileges'],
        CapDrop: ['ALL'],
      },
    };
    const key = createHash('sha256').update(JSON.stringify(body)).digest('hex').slice(0, 16);
    // Had the start-time rename failed, a container of the old name might still run this folder.
    await this.takeTaggedName(id);
    const name = this.nameOf(id);
    const existing = await this.docker.inspect(name);
    if (existing?.State.Running && !this.ours(existing)) {
      throw new PgsError('INVALID_STATE', `a container named ${name} runs that another pgs home (${existing.Config.Labels?.[LABEL_HOME] ?? 'none'}) made`);
    }
    if (existing?.State.Running) {
      // Ours, running (a start raced with the engine's news of it): wait for it as for a new one.
      return this.awaitReady(id, name, dir, startTimeoutMs);
    }
    if (existing && existing.Config.Labels?.[LABEL_SPEC] !== key) await this.docker.remove(name);
    // The lock a killed container left names its postmaster as pid 1, "ready": no process of this
    // tenant runs now (its container is stopped), so it goes, and "ready" below is the new server's.
    await fs.rm(path.join(dir, POSTMASTER_PID_FILE), { force: true });
    if (!existing || existing.Config.Labels?.[LABEL_SPEC] !== key) {
      await this.docker.create(name, { ...body, Labels: { ...body.Labels, [LABEL_SPEC]: key } });
    }
    this.launchedAt.set(id, BigInt(Date.now()) * 1_000_000n);
    await this.docker.start(name);
    return this.awaitReady(id, name, dir, startTimeoutMs);
  }

  private async awaitReady(id: string, name: string, dir: string, startTimeoutMs: number): Promise<void> {
    const logFile = this.logFile(id);
    const deadline = Date.now() + startTimeoutMs;
    for (;;) {
      const c = await this.docker.inspect(name);
      if (!c?.State.Running) {
        throw new PgsError('PG_START_FAILED', `the server of tenant ${id} (container ${name}) exited with code ${c?.State.ExitCode ?? '?'}; last lines of ${logFile}:\n${await tail(logFile, 8)}`);
      }
      const file = await readPostmasterPid(dir);
      if (file && (file.status === 'ready' || (file.status === 'standby' && (await pathExists(path.join(dir, 'standby.signal')))))) {
        this.known.set(id, { pid: c.State.Pid, startedAt: new Date(file.startedAt * 1000), own: false, checkedAt: Date.now() });
        return;
      }
      if (Date.now() > deadline) {
        await this.docker.kill(name, 'SIGQUIT');
        throw new PgsError('PG_START_FAILED', `the server of tenant ${id} was not ready after ${startTimeoutMs} ms; see ${logFile}`);
      }
      await sleep(READY_POLL_MS);
    }
  }

  /** The engine tells when a container stops, however: the supervisor hears of a death at once. */
  private watchEvents(): void {
    if (this.events) return;
    this.events = this.docker.events(`${LABEL_HOME}=${this.home}`, (e) => {
      const id = e.Actor?.Attributes?.[LABEL_TENANT];
      if (!id || (e.Action ?? e.status) !== 'die') return;
      // The news of a container that has been started again since (the engine's events can lag) is old.
      if (e.timeNano !== undefined && BigInt(e.timeNano) < (this.launchedAt.get(id) ?? 0n)) return;
      this.known.delete(id);
      this.onServerExit?.(id);
    }, () => {
      this.events = undefined;
      setTimeout(() => this.watchEvents(), 1_000).unref();
    });
  }

  /** Ends the engine's event stream (the daemon's stop). */
  close(): void {
    const events = this.events;
    this.events = undefined;
    events?.stop();
  }
}
