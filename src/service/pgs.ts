import { promises as fs } from 'node:fs';
import path from 'node:path';
import { TENANT_ID_PATTERN, assertTenantId, domainProblem, newSuffix, tenantHostname } from '../catalog/ids.js';
import type { Access, BackupSchedule, Catalog, Settings, Tenant, Wanted } from '../catalog/schema.js';
import * as v from 'valibot';
import { CATALOG_VERSION, DEFAULT_API_LISTEN, DEFAULT_AUTOSUSPEND_SECONDS, DEFAULT_BACKUP_RETAIN, DEFAULT_BACKUP_SCHEDULE, DEFAULT_RPO_SECONDS, DEFAULT_POOL_SIZE, TenantSchema } from '../catalog/schema.js';
import { forEachLimit } from '../core/limit.js';
import { parseListen } from '../core/listen.js';
import { CatalogStore } from '../catalog/store.js';
import { compareTenantMeta, sameEntry, type MetaDisagreement } from '../catalog/tenant-meta.js';
import { pathExists, writeAtomic } from '../core/files.js';
import { PgsError } from '../core/errors.js';
import { defaultDataRoot, homePaths, isRoot, pgsHome } from '../core/paths.js';
import { installDistribution, installedBinaries } from '../runtime/distribution.js';
import { DockerApi, dockerSocket } from '../runtime/docker-api.js';
import { DEFAULT_IMAGE, DEFAULT_PG_BIN_PATH, DockerRuntime } from '../runtime/docker.js';
import { NativeRuntime } from '../runtime/native.js';
import type { Leftover, ServerState, TenantRuntime, TenantServerSpec } from '../runtime/runtime.js';
import { newStamp, writeGenerationMeta } from '../backup/layout.js';
import { tenantServerSpec } from '../runtime/server-spec.js';
import { parseS3Url, probeTarget, s3ClientFor } from '../backup/s3.js';
import { generatePassword, scramVerifier } from '../auth/scram.js';
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
/** An init script that runs longer is stopped and the create fails. */
export const INIT_TIMEOUT_MS = 5 * 60_000;

export interface SetupOptions {
  domain?: string;
  port?: number;
  certFile?: string;
  keyFile?: string;
  /** `ADDR:PORT` for the REST API on TCP; null: off (unix socket only). */
  apiListen?: string | null;
  /** Per-tenant series in /metrics. */
  tenantMetrics?: boolean;
  /** `s3://bucket/prefix`, or null for none (the data root only). */
  backupTarget?: string | null;
  s3Endpoint?: string | null;
  s3Region?: string | null;
  /** Servers that may run at once; null: derived from memory. */
  maxRunning?: number | null;
  /** The largest upload to import, in bytes; null: auto (from the data root's free space). */
  importMaxBytes?: number | null;
  /** A new domain renames every tenant's host name: it must be confirmed when tenants exist. */
  confirmDomainChange?: boolean;
  runtime?: 'native' | 'docker' | 'kubernetes';
  /** The docker runtime's image (null: postgres:18); the kubernetes runtime's PostgreSQL image (null: the operator's). */
  image?: string | null;
  /** The kubernetes runtime: the tenants' namespace (null: the kubeconfig's or the pod's). */
  namespace?: string | null;
  /** The kubernetes runtime: the volumes' storage class (null: the cluster's default). */
  storageClass?: string | null;
  /** The kubernetes runtime: instances per tenant cluster. */
  instances?: 1 | 2 | 3;
  /** The folder holding `postgres` inside the image; null: the official image's. */
  pgBinPath?: string | null;
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
  /** Seconds without connections before the server is suspended; null: never. */
  autosuspendSeconds: number | null;
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
  /** Restarts after a crash and wakes since the daemon started (0 without a daemon). */
  restarts: number;
  wakes: number;
  /** Backups the daemon takes (hourly, daily, off) and how many it keeps. */
  backupSchedule: BackupSchedule;
  backupRetain: number;
  /** At most this many seconds of writes wait before their WAL is archived. */
  rpoSeconds: number;
  memoryBytes: number | null;
  cpus: number | null;
  diskBytes: number | null;
  diskUsedBytes: number | null;
  /** How its clients share server sessions (session: one each; transaction: poolSize shared). */
  pool: 'session' | 'transaction';
  poolSize: number;
  /** Client connections at once through the router; null: the default for its pool mode. */
  maxClientConnections: number | null;
  /** Source addresses the router lets connect (CIDR blocks); null: any. */
  allow: string[] | null;
  disk?: 'ok' | 'warning' | 'read-only' | 'standby';
  usage?: { memoryBytes: number; cpuSeconds: number; memorySource: 'cgroup' | 'pss' };
  limitsNotEnforced?: string;
  /** When the newest backup finished; null: none, or no daemon runs. */
  lastBackupAt: string | null;
  /** When a client was last connected through the router; null: not since the daemon started (absent without a daemon). */
  lastActiveAt?: string | null;
  /** The continuous archive: ok, failing, behind, gap, off (not yet set up), unknown (not looked at). */
  archiving: 'ok' | 'failing' | 'behind' | 'gap' | 'unknown' | 'off';
  archivingError?: string;
  /** With a backup bucket: what of the tenant is not in it yet; null without one (absent: not known, no daemon). */
  backupPending?: { files: number; bytes: number; oldestAt: string | null } | null;
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
  restarts: number;
  wakes: number;
  lastBackupAt?: string | null;
  lastActiveAt?: string | null;
  archiving?: TenantView['archiving'];
  archivingError?: string;
  backupPending?: TenantView['backupPending'];
  usage?: { memoryBytes: number; cpuSeconds: number; memorySource: 'cgroup' | 'pss' };
  limitsNotEnforced?: string;
  diskUsedBytes?: number;
  disk?: 'ok' | 'warning' | 'read-only' | 'standby';
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

