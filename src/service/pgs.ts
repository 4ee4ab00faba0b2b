import { promises as fs } from 'node:fs';
import path from 'node:path';
import { assertTenantId, domainProblem, newSuffix, tenantHostname } from '../catalog/ids.js';
import type { Access, Catalog, Settings, Tenant, Wanted } from '../catalog/schema.js';
import { CATALOG_VERSION } from '../catalog/schema.js';
import { CatalogStore } from '../catalog/store.js';
import { writeAtomic } from '../core/files.js';
import { PgsError } from '../core/errors.js';
import { defaultDataRoot, homePaths, isRoot, pgsHome } from '../core/paths.js';
import { locatePgBinaries } from '../runtime/binaries.js';
import { NativeRuntime } from '../runtime/native.js';
import type { ServerState, TenantRuntime } from '../runtime/runtime.js';
import { generatePassword, scramVerifier } from '../runtime/scram.js';
import { TENANT_ROLE } from '../runtime/server-config.js';
import { DEFAULT_SERVER_USER, ensureSystemUser, resolveServerUser } from '../runtime/system-user.js';
import { checkCertificatePair, generateSelfSigned, type CertificateInfo } from '../tls/certificate.js';

/**
 * The operations behind every command: reads and changes the catalog, and has
 * the runtime make reality match. The CLI calls it in-process; the daemon's
 * API will call the same functions.
 */
export const DEFAULT_DOMAIN = 'pgs.localhost';
export const DEFAULT_PORT = 5432;
export const DEFAULT_MAX_CONNECTIONS = 20;
export const MIN_PASSWORD_LENGTH = 8;
export const MAX_PASSWORD_LENGTH = 1024;

export interface SetupOptions {
  domain?: string;
  port?: number;
  certFile?: string;
  keyFile?: string;
}

export interface SetupReport {
  home: string;
  settings: Settings;
  certificate: CertificateInfo;
  actions: string[];
}

export interface TenantView {
  id: string;
  hostname: string;
  access: Access;
  /** What runs; with a daemon also `suspended` (idle, wakes on connect) or `crashed`. */
  state: ServerState | 'suspended' | 'crashed';
  wanted: Wanted;
  pid: number | null;
  database: string;
  user: string;
  port: number;
  maxConnections: number;
  createdAt: string;
  /** When the running server started (ISO) and for how long it has run; null when none runs. */
  serverStartedAt: string | null;
  uptimeSeconds: number | null;
  /** Client connections through the router now; null when no daemon runs. */
  connections: number | null;
  /** The daemon's last health check (a real query over the socket); `unknown` when none yet or no daemon. */
  health: 'ok' | 'failing' | 'unknown';
  healthCheckedAt: string | null;
  healthError?: string;
  /** Why the last start failed, while it keeps failing. */
  lastError?: string;
}

/** What a running daemon knows of a tenant's server, which the files cannot tell. */
export interface ObservedTenant {
  state: string;
  pid: number | null;
  serverStartedAt: string | null;
  connections: number;
  health: 'ok' | 'failing' | 'unknown';
  healthCheckedAt: string | null;
  healthError?: string;
  lastError?: string;
}

export interface CreatedTenant {
  id: string;
  hostname: string;
  password: string;
  database: string;
  user: string;
  url: string;
}

export class Pgs {
  readonly home: string;
  readonly store: CatalogStore;
  private readonly env: NodeJS.ProcessEnv;

  constructor(env: NodeJS.ProcessEnv = process.env) {
    this.env = env;
    this.home = pgsHome(env);
    this.store = new CatalogStore(homePaths(this.home));
  }

  runtimeFor(settings: Pick<Settings, 'dataRoot' | 'serverUser'>): TenantRuntime {
    return new NativeRuntime({
      dataRoot: settings.dataRoot,
      serverUser: resolveServerUser(settings.serverUser),
      binaries: locatePgBinaries(this.env),
    });
  }

