import * as v from 'valibot';
import { assertTenantId, newSuffix } from '../catalog/ids.js';
import type { Catalog, Settings, Tenant, Wanted } from '../catalog/schema.js';
import { TenantSchema } from '../catalog/schema.js';
import { forEachLimit } from '../core/limit.js';
import { CatalogStore } from '../catalog/store.js';
import { sameEntry } from '../catalog/tenant-meta.js';
import { PgsError } from '../core/errors.js';
import { homePaths, pgsHome } from '../core/paths.js';
import { installedBinaries } from '../runtime/distribution.js';
import { DockerApi, dockerSocket } from '../runtime/docker-api.js';
import { DEFAULT_IMAGE, DEFAULT_PG_BIN_PATH, DockerRuntime } from '../runtime/docker.js';
import { NativeRuntime } from '../runtime/native.js';
import type { TenantRuntime, TenantServerSpec } from '../runtime/runtime.js';
import { newStamp, writeGenerationMeta } from '../backup/layout.js';
import { tenantServerSpec } from '../runtime/server-spec.js';
import { scramVerifier } from '../auth/scram.js';
import { resolveServerUser } from '../runtime/system-user.js';
import { connectionStrings, createdAnswer, type ConnectionStrings, type CreatedTenant } from './connection.js';
import { notSetUp, type PgsContext } from './context.js';
import { adopt, doctorReport, settleMeta, type DoctorReport, type SettledMeta } from './doctor.js';
import { setupHome, type SetupOptions, type SetupReport } from './setup.js';
import { applyChanges, choosePassword, findTenant, newTenantEntry, type CreateRequest, type TenantChanges } from './tenant-rules.js';
import { tenantView, type TenantView } from './tenant-view.js';

export { DEFAULT_DOMAIN, DEFAULT_MAX_CONNECTIONS, DEFAULT_PORT, type SetupOptions, type SetupReport } from './setup.js';
export { tenantFromMeta, type DoctorReport, type SettledMeta } from './doctor.js';
export { connectionStrings, remoteUrl, type ConnectionStrings, type CreatedTenant } from './connection.js';
export { tenantView, uptimeSeconds, type ObservedTenant, type TenantView } from './tenant-view.js';
export { MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, assertPassword, findTenant } from './tenant-rules.js';

/**
 * The operations behind every command on a host's catalog: reads and changes
 * it, and has the runtime make reality match. The CLI calls it in-process; the
 * daemon calls the same functions.
 */
/** An init script that runs longer is stopped and the create fails. */
export const INIT_TIMEOUT_MS = 5 * 60_000;

export class Pgs implements PgsContext {
  readonly home: string;
  readonly store: CatalogStore;
  readonly env: NodeJS.ProcessEnv;

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

  setup(options: SetupOptions): Promise<SetupReport> {
    return setupHome(this, options);
  }

  /** `init`: SQL run as the tenant role in its new database; if it fails, nothing is created. */
  async create(request: CreateRequest): Promise<CreatedTenant> {
    const { id } = request;
    assertTenantId(id);
    const password = choosePassword(request.password);
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
        const tenant = newTenantEntry(current.settings, request, { generation: newStamp() });
        await runtime.create(tenantServerSpec(current.settings.dataRoot, tenant), scramVerifier(password));
        made = true;
        await writeGenerationMeta(runtime, current.settings.dataRoot, tenant);
        if (request.init !== undefined && request.init.trim() !== '') await runInit(runtime, id, password, request.init);
        const rt = runtime;
        return {
          next: { ...current, tenants: [...current.tenants, tenant] },
          // Once the catalog names it, the tenant is whole even if this step is lost (the next daemon finishes it).
          afterWrite: () => rt.finishCreate(id).catch(() => undefined),
          result: createdAnswer(current.settings, tenant, password),
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
  async patch(id: string, changes: TenantChanges, check?: (tenant: Tenant) => void): Promise<{ before: Tenant; after: Tenant }> {
    assertTenantId(id);
    return this.change(async (current) => {
      if (!current) throw notSetUp(this.home);
      const before = findTenant(current, id);
      check?.(before);
      const after = applyChanges(before, changes);
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
  doctor(read?: Catalog): Promise<DoctorReport> {
    return doctorReport(this, read);
  }

  /** Puts orphan folders back in the catalog, from their metadata file; one without a usable file gets a new host name. */
  adopt(ids: string[]): Promise<{ id: string; hostname: string; newHostname: boolean }[]> {
    return adopt(this, ids);
  }

  /** Settles every disagreement between a catalog entry and its folder's metadata the way the newer of the two has it. */
  settleMeta(): Promise<SettledMeta[]> {
    return settleMeta(this);
  }

  /**
   * store.update for every change that may touch tenants: an entry that changed
   * counts one more change (its rev, past both its own and its folder's copy's), and
   * its folder's pgs-tenant.json is rewritten once the catalog is written, before
   * the change's own `afterWrite`. A lost write is redone by the next daemon.
   */
  change<T>(fn: (current: Catalog | undefined) => Promise<{ next?: Catalog; result: T; afterWrite?: () => Promise<void> }>): Promise<T> {
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

/** PGS_QUERY_STATS: on (the default) loads pg_stat_statements into every tenant server; off does not. */
export function queryStatsSetting(env: NodeJS.ProcessEnv): boolean {
  const value = env.PGS_QUERY_STATS;
  if (value === undefined || value === '' || value === 'on') return true;
  if (value === 'off') return false;
  throw new PgsError('INVALID_SETTING', `invalid PGS_QUERY_STATS ${JSON.stringify(value)}: on or off`);
}
