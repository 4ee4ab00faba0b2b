import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { socketDirOf } from '../../src/runtime/server-config.js';

/** Runs the built CLI (bin/pgs.js) as a subprocess against its own PGS_HOME. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const PGS_BIN = path.join(ROOT, 'bin', 'pgs.js');

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

export class PgsHome {
  readonly home: string;
  readonly env: NodeJS.ProcessEnv;
  /** The CLI this home runs: the repository's bin/pgs.js unless `make` was given another. */
  readonly bin: string;

  private constructor(home: string, extraEnv: NodeJS.ProcessEnv, bin: string = PGS_BIN) {
    this.home = home;
    this.bin = bin;
    this.env = { ...process.env, PGS_HOME: home, NODE_DEBUG: '', ...extraEnv };
  }

  static async make(extraEnv: NodeJS.ProcessEnv = {}, bin: string = PGS_BIN): Promise<PgsHome> {
    const home = await fs.mkdtemp(path.join(tmpdir(), 'pgs-test-'));
    return new PgsHome(home, extraEnv, bin);
  }

  run(args: string[], options: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<Result> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [this.bin, ...args], { env: { ...this.env, ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (s: string) => { stdout += s; });
      child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
      child.on('error', reject);
      child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
      child.stdin.end(options.input ?? '');
    });
  }

  /** Runs and insists on exit 0; returns stdout. */
  async ok(args: string[], options: { env?: NodeJS.ProcessEnv } = {}): Promise<string> {
    const result = await this.run(args, options);
    if (result.code !== 0) throw new Error(`pgs ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
    return result.stdout;
  }

  async json<T>(args: string[]): Promise<T> {
    return JSON.parse(await this.ok([...args, '--json'])) as T;
  }

  /** Kills a tenant's postmaster (SIGKILL) and waits until the daemon runs it again (another pid). */
  async killServer(id: string): Promise<void> {
    const running = async () => (await this.json<{ id: string; pid: number; state: string }[]>(['list'])).find((t) => t.id === id);
    const postmaster = (await running())?.pid ?? 0;
    assert.ok(postmaster > 0, `tenant ${id} runs`);
    process.kill(postmaster, 'SIGKILL');
    await waitFor(`${id} to run again`, async () => {
      const t = await running();
      return t?.state === 'running' && t.pid !== postmaster;
    }, 30_000);
  }

  /** `pgs setup` on a free loopback port (the API on any free one), so that a daemon never collides with another test's. */
  async setup(extra: string[] = []): Promise<number> {
    const port = await freePort();
    await this.ok(['setup', '--port', String(port), '--api-listen', '127.0.0.1:0', ...extra]);
    return port;
  }

  /** A request to the daemon's API over its unix socket (full rights, no token). */
  api<T = unknown>(method: string, urlPath: string, options: { body?: unknown; headers?: Record<string, string> } = {}): Promise<ApiResult<T>> {
    return unixRequest<T>(path.join(this.home, 'daemon.sock'), method, urlPath, options);
  }

  /** Stops the daemon and its servers without recording the tenants as stopped (as SIGTERM does). */
  async stopDaemonKeepingTenants(): Promise<void> {
    const status = await this.api<{ pid: number }>('GET', '/v1/status').catch(() => undefined);
    if (!status || status.status !== 200) return;
    await this.api('POST', '/v1/stop?tenants=keep');
    await waitFor('the daemon to exit', async () => !(await processRunning(status.body.pid)), 60_000);
  }

  async catalogText(): Promise<string> {
    return fs.readFile(path.join(this.home, 'catalog.json'), 'utf8');
  }

  async dataRoot(): Promise<string> {
    return (JSON.parse(await this.catalogText()) as { settings: { dataRoot: string } }).settings.dataRoot;
  }

  /** Stops every server and deletes the home and the data root. */
  async destroy(): Promise<void> {
    let dataRoot: string | undefined;
    try {
      dataRoot = await this.dataRoot();
      await this.run(['stop']);
    } catch {
      // never set up
    }
    // A spare refill may still be copying in the background; give it a moment, then remove everything.
    for (let i = 0; i < 100; i++) {
      if (dataRoot) await fs.rm(dataRoot, { recursive: true, force: true }).catch(() => undefined);
      await fs.rm(this.home, { recursive: true, force: true });
      if (!dataRoot) break;
      try {
        await fs.access(dataRoot);
        await new Promise((r) => setTimeout(r, 100));
      } catch {
        break;
      }
    }
  }
}

export interface ApiResult<T> {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: T;
  text: string;
  /** The body's bytes (an export file). */
  buffer: Buffer;
}

export function unixRequest<T>(socketPath: string, method: string, urlPath: string, options: { body?: unknown; headers?: Record<string, string> } = {}): Promise<ApiResult<T>> {
  const raw = Buffer.isBuffer(options.body);
  const payload = options.body === undefined ? undefined : raw ? (options.body as Buffer) : JSON.stringify(options.body);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...(payload === undefined ? {} : { 'content-type': raw ? 'application/octet-stream' : 'application/json' }), ...options.headers };
    const req = http.request({ socketPath, method, path: urlPath, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const buffer = Buffer.concat(chunks);
        const text = buffer.toString('utf8');
        let body: unknown = text;
        try {
          body = text === '' ? undefined : JSON.parse(text);
        } catch {
          // not JSON (metrics, events)
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: body as T, text, buffer });
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** The folder of a tenant server's unix socket, as a libpq host (pgs's admin role logs in there by peer authentication). */
export function socketDir(dataRoot: string, id: string): string {
  return socketDirOf(path.join(dataRoot, 'tenants', id));
}

/** Runs a program and collects its output, trimmed. */
export function runCommand(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => { stdout += s; });
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout: stdout.trim(), stderr: stderr.trim() }));
  });
}

/** Runs Debian's psql with a password from the environment (never on the command line). */
export function psql(url: string, sql: string, password: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<Result> {
  return runCommand('psql', ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', url, '-c', sql], { ...process.env, PGPASSWORD: password, PGCONNECT_TIMEOUT: '10', ...extraEnv });
}

/** Runs a line with bash, as a person pastes it into a terminal. */
export function shell(line: string, env: NodeJS.ProcessEnv = {}): Promise<Result> {
  return runCommand('/bin/bash', ['-c', line], { ...process.env, PGCONNECT_TIMEOUT: '10', ...env });
}

/** True while `pid` runs; a zombie (exited, not yet reaped by a PID 1 that does not reap) counts as gone. */
/**
 * The pid of a process a test is about to signal or check. Refuses anything
 * that is not a real pid above 1: process.kill(0) would signal the test's own
 * process group (npm and CI included), and a check on pid 0 can never fail.
 */
export function realPid(pid: number | undefined, what: string): number {
  if (pid === undefined || !Number.isInteger(pid) || pid <= 1) throw new Error(`no pid for ${what} (got ${String(pid)})`);
  return pid;
}

export async function processRunning(pid: number): Promise<boolean> {
  try {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Polls `check` every 100 ms until it holds; fails the test after `ms`. */
export async function waitFor(what: string, check: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Runs a sort of hundreds of MiB held in memory (the session raises its own
 * work_mem) on `hog`, past a small memory limit, while `calm` answers beside
 * it: the greedy query fails (its process killed by the kernel, or refused
 * by PostgreSQL), `calm` answers throughout, and `hog` answers again after.
 */
export async function assertMemoryHogFailsAlone(hog: { url: string; password: string }, calm: { url: string; password: string }): Promise<void> {
  const greedy = psql(hog.url, "SET work_mem = '2GB'; SELECT count(*) FROM (SELECT g, md5(g::text) || md5((g + 1)::text) AS h FROM generate_series(1, 4000000) g ORDER BY h) s", hog.password);
  const beside = await psql(calm.url, 'SELECT 1', calm.password);
  const result = await greedy;
  assert.notEqual(result.code, 0, `the greedy query must not succeed: ${result.stdout}`);
  assert.match(result.stderr, /connection has been closed unexpectedly|server closed the connection unexpectedly|terminating connection because of crash|out of memory/, result.stderr);
  assert.equal(beside.stdout, '1');
  assert.equal((await psql(calm.url, 'SELECT 2', calm.password)).stdout, '2');
  await waitFor('the greedy tenant to answer again', async () => (await psql(hog.url, 'SELECT 3', hog.password)).stdout === '3', 60_000);
}

/**
 * A request over the unix socket whose body is streamed from `chunks` (no
 * Content-Length unless given: chunked). Writing stops when the answer comes,
 * and the errors of a daemon that closes before the end are not failures.
 * `abortAfter`: the client goes away once that many bytes are sent (resolves
 * with status 0). `sent` is how much of the body went out.
 */
export function unixUpload<T>(
  socketPath: string,
  urlPath: string,
  chunks: Iterable<Buffer> | AsyncIterable<Buffer>,
  options: { headers?: Record<string, string | number>; abortAfter?: number } = {},
): Promise<ApiResult<T> & { sent: number }> {
  return new Promise((resolve, reject) => {
    let sent = 0;
    let answered = false;
    const req = http.request({ socketPath, method: 'POST', path: urlPath, headers: options.headers ?? {} }, (res) => {
      answered = true;
      const got: Buffer[] = [];
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        const buffer = Buffer.concat(got);
        const text = buffer.toString('utf8');
        let body: unknown = text;
        try {
          body = text === '' ? undefined : JSON.parse(text);
        } catch {
          // not JSON
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: body as T, text, buffer, sent });
      };
      res.on('data', (chunk: Buffer) => got.push(chunk));
      res.on('end', finish);
      res.on('close', finish);
    });
    req.on('error', (err) => { if (!answered) reject(err); });
    void (async () => {
      for await (const chunk of chunks) {
        if (answered || req.destroyed) return;
        if (options.abortAfter !== undefined && sent >= options.abortAfter) {
          req.destroy();
          resolve({ status: 0, headers: {}, body: undefined as T, text: '', buffer: Buffer.alloc(0), sent });
          return;
        }
        sent += chunk.length;
        if (!req.write(chunk)) {
          await new Promise<void>((r) => {
            const go = () => {
              req.off('drain', go).off('close', go);
              r();
            };
            req.on('drain', go).on('close', go);
          });
        }
      }
      if (!answered && !req.destroyed) req.end();
    })().catch(reject);
  });
}

/** `total` bytes of zeros in chunks of 1 MiB (one buffer, sent again and again). */
export function* zeros(total: number, chunk = 1 << 20): Generator<Buffer> {
  const block = Buffer.alloc(chunk);
  for (let left = total; left > 0; left -= chunk) yield left >= chunk ? block : block.subarray(0, left);
}
