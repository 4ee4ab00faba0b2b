/**
 * The native runtime's ServerHost: each postmaster a child process of pgs
 * (host-processes.ts), in control groups of its tenant when it has limits
 * (host-limits.ts), with running spares (warm.ts) kept by the daemon.
 */
import type { ResourceUsage } from '../cgroups.js';
import { isPostgresProcess, readPostmasterPid, type PostmasterPid } from '../postmaster.js';
import type { TenantServerSpec } from '../runtime.js';
import { HostLimits } from './host-limits.js';
import { WARM_PREFIX } from './layout.js';
import type { HostContext } from './local-runtime.js';
import type { LocalParts } from './parts.js';
import type { ServerHost } from './server-host.js';
import { WarmSpares } from './warm.js';

export class NativeHost implements ServerHost {
  readonly kind = 'native';
  readonly warm: WarmSpares;
  private readonly limits: HostLimits;

  constructor(private readonly parts: LocalParts, context: HostContext) {
    this.limits = new HostLimits(parts.homeTag);
    this.warm = new WarmSpares(parts.layout, parts.folders, parts.processes, parts.cold, parts.files, parts.sessions, parts.sql, context);
    parts.processes.groups = this.limits;
    // A running spare's exit refills the pool; a tenant's is news for the supervisor.
    parts.processes.onExit = (key) => (key.startsWith(WARM_PREFIX) ? this.warm.exited(key) : context.serverExited(key));
  }

  async check(): Promise<void> {
    // the binaries are checked as the folders are made
  }

  describe(): string {
    return 'native: each server a process pgs starts';
  }

  serverUsers(local: { perTenant: boolean; detail: string }): { perTenant: boolean; detail: string } {
    return local;
  }

  limitsSupport(): { enforced: true; how: string } | { enforced: false; why: string } {
    return this.limits.limitsSupport();
  }

  async launch(spec: TenantServerSpec, dir: string, startTimeoutMs: number): Promise<void> {
    await this.limits.limitGroups(spec);
    await this.parts.processes.spawn(spec.id, dir, startTimeoutMs);
  }

  postmasterOf(_id: string, dir: string): Promise<PostmasterPid | undefined> {
    return readPostmasterPid(dir);
  }

  childAlive(id: string, pid: number): boolean | undefined {
    return this.parts.processes.childAlive(id, pid);
  }

  async clearDead(dir: string): Promise<void> {
    await this.parts.processes.awaitDeadServer(dir);
    await this.parts.processes.clearZombieLock(dir);
  }

  waitForExit(id: string, pid: number, timeoutMs: number): Promise<boolean> {
    return this.parts.processes.waitForExit(id, pid, timeoutMs);
  }

  stopped(id: string): Promise<void> {
    return this.limits.release(id);
  }

  removed(id: string): Promise<void> {
    return this.limits.removed(id);
  }

  applyLimits(spec: TenantServerSpec, pid: number | undefined): Promise<void> {
    return this.limits.apply(spec, pid);
  }

  async resourceUsage(id: string): Promise<ResourceUsage | undefined> {
    const pid = await this.runningPid(id);
    return pid === undefined ? undefined : this.limits.usage(id, pid);
  }

  moveToHomeNames(specs: TenantServerSpec[]): Promise<string[]> {
    return this.limits.moveToHomeNames(specs, (id) => this.runningPid(id));
  }

  private async runningPid(id: string): Promise<number | undefined> {
    const pidFile = await readPostmasterPid(this.parts.layout.tenantDir(id)).catch(() => undefined);
    return pidFile && (await isPostgresProcess(pidFile.pid)) ? pidFile.pid : undefined;
  }
}
