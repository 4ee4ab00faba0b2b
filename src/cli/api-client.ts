import { spawn } from 'node:child_process';
import { closeSync, openSync, promises as fs } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgsError, codeFromWord, errnoCode } from '../core/errors.js';
import { processState } from '../core/proc.js';
import { tail } from '../core/files.js';
import { daemonPaths } from '../core/paths.js';

/**
 * The CLI's side of the daemon's REST API, over the unix socket
 * `$PGS_HOME/daemon.sock` (0600: full rights, no token). A problem+json
 * answer becomes a PgsError with the daemon's code, so that the CLI decides
 * on the same code the daemon raised.
 */
export interface ApiResponse<T> {
  status: number;
  body: T;
  headers: http.IncomingHttpHeaders;
}

export interface RequestOptions {
  body?: unknown;
  headers?: Record<string, string>;
  timeoutMs?: number;
}

export class ApiClient {
  readonly home: string;
  private readonly socket: string;

  constructor(home: string) {
    this.home = home;
    this.socket = daemonPaths(home).socket;
  }

  /** Rejects with DAEMON_UNAVAILABLE when no daemon answers on the socket. */
  request<T>(method: string, urlPath: string, options: RequestOptions = {}): Promise<ApiResponse<T>> {
    const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
    // Longer than the longest request the daemon runs (an init script may take 5 minutes).
    const timeoutMs = options.timeoutMs ?? 420_000;
    return new Promise((resolve, reject) => {
      const headers: Record<string, string | number> = { ...options.headers };
      if (payload !== undefined) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = Buffer.byteLength(payload);
      }
      const req = http.request({ socketPath: this.socket, method, path: urlPath, headers, timeout: timeoutMs }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (s: string) => { text += s; });
        res.on('error', reject);
        res.on('end', () => {
          const status = res.statusCode ?? 500;
          let body: unknown = undefined;
          if (text !== '' && /json/.test(String(res.headers['content-type']))) {
            try {
              body = JSON.parse(text);
            } catch {
              return reject(new PgsError('INTERNAL', `the daemon answered ${status} with broken JSON`));
            }
          } else if (text !== '') {
            body = text;
          }
          if (status >= 400) {
            const problem = body as { code?: unknown; detail?: unknown } | undefined;
            return reject(new PgsError(codeFromWord(problem?.code), typeof problem?.detail === 'string' ? problem.detail : `the daemon answered ${status}`));
          }
          resolve({ status, body: body as T, headers: res.headers });
        });
      });
      // Not DAEMON_UNAVAILABLE: the request may have been carried out, so it must never be sent again.
      req.on('timeout', () => req.destroy(new PgsError('DAEMON_TIMEOUT', `the daemon did not answer ${method} ${urlPath} within ${timeoutMs / 1000} s; it may still be working on it (see ${daemonPaths(this.home).log} and "pgs list")`)));
      req.on('error', (err) => {
        const code = errnoCode(err);
        if (code === 'ENOENT' || code === 'ECONNREFUSED') reject(new PgsError('DAEMON_UNAVAILABLE', `no pgs daemon runs for ${this.home}`));
        else reject(err);
      });
      req.end(payload);
    });
  }

  async get<T>(urlPath: string, options?: RequestOptions): Promise<T> {
    return (await this.request<T>('GET', urlPath, options)).body;
  }

  /** The answer, or undefined when no daemon runs (read-only commands then read the files). */
  async getIfRunning<T>(urlPath: string): Promise<T | undefined> {
    try {
      return await this.get<T>(urlPath, { timeoutMs: 30_000 });
    } catch (err) {
      if (err instanceof PgsError && err.code === 'DAEMON_UNAVAILABLE') return undefined;
      throw err;
    }
  }

  /**
   * A request that changes something: the daemon makes every change, so when
   * none runs it is started in the background first (as `pgs start` does).
   */
  async change<T>(method: string, urlPath: string, options: RequestOptions = {}, onStart?: (pid: number) => void): Promise<ApiResponse<T>> {
    try {
      return await this.request<T>(method, urlPath, options);
    } catch (err) {
      if (!(err instanceof PgsError && err.code === 'DAEMON_UNAVAILABLE')) throw err;
    }
    if (!(await fs.stat(path.join(this.home, 'catalog.json')).catch(() => undefined))) {
      throw new PgsError('NOT_SET_UP', `pgs is not set up in ${this.home}: run "pgs setup" first`);
    }
    const pid = await startDaemonInBackground(this.home);
    onStart?.(pid);
    return this.request<T>(method, urlPath, options);
  }
}

/** An operation as GET /v1/operations/{id} shows it. */
interface OperationState {
  id: string;
  status: 'running' | 'succeeded' | 'failed';
  phase?: string;
  result?: unknown;
  error?: { code: string; detail: string };
}

/**
 * Runs a long change as an operation (Prefer: respond-async) and polls it to
 * its end. After a second, what it does is shown on stderr (one updated line
 * on a terminal, a line per phase otherwise); stdout stays for the result.
 */
export async function runOperation<T>(api: ApiClient, method: string, urlPath: string, options: RequestOptions & { onStart?: (pid: number) => void } = {}): Promise<T> {
  const { body: op } = await api.change<OperationState>(method, urlPath, { ...options, headers: { ...options.headers, prefer: 'respond-async' } }, options.onStart);
  const started = Date.now();
  const tty = process.stderr.isTTY === true;
  let shown = '';
  let state = op;
  try {
    while (state.status === 'running') {
      await sleep(state.phase === undefined && Date.now() - started < 1_000 ? 50 : 200);
      state = await api.get<OperationState>(`/v1/operations/${state.id}`);
      const elapsed = (Date.now() - started) / 1000;
      if (elapsed < 1 || state.status !== 'running' || state.phase === undefined) continue;
      if (tty) {
        process.stderr.write(`\r\x1b[2K${state.phase} ... ${elapsed.toFixed(0)} s`);
        shown = 'line';
      } else if (state.phase !== shown) {
        process.stderr.write(`${state.phase} ...\n`);
        shown = state.phase;
      }
    }
  } finally {
    if (tty && shown !== '') process.stderr.write('\r\x1b[2K');
  }
  if (state.status === 'failed') throw new PgsError(codeFromWord(state.error?.code), state.error?.detail ?? 'the operation failed');
  return state.result as T;
}

