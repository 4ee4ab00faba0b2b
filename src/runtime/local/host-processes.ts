/**
 * Postmasters as child processes of pgs on this host (the native runtime's
 * servers, its running spares, and the template's build on every runtime):
 * spawned detached with the data folder as their working directory, watched
 * for their exit, signalled, and waited for.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, openSync, closeSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgsError, errnoCode } from '../../core/errors.js';
import { pathExists, tail } from '../../core/files.js';
import { processState, someProcessWorksIn } from '../../core/proc.js';
import type { PgBinaries } from '../binaries.js';
import { isPostgresProcess, readPostmasterPid, type PostmasterPid } from '../postmaster.js';
import { SOCKET_SUBDIR } from '../server-config.js';
import { serverEnv, spawnAs } from './commands.js';
import type { LocalFolders } from './folders.js';
import type { LocalLayout } from './layout.js';
import type { Ownership } from './ownership.js';
import { CWD, type ServerWatch } from './server-watch.js';

export const READY_POLL_MS = 3;

/**
 * The postmaster's arguments: the data folder is named through its working
 * directory (/proc/self/cwd, each process's own). PostgreSQL keeps the data
 * folder's path and reopens files by it (pg_control at every checkpoint, the
 * settings at a reload, the socket at shutdown); a running spare taken by a
 * create is renamed to its tenant's folder, and through the working directory,
 * which moves with the folder, every later path still leads to it.
 */
export function postmasterArgs(extra: string[] = []): string[] {
  return ['-D', CWD, '-k', `${CWD}/${SOCKET_SUBDIR}`, ...extra];
}

/** Whether a postmaster.pid says its server takes sessions ("standby" only for one started as a standby: `standbySignal`). */
export function saysReady(pidFile: PostmasterPid, standbySignal: boolean): boolean {
  return pidFile.status === 'ready' || (pidFile.status === 'standby' && standbySignal);
}

/** Sends `signal` to `pid`; one that is gone already is no error. */
export function signalProcess(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch (err) {
    if (errnoCode(err) !== 'ESRCH') throw err;
  }
}

/** The tenant's control groups, told of each server process as it starts (see host-limits.ts). */
export interface GroupAttach {
  /** Whether the server of `id` goes into control groups. */
  limited(id: string): boolean;
  /** The postmaster was just spawned (before it forks a worker), `first`; or is ready (what it forked meanwhile follows). */
  attach(id: string, pid: number, first: boolean): void;
}

export class HostProcesses {
  /** Servers this process spawned: their exit is observed directly (no zombie is mistaken for a live server). */
  private readonly children = new Map<string, ChildProcess>();
  /** The key (tenant id, or a running spare's) each child runs under now: a spare's changes when a create takes it. */
  private readonly childKeys = new WeakMap<ChildProcess, { id: string }>();
  /** Told when a child exits, under the key it runs under then (never for the template's build, key ''). */
  onExit: ((key: string) => void) | undefined;
  groups: GroupAttach | undefined;

  constructor(
    private readonly layout: LocalLayout,
    private readonly watch: ServerWatch,
    private readonly folders: LocalFolders,
    private readonly owners: Ownership,
    private readonly bin: PgBinaries,
    private readonly startTimeoutMs: number,
  ) {}

  has(key: string): boolean {
    return this.children.has(key);
  }

  pidOf(key: string): number | undefined {
    return this.children.get(key)?.pid;
  }

  /** Whether `key`'s own child runs (undefined: no child of this process is the server with `pid`). */
  childAlive(key: string, pid?: number): boolean | undefined {
    const child = this.children.get(key);
    if (!child || (pid !== undefined && child.pid !== pid)) return undefined;
    return child.exitCode === null && child.signalCode === null;
  }

  /** A running spare taken by a create: its child goes on under the tenant's id. */
  rekey(from: string, to: string): void {
    const child = this.children.get(from);
    if (!child) return;
    const slot = this.childKeys.get(child);
    if (slot) slot.id = to;
    this.children.delete(from);
    this.children.set(to, child);
    this.watch.rename(from, to);
  }

