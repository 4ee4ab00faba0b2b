import { promises as fs } from 'node:fs';
import path from 'node:path';
import { errnoCode } from '../core/errors.js';
import { runsBinary } from '../core/proc.js';

/**
 * postmaster.pid, as PostgreSQL writes it (src/include/utils/pidfile.h):
 * line 1 pid, 2 data dir, 3 start time (epoch s), 4 port, 5 socket dir,
 * 6 listen address, 7 shared memory key, 8 status ("starting", "ready  ", "stopping").
 */
export interface PostmasterPid {
  pid: number;
  dataDir: string;
  startedAt: number;
  port: number;
  socketDir: string;
  status: 'starting' | 'ready' | 'stopping' | 'standby' | 'unknown';
}

export const POSTMASTER_PID_FILE = 'postmaster.pid';

export function parsePostmasterPid(text: string): PostmasterPid | undefined {
  const lines = text.split('\n');
  const pid = Number.parseInt(lines[0] ?? '', 10);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const statusWord = (lines[7] ?? '').trim();
  const status = (['starting', 'ready', 'stopping', 'standby'] as const).find((s) => s === statusWord) ?? 'unknown';
  return {
    pid,
    dataDir: lines[1] ?? '',
    startedAt: Number.parseInt(lines[2] ?? '0', 10),
    port: Number.parseInt(lines[3] ?? '0', 10),
    socketDir: lines[4] ?? '',
    status,
  };
}

export async function readPostmasterPid(dataDir: string): Promise<PostmasterPid | undefined> {
  try {
    return parsePostmasterPid(await fs.readFile(path.join(dataDir, POSTMASTER_PID_FILE), 'utf8'));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** True when `pid` is a live process running a postgres binary (guards against pid reuse). */
export function isPostgresProcess(pid: number): Promise<boolean> {
  return runsBinary(pid, 'postgres');
}
