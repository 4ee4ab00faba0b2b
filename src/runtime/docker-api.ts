/**
 * The few Docker Engine API calls the docker runtime needs, over the engine's
 * unix socket (DOCKER_HOST=unix:///path, default /var/run/docker.sock). No
 * CLI is run and no client library is needed: each call is one HTTP request.
 */
import http from 'node:http';
import { PgsError } from '../core/errors.js';

const API_VERSION = 'v1.41'; // Docker 20.10 and later

export interface DockerError extends Error {
  statusCode: number;
}

export function dockerSocket(env: NodeJS.ProcessEnv = process.env): string {
  const host = env.DOCKER_HOST;
  if (!host) return '/var/run/docker.sock';
  if (host.startsWith('unix://')) return host.slice('unix://'.length);
  throw new PgsError('INVALID_SETTING', `DOCKER_HOST=${host}: pgs reaches the Docker engine over a unix socket only (unix:///path)`);
}

export interface ContainerInspect {
  Id: string;
  Name: string;
  State: { Status: string; Running: boolean; Pid: number; ExitCode: number; StartedAt: string; FinishedAt: string; OOMKilled: boolean; Health?: { Status: string } };
  Config: { Labels: Record<string, string> | null };
}

export class DockerApi {
  readonly socketPath: string;

  constructor(socketPath: string) {
    this.socketPath = socketPath;
  }

  /** One request; a JSON body in and out. Statuses in `ok` are not errors. */
  request<T>(method: string, path: string, body?: unknown, { ok = [], timeoutMs = 60_000 }: { ok?: number[]; timeoutMs?: number } = {}): Promise<{ status: number; body: T }> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = http.request({
        socketPath: this.socketPath,
        method,
        path: `/${API_VERSION}${path}`,
        headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
        timeout: timeoutMs,
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          let parsed: unknown = text;
          if ((res.headers['content-type'] ?? '').includes('json') && text.length > 0) {
            try {
              parsed = JSON.parse(text);
            } catch {
              // leave the text
            }
          }
          if (status >= 400 && !ok.includes(status)) {
            const message = typeof parsed === 'object' && parsed !== null && 'message' in parsed ? String((parsed as { message: unknown }).message) : text.trim();
            const err = new Error(`docker: ${method} ${path.split('?')[0]}: ${message || `HTTP ${status}`}`) as DockerError;
            err.statusCode = status;
            reject(err);
            return;
          }
          resolve({ status, body: parsed as T });
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`docker: ${method} ${path.split('?')[0]}: no answer in ${timeoutMs} ms`)));
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED' || err.code === 'EACCES') {
          reject(new PgsError('DOCKER_UNAVAILABLE', `the Docker engine is not reachable at ${this.socketPath} (${err.code}): start dockerd, or set DOCKER_HOST=unix:///path`));
          return;
        }
        reject(err);
      });
      req.end(payload);
    });
  }

  async version(): Promise<{ Version: string; ApiVersion: string }> {
    return (await this.request<{ Version: string; ApiVersion: string }>('GET', '/version')).body;
  }

  async imageExists(ref: string): Promise<boolean> {
    const r = await this.request('GET', `/images/${encodeURIComponent(ref)}/json`, undefined, { ok: [404] });
    return r.status === 200;
  }

  async inspect(name: string): Promise<ContainerInspect | undefined> {
    const r = await this.request<ContainerInspect>('GET', `/containers/${encodeURIComponent(name)}/json`, undefined, { ok: [404] });
    return r.status === 404 ? undefined : r.body;
  }

  async create(name: string, spec: unknown): Promise<string> {
    return (await this.request<{ Id: string }>('POST', `/containers/create?name=${encodeURIComponent(name)}`, spec)).body.Id;
  }

  async start(name: string): Promise<void> {
    await this.request('POST', `/containers/${encodeURIComponent(name)}/start`, undefined, { ok: [304] });
  }

  async kill(name: string, signal: string): Promise<void> {
    // 409: not running
    await this.request('POST', `/containers/${encodeURIComponent(name)}/kill?signal=${signal}`, undefined, { ok: [404, 409] });
  }

  async wait(name: string, timeoutMs: number): Promise<void> {
    await this.request('POST', `/containers/${encodeURIComponent(name)}/wait?condition=not-running`, undefined, { ok: [404], timeoutMs });
  }

  async remove(name: string): Promise<void> {
    await this.request('DELETE', `/containers/${encodeURIComponent(name)}?force=true&v=true`, undefined, { ok: [404] });
  }

  /** Renames a container (running or not); false when there is none of that name. */
  async rename(name: string, newName: string): Promise<boolean> {
    const r = await this.request('POST', `/containers/${encodeURIComponent(name)}/rename?name=${encodeURIComponent(newName)}`, undefined, { ok: [404] });
    return r.status !== 404;
  }

  async update(name: string, resources: unknown): Promise<void> {
    await this.request('POST', `/containers/${encodeURIComponent(name)}/update`, resources, { ok: [404] });
  }

  async list(labelFilter: string): Promise<{ Id: string; Names: string[]; Labels: Record<string, string>; State: string }[]> {
    const filters = encodeURIComponent(JSON.stringify({ label: [labelFilter] }));
    return (await this.request<{ Id: string; Names: string[]; Labels: Record<string, string>; State: string }[]>('GET', `/containers/json?all=1&filters=${filters}`)).body;
  }

  async stats(name: string): Promise<{ memory_stats?: { usage?: number; stats?: Record<string, number> }; cpu_stats?: { cpu_usage?: { total_usage?: number } } } | undefined> {
    const r = await this.request<{ memory_stats?: { usage?: number; stats?: Record<string, number> }; cpu_stats?: { cpu_usage?: { total_usage?: number } } }>('GET', `/containers/${encodeURIComponent(name)}/stats?stream=false&one-shot=true`, undefined, { ok: [404, 409] });
    return r.status === 200 ? r.body : undefined;
  }

  /**
   * Follows the engine's container events with `label` (one JSON object per
   * line) until `stop()`; `onEnd` when the stream ends or fails (the engine
   * restarted): the caller looks again and follows anew.
   */
  events(labelFilter: string, onEvent: (e: { status?: string; Action?: string; timeNano?: number; Actor?: { Attributes?: Record<string, string> } }) => void, onEnd: (err?: Error) => void): { stop(): void } {
    const filters = encodeURIComponent(JSON.stringify({ type: ['container'], label: [labelFilter], event: ['die', 'start'] }));
    let stopped = false;
    const req = http.request({ socketPath: this.socketPath, method: 'GET', path: `/${API_VERSION}/events?filters=${filters}` }, (res) => {
      let pending = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        pending += chunk;
        let nl: number;
        while ((nl = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, nl).trim();
          pending = pending.slice(nl + 1);
          if (line.length === 0) continue;
          try {
            onEvent(JSON.parse(line) as never);
          } catch {
            // a line that is not an event
          }
        }
      });
      res.on('end', () => { if (!stopped) onEnd(); });
      res.on('error', (err) => { if (!stopped) onEnd(err); });
    });
    req.on('error', (err) => { if (!stopped) onEnd(err); });
    req.on('socket', (socket) => socket.unref()); // a watch never keeps a process alive
    req.end();
    return {
      stop: () => {
        stopped = true;
        req.destroy();
      },
    };
  }
}