  /** Starts a postmaster in `dir` as the folder's owner and waits until it takes sessions. */
  async spawn(id: string, dir: string, startTimeoutMs = this.startTimeoutMs): Promise<void> {
    const logFile = this.layout.serverLog(id);
    const identity = await this.owners.identityOf(dir);
    await this.folders.ensureSocketDir(dir, identity);
    this.watch.started(id);
    const logFd = openSync(logFile, 'a', 0o600);
    let child: ChildProcess;
    try {
      child = spawn(this.bin.postgres, postmasterArgs(), { cwd: dir, detached: true, stdio: ['ignore', logFd, logFd], env: serverEnv(), ...spawnAs(identity) });
    } finally {
      closeSync(logFd);
    }
    const limited = child.pid !== undefined && this.groups?.limited(id) === true;
    // Into the tenant's control groups at once, before the postmaster forks its first worker.
    if (limited && child.pid !== undefined) this.groups?.attach(id, child.pid, true);
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
      if (pidFile && pidFile.pid === child.pid && saysReady(pidFile, await pathExists(path.join(dir, 'standby.signal')))) {
        startedAt = new Date(pidFile.startedAt * 1000);
        break;
      }
      if (Date.now() > deadline) {
        child.kill('SIGQUIT');
        throw new PgsError('PG_START_FAILED', `the server of tenant ${id} was not ready after ${startTimeoutMs} ms; see ${logFile}`);
      }
      await sleep(READY_POLL_MS);
    }
    if (limited && child.pid !== undefined) this.groups?.attach(id, child.pid, false);
    if (id !== '') {
      this.children.set(id, child);
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) this.watch.ready(id, child.pid, startedAt, true);
    }
    const slot = { id };
    this.childKeys.set(child, slot);
    child.once('exit', () => {
      const key = slot.id; // a running spare taken by a create exits under its tenant's id
      if (this.children.get(key) === child) this.children.delete(key);
      if (child.pid !== undefined) this.watch.gone(key, child.pid);
      if (key !== '') this.onExit?.(key);
    });
    child.unref();
  }

  /** Waits until the server with `pid` has exited (its own child's exit, or gone from /proc; a zombie counts as gone). */
  async waitForExit(id: string, pid: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.childAlive(id, pid) === false || !(await isPostgresProcess(pid))) return true;
      await sleep(READY_POLL_MS);
    }
    return false;
  }

  /**
   * After a postmaster was killed its backends and workers exit on their own
   * within milliseconds (they watch for postmaster death), but a new postmaster
   * started before they are gone refuses ("pre-existing shared memory block is
   * still in use"). When the lock names a dead postmaster, wait for them (at
   * most 5 s): the first restart then works, instead of failing into back-off.
   */
  async awaitDeadServer(dir: string): Promise<void> {
    const pidFile = await readPostmasterPid(dir);
    if (!pidFile || (await processState(pidFile.pid)) === 'alive') return;
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline && (await someProcessWorksIn(dir))) await sleep(10);
  }

  /**
   * A postmaster killed with SIGKILL whose parent is gone stays a zombie where
   * PID 1 does not reap (some containers and VMs). PostgreSQL then sees its pid
   * "alive" and refuses to start. When the lock's pid is a zombie and no live
   * process works in the data folder any more (every PostgreSQL process has
   * it as its working directory), the lock is stale: remove it. Crash recovery
   * then replays the WAL as after any crash; no data file is touched.
   */
  async clearZombieLock(dir: string): Promise<void> {
    const pidFile = await readPostmasterPid(dir);
    if (!pidFile || (await processState(pidFile.pid)) !== 'zombie') return;
    if (await someProcessWorksIn(dir)) return; // old backends still exiting: let PostgreSQL refuse, the caller retries
    await fs.rm(path.join(dir, 'postmaster.pid'), { force: true });
  }
}
