import type { Readable } from 'node:stream';
import type { Static } from 'typebox';
import type { ControlPlane, ImportLimit, Progress } from '../api/routes.js';
import type * as S from '../api/schemas.js';
import { scramVerifier } from '../auth/scram.js';
import { assertTenantId } from '../catalog/ids.js';
import type { Tenant } from '../catalog/schema.js';
import { PgsError } from '../core/errors.js';
import { connectionStrings } from '../service/connection.js';
import { assertPassword, assertWantedRunning, checkPatch, choosePassword, etagOf, notSupported, patchChanges } from '../service/tenant-rules.js';
import { tenantView } from '../service/tenant-view.js';
import { QUERIES_LIMIT } from './query-stats.js';
import type { BackupProvider, Coordination, DaemonFacts, Feature, MadeTenant, PlaneParts, ServerRuntime, TenantRecords } from './parts.js';

/**
 * The one control plane, on every runtime: what the API asks (api/routes.ts),
 * answered by the tenant rules (service/tenant-rules.ts) over the parts the
 * wiring gives it: the tenant records, the servers, the backups, and the
 * coordination of changes. What a runtime lacks is refused here, with one
 * message.
 */
export class TenantPlane implements ControlPlane {
  private readonly records: TenantRecords;
  private readonly servers: ServerRuntime;
  private readonly backups: BackupProvider;
  private readonly coordination: Coordination;
  private readonly daemon: DaemonFacts;

  constructor(parts: PlaneParts) {
    this.records = parts.records;
    this.servers = parts.servers;
    this.backups = parts.backups;
    this.coordination = parts.coordination;
    this.daemon = parts.daemon;
  }

  private assertRunning(): void {
    if (this.daemon.stopping()) throw new PgsError('DAEMON_STOPPING', 'the daemon is stopping');
  }

  /** A change, in order with the others, refused once the daemon stops. */
  private change<T>(task: () => Promise<T>): Promise<T> {
    return this.coordination.serial(async () => {
      this.assertRunning();
      return task();
    });
  }

  /** The one refusal of what this runtime cannot do. */
  private need(feature: Feature, id?: string): void {
    const lacking = this.servers.lacking[feature];
    if (!lacking) return;
    const { what, instead } = lacking(id);
    throw notSupported(this.servers.name, what, instead);
  }

  private async view(tenant: Tenant): Promise<S.TenantJson> {
    return tenantView(this.records.settings(), tenant, await this.servers.observe(tenant)) as S.TenantJson;
  }

  /** A tenant a restore, branch or import made, with what pgs took from its data. */
  private async madeView(made: MadeTenant): Promise<S.TenantJson> {
    const view = await this.view(made.tenant);
    return { ...view, ...(made.neutralized && made.neutralized.length > 0 ? { neutralized: made.neutralized } : {}), ...(made.notes ? { notes: made.notes } : {}) };
  }

  // --- tenants ---

