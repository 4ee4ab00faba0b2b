import { X509Certificate } from 'node:crypto';
import { promises as fs, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { Catalog } from '../catalog/schema.js';
import { processAlive } from '../catalog/lock.js';
import { PgsError, errnoCode } from '../core/errors.js';
import { Router, type RouterLog } from '../router/router.js';
import type { TenantRuntime } from '../runtime/runtime.js';
import { ADMIN_ROLE } from '../runtime/server-config.js';
import type { Pgs } from '../service/pgs.js';
import { CatalogBackends } from './backends.js';

/**
 * The pgs daemon: owns the router and the tenant servers. The CLI talks to it
 * over HTTP on a unix socket in PGS_HOME (0600): GET /status, POST /reload
 * (the catalog changed), POST /stop.
 */
export interface DaemonPaths {
  pidFile: string;
  socket: string;
  log: string;
}

export function daemonPaths(home: string): DaemonPaths {
  return { pidFile: path.join(home, 'daemon.pid'), socket: path.join(home, 'daemon.sock'), log: path.join(home, 'daemon.log') };
}

export interface DaemonStatus {
  pid: number;
  startedAt: string;
  port: number;
  domain: string;
  connections: number;
  certificateExpires: string | null;
  /** Refused connections since start, by reason (unknown_host, access_disabled, ...). */
  refusals: Record<string, number>;
  tenants: { id: string; state: string; connections: number }[];
}

/** JSON lines: one object per event, for the log file or stderr. */
export function jsonLog(write: (line: string) => void): RouterLog {
  const emit = (level: string) => (message: string, fields: Record<string, unknown> = {}) =>
    write(`${JSON.stringify({ time: new Date().toISOString(), level, message, ...fields })}\n`);
  return { info: emit('info'), warn: emit('warn') };
}

export class Daemon {
  private readonly pgs: Pgs;
  private readonly paths: DaemonPaths;
  private readonly log: RouterLog;
  private runtime!: TenantRuntime;
  private backends!: CatalogBackends;
  private router!: Router;
  private api!: http.Server;
  private catalog!: Catalog;
  private readonly startedAt = new Date();
  private stopping: Promise<void> | undefined;
  private certExpires: string | null = null;
  /** Resolves when the daemon has stopped. */
  readonly stopped: Promise<void>;
  private resolveStopped!: () => void;

  constructor(pgs: Pgs, log: RouterLog) {
    this.pgs = pgs;
    this.paths = daemonPaths(pgs.home);
    this.log = log;
    this.stopped = new Promise((resolve) => { this.resolveStopped = resolve; });
  }

  /** Starts everything or fails with one clear error, leaving nothing behind. */
  async start(): Promise<void> {
    this.catalog = await this.pgs.store.read();
    await this.claimPidFile();
    try {
      const { settings } = this.catalog;
      const { cert, key } = readCertificate(settings.certFile, settings.keyFile);
      this.runtime = this.pgs.runtimeFor(settings);
      this.backends = new CatalogBackends(this.runtime, this.catalog);
      this.router = new Router(this.backends, { domain: settings.domain, cert, key, reservedUsers: [ADMIN_ROLE], log: this.log });
      this.certExpires = certificateExpiry(cert);
      try {
        await this.router.listen(settings.port);
      } catch (err) {
        if (errnoCode(err) === 'EADDRINUSE') throw new PgsError('INVALID_SETTING', `port ${settings.port} is already in use: stop what listens there, or choose another with "pgs setup --port P"`);
        if (errnoCode(err) === 'EACCES') throw new PgsError('INVALID_SETTING', `no permission to listen on port ${settings.port}: ports below 1024 need root`);
        throw err;
      }
      await this.listenApi();
    } catch (err) {
      await this.router?.close().catch(() => undefined);
      await fs.rm(this.paths.pidFile, { force: true });
      throw err;
    }
    this.log.info('daemon started', { pid: process.pid, port: this.catalog.settings.port, domain: this.catalog.settings.domain });
    await this.serial(() => this.reconcile());
  }

  /**
   * Reload, reconcile and stop run one at a time, in order: an older reload can
   * never finish after a newer one (and bring back access that was disabled),
   * and nothing starts a server once stop has begun.
   */
  private queue: Promise<void> = Promise.resolve();

  private serial(task: () => Promise<void>): Promise<void> {
    const run = this.queue.then(task);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Stop accepting, close client connections, fast-shut-down every server, exit. */
  stop(): Promise<void> {
    this.stopping ??= this.serial(async () => {
      this.log.info('daemon stopping');
      const apiClosed = new Promise<void>((resolve) => this.api.close(() => resolve()));
      this.api.closeIdleConnections();
      await this.router.close();
      for (const tenant of this.catalog.tenants) {
        await this.runtime.stop(tenant.id).catch((err: Error) => this.log.warn('stop failed', { tenant: tenant.id, error: err.message }));
      }
      this.api.closeAllConnections();
      await apiClosed;
      await fs.rm(this.paths.socket, { force: true });
      await fs.rm(this.paths.pidFile, { force: true });
      this.log.info('daemon stopped');
    }).catch((err: Error) => {
      this.log.warn('stop failed', { error: err.message });
    }).finally(() => this.resolveStopped());
    return this.stopping;
  }

  private get isStopping(): boolean {
    return this.stopping !== undefined;
  }

  /** Re-reads the catalog (and the certificate) and makes the router and the servers match it. */
  reload(): Promise<void> {
    return this.serial(() => this.reloadNow());
  }

  private async reloadNow(): Promise<void> {
    if (this.isStopping) return;
    const next = await this.pgs.store.read();
    if (next.settings.domain !== this.catalog.settings.domain) {
      this.router.setDomain(next.settings.domain);
      this.log.info('domain changed', { domain: next.settings.domain });
    }
    if (next.settings.port !== this.catalog.settings.port) {
      this.log.warn('the port changed in the catalog; it takes effect when the daemon restarts', { listening: this.catalog.settings.port, configured: next.settings.port });
    }
    const before = new Map(this.catalog.tenants.map((t) => [t.id, t]));
    this.catalog = next;
    this.backends.update(next);
    const ids = new Set(next.tenants.map((t) => t.id));
    for (const [id, old] of before) {
      const now = next.tenants.find((t) => t.id === id);
      if (!ids.has(id) || (now?.access === 'disabled' && old.access !== 'disabled')) {
        const closed = this.router.closeTenant(id);
        if (closed > 0) this.log.info('closed connections', { tenant: id, count: closed, why: ids.has(id) ? 'access disabled' : 'removed' });
      }
    }
    try {
      const { cert, key } = readCertificate(next.settings.certFile, next.settings.keyFile);
      this.router.setCertificate(cert, key);
      this.certExpires = certificateExpiry(cert);
    } catch (err) {
      this.log.warn('certificate not reloaded; the old one stays', { error: (err as Error).message });
    }
    await this.reconcile();
  }

  private async reconcile(): Promise<void> {
    for (const tenant of this.catalog.tenants) {
      if (this.isStopping) return;
      if (tenant.wanted !== 'running') continue;
      try {
        await this.runtime.start({ id: tenant.id, maxConnections: tenant.maxConnections });
      } catch (err) {
        this.log.warn('start failed', { tenant: tenant.id, error: (err as Error).message });
      }
    }
  }

  async status(): Promise<DaemonStatus> {
    const tenants = await Promise.all(this.catalog.tenants.map(async (t) => ({
      id: t.id,
      state: (await this.runtime.status(t.id)).state,
      connections: this.router.connectionCount(t.id),
    })));
    return {
      pid: process.pid,
      startedAt: this.startedAt.toISOString(),
      port: this.catalog.settings.port,
      domain: this.catalog.settings.domain,
      connections: this.router.connectionCount(),
      certificateExpires: this.certExpires,
      refusals: Object.fromEntries(this.router.refusals),
      tenants,
    };
  }

  private async claimPidFile(): Promise<void> {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await fs.writeFile(this.paths.pidFile, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
        return;
      } catch (err) {
        if (errnoCode(err) !== 'EEXIST') throw err;
      }
      const pid = Number.parseInt(await fs.readFile(this.paths.pidFile, 'utf8').catch(() => ''), 10);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid) && (await isPgsProcess(pid))) {
        throw new PgsError('USAGE', `a pgs daemon already runs for ${this.pgs.home} (pid ${pid}); "pgs stop" stops it`);
      }
      await fs.rm(this.paths.pidFile, { force: true }); // left by a daemon that died
    }
    throw new PgsError('USAGE', `cannot claim ${this.paths.pidFile}`);
  }

  private async listenApi(): Promise<void> {
    await fs.rm(this.paths.socket, { force: true });
    this.api = http.createServer((req, res) => void this.onApi(req, res));
    const previous = process.umask(0o177); // the socket is created 0600: only this user (and root) may drive the daemon
    try {
      await new Promise<void>((resolve, reject) => {
        this.api.once('error', reject);
        this.api.listen(this.paths.socket, () => resolve());
      });
    } finally {
      process.umask(previous);
    }
  }

  private async onApi(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
      res.end(JSON.stringify(body));
    };
    try {
      if (req.method === 'GET' && req.url === '/status') return send(200, await this.status());
      if (req.method === 'POST' && req.url === '/reload') {
        await this.reload();
        return send(200, { ok: true });
      }
      if (req.method === 'POST' && req.url === '/stop') {
        send(200, { ok: true });
        void this.stop();
        return;
      }
      send(404, { error: `no ${req.method} ${req.url}` });
    } catch (err) {
      send(500, { error: (err as Error).message });
    }
  }
}

function readCertificate(certFile: string, keyFile: string): { cert: Buffer; key: Buffer } {
  try {
    return { cert: readFileSync(certFile), key: readFileSync(keyFile) };
  } catch (err) {
    throw new PgsError('CERT_INVALID', `cannot read the certificate or key (${(err as Error).message}); run "pgs setup" to make or check them`);
  }
}

function certificateExpiry(cert: Buffer): string | null {
  try {
    return new Date(new X509Certificate(cert).validTo).toISOString();
  } catch {
    return null;
  }
}

async function isPgsProcess(pid: number): Promise<boolean> {
  try {
    const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes('pgs');
  } catch {
    return false;
  }
}
