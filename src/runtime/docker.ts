/**
 * The docker runtime: each tenant's postmaster runs in a container of its own
 * (`pgs-<home tag>-<id>`, no network, its limits as the container's); its files
 * are the local runtimes' shared parts (local/parts.ts), exactly as natively.
 * The tenant's data folder, its archive and its log are host folders
 * bind-mounted at the same paths, so backups, archiving, restores, branches
 * and the router's unix socket work on the files as natively; only starting,
 * stopping and limiting a server differ, which is this file's ContainerHost.
 *
 * The container's first process is the postmaster itself (through `sh -c
 * exec`, which points its output at the tenant's log file): its host pid is
 * the container's State.Pid, which is what pgs signals and watches in /proc.
 */
import { promises as fs } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { tenantBackupsDir } from '../backup/layout.js';
import { PgsError } from '../core/errors.js';
import { pathExists, tail } from '../core/files.js';
import type { ResourceUsage } from './cgroups.js';
import type { ContainerInspect, DockerApi } from './docker-api.js';
import {
  LABEL_HOME, LABEL_SPEC, LABEL_TENANT, containerBinds, containerBody, containerName, liftedResources, specKey, untaggedContainerName,
} from './docker-container.js';
import { LocalRuntime, type HostContext } from './local/local-runtime.js';
import type { LocalParts } from './local/parts.js';
import type { ServerHost } from './local/server-host.js';
import type { NativeRuntimeOptions } from './native.js';
import { POSTMASTER_PID_FILE, isPostgresProcess, readPostmasterPid, type PostmasterPid } from './postmaster.js';
import type { TenantServerSpec } from './runtime.js';

export { containerName, healthcheck, untaggedContainerName } from './docker-container.js';

export const DEFAULT_IMAGE = 'postgres:18';
/** Where the official image has PostgreSQL 18's server binary. */
export const DEFAULT_PG_BIN_PATH = '/usr/lib/postgresql/18/bin';
const READY_POLL_MS = 5;

export interface DockerRuntimeOptions extends NativeRuntimeOptions {
  docker: DockerApi;
  image: string;
  pgBinPath: string;
}

/** Servers as containers of a Docker engine (see the file's comment). */
class ContainerHost implements ServerHost {
  readonly kind = 'docker';
  /** A container's bind mounts name its folder, which a create would rename: cold spares only. */
  readonly warm = undefined;
  private readonly docker: DockerApi;
  private readonly image: string;
  private readonly pgBinPath: string;
  /** Containers are labelled with it, so that two pgs homes on one engine never take each other's. */
  private readonly home: string;
  private readonly specs = new Map<string, TenantServerSpec>();
  private events: { stop(): void } | undefined;
  /** When each tenant's container was last started (ns since the epoch), to tell old events from new. */
  private readonly launchedAt = new Map<string, bigint>();

  constructor(private readonly parts: LocalParts, private readonly context: HostContext, options: DockerRuntimeOptions) {
    this.docker = options.docker;
    this.image = options.image;
    this.pgBinPath = options.pgBinPath;
    this.home = options.home;
  }

  async check(): Promise<void> {
    await this.docker.version();
    if (!(await this.docker.imageExists(this.image))) {
      throw new PgsError('IMAGE_MISSING', `the Docker image ${this.image} is not on this host: pull or build it first (docker pull ${this.image}), or name another with pgs setup --image`);
    }
  }

  describe(): string {
    return `docker: a container per tenant from ${this.image} (engine at ${this.docker.socketPath})`;
  }

  serverUsers(local: { perTenant: boolean; detail: string }): { perTenant: boolean; detail: string } {
    return { perTenant: local.perTenant, detail: `${local.perTenant ? 'a uid of its own per tenant' : local.detail}, in container ${this.nameOf('<id>')}` };
  }

  limitsSupport(): { enforced: true; how: string } {
    return { enforced: true, how: 'the container\'s resource limits' };
  }

  childAlive(): undefined {
    return undefined; // the engine's, never pgs's child
  }

  async clearDead(): Promise<void> {
    // a container's processes end with it, and the engine reaps its first process
  }

