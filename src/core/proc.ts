import { promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { errnoCode } from './errors.js';

/**
 * What /proc says of a process. A zombie (exited, not yet reaped: PID 1 in
 * some containers and VMs never reaps) still answers kill(pid, 0), so every
 * "is it alive" question goes through here and reads its state letter.
 * `/proc/<pid>/stat` is "pid (comm) S ...": comm may hold spaces and parentheses,
 * so the state is the character after the last ')'.
 */
export type ProcessState = 'alive' | 'zombie' | 'gone';

function parseStat(stat: string): { comm: string; state: ProcessState } {
  const close = stat.lastIndexOf(')');
  const comm = stat.slice(stat.indexOf('(') + 1, close);
  return { comm, state: stat[close + 2] === 'Z' ? 'zombie' : 'alive' };
}

export async function processState(pid: number): Promise<ProcessState> {
  if (!Number.isInteger(pid) || pid <= 0) return 'gone';
  try {
    return parseStat(await fs.readFile(`/proc/${pid}/stat`, 'latin1')).state;
  } catch {
    return 'gone';
  }
}

/** One synchronous read: a live (not zombie) process whose command name is `comm` (e.g. postgres). */
export function isLiveProcessNamed(pid: number, comm: string): boolean {
  try {
    const parsed = parseStat(readFileSync(`/proc/${pid}/stat`, 'latin1'));
    return parsed.state === 'alive' && parsed.comm === comm;
  } catch {
    return false;
  }
}

/** The process's argv, empty for a zombie or a process that is gone. */
export async function processArgv(pid: number): Promise<string[]> {
  try {
    const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.length === 0 ? [] : cmdline.replace(/\0$/, '').split('\0');
  } catch {
    return [];
  }
}

/** True when `pid` is a live process running a binary named `name` (guards against pid reuse). */
export async function runsBinary(pid: number, name: string): Promise<boolean> {
  const argv0 = (await processArgv(pid))[0];
  return argv0 !== undefined && path.basename(argv0) === name;
}

/** kill(pid, 0): true while the pid exists (zombies included), also when it is another user's. */
export function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
}

/** True when a live process has `dir` as its working directory (every PostgreSQL process has its data folder). */
export async function someProcessWorksIn(dir: string): Promise<boolean> {
  const real = await fs.realpath(dir);
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cwd = await fs.readlink(`/proc/${entry}/cwd`).catch(() => undefined);
    if (cwd === real && (await processState(Number(entry))) === 'alive') return true;
  }
  return false;
}

/** The pids of a process's direct children (a postmaster's are its workers and sessions). */
export async function childPids(pid: number): Promise<number[]> {
  const text = await fs.readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
  return text.trim().split(/\s+/).filter(Boolean).map(Number);
}

/**
 * A process's proportional set size: its private memory plus its share of
 * what it shares (a server's shared buffers are counted once across its
 * processes). From the kernel's summary, /proc/<pid>/smaps_rollup (Linux 4.14+).
 */
export async function pssBytes(pid: number): Promise<number | undefined> {
  const text = await fs.readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => undefined);
  const kib = text === undefined ? undefined : /^Pss:\s+(\d+) kB$/m.exec(text)?.[1];
  return kib === undefined ? undefined : Number(kib) * 1024;
}

/** Clock ticks per second of /proc/<pid>/stat's times: USER_HZ, 100 on every Linux architecture pgs runs on. */
const USER_HZ = 100;

/**
 * CPU seconds a process used, with those of its children that it has
 * waited for (a postmaster waits for every worker and session that ended):
 * utime, stime, cutime and cstime of /proc/<pid>/stat (fields 14 to 17).
 */
export async function cpuSeconds(pid: number, withReapedChildren: boolean): Promise<number | undefined> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'latin1').catch(() => undefined);
  if (stat === undefined) return undefined;
  // Fields after "pid (comm)": the state is field 3, so utime (14) is the 12th from there.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = fields.slice(11, withReapedChildren ? 15 : 13).reduce((sum, f) => sum + Number(f), 0);
  return ticks / USER_HZ;
}