  private runtime: { key: string; runtime: TenantRuntime } | undefined;

  /**
   * The runtime for these settings, one instance per process: the servers a
   * runtime starts are its children, whose exit it sees at once, so the
   * operations must start servers through the daemon's own runtime.
   */
  runtimeFor(settings: Pick<Settings, 'dataRoot' | 'serverUser' | 'runtime' | 'image' | 'pgBinPath'>): TenantRuntime {
    // The kubernetes runtime's tenants are in the cluster, known to the daemon only (no server runs here).
    if (settings.runtime === 'kubernetes') throw new PgsError('DAEMON_UNAVAILABLE', 'on the kubernetes runtime the tenants live in the cluster and only the daemon reads them: start it with "pgs start"');
    const key = `${settings.dataRoot}\0${settings.serverUser ?? ''}\0${settings.runtime ?? 'native'}\0${settings.image ?? ''}\0${settings.pgBinPath ?? ''}`;
    if (this.runtime?.key !== key) {
      const native = {
        dataRoot: settings.dataRoot,
        home: this.home,
        serverUser: resolveServerUser(settings.serverUser),
        binaries: installedBinaries(settings.dataRoot, this.env),
        queryStats: queryStatsSetting(this.env),
      };
      this.runtime = {
        key,
        runtime: settings.runtime === 'docker'
          ? new DockerRuntime({
            ...native,
            docker: new DockerApi(dockerSocket(this.env)),
            image: settings.image ?? DEFAULT_IMAGE,
            pgBinPath: settings.pgBinPath ?? DEFAULT_PG_BIN_PATH,
          })
          : new NativeRuntime(native),
      };
    }
    return this.runtime.runtime;
  }

