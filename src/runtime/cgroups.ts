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

/** Measured from the tenant's control group. */
export interface ResourceUsage {
  memoryBytes: number;
  cpuSeconds: number;
}

const ROOT = '/sys/fs/cgroup';
const CPU_PERIOD_US = 100_000;
/** Every tenant's group sits under this one, so that pgs's groups are easy to find and to tell apart. */
const PARENT = 'pgs';

/**
 * Control groups, one per tenant server: memory, CPU and process limits the
 * kernel enforces. Version 2 when the unified hierarchy has the memory, cpu
 * and pids controllers; version 1 (one hierarchy per controller, as on many
 * hosts and containers still) otherwise. Only root can make them; `detect`
 * says why not when they cannot be had.
 */
export class Cgroups {
  readonly version: 1 | 2;
  private readonly dirs: (id: string) => { memory: string; cpu: string; pids: string; cpuacct: string };

  private constructor(version: 1 | 2, dirs: (id: string) => { memory: string; cpu: string; pids: string; cpuacct: string }) {
    this.version = version;
    this.dirs = dirs;
  }

  /** The control groups of this host, or the reason there are none. */
  static detect(root = ROOT): Cgroups | string {
    if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'pgs is not running as root';
    const controllers = readText(path.join(root, 'cgroup.controllers'));
    if (controllers !== undefined) {
      const have = new Set(controllers.trim().split(/\s+/));
      const missing = ['memory', 'cpu', 'pids'].filter((c) => !have.has(c));
      if (missing.length > 0) return `the cgroup v2 hierarchy lacks the ${missing.join(', ')} controller`;
      try {
        // Children of the root and of pgs/ get the controllers.
        writeFileSync(path.join(root, 'cgroup.subtree_control'), '+memory +cpu +pids');
        mkdirSyncQuiet(path.join(root, PARENT));
        writeFileSync(path.join(root, PARENT, 'cgroup.subtree_control'), '+memory +cpu +pids');
      } catch (err) {
        return `cgroup v2 is not writable here: ${(err as Error).message}`;
      }
      return new Cgroups(2, (id) => {
        const dir = path.join(root, PARENT, id);
        return { memory: dir, cpu: dir, pids: dir, cpuacct: dir };
      });
    }
    const v1 = (controller: string) => path.join(root, controller);
    for (const controller of ['memory', 'cpu', 'pids']) {
      if (readText(path.join(v1(controller), 'cgroup.procs')) === undefined) return `no cgroup ${controller} controller is mounted at ${v1(controller)}`;
    }
    try {
      for (const controller of ['memory', 'cpu', 'pids', 'cpuacct']) mkdirSyncQuiet(path.join(v1(controller), PARENT));
    } catch (err) {
      return `cgroup v1 is not writable here: ${(err as Error).message}`;
    }
    // cpuacct may share the cpu hierarchy ("cpu,cpuacct") or have its own.
    const cpuacct = readText(path.join(v1('cpuacct'), 'cgroup.procs')) === undefined ? v1('cpu') : v1('cpuacct');
    return new Cgroups(1, (id) => ({
      memory: path.join(v1('memory'), PARENT, id),
      cpu: path.join(v1('cpu'), PARENT, id),
      pids: path.join(v1('pids'), PARENT, id),
      cpuacct: path.join(cpuacct, PARENT, id),
    }));
  }

  /** Makes the tenant's groups (if missing) and writes its limits; an absent limit is lifted. */
  async apply(id: string, limits: ResourceLimits): Promise<void> {
    const d = this.dirs(id);
    for (const dir of new Set([d.memory, d.cpu, d.pids, d.cpuacct])) await fs.mkdir(dir, { recursive: true });
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
      await fs.writeFile(path.join(d.memory, 'memory.limit_in_bytes'), limits.memoryBytes === undefined ? '-1' : String(limits.memoryBytes));
      await fs.writeFile(path.join(d.memory, 'memory.memsw.limit_in_bytes'), limits.memoryBytes === undefined ? '-1' : String(limits.memoryBytes)).catch(() => undefined);
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
    const d = this.dirs(id);
    for (const dir of new Set([d.memory, d.cpu, d.pids, d.cpuacct])) {
      for (const pid of pids) {
        try {
          writeFileSync(path.join(dir, 'cgroup.procs'), String(pid));
        } catch (err) {
          if (errnoCode(err) !== 'ESRCH') throw err; // a process that exited meanwhile
        }
      }
    }
  }

  async usage(id: string): Promise<ResourceUsage | undefined> {
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

  /** Removes the tenant's groups once no process is in them (a stopped or removed tenant). */
  async remove(id: string): Promise<void> {
    const d = this.dirs(id);
    for (const dir of new Set([d.memory, d.cpu, d.pids, d.cpuacct])) {
      // The kernel may still count a process that has just exited: try again for a moment.
      for (let attempt = 0; ; attempt++) {
        try {
          await fs.rmdir(dir);
          break;
        } catch (err) {
          if (errnoCode(err) === 'ENOENT') break;
          if (errnoCode(err) !== 'EBUSY' || attempt >= 20) throw err;
          await sleep(50);
        }
      }
    }
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