  async setup(options: SetupOptions): Promise<SetupReport> {
    const domain = options.domain?.toLowerCase();
    if (domain !== undefined) {
      const problem = domainProblem(domain);
      if (problem) throw new PgsError('INVALID_SETTING', `invalid --domain ${JSON.stringify(options.domain)}: ${problem}`);
    }
    if ((options.certFile === undefined) !== (options.keyFile === undefined)) {
      throw new PgsError('USAGE', '--cert and --key go together: give both or neither');
    }
    return this.store.update(async (current) => {
      const actions: string[] = [];
      const before = current?.settings;
      const settingsDomain = domain ?? before?.domain ?? DEFAULT_DOMAIN;
      const port = options.port ?? before?.port ?? DEFAULT_PORT;
      const dataRoot = before?.dataRoot ?? defaultDataRoot(this.home, this.env);
      const serverUser = isRoot() ? (this.env.PGS_SERVER_USER || before?.serverUser || DEFAULT_SERVER_USER) : null;
      if (serverUser !== null && ensureSystemUser(serverUser)) {
        actions.push(`created the system user ${serverUser}: PostgreSQL refuses to run as root, so the servers run as ${serverUser}`);
      }
      await fs.mkdir(this.home, { recursive: true, mode: 0o700 });
      await fs.chmod(this.home, 0o700);

      actions.push(...(await this.runtimeFor({ dataRoot, serverUser }).prepare()));
      const cert = await this.settleCertificate(options, before, settingsDomain, actions);
      const settings: Settings = {
        domain: settingsDomain,
        port,
        certFile: cert.certFile,
        keyFile: cert.keyFile,
        certSelfSigned: cert.selfSigned,
        dataRoot,
        serverUser,
        defaultMaxConnections: before?.defaultMaxConnections ?? DEFAULT_MAX_CONNECTIONS,
      };
      const next: Catalog = { version: CATALOG_VERSION, settings, tenants: current?.tenants ?? [] };
      if (!current) actions.push(`wrote ${this.store.paths.catalog}`);
      return { next, result: { home: this.home, settings, certificate: cert.info, actions } };
    });
  }

  private async settleCertificate(
    options: SetupOptions,
    before: Settings | undefined,
    domain: string,
    actions: string[],
  ): Promise<{ certFile: string; keyFile: string; selfSigned: boolean; info: CertificateInfo }> {
    if (options.certFile !== undefined && options.keyFile !== undefined) {
      const certFile = path.resolve(options.certFile);
      const keyFile = path.resolve(options.keyFile);
      const info = await checkCertificatePair(certFile, keyFile, domain);
      actions.push(`using the certificate ${certFile}`);
      return { certFile, keyFile, selfSigned: false, info };
    }
    if (before) {
      try {
        const info = await checkCertificatePair(before.certFile, before.keyFile, domain);
        return { certFile: before.certFile, keyFile: before.keyFile, selfSigned: before.certSelfSigned, info };
      } catch (err) {
        if (!before.certSelfSigned) throw err; // a certificate the user gave is never replaced silently
      }
    }
    const { certDir } = this.store.paths;
    await fs.mkdir(certDir, { recursive: true, mode: 0o700 });
    const certFile = path.join(certDir, 'server.crt');
    const keyFile = path.join(certDir, 'server.key');
    const { certPem, keyPem } = await generateSelfSigned(domain);
    await writeAtomic(keyFile, keyPem, 0o600);
    await writeAtomic(certFile, certPem, 0o644);
    actions.push(`generated a self-signed certificate for *.${domain} in ${certDir}`);
    const info = await checkCertificatePair(certFile, keyFile, domain);
    return { certFile, keyFile, selfSigned: true, info };
  }

  /** `autosuspendSeconds`: null never suspends; absent keeps the default (5 min). */
  async create(id: string, options: { password?: string; autosuspendSeconds?: number | null } = {}): Promise<CreatedTenant> {
    assertTenantId(id);
    const password = options.password ?? generatePassword();
    if (options.password !== undefined) assertPassword(options.password);
    let runtime: TenantRuntime | undefined;
    let made = false;
    try {
      return await this.store.update(async (current) => {
        if (!current) throw notSetUp(this.home);
        if (current.tenants.some((t) => t.id === id)) {
          throw new PgsError('TENANT_EXISTS', `tenant ${id} already exists`);
        }
        runtime = this.runtimeFor(current.settings);
        // Files without a catalog entry are what a crashed create left behind: no tenant owns them.
        if (await runtime.exists(id)) await runtime.remove(id);
        const tenant: Tenant = {
          id,
          suffix: newSuffix(),
          access: 'enabled',
          wanted: 'running',
          maxConnections: current.settings.defaultMaxConnections,
          createdAt: new Date().toISOString(),
          ...(options.autosuspendSeconds !== undefined ? { autosuspendSeconds: options.autosuspendSeconds } : {}),
        };
        await runtime.create({ id, maxConnections: tenant.maxConnections }, scramVerifier(password));
        made = true;
        const hostname = tenantHostname(id, tenant.suffix, current.settings.domain);
        return {
          next: { ...current, tenants: [...current.tenants, tenant] },
          result: { id, hostname, password, database: id, user: TENANT_ROLE, url: remoteUrl(hostname, current.settings.port, id, password) },
        };
      });
    } catch (err) {
      // The catalog write failed after the server was made: take the server away again.
      if (made && runtime) await runtime.remove(id).catch(() => undefined);
      throw err;
    }
  }