  async setup(options: SetupOptions): Promise<SetupReport> {
    const domain = options.domain?.toLowerCase();
    if (domain !== undefined) {
      const problem = domainProblem(domain);
      if (problem) throw new PgsError('INVALID_SETTING', `invalid --domain ${JSON.stringify(options.domain)}: ${problem}`);
    }
    if (options.apiListen !== undefined && options.apiListen !== null) parseListen(options.apiListen);
    if (options.backupTarget) parseS3Url(options.backupTarget);
    if (options.s3Endpoint && !/^https?:\/\/[^/]+/.test(options.s3Endpoint)) {
      throw new PgsError('INVALID_SETTING', `invalid --s3-endpoint ${JSON.stringify(options.s3Endpoint)}: a URL such as https://minio.example.com:9000`);
    }
    if ((options.certFile === undefined) !== (options.keyFile === undefined)) {
      throw new PgsError('USAGE', '--cert and --key go together: give both or neither');
    }
    return this.store.update(async (current) => {
      const actions: string[] = [];
      const before = current?.settings;
      const settingsDomain = domain ?? before?.domain ?? DEFAULT_DOMAIN;
      const tenantCount = current?.tenants.length ?? 0;
      if (before && settingsDomain !== before.domain && tenantCount > 0 && !options.confirmDomainChange) {
        throw new PgsError('NOT_CONFIRMED', `a new domain changes the host name of every tenant (${tenantCount}: ${before.domain} -> ${settingsDomain}); clients must use the new names. Pass --yes to confirm`);
      }
      const port = options.port ?? before?.port ?? DEFAULT_PORT;
      const dataRoot = before?.dataRoot ?? defaultDataRoot(this.home, this.env);
      const runtimeKind = options.runtime ?? before?.runtime ?? 'native';
      const kubernetes = runtimeKind === 'kubernetes';
      // On Kubernetes the servers run in the cluster's pods, not as users of this host.
      const serverUser = isRoot() && !kubernetes ? (this.env.PGS_SERVER_USER || before?.serverUser || DEFAULT_SERVER_USER) : null;
      if (serverUser !== null && ensureSystemUser(serverUser)) {
        actions.push(`created the system user ${serverUser}: PostgreSQL refuses to run as root, so the servers run as ${serverUser}`);
      }
      await fs.mkdir(this.home, { recursive: true, mode: 0o700 });
      await fs.chmod(this.home, 0o700);
      // The runtime only starts and stops servers: the data folders are the same on both, so a change
      // needs only that no server runs (pgs stop first).
      const sameRuntime = runtimeKind === (before?.runtime ?? 'native');
      if (!kubernetes && (options.namespace != null || options.storageClass != null || options.instances !== undefined)) {
        throw new PgsError('USAGE', '--namespace, --storage-class and --instances are settings of the kubernetes runtime: add --runtime kubernetes');
      }
      const runtimeSettings = {
        ...(runtimeKind !== 'native' ? { runtime: runtimeKind } : {}),
        ...(runtimeKind !== 'native' ? keep('image', options.image, sameRuntime ? before?.image : undefined) : {}),
        ...(runtimeKind === 'docker' ? keep('pgBinPath', options.pgBinPath, before?.pgBinPath) : {}),
        ...(kubernetes ? keep('storageClass', options.storageClass, sameRuntime ? before?.storageClass : undefined) : {}),
        ...(kubernetes ? keep('instances', options.instances, sameRuntime ? before?.instances : undefined) : {}),
      };
      if (kubernetes && !sameRuntime && (current?.tenants.length ?? 0) > 0) {
        throw new PgsError('INVALID_STATE', `the kubernetes runtime keeps its tenants in the cluster, and the ${current?.tenants.length} tenants of this host would not move there: remove them first (pgs remove), or keep this runtime`);
      }
      if (before && !sameRuntime && before.runtime !== 'kubernetes') {
        const old = this.runtimeFor(before);
        for (const t of current?.tenants ?? []) {
          if ((await old.status(t.id, { fresh: true })).state !== 'stopped') {
            throw new PgsError('INVALID_STATE', `tenant ${t.id}'s server runs on the ${before.runtime ?? 'native'} runtime: stop pgs ("pgs stop") before changing the runtime`);
          }
        }
      }

      // The backup target is checked first: a setup refused for it has made nothing.
      const target = {
        ...keep('backupTarget', options.backupTarget, before?.backupTarget),
        ...keep('s3Endpoint', options.s3Endpoint, before?.s3Endpoint),
        ...keep('s3Region', options.s3Region, before?.s3Region),
      };
      // On Kubernetes the clusters reach the bucket with the Secret's credentials, not this environment's: the probe checks the Secret.
      const client = kubernetes ? undefined : s3ClientFor(target, this.env);
      if (client && (target.backupTarget !== before?.backupTarget || target.s3Endpoint !== before?.s3Endpoint || target.s3Region !== before?.s3Region)) {
        await probeTarget(client);
        actions.push(`checked that ${client.url} takes backups (with the credentials of this environment; the daemon uses its own)`);
      }
      // A first setup that fails leaves no data root behind (a later one keeps what works).
      const madeDataRoot = !(await pathExists(dataRoot));
      let cert: Awaited<ReturnType<Pgs['settleCertificate']>>;
      let kubeNamespace: string | undefined;
      try {
        if (kubernetes) {
          const { probeCluster } = await import('../runtime/kubernetes/probe.js');
          const probed = await probeCluster(this.env, options.namespace ?? (sameRuntime ? before?.namespace : undefined) ?? undefined, target.backupTarget !== undefined, target.s3Region !== undefined);
          kubeNamespace = probed.namespace;
          actions.push(probed.action);
        } else {
          const { installed } = await installDistribution(dataRoot, this.env);
          if (installed) actions.push(installed);
          actions.push(...(await this.runtimeFor({ dataRoot, serverUser, ...runtimeSettings }).prepare()));
        }
        cert = await this.settleCertificate(options, before, settingsDomain, actions);
      } catch (err) {
        if (madeDataRoot) await fs.rm(dataRoot, { recursive: true, force: true }).catch(() => undefined);
        throw err;
      }
      const settings: Settings = {
        domain: settingsDomain,
        port,
        certFile: cert.certFile,
        keyFile: cert.keyFile,
        certSelfSigned: cert.selfSigned,
        dataRoot,
        serverUser,
        defaultMaxConnections: before?.defaultMaxConnections ?? DEFAULT_MAX_CONNECTIONS,
        apiListen: options.apiListen !== undefined ? options.apiListen : (before?.apiListen !== undefined ? before.apiListen : DEFAULT_API_LISTEN),
        ...(options.tenantMetrics !== undefined ? { tenantMetrics: options.tenantMetrics } : before?.tenantMetrics !== undefined ? { tenantMetrics: before.tenantMetrics } : {}),
        ...target,
        ...keep('maxRunning', options.maxRunning, before?.maxRunning),
        ...keep('importMaxBytes', options.importMaxBytes, before?.importMaxBytes),
        ...runtimeSettings,
        ...(kubeNamespace !== undefined ? { namespace: kubeNamespace } : {}),
      };
      const next: Catalog = { version: CATALOG_VERSION, settings, tenants: current?.tenants ?? [] };
      if (!current) actions.push(`wrote ${this.store.paths.catalog}`);
      // Leaving the docker runtime: its stopped containers would only linger (the data is in the folders).
      const leftDocker = before?.runtime === 'docker' && runtimeKind !== 'docker';
      const afterWrite = leftDocker ? async () => { actions.push(await this.removeContainers()); } : undefined;
      return { next, result: { home: this.home, settings, certificate: cert.info, actions }, ...(afterWrite ? { afterWrite } : {}) };
    });
  }

