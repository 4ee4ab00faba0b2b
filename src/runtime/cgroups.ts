import { promises as fs, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { errnoCode } from '../core/errors.js';

/** What one tenant's server may use; undefined: no limit. */
export interface ResourceLimits {
  memoryBytes?: number;
  /** Cores, e.g. 0.5. */
  cpus?: number;
  /** Processes (the postmaster, its workers and one per session). */
  pids?: number;
}

/** What a tenant's server uses now. */
export interface ResourceUsage {
  memoryBytes: number;
  cpuSeconds: number;
  /**
   * Where memoryBytes comes from: the tenant's control group (what its limit
   * is held against), or the sum of its processes' PSS where it has none or
   * the group does not hold all of the server's memory.
   */
  memorySource: 'cgroup' | 'pss';
}

const ROOT = '/sys/fs/cgroup';
const CPU_PERIOD_US = 100_000;
/** Every tenant's group sits under this one, then its home's tag: pgs/<home tag>/<id>. */
const PARENT = 'pgs';

type Dirs = { memory: string; cpu: string; pids: string; cpuacct: string };

/**
 * Control groups, one per tenant server: memory, CPU and process limits the
 * kernel enforces. Version 2 when the unified hierarchy has the memory, cpu
 * and pids controllers; version 1 (one hierarchy per controller, as on many
 * hosts and containers still) otherwise. Only root can make them; `detect`
 * says why not when they cannot be had. A tenant's group is named by its
 * home's tag and its id, so that two pgs homes on one host never share one.
 */
export class Cgroups {
  readonly version: 1 | 2;
  private readonly dirs: (id: string) => Dirs;
  /** The group pgs used before names carried the home's tag (pgs/<id>): left on start. */
  private readonly untagged: (id: string) => Dirs;

  private constructor(version: 1 | 2, layout: (...names: string[]) => Dirs, tag: string) {
    this.version = version;
    this.dirs = (id) => layout(tag, id);
    this.untagged = (id) => layout(id);
  }

  /** The control groups of this host for the pgs home tagged `tag`, or the reason there are none. */
  static detect(tag: string, root = ROOT): Cgroups | string {
    if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'pgs is not running as root';
    const controllers = readText(path.join(root, 'cgroup.controllers'));
    if (controllers !== undefined) {
      const have = new Set(controllers.trim().split(/\s+/));
      const missing = ['memory', 'cpu', 'pids'].filter((c) => !have.has(c));
      if (missing.length > 0) return `the cgroup v2 hierarchy lacks the ${missing.join(', ')} controller`;
      try {
        // Children of the root, of pgs/ and of pgs/<tag>/ get the controllers.
        writeFileSync(path.join(root, 'cgroup.subtree_control'), '+memory +cpu +pids');
        mkdirSyncQuiet(path.join(root, PARENT));
        writeFileSync(path.join(root, PARENT, 'cgroup.subtree_control'), '+memory +cpu +pids');
        mkdirSyncQuiet(path.join(root, PARENT, tag));
        writeFileSync(path.join(root, PARENT, tag, 'cgroup.subtree_control'), '+memory +cpu +pids');
      } catch (err) {
        return `cgroup v2 is not writable here: ${(err as Error).message}`;
      }
      return new Cgroups(2, (...names) => {
        const dir = path.join(root, PARENT, ...names);
        return { memory: dir, cpu: dir, pids: dir, cpuacct: dir };
      }, tag);
    }
    const v1 = (controller: string) => path.join(root, controller);
    for (const controller of ['memory', 'cpu', 'pids']) {
      if (readText(path.join(v1(controller), 'cgroup.procs')) === undefined) return `no cgroup ${controller} controller is mounted at ${v1(controller)}`;
    }
    try {
      for (const controller of ['memory', 'cpu', 'pids', 'cpuacct']) {
        mkdirSyncQuiet(path.join(v1(controller), PARENT));
        mkdirSyncQuiet(path.join(v1(controller), PARENT, tag));
      }
    } catch (err) {
      return `cgroup v1 is not writable here: ${(err as Error).message}`;
    }
    // cpuacct may share the cpu hierarchy ("cpu,cpuacct") or have its own.
    const cpuacct = readText(path.join(v1('cpuacct'), 'cgroup.procs')) === undefined ? v1('cpu') : v1('cpuacct');
    return new Cgroups(1, (...names) => ({
      memory: path.join(v1('memory'), PARENT, ...names),
      cpu: path.join(v1('cpu'), PARENT, ...names),
      pids: path.join(v1('pids'), PARENT, ...names),
      cpuacct: path.join(cpuacct, PARENT, ...names),
    }), tag);
  }

  /** Where the tenant's group is in each hierarchy (for tests and pgs doctor). */
  groupDirs(id: string): string[] {
    return unique(this.dirs(id));
  }

  /**
   * The tenant's untagged groups (pgs/<id>, from before groups carried the
   * home's tag) that exist; a directory with groups below it is a home's, not a tenant's.
   */
  async untaggedGroups(id: string): Promise<string[]> {
    const found: string[] = [];
    for (const dir of unique(this.untagged(id))) {
      const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => undefined);
      if (entries && !entries.some((e) => e.isDirectory())) found.push(dir);
    }
    return found;
  }

  /** Whether process `pid` is in the tenant's untagged group (any hierarchy). */
  async inUntagged(id: string, pid: number): Promise<boolean> {
    for (const dir of await this.untaggedGroups(id)) {
      if (procsOf(dir).includes(pid)) return true;
    }
    return false;
  }

  /**
   * Leaves the tenant's untagged groups: the server's processes among theirs
   * (the postmaster `pid`, then its children, so that none forked meanwhile
   * stays behind) move into its tagged groups, which `apply` made; then each
   * untagged group goes, unless processes remain in it (another home's server
   * of the same id, which leaves it when that home starts). Returns the groups removed.
   */
  async leaveUntagged(id: string, pid?: number): Promise<string[]> {
    const to = this.dirs(id);
    const from = this.untagged(id);
    const untagged = new Set(await this.untaggedGroups(id));
    if (pid !== undefined) {
      for (const controller of ['memory', 'cpu', 'pids', 'cpuacct'] as const) {
        if (!untagged.has(from[controller])) continue;
        if (!procsOf(from[controller]).includes(pid)) continue;
        moveInto(to[controller], [pid]);
        const left = procsOf(from[controller]);
        moveInto(to[controller], childrenOf(pid).filter((child) => left.includes(child)));
      }
    }
    const removed: string[] = [];
    for (const dir of untagged) {
      if (await rmdirWhenEmpty(dir, 10)) removed.push(dir);
    }
    return removed;
  }

  /** Makes the tenant's groups (if missing) and writes its limits; an absent limit is lifted. */
  async apply(id: string, limits: ResourceLimits): Promise<void> {
    const d = this.dirs(id);
    for (const dir of unique(d)) await this.makeGroup(dir);
    const quota = limits.cpus === undefined ? undefined : Math.max(1_000, Math.round(limits.cpus * CPU_PERIOD_US));
    if (this.version === 2) {
      await fs.writeFile(path.join(d.memory, 'memory.max'), limits.memoryBytes === undefined ? 'max' : String(limits.memoryBytes));
      // No swap beyond the limit: a tenant over it is stopped by the kernel, not slowed down for everyone.
      await fs.writeFile(path.join(d.memory, 'memory.swap.max'), limits.memoryBytes === undefined ? 'max' : '0').catch(() => undefined);
      await fs.writeFile(path.join(d.cpu, 'cpu.max'), `${quota === undefined ? 'max' : quota} ${CPU_PERIOD_US}`);
      await fs.writeFile(path.join(d.pids, 'pids.max'), limits.pids === undefined ? 'max' : String(limits.pids));
    } else {
      // A running server moved in (a spare a create takes) brings the memory it already uses along (v2 cannot).
      await fs.writeFile(path.join(d.memory, 'memory.move_charge_at_immigrate'), '3').catch(() => undefined);
      // memsw may never be below the memory limit (EINVAL): a raise writes it first, a cut last.
      const memory = limits.memoryBytes === undefined ? '-1' : String(limits.memoryBytes);
      const memsw = path.join(d.memory, 'memory.memsw.limit_in_bytes');
      await fs.writeFile(memsw, memory).catch(() => undefined);
      await fs.writeFile(path.join(d.memory, 'memory.limit_in_bytes'), memory);
      await fs.writeFile(memsw, memory).catch(() => undefined);
      await fs.writeFile(path.join(d.cpu, 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
      await fs.writeFile(path.join(d.cpu, 'cpu.cfs_quota_us'), quota === undefined ? '-1' : String(quota));
      await fs.writeFile(path.join(d.pids, 'pids.max'), limits.pids === undefined ? 'max' : String(limits.pids));
    }
  }

  /**
   * Puts processes in the tenant's groups. Children forked later stay in them;
   * those forked before are moved by passing them too.
   */
  attach(id: string, pids: number[]): void {
    for (const dir of unique(this.dirs(id))) moveInto(dir, pids);
  }

  async usage(id: string): Promise<Omit<ResourceUsage, 'memorySource'> | undefined> {
    const d = this.dirs(id);
    if (this.version === 2) {
      const memory = readText(path.join(d.memory, 'memory.current'));
      const stat = readText(path.join(d.cpu, 'cpu.stat'));
      if (memory === undefined || stat === undefined) return undefined;
      const usec = Number(/^usage_usec (\d+)/m.exec(stat)?.[1] ?? 0);
      return { memoryBytes: Number(memory), cpuSeconds: usec / 1e6 };
    }
    const memory = readText(path.join(d.memory, 'memory.usage_in_bytes'));
    const cpu = readText(path.join(d.cpuacct, 'cpuacct.usage'));
    if (memory === undefined || cpu === undefined) return undefined;
    return { memoryBytes: Number(memory), cpuSeconds: Number(cpu) / 1e9 };
  }

  /**
   * Makes a tenant's group, and its home's folder above it (`remove` takes that
   * one away once empty; on v2 it passes the controllers on again). A folder
   * removed meanwhile by another tenant's `remove` is made again.
   */
  private async makeGroup(dir: string): Promise<void> {
    const home = path.dirname(dir);
    for (let attempt = 1; ; attempt++) {
      try {
        await fs.mkdir(home, { recursive: true });
        if (this.version === 2) await fs.writeFile(path.join(home, 'cgroup.subtree_control'), '+memory +cpu +pids');
        await fs.mkdir(dir);
        return;
      } catch (err) {
        if (errnoCode(err) === 'EEXIST') return;
        if (errnoCode(err) !== 'ENOENT' || attempt >= 5) throw err;
      }
    }
  }

  /**
   * Removes the tenant's groups once no process is in them (a stopped or removed
   * tenant), then its home's folder if no other tenant's group is left in it.
   */
  async remove(id: string): Promise<void> {
    for (const dir of unique(this.dirs(id))) {
      if (!(await rmdirWhenEmpty(dir, 20))) throw new Error(`the control group ${dir} still has processes`);
    }
    await this.removeHomeIfEmpty();
  }

  /** Removes the home's folder (pgs/<tag>) in each hierarchy where no tenant's group is left in it. */
  async removeHomeIfEmpty(): Promise<void> {
    for (const dir of new Set(unique(this.dirs('-')).map((d) => path.dirname(d)))) await rmdirIfEmpty(dir);
  }

  /** A removed tenant's untagged groups (pgs/<id>, from an older pgs) go too, if no process is left in them. */
  async removeUntagged(id: string): Promise<void> {
    for (const dir of await this.untaggedGroups(id)) await rmdirIfEmpty(dir);
  }
}

function unique(d: Dirs): string[] {
  return [...new Set([d.memory, d.cpu, d.pids, d.cpuacct])];
}

function moveInto(dir: string, pids: number[]): void {
  for (const pid of pids) {
    try {
      writeFileSync(path.join(dir, 'cgroup.procs'), String(pid));
    } catch (err) {
      if (errnoCode(err) !== 'ESRCH') throw err; // a process that exited meanwhile
    }
  }
}

function procsOf(dir: string): number[] {
  return (readText(path.join(dir, 'cgroup.procs')) ?? '').split('\n').filter(Boolean).map(Number);
}

function childrenOf(pid: number): number[] {
  return (readText(`/proc/${pid}/task/${pid}/children`) ?? '').trim().split(/\s+/).filter(Boolean).map(Number);
}

/** Removes a group; false when processes stay in it. The kernel may still count one that has just exited: `attempts` tries, 50 ms apart. */
async function rmdirWhenEmpty(dir: string, attempts: number): Promise<boolean> {
  for (let attempt = 1; ; attempt++) {
    try {
      await fs.rmdir(dir);
      return true;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return true;
      if (errnoCode(err) !== 'EBUSY' || attempt >= attempts) {
        if (errnoCode(err) === 'EBUSY') return false;
        throw err;
      }
      await sleep(50);
    }
  }
}

/** Removes a group unless processes or groups are in it (EBUSY; ENOTEMPTY off cgroupfs), or it is gone already. */
async function rmdirIfEmpty(dir: string): Promise<void> {
  try {
    await fs.rmdir(dir);
  } catch (err) {
    if (!['EBUSY', 'ENOENT', 'ENOTEMPTY'].includes(errnoCode(err) ?? '')) throw err;
  }
}

function readText(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function mkdirSyncQuiet(dir: string): void {
  try {
    mkdirSync(dir);
  } catch (err) {
    if (errnoCode(err) !== 'EEXIST') throw err;
  }
}