  /** Every tenant with its server's state: from `observed` (a running daemon's view) when given, else from the files. `read`: the catalog, when the caller has just read it. */
  async list(observed?: ReadonlyMap<string, ObservedTenant>, read?: Catalog): Promise<TenantView[]> {
    const catalog = read ?? (await this.store.read());
    const runtime = this.runtimeFor(catalog.settings);
    const now = Date.now();
    return Promise.all(catalog.tenants.map(async (tenant) => {
      const seen = observed?.get(tenant.id);
      const local = seen ? undefined : await runtime.status(tenant.id);
      const serverStartedAt = seen ? seen.serverStartedAt : local?.state === 'running' && local.startedAt ? local.startedAt.toISOString() : null;
      return {
        id: tenant.id,
        hostname: tenantHostname(tenant.id, tenant.suffix, catalog.settings.domain),
        access: tenant.access,
        state: (seen?.state ?? local?.state ?? 'stopped') as TenantView['state'],
        wanted: tenant.wanted,
        pid: seen ? seen.pid : (local?.pid ?? null),
        database: tenant.id,
        user: TENANT_ROLE,
        port: catalog.settings.port,
        maxConnections: tenant.maxConnections,
        createdAt: tenant.createdAt,
        serverStartedAt,
        uptimeSeconds: serverStartedAt === null ? null : Math.max(0, Math.round((now - Date.parse(serverStartedAt)) / 1000)),
        connections: seen ? seen.connections : null,
        health: seen?.health ?? 'unknown',
        healthCheckedAt: seen?.healthCheckedAt ?? null,
        ...(seen?.healthError ? { healthError: seen.healthError } : {}),
        ...(seen?.lastError ? { lastError: seen.lastError } : {}),
      };
    }));
  }

  async tenant(id: string): Promise<{ catalog: Catalog; tenant: Tenant }> {
    assertTenantId(id);
    const catalog = await this.store.read();
    return { catalog, tenant: findTenant(catalog, id) };
  }

  async remove(id: string): Promise<void> {
    assertTenantId(id);
    await this.store.update(async (current) => {
      if (!current) throw notSetUp(this.home);
      findTenant(current, id);
      const rt = this.runtimeFor(current.settings);
      await rt.stop(id, { immediate: true });
      // The files go after the catalog no longer names the tenant, and before the lock is
      // released: a create of the same id cannot come in between and lose its new folder.
      return { next: { ...current, tenants: current.tenants.filter((t) => t.id !== id) }, result: undefined, afterWrite: () => rt.remove(id) };
    });
  }

  /** Starts one tenant (or all) and records that it should run. Returns the ids that failed, with why. */
  /** `recordOnly`: change the catalog only (a running daemon starts the servers, as their parent). */
  async start(id?: string, options: { recordOnly?: boolean } = {}): Promise<{ started: string[]; failed: { id: string; error: string }[] }> {
    return this.setWanted(id, 'running', options.recordOnly ?? false);
  }

  /** Stops one tenant (or all) and records that it should not run. `recordOnly`: change the catalog only (a running daemon stops the servers). */
  async stop(id?: string, options: { recordOnly?: boolean } = {}): Promise<{ started: string[]; failed: { id: string; error: string }[] }> {
    return this.setWanted(id, 'stopped', options.recordOnly ?? false);
  }

  private async setWanted(id: string | undefined, wanted: Wanted, recordOnly: boolean): Promise<{ started: string[]; failed: { id: string; error: string }[] }> {
    if (id !== undefined) assertTenantId(id);
    return this.store.update(async (current) => {
      if (!current) throw notSetUp(this.home);
      const targets = id === undefined ? current.tenants : [findTenant(current, id)];
      const runtime = this.runtimeFor(current.settings);
      const done: string[] = [];
      const failed: { id: string; error: string }[] = [];
      for (const tenant of targets) {
        try {
          if (recordOnly) {
            // nothing to do here
          } else if (wanted === 'running') await runtime.start({ id: tenant.id, maxConnections: tenant.maxConnections });
          else await runtime.stop(tenant.id);
          done.push(tenant.id);
        } catch (err) {
          failed.push({ id: tenant.id, error: err instanceof Error ? err.message : String(err) });
        }
      }
      const ids = new Set(done);
      const next = { ...current, tenants: current.tenants.map((t) => (ids.has(t.id) ? { ...t, wanted } : t)) };
      return { next, result: { started: done, failed } };
    });
  }