  /** Removes the docker runtime's containers of this pgs home (all stopped: the runtime changes only with pgs stopped). */
  private async removeContainers(): Promise<string> {
    try {
      const docker = new DockerApi(dockerSocket(this.env));
      const containers = await docker.list(`pgs.home=${this.home}`);
      for (const c of containers) await docker.remove(c.Id);
      return `removed the docker runtime's ${containers.length} container${containers.length === 1 ? '' : 's'} (the tenants' data stays in their folders)`;
    } catch (err) {
      return `could not remove the docker runtime's containers (${(err as Error).message}): remove the containers labelled pgs.home=${this.home} yourself`;
    }
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
  /** `init`: SQL run as the tenant role in its new database; if it fails, nothing is created. */
  async create(id: string, options: { password?: string; autosuspendSeconds?: number | null; maxConnections?: number; init?: string; memoryBytes?: number; cpus?: number; diskBytes?: number } = {}): Promise<CreatedTenant> {
    assertTenantId(id);
    const password = options.password ?? generatePassword();
    if (options.password !== undefined) assertPassword(options.password);
    let runtime: TenantRuntime | undefined;
    let made = false;
    try {
      return await this.change(async (current) => {
        if (!current) throw notSetUp(this.home);
        if (current.tenants.some((t) => t.id === id)) {
          throw new PgsError('TENANT_EXISTS', `tenant ${id} already exists`);
        }
        runtime = this.runtimeFor(current.settings);
        // An unfinished create's folder belongs to no one; a finished one the catalog lost is a
        // tenant's data (pgs doctor --fix adopts it) and is never overwritten.
        const folder = await runtime.folderState(id);
        if (folder === 'unfinished') await runtime.remove(id);
        if (folder === 'finished') {
          throw new PgsError('ORPHAN_DATA', `a data folder for ${id} exists that the catalog does not name (${runtime.dataDir(id)}): "pgs doctor --fix" adopts it back, or move it away to create ${id} afresh`);
        }
        const tenant: Tenant = {
          id,
          suffix: newSuffix(),
          access: 'enabled',
          wanted: 'running',
          maxConnections: options.maxConnections ?? current.settings.defaultMaxConnections,
          createdAt: new Date().toISOString(),
          ...(options.autosuspendSeconds !== undefined ? { autosuspendSeconds: options.autosuspendSeconds } : {}),
          generation: newStamp(),
          ...(options.memoryBytes !== undefined ? { memoryBytes: options.memoryBytes } : {}),
          ...(options.cpus !== undefined ? { cpus: options.cpus } : {}),
          ...(options.diskBytes !== undefined ? { diskBytes: options.diskBytes } : {}),
        };
        await runtime.create(tenantServerSpec(current.settings.dataRoot, tenant), scramVerifier(password));
        made = true;
        await writeGenerationMeta(runtime, current.settings.dataRoot, tenant);
        if (options.init !== undefined && options.init.trim() !== '') await runInit(runtime, id, password, options.init);
        const hostname = tenantHostname(id, tenant.suffix, current.settings.domain);
        const rt = runtime;
        return {
          next: { ...current, tenants: [...current.tenants, tenant] },
          // Once the catalog names it, the tenant is whole even if this step is lost (the next daemon finishes it).
          afterWrite: () => rt.finishCreate(id).catch(() => undefined),
          result: { id, hostname, password, database: id, user: TENANT_ROLE, url: remoteUrl(hostname, current.settings.port, id, password) },
        };
      });
    } catch (err) {
      // The catalog write failed after the server was made: take the server away again.
      if (made && runtime) await runtime.remove(id).catch(() => undefined);
      throw err;
    }
  }

  /** Every tenant with its server's state, read from the files (no daemon runs). `read`: the catalog, when the caller has just read it. */
  async list(read?: Catalog): Promise<TenantView[]> {
    const catalog = read ?? (await this.store.read());
    const runtime = this.runtimeFor(catalog.settings);
    return Promise.all(catalog.tenants.map(async (tenant) => {
      const local = await runtime.status(tenant.id);
      return tenantView(catalog.settings, tenant, {
        state: local.state,
        pid: local.state === 'stopped' ? null : (local.pid ?? null),
        serverStartedAt: local.state === 'running' && local.startedAt ? local.startedAt.toISOString() : null,
        connections: null,
        health: 'unknown',
        healthCheckedAt: null,
        restarts: 0,
        wakes: 0,
      });
    }));
  }

  async tenant(id: string): Promise<{ catalog: Catalog; tenant: Tenant }> {
    assertTenantId(id);
    const catalog = await this.store.read();
    if (catalog.settings.runtime === 'kubernetes') this.runtimeFor(catalog.settings);
    return { catalog, tenant: findTenant(catalog, id) };
  }

  async remove(id: string): Promise<void> {
    assertTenantId(id);
    await this.change(async (current) => {
      if (!current) throw notSetUp(this.home);
      findTenant(current, id);
      const rt = this.runtimeFor(current.settings);
      await rt.stop(id, { immediate: true });
      // The files go after the catalog no longer names the tenant, and before the lock is
      // released: a create of the same id cannot come in between and lose its new folder.
      return { next: { ...current, tenants: current.tenants.filter((t) => t.id !== id) }, result: undefined, afterWrite: () => rt.remove(id) };
    });
  }

  /** Records every tenant as wanted running or stopped (`pgs start`, `pgs stop`); the daemon's supervisor acts on it. */
  async recordWanted(wanted: Wanted): Promise<void> {
    await this.change(async (current) => {
      if (!current) throw notSetUp(this.home);
      return { next: { ...current, tenants: current.tenants.map((t) => ({ ...t, wanted })) }, result: undefined };
    });
  }

  /**
   * Changes one tenant's settings under the catalog lock; `check` sees the tenant as it is
   * now and may refuse (an ETag that no longer matches). Returns it before and after.
   */
  async patch(
    id: string,
    changes: Partial<Pick<Tenant, 'access' | 'autosuspendSeconds' | 'maxConnections' | 'wanted' | 'generation' | 'rpoSeconds' | 'backupSchedule' | 'backupRetain' | 'pool' | 'poolSize'>>
      & { memoryBytes?: number | null; cpus?: number | null; diskBytes?: number | null; diskState?: Tenant['diskState'] | null; maxClientConnections?: number | null; allow?: string[] | null },
    check?: (tenant: Tenant) => void,
  ): Promise<{ before: Tenant; after: Tenant }> {
    assertTenantId(id);
    return this.change(async (current) => {
      if (!current) throw notSetUp(this.home);
      const before = findTenant(current, id);
      check?.(before);
      const after: Tenant = { ...before };
      for (const [key, value] of Object.entries(changes)) {
        // null lifts a limit: the key goes.
        if (value === null && (key === 'memoryBytes' || key === 'cpus' || key === 'diskBytes' || key === 'diskState' || key === 'maxClientConnections' || key === 'allow')) delete (after as Record<string, unknown>)[key];
        else (after as Record<string, unknown>)[key] = value;
      }
      if (JSON.stringify(after) === JSON.stringify(before)) return { result: { before, after } };
      return { next: { ...current, tenants: current.tenants.map((t) => (t.id === id ? after : t)) }, result: { before, after } };
    });
  }

  /**
   * Adds a tenant whose data folder a restore, branch or import has made
   * (still marked unfinished): the catalog names it, then the folder is marked
   * finished. Its host name is new unless `suffix` is given and free.
   */
  async insert(entry: Omit<Tenant, 'suffix' | 'createdAt'> & { suffix?: string }): Promise<Tenant> {
    assertTenantId(entry.id);
    return this.change(async (current) => {
      if (!current) throw notSetUp(this.home);
      if (current.tenants.some((t) => t.id === entry.id)) throw new PgsError('TENANT_EXISTS', `tenant ${entry.id} already exists`);
      const runtime = this.runtimeFor(current.settings);
      // The entry a restored or copied folder came with is its source's: it counts afresh.
      const tenant: Tenant = { ...entry, suffix: entry.suffix ?? newSuffix(), createdAt: new Date().toISOString(), rev: 0 };
      v.parse(TenantSchema, tenant);
      return {
        next: { ...current, tenants: [...current.tenants, tenant] },
        result: tenant,
        afterWrite: () => runtime.finishCreate(tenant.id).catch(() => undefined),
      };
    });
  }

  /**
   * What is on disk and not in the catalog, or the reverse: data folders the
   * catalog does not name (with the entry their own metadata file keeps, when
   * it has one), unfinished creates, and catalog entries without a folder.
   */
  async doctor(read?: Catalog): Promise<DoctorReport> {
    const catalog = read ?? (await this.store.read());
    const runtime = this.runtimeFor(catalog.settings);
    // Looks only: a restore may be running, whose working folders are not this call's to tidy.
    const folders = await runtime.dataFolders({ tidy: false });
    const onDisk = new Set(folders.map((f) => f.id));
    const known = new Set(catalog.tenants.map((t) => t.id));
    const orphans: DoctorReport['orphans'] = [];
    for (const folder of folders) {
      if (known.has(folder.id) || folder.unfinished) continue;
      const meta = tenantFromMeta(folder.id, await runtime.readMeta(folder.id));
      const server = await runtime.status(folder.id, { fresh: true });
      orphans.push({
        id: folder.id,
        folder: runtime.dataDir(folder.id),
        running: server.state === 'running',
        pid: server.state === 'stopped' ? null : (server.pid ?? null),
        hostname: meta ? tenantHostname(folder.id, meta.suffix, catalog.settings.domain) : null,
      });
    }
    const disagreements: MetaDisagreement[] = [];
    for (const tenant of catalog.tenants) {
      if (!onDisk.has(tenant.id)) continue;
      const found = compareTenantMeta(tenant, tenantFromMeta(tenant.id, await runtime.readMeta(tenant.id)), catalog.settings.domain);
      if (found) disagreements.push(found);
    }
    return {
      orphans,
      unfinished: folders.filter((f) => f.unfinished && !known.has(f.id)).map((f) => f.id),
      missingData: catalog.tenants.filter((t) => !onDisk.has(t.id)).map((t) => t.id),
      disagreements,
      leftovers: await runtime.leftovers(),
    };
  }

  /**
   * Puts orphan folders back in the catalog, from their metadata file (same
   * host name, access and settings); one without a usable file gets a new host
   * name. Returns what it adopted.
   */
  async adopt(ids: string[]): Promise<{ id: string; hostname: string; newHostname: boolean }[]> {
    return this.change(async (current) => {
      if (!current) throw notSetUp(this.home);
      const runtime = this.runtimeFor(current.settings);
      const adopted: { id: string; hostname: string; newHostname: boolean }[] = [];
      const tenants = [...current.tenants];
      for (const id of ids) {
        if (tenants.some((t) => t.id === id) || !TENANT_ID_PATTERN.test(id)) continue;
        const meta = tenantFromMeta(id, await runtime.readMeta(id));
        const stat = await fs.stat(runtime.dataDir(id)).catch(() => undefined);
        if (!stat) continue;
        const tenant: Tenant = meta ?? {
          id,
          suffix: newSuffix(),
          access: 'enabled',
          wanted: 'running',
          maxConnections: current.settings.defaultMaxConnections,
          createdAt: stat.birthtime.getTime() > 0 ? stat.birthtime.toISOString() : new Date().toISOString(),
        };
        tenants.push(tenant);
        adopted.push({ id, hostname: tenantHostname(id, tenant.suffix, current.settings.domain), newHostname: meta === undefined });
      }
      if (adopted.length === 0) return { result: adopted };
      return { next: { ...current, tenants }, result: adopted };
    });
  }

  /**
   * Settles every disagreement between a catalog entry and its folder's
   * metadata the way the newer of the two has it: a newer folder's entry
   * replaces the catalog's; otherwise (the catalog newer, or as many changes
   * on both) the catalog's is written to the folder. Returns what it did.
   */
  async settleMeta(): Promise<SettledMeta[]> {
    return this.change(async (current) => {
      if (!current) throw notSetUp(this.home);
      const runtime = this.runtimeFor(current.settings);
      const settled: SettledMeta[] = [];
      const onDisk = new Set((await runtime.dataFolders({ tidy: false })).map((f) => f.id));
      const tenants: Tenant[] = [];
      for (const tenant of current.tenants) {
        const folder = onDisk.has(tenant.id) ? tenantFromMeta(tenant.id, await runtime.readMeta(tenant.id)) : undefined;
        const found = onDisk.has(tenant.id) ? compareTenantMeta(tenant, folder, current.settings.domain) : undefined;
        if (!found) {
          tenants.push(tenant);
          continue;
        }
        const fields = found.fields.map((f) => f.field);
        if (found.newer === 'folder' && folder) {
          tenants.push(folder);
          settled.push({ id: tenant.id, newer: found.newer, updated: 'catalog', fields, before: tenant, after: folder });
        } else {
          await runtime.writeMeta(tenant.id, tenant);
          tenants.push(tenant);
          settled.push({ id: tenant.id, newer: found.newer, updated: 'folder', fields, before: tenant, after: tenant });
        }
      }
      if (!settled.some((s) => s.updated === 'catalog')) return { result: settled };
      return { next: { ...current, tenants }, result: settled };
    });
  }

  /**
   * store.update for every change that may touch tenants: an entry that changed
   * counts one more change (its rev, past both its own and its folder's copy's), and
   * its folder's pgs-tenant.json is rewritten once the catalog is written, before
   * the change's own `afterWrite`. A lost write is redone by the next daemon.
   */
  private change<T>(fn: (current: Catalog | undefined) => Promise<{ next?: Catalog; result: T; afterWrite?: () => Promise<void> }>): Promise<T> {
    return this.store.update(async (current) => {
      const done = await fn(current);
      if (done.next === undefined) return done;
      const before = new Map((current?.tenants ?? []).map((t) => [t.id, t]));
      const changed = done.next.tenants.filter((t) => {
        const old = before.get(t.id);
        return old === undefined || old.rev !== t.rev || !sameEntry(old, t);
      });
      if (changed.length === 0) return done;
      // Counted in place: the entries the change returns (patch's `after`) carry the count the catalog gets.
      for (const t of changed) t.rev = Math.max(before.get(t.id)?.rev ?? 0, t.rev ?? 0) + 1;
      const runtime = this.runtimeFor(done.next.settings);
      const own = done.afterWrite;
      return {
        ...done,
        afterWrite: async () => {
          // pgs stop and start change every tenant: a few files at a time, each fsynced.
          await forEachLimit(changed, 8, (t) => runtime.writeMeta(t.id, t));
          if (own) await own();
        },
      };
    });
  }

  /** The tenant server's log file. */
  async logFile(id: string): Promise<string> {
    assertTenantId(id);
    const settings = (await this.store.read()).settings;
    if (settings.runtime === 'kubernetes') {
      throw new PgsError('NOT_SUPPORTED', `pgs logs is not available on the kubernetes runtime: a server's log is its pod's, kubectl -n ${settings.namespace ?? 'default'} logs -l cnpg.io/cluster=${id}`);
    }
    const { catalog } = await this.tenant(id);
    return this.runtimeFor(catalog.settings).logFile(id);
  }

  /** Connection strings without the password (read from the catalog: works with or without a daemon). */
  async connection(id: string): Promise<ConnectionStrings> {
    const { catalog, tenant } = await this.tenant(id);
    return connectionStrings(catalog.settings, tenant, this.runtimeFor(catalog.settings));
  }
}

export interface DoctorReport {
  /** Data folders the catalog does not name; `hostname` from their metadata file, null without one. */
  orphans: { id: string; folder: string; running: boolean; pid: number | null; hostname: string | null }[];
  /** Folders of creates that never reached the catalog (a daemon removes them at start). */
  unfinished: string[];
  /** Catalog entries whose data folder is missing. */
  missingData: string[];
  /** Catalog entries whose folder's metadata file says otherwise (or is missing), with which is newer. */
  disagreements: MetaDisagreement[];
  /** What pgs's own work left beside the tenants' folders, with what removes it (doctor --fix does not). */
  leftovers: Leftover[];
}

/** What settleMeta did for one tenant: `updated` is the side rewritten to match the newer one. */
export interface SettledMeta {
  id: string;
  newer: MetaDisagreement['newer'];
  updated: 'catalog' | 'folder';
  fields: string[];
  before: Tenant;
  after: Tenant;
}

/** A tenant folder's metadata file, if it holds a valid catalog entry for this id. */
export function tenantFromMeta(id: string, meta: unknown): Tenant | undefined {
  const parsed = v.safeParse(TenantSchema, meta);
  return parsed.success && parsed.output.id === id ? parsed.output : undefined;
}

export interface ConnectionStrings {
  uri: string;
  psql: string;
  jdbc: string;
  /** libpq environment variables, one `NAME=value` a line. */
  env: string;
  local: string;
  hostname: string;
  port: number;
  database: string;
  user: string;
  /** The self-signed certificate pgs made, which is its own CA: `sslrootcert=` it with `sslmode=verify-full`. Null for a certificate you gave. */
  sslrootcert: string | null;
}

export function connectionStrings(settings: Settings, tenant: Tenant, runtime: Pick<TenantRuntime, 'localEndpoint'> | { local: string }): ConnectionStrings {
  const hostname = tenantHostname(tenant.id, tenant.suffix, settings.domain);
  const local = 'local' in runtime ? runtime.local : localUrl(runtime.localEndpoint(tenant.id), tenant.id);
  return {
    uri: remoteUrl(hostname, settings.port, tenant.id),
    psql: `host=${hostname} port=${settings.port} user=${TENANT_ROLE} dbname=${tenant.id} sslmode=require`,
    jdbc: `jdbc:postgresql://${hostname}:${settings.port}/${tenant.id}?user=${TENANT_ROLE}&sslmode=require`,
    env: [`PGHOST=${hostname}`, `PGPORT=${settings.port}`, `PGUSER=${TENANT_ROLE}`, `PGDATABASE=${tenant.id}`, 'PGSSLMODE=require'].join('\n'),
    local,
    hostname,
    port: settings.port,
    database: tenant.id,
    user: TENANT_ROLE,
    sslrootcert: settings.certSelfSigned ? settings.certFile : null,
  };
}

/** libpq URI over the server's unix socket, for administration on the host. */
function localUrl(endpoint: { host: string; port: number }, database: string): string {
  return `postgresql://${TENANT_ROLE}@/${database}?host=${encodeURIComponent(endpoint.host)}&port=${endpoint.port}`;
}

/**
 * How long the server has run as this tenant's: since its start, or since the
 * tenant was created when its server ran before that (a running spare, which a
 * create takes over). Its start time has one-second resolution.
 */
export function uptimeSeconds(tenant: Pick<Tenant, 'createdAt'>, serverStartedAt: string | null, now = Date.now()): number | null {
  if (serverStartedAt === null) return null;
  const since = Math.max(Date.parse(serverStartedAt), Date.parse(tenant.createdAt) || 0);
  return Math.max(0, Math.round((now - since) / 1000));
}

/** A tenant as the API and `--json` show it: the catalog's settings with what is seen of its server. */
export function tenantView(settings: Settings, tenant: Tenant, seen: Omit<ObservedTenant, 'connections'> & { connections: number | null }, now = Date.now()): TenantView {
  return {
    id: tenant.id,
    hostname: tenantHostname(tenant.id, tenant.suffix, settings.domain),
    access: tenant.access,
    state: seen.state as TenantView['state'],
    wanted: tenant.wanted,
    pid: seen.pid,
    database: tenant.id,
    user: TENANT_ROLE,
    port: settings.port,
    maxConnections: tenant.maxConnections,
    autosuspendSeconds: tenant.autosuspendSeconds === undefined ? DEFAULT_AUTOSUSPEND_SECONDS : tenant.autosuspendSeconds,
    createdAt: tenant.createdAt,
    serverStartedAt: seen.serverStartedAt,
    uptimeSeconds: uptimeSeconds(tenant, seen.serverStartedAt, now),
    connections: seen.connections,
    health: seen.health,
    healthCheckedAt: seen.healthCheckedAt,
    ...(seen.healthError ? { healthError: seen.healthError } : {}),
    ...(seen.lastError ? { lastError: seen.lastError } : {}),
    restarts: seen.restarts,
    wakes: seen.wakes,
    backupSchedule: tenant.backupSchedule ?? DEFAULT_BACKUP_SCHEDULE,
    backupRetain: tenant.backupRetain ?? DEFAULT_BACKUP_RETAIN,
    rpoSeconds: tenant.rpoSeconds ?? DEFAULT_RPO_SECONDS,
    memoryBytes: tenant.memoryBytes ?? null,
    cpus: tenant.cpus ?? null,
    diskBytes: tenant.diskBytes ?? null,
    diskUsedBytes: seen.diskUsedBytes ?? null,
    pool: tenant.pool ?? 'session',
    poolSize: Math.min(tenant.poolSize ?? DEFAULT_POOL_SIZE, tenant.maxConnections),
    maxClientConnections: tenant.maxClientConnections ?? null,
    allow: tenant.allow ?? null,
    ...(tenant.diskBytes !== undefined ? { disk: seen.disk ?? tenant.diskState ?? 'ok' } : {}),
    ...(seen.usage ? { usage: seen.usage } : {}),
    ...(seen.limitsNotEnforced ? { limitsNotEnforced: seen.limitsNotEnforced } : {}),
    lastBackupAt: seen.lastBackupAt ?? null,
    ...(seen.lastActiveAt !== undefined ? { lastActiveAt: seen.lastActiveAt } : {}),
    archiving: seen.archiving ?? (tenant.generation === undefined ? 'off' : 'unknown'),
    ...(seen.archivingError ? { archivingError: seen.archivingError } : {}),
    ...(seen.backupPending !== undefined ? { backupPending: seen.backupPending } : {}),
  };
}

/**
 * Sets the tenant role's password verifier on its server, starting a stopped
 * server for it; `keepStarted`: leave a server started here running (else it
 * is stopped again).
 */
export async function setVerifier(runtime: TenantRuntime, spec: TenantServerSpec, verifier: string, { keepStarted }: { keepStarted: boolean }): Promise<void> {
  const tenant = spec;
  const wasRunning = (await runtime.status(tenant.id, { fresh: true })).state === 'running';
  if (!wasRunning) await runtime.start(spec);
  try {
    await runtime.setPassword(tenant.id, verifier);
  } finally {
    if (!wasRunning && !keepStarted) await runtime.stop(tenant.id);
  }
}

/** An init script's failure, with the line of the script where PostgreSQL put it. */
async function runInit(runtime: TenantRuntime, id: string, password: string, sql: string): Promise<void> {
  try {
    await runtime.runScript(id, password, sql, INIT_TIMEOUT_MS);
  } catch (err) {
    const fields = (err as { fields?: Partial<Record<string, string>> }).fields;
    if (!fields) throw new PgsError('INIT_FAILED', `the init script did not run: ${(err as Error).message}`);
    const position = Number(fields.P);
    const line = Number.isInteger(position) && position > 0 ? ` at line ${[...sql].slice(0, position - 1).join('').split('\n').length}` : '';
    throw new PgsError('INIT_FAILED', `the init script failed${line}: ${fields.S ?? 'ERROR'} ${fields.C ?? ''}: ${fields.M ?? 'unknown error'}; tenant ${id} was not created`);
  }
}

/** A setting as given (null removes it), else as it was. */
function keep<K extends string, T extends string | number>(key: K, given: T | null | undefined, before: T | undefined): Partial<Record<K, T>> {
  const value = given === undefined ? before : given;
  return value === null || value === undefined ? {} : ({ [key]: value } as Record<K, T>);
}

export function findTenant(catalog: Catalog, id: string): Tenant {
  const tenant = catalog.tenants.find((t) => t.id === id);
  if (!tenant) throw new PgsError('TENANT_NOT_FOUND', `no tenant ${id} (see "pgs list")`);
  return tenant;
}

function notSetUp(home: string): PgsError {
  return new PgsError('NOT_SET_UP', `pgs is not set up in ${home}: run "pgs setup" first`);
}

export function assertPassword(password: string): void {
  if (password.length < MIN_PASSWORD_LENGTH) {
    throw new PgsError('WEAK_PASSWORD', `the password is too short: at least ${MIN_PASSWORD_LENGTH} characters`);
  }
  if (password.length > MAX_PASSWORD_LENGTH) {
    throw new PgsError('WEAK_PASSWORD', `the password is too long: at most ${MAX_PASSWORD_LENGTH} characters`);
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(password)) {
    throw new PgsError('WEAK_PASSWORD', 'the password must not contain control characters');
  }
}

export function remoteUrl(hostname: string, port: number, database: string, password?: string): string {
  const auth = password === undefined ? TENANT_ROLE : `${TENANT_ROLE}:${encodeURIComponent(password)}`;
  return `postgresql://${auth}@${hostname}:${port}/${database}?sslmode=require`;
}

/** PGS_QUERY_STATS: on (the default) loads pg_stat_statements into every tenant server; off does not. */
export function queryStatsSetting(env: NodeJS.ProcessEnv): boolean {
  const value = env.PGS_QUERY_STATS;
  if (value === undefined || value === '' || value === 'on') return true;
  if (value === 'off') return false;
  throw new PgsError('INVALID_SETTING', `invalid PGS_QUERY_STATS ${JSON.stringify(value)}: on or off`);
}
