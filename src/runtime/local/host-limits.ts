/**
 * Memory, CPU and process limits of servers that run as processes of this
 * host: each tenant with limits gets control groups of its own (cgroups.ts),
 * made before its server starts and joined by the postmaster before it forks;
 * what a server uses is its group's count, or the sum of its processes' PSS.
 */
import { readFileSync } from 'node:fs';
import { childPids, cpuSeconds, pssBytes } from '../../core/proc.js';
import { Cgroups, type ResourceUsage } from '../cgroups.js';
import type { TenantServerSpec } from '../runtime.js';
import { serverMaxConnections } from '../server-config.js';
import type { GroupAttach } from './host-processes.js';

/** Whether `spec` asks for a limit that control groups enforce (memory or CPU). */
export function wantsGroups(spec: TenantServerSpec): boolean {
  const limits = spec.limits;
  return limits !== undefined && (limits.memoryBytes !== undefined || limits.cpus !== undefined);
}

export class HostLimits implements GroupAttach {
  /** Tenants whose servers go into control groups (they have limits). */
  private readonly grouped = new Set<string>();
  /** The postmaster pid of each server that went into its control groups as it started (so they hold all its memory). */
  private readonly groupedFromStart = new Map<string, number>();
  private cgroupsState: Cgroups | string | undefined;

  constructor(private readonly homeTag: string) {}

  get cgroups(): Cgroups | undefined {
    this.cgroupsState ??= Cgroups.detect(this.homeTag);
    return typeof this.cgroupsState === 'string' ? undefined : this.cgroupsState;
  }

  limitsSupport(): { enforced: true; how: string } | { enforced: false; why: string } {
    const cgroups = this.cgroups;
    return cgroups ? { enforced: true, how: `cgroup v${cgroups.version}` } : { enforced: false, why: this.cgroupsState as string };
  }

  limited(id: string): boolean {
    return this.grouped.has(id);
  }

  /** Makes the tenant's control groups with its limits before its server starts; lifts them when it has none. */
  async limitGroups(spec: TenantServerSpec): Promise<void> {
    const cgroups = wantsGroups(spec) ? this.cgroups : undefined;
    if (!cgroups || !spec.limits) {
      this.grouped.delete(spec.id);
      return;
    }
    // Processes too: the postmaster, its workers, one per session (max_connections), and some room.
    await cgroups.apply(spec.id, { ...spec.limits, pids: serverMaxConnections(spec.maxConnections) + 32 });
    this.grouped.add(spec.id);
  }

  /** The postmaster and its children join the tenant's groups; `first`: it was just spawned, its group counts all it uses. */
  attach(id: string, pid: number, first = false): void {
    const cgroups = this.cgroups;
    if (!cgroups) return;
    let children: number[] = [];
    try {
      children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      // exited, or no such file: only the postmaster
    }
    cgroups.attach(id, [pid, ...children]);
    if (first) this.groupedFromStart.set(id, pid);
  }

  /** New limits for a server: running (`pid`), it moves into its groups now; stopped, its groups go until its next start. */
  async apply(spec: TenantServerSpec, pid: number | undefined): Promise<void> {
    if (pid === undefined) {
      await this.release(spec.id);
      return;
    }
    await this.limitGroups(spec);
    if (this.grouped.has(spec.id)) this.attach(spec.id, pid);
    else await this.cgroups?.apply(spec.id, {}).catch(() => undefined); // lifted: no limit for processes already in the group
  }

  /** A stopped server's control groups go (the postmaster exits after its last child: they are empty); its next start makes them again. */
  async release(id: string): Promise<void> {
    // Also a group whose limits were lifted while the server ran (its processes stayed in it, unlimited).
    if (typeof this.cgroupsState === 'object') await this.cgroupsState.remove(id).catch(() => undefined);
  }

  /** A removed tenant's groups go, an older pgs's untagged one too. */
  async removed(id: string): Promise<void> {
    if (typeof this.cgroupsState === 'object') {
      await this.cgroupsState.remove(id).catch(() => undefined);
      await this.cgroupsState.removeUntagged(id).catch(() => undefined);
    }
    this.grouped.delete(id);
  }

  /**
   * Control groups an older pgs made without the home's tag (pgs/<id>): a running
   * server's processes in one move to its tagged group (with its limits, or none),
   * then the untagged group goes unless another home's processes are left in it.
   */
  async moveToHomeNames(specs: TenantServerSpec[], runningPid: (id: string) => Promise<number | undefined>): Promise<string[]> {
    const cgroups = this.cgroups;
    if (!cgroups) return [];
    const done: string[] = [];
    for (const spec of specs) {
      if ((await cgroups.untaggedGroups(spec.id)).length === 0) continue;
      const pid = await runningPid(spec.id);
      const inside = pid !== undefined && (await cgroups.inUntagged(spec.id, pid));
      if (inside) {
        await this.limitGroups(spec);
        if (!this.grouped.has(spec.id)) await cgroups.apply(spec.id, {});
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
  async usage(id: string, pid: number): Promise<ResourceUsage | undefined> {
    const group = this.groupedFromStart.get(id) === pid ? await this.cgroups?.usage(id) : undefined;
    if (group) return { ...group, memorySource: 'cgroup' };
    const children = await childPids(pid);
    const pss = await Promise.all([pid, ...children].map((p) => pssBytes(p)));
    const cpu = await Promise.all([cpuSeconds(pid, true), ...children.map((p) => cpuSeconds(p, false))]);
    const sum = (xs: (number | undefined)[]) => xs.reduce<number>((a, x) => a + (x ?? 0), 0);
    if (pss[0] === undefined) return undefined; // exited, or not ours to read
    return { memoryBytes: sum(pss), cpuSeconds: Math.round(sum(cpu) * 100) / 100, memorySource: 'pss' };
  }
}