  /** Returns false when access already was as asked. */
  async setAccess(id: string, access: Access): Promise<boolean> {
    assertTenantId(id);
    return this.store.update(async (current) => {
      if (!current) throw notSetUp(this.home);
      const tenant = findTenant(current, id);
      if (tenant.access === access) return { result: false };
      return { next: { ...current, tenants: current.tenants.map((t) => (t.id === id ? { ...t, access } : t)) }, result: true };
    });
  }

  /** Changes per-tenant settings; returns the tenant as it is now. */
  async configure(id: string, changes: { autosuspendSeconds?: number | null }): Promise<Tenant> {
    assertTenantId(id);
    return this.store.update(async (current) => {
      if (!current) throw notSetUp(this.home);
      const tenant = { ...findTenant(current, id), ...changes };
      if (Object.keys(changes).length === 0) return { result: tenant };
      return { next: { ...current, tenants: current.tenants.map((t) => (t.id === id ? tenant : t)) }, result: tenant };
    });
  }

  /** The tenant server's log file. */
  async logFile(id: string): Promise<string> {
    const { catalog } = await this.tenant(id);
    return this.runtimeFor(catalog.settings).logFile(id);
  }

  async url(id: string, options: { local?: boolean } = {}): Promise<string> {
    const { catalog, tenant } = await this.tenant(id);
    if (options.local) {
      const endpoint = this.runtimeFor(catalog.settings).localEndpoint(id);
      return `postgresql://${TENANT_ROLE}@/${id}?host=${encodeURIComponent(endpoint.host)}&port=${endpoint.port}`;
    }
    return remoteUrl(tenantHostname(id, tenant.suffix, catalog.settings.domain), catalog.settings.port, id);
  }

  /**
   * Sets a new password (generated when not given); a stopped server is started for it and stopped again.
   * `viaDaemon`: hands the verifier to a running daemon, which owns starting and stopping the servers
   * (it answers false when none runs, and the change is made here).
   */
  async passwd(id: string, options: { password?: string; viaDaemon?: (verifier: string) => Promise<boolean> } = {}): Promise<{ id: string; password: string }> {
    assertTenantId(id);
    if (options.password !== undefined) assertPassword(options.password);
    const password = options.password ?? generatePassword();
    return this.store.update(async (current) => {
      if (!current) throw notSetUp(this.home);
      const tenant = findTenant(current, id);
      const verifier = scramVerifier(password);
      if (!(options.viaDaemon && (await options.viaDaemon(verifier)))) await setVerifier(this.runtimeFor(current.settings), tenant, verifier, { keepStarted: false });
      return { result: { id, password } };
    });
  }
}

/**
 * Sets the tenant role's password verifier on its server, starting a stopped
 * server for it; `keepStarted`: leave a server started here running (else it
 * is stopped again).
 */
export async function setVerifier(runtime: TenantRuntime, tenant: Tenant, verifier: string, { keepStarted }: { keepStarted: boolean }): Promise<void> {
  const wasRunning = (await runtime.status(tenant.id, { fresh: true })).state === 'running';
  if (!wasRunning) await runtime.start({ id: tenant.id, maxConnections: tenant.maxConnections });
  try {
    await runtime.setPassword(tenant.id, verifier);
  } finally {
    if (!wasRunning && !keepStarted) await runtime.stop(tenant.id);
  }
}

function findTenant(catalog: Catalog, id: string): Tenant {
  const tenant = catalog.tenants.find((t) => t.id === id);
  if (!tenant) throw new PgsError('TENANT_NOT_FOUND', `no tenant ${id} (see "pgs list")`);
  return tenant;
}

function notSetUp(home: string): PgsError {
  return new PgsError('NOT_SET_UP', `pgs is not set up in ${home}: run "pgs setup" first`);
}

export function assertPassword(password: string): void {
  if (password.length < MIN_PASSWORD_LENGTH) {
    throw new PgsError('INVALID_PASSWORD', `the password is too short: at least ${MIN_PASSWORD_LENGTH} characters`);
  }
  if (password.length > MAX_PASSWORD_LENGTH) {
    throw new PgsError('INVALID_PASSWORD', `the password is too long: at most ${MAX_PASSWORD_LENGTH} characters`);
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(password)) {
    throw new PgsError('INVALID_PASSWORD', 'the password must not contain control characters');
  }
}

export function remoteUrl(hostname: string, port: number, database: string, password?: string): string {
  const auth = password === undefined ? TENANT_ROLE : `${TENANT_ROLE}:${encodeURIComponent(password)}`;
  return `postgresql://${auth}@${hostname}:${port}/${database}?sslmode=require`;
}
