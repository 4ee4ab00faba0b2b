/**
 * What the runtime last saw of each server: the ones seen ready need no file
 * read until they exit or are stopped. A server this process started (its own
 * child) tells of its exit as an event; an adopted one (a previous daemon's,
 * one a CLI command started, a container) is looked at in /proc at most every
 * ADOPTED_RECHECK_MS, and at once after its health session closed. A daemon
 * with 1,000 tenants asks for every state each second.
 */
import { promises as fs } from 'node:fs';
import { isLiveProcessNamed } from '../../core/proc.js';
import type { PostmasterPid } from '../postmaster.js';
import type { ServerState, ServerStatus } from '../runtime.js';
import { ADMIN_ROLE, socketDirOf } from '../server-config.js';
import type { LocalLayout } from './layout.js';

/**
 * How long an adopted server counts as running without a look at /proc. Its
 * health session closing (the backend exits when the postmaster dies) makes
 * the next look immediate; this is the backstop. 1,000 reads of
 * /proc/<pid>/stat cost ~25 ms of CPU.
 */
export const ADOPTED_RECHECK_MS = 10_000;
/** A process's own working directory, which for a server is its data folder. */
export const CWD = '/proc/self/cwd';

export interface KnownServer {
  pid: number;
  startedAt: Date;
  /** A child of this process: its exit is observed directly. */
  own: boolean;
  checkedAt: number;
}

/**
 * The state postmaster.pid's status line gives a live postmaster. "standby" is
 * running only for a server started as one (a tenant past its hard disk limit,
 * `standbySignal`): a restore's recovery says it too once consistent, but takes
 * no session until it is a primary.
 */
export function stateOf(status: PostmasterPid['status'], standbySignal: boolean): ServerState {
  if (status === 'ready' || (status === 'standby' && standbySignal)) return 'running';
  return status === 'stopping' ? 'stopping' : 'starting';
}

/** Whether a server says (in postmaster.pid) that its socket is in its data folder's top level, as an older pgs started it. */
export function topLevelSocketOf(pidFile: PostmasterPid, dataDir: string): boolean {
  return pidFile.socketDir === CWD || pidFile.socketDir === dataDir;
}

/**
 * Whether a process title is a tenant's client backend: "postgres: <user> <database> [local] ..."
 * (auxiliary processes say "postgres: checkpointer" and so on); pgs's own admin sessions
 * (health checks, passwd) are not a tenant's activity.
 */
export function isClientBackend(title: string): boolean {
  return /^postgres: \S+ \S+ \[local\]/.test(title) && !title.startsWith(`postgres: ${ADMIN_ROLE} `);
}

/** Counts the postmaster's children that are client backends (isClientBackend), from /proc. */
export async function clientSessionsOf(pid: number): Promise<number> {
  const children = await fs.readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
  let sessions = 0;
  for (const child of children.split(' ').filter((c) => c.length > 0)) {
    if (isClientBackend(await fs.readFile(`/proc/${child}/cmdline`, 'utf8').catch(() => ''))) sessions++;
  }
  return sessions;
}

export class ServerWatch {
  readonly known = new Map<string, KnownServer>();
  /** Running servers an older pgs started (adopted), whose socket is in the data folder's top level until their next start. */
  private readonly topLevelSocket = new Set<string>();

  constructor(private readonly layout: LocalLayout) {}

  /** The folder of the server's socket (see SOCKET_SUBDIR); a server an older pgs started has it in its data folder. */
  socketDir(id: string): string {
    return this.topLevelSocket.has(id) ? this.layout.tenantDir(id) : socketDirOf(this.layout.tenantDir(id));
  }

  /** A server started now has its socket where this version puts it. */
  started(id: string): void {
    this.topLevelSocket.delete(id);
  }

  /** What is known without a look at the disk: a running server seen lately (`fresh`: an adopted one is looked at in /proc). */
  cached(id: string, fresh: boolean): ServerStatus | undefined {
    const known = this.known.get(id);
    if (!known) return undefined;
    const now = Date.now();
    if (known.own || (!fresh && now - known.checkedAt < ADOPTED_RECHECK_MS)) return { state: 'running', pid: known.pid, startedAt: known.startedAt };
    if (isLiveProcessNamed(known.pid, 'postgres')) {
      known.checkedAt = now;
      return { state: 'running', pid: known.pid, startedAt: known.startedAt };
    }
    this.known.delete(id);
    return undefined;
  }

  /** What a look at a live server's postmaster.pid found; a running one is remembered. */
  observe(id: string, pidFile: PostmasterPid, own: boolean, standbySignal: boolean): ServerStatus {
    const state = stateOf(pidFile.status, standbySignal);
    const startedAt = new Date(pidFile.startedAt * 1000);
    if (topLevelSocketOf(pidFile, this.layout.tenantDir(id))) this.topLevelSocket.add(id);
    else this.topLevelSocket.delete(id);
    if (state === 'running') this.ready(id, pidFile.pid, startedAt, own);
    return { state, pid: pidFile.pid, startedAt };
  }

  ready(id: string, pid: number, startedAt: Date, own: boolean): void {
    this.known.set(id, { pid, startedAt, own, checkedAt: Date.now() });
  }

  /** The server of `id` (with `pid`, when given) is gone. */
  gone(id: string, pid?: number): void {
    if (pid === undefined || this.known.get(id)?.pid === pid) this.known.delete(id);
  }

  /** A running spare taken by a create goes on under its tenant's id. */
  rename(from: string, to: string): void {
    const known = this.known.get(from);
    this.known.delete(from);
    if (known) this.known.set(to, known);
  }

  /** Its health session closed: the next status of an adopted server looks in /proc. */
  doubt(id: string, pid: number): void {
    const known = this.known.get(id);
    if (known?.pid === pid) known.checkedAt = 0;
  }

  forgetObserved(): void {
    for (const [id, known] of this.known) if (!known.own) this.known.delete(id);
  }
}