  async waitForExit(_id: string, pid: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!(await isPostgresProcess(pid))) return true;
      await sleep(READY_POLL_MS);
    }
    return false;
  }

  async stopped(): Promise<void> {
    // nothing outside the container
  }

  async removed(id: string): Promise<void> {
    await this.docker.remove(this.nameOf(id));
    this.specs.delete(id);
  }

  /** Limits are the container's: made with it, changed with an update while it runs. */
  async applyLimits(spec: TenantServerSpec): Promise<void> {
    this.specs.set(spec.id, spec);
    const c = await this.docker.inspect(this.nameOf(spec.id));
    if (c?.State.Running) await this.docker.update(this.nameOf(spec.id), liftedResources(spec, availableParallelism()));
  }

  async resourceUsage(id: string): Promise<ResourceUsage | undefined> {
    const stats = await this.docker.stats(this.nameOf(id)).catch(() => undefined);
    if (!stats?.memory_stats?.usage) return undefined;
    const cache = stats.memory_stats.stats?.inactive_file ?? stats.memory_stats.stats?.cache ?? 0;
    return { memoryBytes: stats.memory_stats.usage - cache, cpuSeconds: (stats.cpu_stats?.cpu_usage?.total_usage ?? 0) / 1e9, memorySource: 'cgroup' };
  }

  /** postmaster.pid as the server wrote it, with the postmaster's pid as the host sees it (-1 when its container is not running). */
  async postmasterOf(id: string, dir: string): Promise<PostmasterPid | undefined> {
    this.watchEvents();
    const file = await readPostmasterPid(dir);
    if (!file) return undefined;
    const c = await this.docker.inspect(this.nameOf(id)).catch(() => undefined);
    return { ...file, pid: c?.State.Running && this.ours(c) ? c.State.Pid : -1 };
  }

  private nameOf(id: string): string {
    return containerName(this.parts.homeTag, id);
  }

  /**
   * Containers of this home that an older pgs named by tenant id alone take
   * their tagged names; a running one keeps running. Another home's keep theirs.
   */
  async moveToHomeNames(): Promise<string[]> {
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

  async launch(spec: TenantServerSpec, dir: string, startTimeoutMs: number): Promise<void> {
    const id = spec.id;
    this.specs.set(id, spec);
    this.watchEvents();
    const identity = await this.parts.owners.identityOf(dir);
    await this.parts.folders.ensureSocketDir(dir, identity);
    const logFile = this.parts.layout.logFile(id);
    const fd = await fs.open(logFile, 'a', 0o600);
    await fd.close();
    if (identity) await fs.chown(logFile, identity.uid, identity.gid);
    const backups = tenantBackupsDir(this.parts.layout.dataRoot, id);
    const candidates = [backups, spec.archive?.directory, ...(spec.recovery?.walDirs ?? [])].filter((p): p is string => p !== undefined);
    const present = new Set((await Promise.all(candidates.map(async (p) => ((await pathExists(p)) ? p : undefined)))).filter((p) => p !== undefined));
    const binds = containerBinds(spec, dir, logFile, backups, (p) => present.has(p));
    const body = containerBody({ image: this.image, pgBinPath: this.pgBinPath, home: this.home, spec, dir, identity, binds });
    const key = specKey(body);
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
      await this.docker.create(name, { ...body, Labels: { ...(body.Labels as Record<string, string>), [LABEL_SPEC]: key } });
    }
    this.launchedAt.set(id, BigInt(Date.now()) * 1_000_000n);
    await this.docker.start(name);
    return this.awaitReady(id, name, dir, startTimeoutMs);
  }

  private async awaitReady(id: string, name: string, dir: string, startTimeoutMs: number): Promise<void> {
    const logFile = this.parts.layout.logFile(id);
    const deadline = Date.now() + startTimeoutMs;
    for (;;) {
      const c = await this.docker.inspect(name);
      if (!c?.State.Running) {
        throw new PgsError('PG_START_FAILED', `the server of tenant ${id} (container ${name}) exited with code ${c?.State.ExitCode ?? '?'}; last lines of ${logFile}:\n${await tail(logFile, 8)}`);
      }
      const file = await readPostmasterPid(dir);
      if (file && (file.status === 'ready' || (file.status === 'standby' && (await pathExists(path.join(dir, 'standby.signal')))))) {
        this.parts.watch.ready(id, c.State.Pid, new Date(file.startedAt * 1000), false);
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
      this.parts.watch.gone(id);
      this.context.serverExited(id);
    }, () => {
      this.events = undefined;
      setTimeout(() => this.watchEvents(), 1_000).unref();
    });
  }

  /** Ends the engine's event stream. */
  close(): void {
    const events = this.events;
    this.events = undefined;
    events?.stop();
  }
}

export class DockerRuntime extends LocalRuntime {
  private readonly containers: ContainerHost;

  constructor(options: DockerRuntimeOptions) {
    let host: ContainerHost | undefined;
    super(options, (parts, context) => (host = new ContainerHost(parts, context, options)));
    this.containers = host as ContainerHost;
  }

  /** Ends the engine's event stream (the daemon's stop). */
  close(): void {
    this.containers.close();
  }
}