  async listTenants(): Promise<S.TenantJson[]> {
    const tenants = [...this.records.list()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return Promise.all(tenants.map((t) => this.view(t)));
  }

  async getTenant(id: string): Promise<{ tenant: S.TenantJson; etag: string }> {
    assertTenantId(id);
    const tenant = this.records.held(id);
    return { tenant: await this.view(tenant), etag: etagOf(tenant) };
  }

  async createTenant(request: S.CreateTenantRequest): Promise<S.CreatedTenantJson> {
    assertTenantId(request.id);
    const password = choosePassword(request.password);
    if (request.init !== undefined) this.need('init', request.id);
    const created = await this.change(() => this.servers.create({ ...request, password }));
    // Its folder is measured at once when it has a quota.
    if (request.diskBytes !== undefined && request.diskBytes !== null) this.servers.checkDisk?.(request.id);
    return created;
  }

  async patchTenant(id: string, patch: S.PatchTenantRequest, ifMatch: string | undefined): Promise<{ tenant: S.TenantJson; etag: string }> {
    assertTenantId(id);
    const done = await this.change(async () => {
      this.records.held(id);
      const { before, after } = await this.records.patch(id, patchChanges(patch), (current) => {
        checkPatch(current, patch, ifMatch);
        this.servers.checkPatch?.(current, patch);
      });
      await this.servers.changed(before, after, patch);
      return { tenant: await this.view(await this.records.fresh(id)), etag: etagOf(after) };
    });
    // A new quota is checked at once (after the change, outside the queue that the check's own change joins).
    if (patch.diskBytes !== undefined) this.servers.checkDisk?.(id);
    return done;
  }

  removeTenant(id: string): Promise<void> {
    assertTenantId(id);
    return this.change(async () => {
      this.records.held(id);
      await this.servers.remove(id);
      this.daemon.history.forget(id);
    });
  }

  act(id: string, action: S.TenantActionName): Promise<S.TenantJson> {
    assertTenantId(id);
    return this.change(async () => {
      const tenant = this.records.held(id);
      if (action === 'suspend' || action === 'wake') assertWantedRunning(tenant, action);
      await this.servers.act(tenant, action);
      return this.view(await this.records.fresh(id));
    });
  }

  async setPassword(id: string, password: string | undefined): Promise<{ id: string; password: string }> {
    assertTenantId(id);
    if (password !== undefined) assertPassword(password);
    this.records.held(id);
    const chosen = choosePassword(password);
    const verifier = scramVerifier(chosen);
    await this.change(async () => this.servers.setVerifier(this.records.held(id), verifier));
    return { id, password: chosen };
  }

  async connection(id: string): Promise<S.ConnectionJson> {
    assertTenantId(id);
    const tenant = this.records.held(id);
    const strings = connectionStrings(this.records.settings(), tenant, { local: this.servers.localUrl(tenant) });
    return { ...strings, hostaddr: await this.servers.hostaddr(strings.hostname) };
  }

  async logs(id: string, lines: number): Promise<string[]> {
    assertTenantId(id);
    this.records.held(id);
    this.need('logs', id);
    return (this.servers.logs as NonNullable<ServerRuntime['logs']>)(id, lines);
  }

  async queries(id: string, order: 'total' | 'mean' | 'calls', limit: number): Promise<S.QueriesJson> {
    assertTenantId(id);
    this.records.held(id);
    this.need('queries', id);
    const answer = await (this.servers.queries as NonNullable<ServerRuntime['queries']>)(id, order, limit);
    return { tenant: id, order, ...answer };
  }

  async resetQueries(id: string): Promise<S.QueriesJson> {
    assertTenantId(id);
    this.records.held(id);
    this.need('resetQueries', id);
    await (this.servers.resetQueries as NonNullable<ServerRuntime['resetQueries']>)(id);
    return this.queries(id, 'total', QUERIES_LIMIT);
  }

  // --- the daemon ---

  history(range: '1h' | '1d', ids: string[] | undefined, fields: S.HistoryField[] | undefined): S.HistoryJson {
    return { range, ...this.daemon.history.series(range, ids, fields) };
  }

  async status(): Promise<S.StatusJson> {
    const settings = this.records.settings();
    const own = await this.servers.status();
    return {
      pid: process.pid,
      version: this.daemon.version,
      startedAt: this.daemon.startedAt.toISOString(),
      port: this.daemon.port(), // the one it listens on, whatever the catalog says
      domain: settings.domain,
      api: this.daemon.api(),
      connections: this.daemon.connections(),
      certificateExpires: this.daemon.certificateExpires(),
      certificate: settings.certFile,
      certificateSelfSigned: settings.certSelfSigned,
      ...this.running(),
      runtime: own.runtime,
      limits: own.limits,
      serverUsers: own.serverUsers,
      refusals: this.daemon.refusals(),
      importLimit: own.importLimit,
      disk: own.disk,
      wakesLastHour: own.wakesLastHour,
      backupTarget: own.backupTarget,
      ...(own.stopping ? { stopping: own.stopping } : {}),
      tenants: own.tenants,
    };
  }

  running(): { running: number; maxRunning: number } {
    return this.servers.running();
  }

  reload(): Promise<void> {
    return this.daemon.reload();
  }

  startAll(): Promise<S.BulkJson> {
    return this.change(() => this.servers.startAll());
  }

  doctor(): Promise<Static<typeof S.DoctorReport>> {
    return this.coordination.serial(() => this.servers.doctor());
  }

  doctorFix(): Promise<S.DoctorFixJson> {
    return this.change(() => this.servers.doctorFix());
  }

  shutdown(stopTenants: boolean, ship = true): void {
    this.daemon.shutdown(stopTenants, ship);
  }

  // --- backups ---

  async backup(id: string, progress?: Progress): Promise<S.BackupJson> {
    this.assertRunning();
    return this.backups.backup(id, progress);
  }

  listBackups(id: string): Promise<S.BackupListJson> {
    return this.backups.list(id);
  }

  async deleteBackups(id: string): Promise<void> {
    this.assertRunning();
    await this.backups.deleteAll(id);
  }

  async restore(id: string, request: S.RestoreRequest, progress?: Progress): Promise<S.TenantJson> {
    this.assertRunning();
    return this.madeView(await this.backups.restore(id, request, progress));
  }

  async branch(id: string, request: S.BranchRequest, progress?: Progress): Promise<S.TenantJson> {
    this.assertRunning();
    return this.madeView(await this.backups.branch(id, request, progress));
  }

  async exportTenant(id: string, progress?: Progress): Promise<S.ExportJson> {
    this.need('export');
    this.assertRunning();
    const made = await (this.backups.exportTenant as NonNullable<BackupProvider['exportTenant']>)(id, progress);
    return { ...made, download: `/v1/exports/${made.name}` };
  }

  exportFile(name: string): string {
    this.need('exportFile');
    return (this.backups.exportFile as NonNullable<BackupProvider['exportFile']>)(name);
  }

  async importLimit(): Promise<ImportLimit> {
    this.need('import');
    return (this.backups.importLimit as NonNullable<BackupProvider['importLimit']>)();
  }

  async importUploadFile(body: Readable, limit: ImportLimit): Promise<string> {
    this.need('import');
    this.assertRunning();
    return (this.backups.importUploadFile as NonNullable<BackupProvider['importUploadFile']>)(body, limit);
  }

  async importFile(file: string, as: string | undefined, progress?: Progress): Promise<S.TenantJson> {
    this.need('import');
    this.assertRunning();
    return this.madeView(await (this.backups.importFile as NonNullable<BackupProvider['importFile']>)(file, as, progress));
  }
}
