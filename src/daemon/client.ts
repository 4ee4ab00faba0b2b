import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgsError, errnoCode } from '../core/errors.js';
import { tail } from '../core/files.js';
import { daemonPaths, type DaemonStatus } from './daemon.js';

/**
 * The CLI's side of the daemon API (HTTP on PGS_HOME/daemon.sock). Every call
 * answers undefined when no daemon runs, so commands work with or without one.
 */
export async function daemonRequest<T>(home: string, method: 'GET' | 'POST', path: string, timeoutMs = 30_000, body?: unknown): Promise<T | undefined> {
  const { socket } = daemonPaths(home);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const headers = payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) };
    const req = http.request({ socketPath: socket, method, path, timeout: timeoutMs, headers }, (res) => {
      res.on('error', reject);
      let text = '';
      res.setEncoding('utf8').on('data', (s: string) => { text += s; });
      res.on('end', () => {
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = { error: text };
        }
        if ((res.statusCode ?? 500) >= 400) reject(new PgsError('PG_COMMAND_FAILED', `the daemon answered ${res.statusCode}: ${(parsed as { error?: string }).error ?? text}`));
        else resolve(parsed as T);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`the daemon did not answer ${method} ${path} within ${timeoutMs} ms`)));
    req.on('error', (err) => {
      const code = errnoCode(err);
      if (code === 'ENOENT' || code === 'ECONNREFUSED') resolve(undefined);
      else reject(err);
    });
    req.end(payload);
  });
}

export function daemonStatus(home: string): Promise<DaemonStatus | undefined> {
  return daemonRequest<DaemonStatus>(home, 'GET', '/status', 5_000);
}

/** Tells a running daemon that the catalog changed (no-op without one); it answers once it has acted on it, and a server's fast shutdown may take a while. */
export async function notifyDaemon(home: string, timeoutMs = 90_000): Promise<void> {
  await daemonRequest(home, 'POST', '/reload', timeoutMs);
}

/** Starts `pgs start --foreground` detached, its output in daemon.log, and waits until it answers. */
export async function startDaemonInBackground(home: string, env: NodeJS.ProcessEnv, timeoutMs = 30_000): Promise<DaemonStatus> {
  const { log } = daemonPaths(home);
  const fd = openSync(log, 'a', 0o600);
  const script = process.argv[1];
  if (!script) throw new PgsError('USAGE', 'cannot tell where the pgs CLI is to start the daemon');
  let exited: string | undefined;
  try {
    const child = spawn(process.execPath, [script, 'start', '--foreground'], { detached: true, stdio: ['ignore', fd, fd], env });
    child.once('exit', (code, signal) => { exited = signal ? `was killed by ${signal}` : `exited with code ${code}`; });
    child.once('error', (err) => { exited = `could not be started (${err.message})`; });
    child.unref();
  } finally {
    closeSync(fd);
  }
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const status = await daemonStatus(home).catch(() => undefined);
    if (status) return status;
    if (exited !== undefined) {
      const lines = (await tail(log, 5)).split('\n').filter((l) => l.startsWith('pgs'));
      throw new PgsError('PG_START_FAILED', lines.length > 0 ? lines[lines.length - 1]!.replace(/^pgs start: /, '') : `the daemon ${exited}; see ${log}`);
    }
    await sleep(20);
  }
  throw new PgsError('PG_START_FAILED', `the daemon did not answer within ${timeoutMs} ms; see ${log}`);
}

/** Asks the daemon to stop and waits until its process is gone. False when none ran. */
export async function stopDaemon(home: string, timeoutMs = 120_000): Promise<boolean> {
  const status = await daemonStatus(home);
  if (!status) return false;
  await daemonRequest(home, 'POST', '/stop');
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      process.kill(status.pid, 0);
    } catch (err) {
      if (errnoCode(err) === 'ESRCH') return true;
    }
    if ((await daemonStatus(home).catch(() => undefined)) === undefined && !(await pidRunning(status.pid))) return true;
    await sleep(20);
  }
  throw new PgsError('PG_STOP_FAILED', `the daemon (pid ${status.pid}) did not stop within ${timeoutMs} ms`);
}

async function pidRunning(pid: number): Promise<boolean> {
  const { readFile } = await import('node:fs/promises');
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}