/** Starts `pgs start --foreground` detached, its output in daemon.log, and waits until it answers. Returns its pid. */
export async function startDaemonInBackground(home: string, env: NodeJS.ProcessEnv = process.env, timeoutMs = 60_000): Promise<number> {
  const { log } = daemonPaths(home);
  await fs.mkdir(home, { recursive: true, mode: 0o700 });
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
  const client = new ApiClient(home);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    // /healthz, not /v1/status: status looks at every tenant's server, and this polls every 15 ms.
    if (await client.getIfRunning('/healthz').catch(() => undefined)) return (await client.get<{ pid: number }>('/v1/status')).pid;
    if (exited !== undefined) {
      const lines = (await tail(log, 5)).split('\n').filter((l) => l.startsWith('pgs'));
      const last = lines[lines.length - 1];
      // Another command started one at the same moment: that one will answer.
      if (last?.includes('a pgs daemon already runs')) {
        exited = undefined;
        await sleep(15);
        continue;
      }
      // The daemon's own one-line error ("pgs start: port 5432 is already in use ...").
      const match = last ? /^pgs start: (.*)$/.exec(last) : null;
      if (match?.[1]) throw new PgsError('PG_START_FAILED', `the daemon could not start: ${match[1]}`);
      throw new PgsError('PG_START_FAILED', `the daemon ${exited}; see ${log}`);
    }
    await sleep(15);
  }
  throw new PgsError('PG_START_FAILED', `the daemon did not answer within ${timeoutMs / 1000} s; see ${log}`);
}

/**
 * Asks the daemon to stop (`tenants: keep` leaves their wanted state alone) and waits until its
 * process is gone. False when none ran. With a backup bucket the daemon copies what is not there
 * yet before it exits (unless `ship` is false); `progress` hears how much is left while it does,
 * and a stop that left files only on this host throws BACKUP_FAILED saying which, once it is gone.
 */
export async function stopDaemon(home: string, { keepTenants = false, ship = true, timeoutMs = 300_000, progress }: { keepTenants?: boolean; ship?: boolean; timeoutMs?: number; progress?: (line: string) => void } = {}): Promise<boolean> {
  const client = new ApiClient(home);
  const status = await client.getIfRunning<{ pid: number }>('/v1/status');
  if (!status) return false;
  const asked = Date.now();
  await client.request('POST', `/v1/stop?tenants=${keepTenants ? 'keep' : 'stop'}${ship ? '' : '&ship=no'}`);
  const deadline = Date.now() + timeoutMs;
  let lastLine = 0;
  while (Date.now() < deadline) {
    if ((await processState(status.pid)) !== 'alive') {
      await reportLastStop(home, asked);
      return true;
    }
    if (progress && Date.now() - lastLine > 2_000) {
      const now = await client.getIfRunning<{ stopping?: { phase: string; pendingFiles: number; pendingBytes: number; error?: string } }>('/v1/status').catch(() => undefined);
      if (now?.stopping && now.stopping.pendingFiles > 0) {
        lastLine = Date.now();
        progress(`${now.stopping.phase}: ${now.stopping.pendingFiles} files (${(now.stopping.pendingBytes / 2 ** 20).toFixed(1)} MiB) left${now.stopping.error ? ` (${now.stopping.error})` : ''} ...`);
      }
    }
    await sleep(20);
  }
  throw new PgsError('PG_STOP_FAILED', `the daemon (pid ${status.pid}) did not stop within ${timeoutMs / 1000} s`);
}

/** What the daemon wrote as it stopped: files it could not copy to the bucket are an error naming them. */
async function reportLastStop(home: string, since: number): Promise<void> {
  let report: { at?: string; left?: string[]; error?: string; skipped?: boolean; writtenElsewhere?: Record<string, string> };
  try {
    report = JSON.parse(await fs.readFile(daemonPaths(home).lastStop, 'utf8')) as typeof report;
  } catch {
    return; // an older daemon, or one that died: nothing to say
  }
  if (!report.at || Date.parse(report.at) < since - 1_000 || !report.left || report.left.length === 0) return;
  const shown = report.left.slice(0, 5).join(', ');
  const elsewhere = Object.entries(report.writtenElsewhere ?? {});
  const ownLeft = report.left.filter((file) => !Object.hasOwn(report.writtenElsewhere ?? {}, file.slice(0, file.indexOf('/')))).length;
  const after = [
    ...(ownLeft > 0 ? [`the next "pgs start" copies ${ownLeft === report.left.length ? 'them' : `the ${ownLeft} of this host's tenants`}`] : []),
    ...(elsewhere.length > 0 ? [`${elsewhere.map(([id, host]) => `${id}'s archive is now written by host ${host}`).join(', ')}: this host never copies ${elsewhere.length === 1 ? 'its' : 'their'} files`] : []),
  ];
  const files = `${report.left.length} file${report.left.length === 1 ? ' is' : 's are'}`;
  throw new PgsError('BACKUP_FAILED', `the daemon stopped, but ${files} only on this host, not in the backup bucket${report.error ? ` (${report.error})` : ''}: ${shown}${report.left.length > 5 ? ', ...' : ''}; ${after.join('; ')}`);
}
