import { promises as fs } from 'node:fs';
import type * as S from '../api/schemas.js';
import type { Catalog, Tenant } from '../catalog/schema.js';
import { AllowList } from '../core/cidr.js';
import { tail } from '../core/files.js';
import { localHostaddr } from '../core/hostaddr.js';
import type { Log } from '../core/log.js';
import { PgsError } from '../core/errors.js';
import type { Router } from '../router/router.js';
import type { ResourceUsage } from '../runtime/cgroups.js';
import type { TenantRuntime } from '../runtime/runtime.js';
import { tenantServerSpec } from '../runtime/server-spec.js';
import { localUrl, type CreatedTenant } from '../service/connection.js';
import type { Pgs } from '../service/pgs.js';
import { setVerifier } from '../service/pgs.js';
import { findTenant, type CreateRequest } from '../service/tenant-rules.js';
import type { ObservedTenant } from '../service/tenant-view.js';
import type { Supervisor } from '../supervisor/supervisor.js';
import type { EventLog } from '../telemetry/events.js';
import type { TenantSample } from '../telemetry/metrics.js';
import type { BackupPlane } from './backup-plane.js';
import type { DiskGuard } from './disk-guard.js';
import type { Logins } from './logins.js';
import type { Lacking, RuntimeStatus, ServerRuntime } from './parts.js';
import { QUERIES_LIMIT, type QuerySamples } from './query-stats.js';
import { importLimit } from './uploads.js';

export interface NativeServersDeps {
  pgs: Pgs;
  runtime: TenantRuntime;
  supervisor: Supervisor;
  router: Router;
  disk: DiskGuard;
  backupPlane: BackupPlane;
  logins: Logins;
  querySamples: QuerySamples;
  events: EventLog;
  log: Log;
  catalog(): Catalog;
  /** After a change this daemon wrote: the catalog as it is now. */
  refresh(): Promise<void>;
  /** While a stop copies to the bucket: what is left. */
  stopProgress(): S.StatusJson['stopping'];
}

/** Ends the tenant's sessions with a FATAL saying why, before its server goes (which would only say "administrator command"). */
export async function endSessions(router: Router, id: string, why: string): Promise<void> {
  if (router.closeTenant(id, why) > 0) await router.drained(id);
}

/**
 * The servers of one host (native processes or docker containers, through
 * its TenantRuntime), as the control plane asks for them: the supervisor
 * keeps them as the catalog wants, the router's sessions follow.
 */
export class NativeServers implements ServerRuntime {
  readonly name: string;
  readonly lacking: Lacking = {};
  private readonly deps: NativeServersDeps;

  constructor(deps: NativeServersDeps) {
    this.deps = deps;
    this.name = deps.catalog().settings.runtime ?? 'native';
  }

  private get catalog(): Catalog {
    return this.deps.catalog();
  }

  private spec(tenant: Tenant) {
    return tenantServerSpec(this.catalog.settings.dataRoot, tenant);
  }

  async observe(tenant: Tenant): Promise<ObservedTenant> {
    const { disk, supervisor, backupPlane } = this.deps;
    const diskUsed = disk.usedBytes(tenant.id) ?? supervisor.measuredBytes(tenant.id);
    const level = disk.level(tenant);
    return {
      ...(await this.observeWithArchive(tenant)),
      ...(await this.limitsSeen(tenant)),
      ...(diskUsed !== undefined ? { diskUsedBytes: diskUsed } : {}),
      ...(level !== undefined ? { disk: level } : {}),
      lastBackupAt: backupPlane.lastBackupAt(tenant.id),
      lastActiveAt: supervisor.lastActiveAt(tenant.id),
    };
  }

  /** What a tenant with limits uses now, or why its limits are not enforced. */
  private async limitsSeen(tenant: Tenant): Promise<{ usage?: ResourceUsage; limitsNotEnforced?: string }> {
    if (tenant.memoryBytes === undefined && tenant.cpus === undefined) return {};
    const support = this.deps.runtime.limitsSupport();
    const usage = await this.deps.runtime.resourceUsage(tenant.id).catch(() => undefined);
    return { ...(usage ? { usage } : {}), ...(support.enforced ? {} : { limitsNotEnforced: `memory and CPU limits are not enforced: ${support.why}` }) };
  }

  /** What the supervisor sees of the tenant's server, with the state of its WAL archive. */
  private async observeWithArchive(tenant: Tenant): Promise<Awaited<ReturnType<Supervisor['observe']>> & { archiving: S.TenantJson['archiving']; archivingError?: string; backupPending: S.TenantJson['backupPending'] }> {
    const { supervisor, backupPlane } = this.deps;
    const seen = await supervisor.observe(tenant, true);
    const status = await supervisor.archiverStatusNow(tenant.id);
    const archiving = backupPlane.archiving(tenant, status);
    const pending = backupPlane.pendingFor(tenant.id, status);
    return {
      ...seen, archiving: archiving.state, ...(archiving.error !== undefined ? { archivingError: archiving.error } : {}),
      backupPending: pending === null ? null : { files: pending.files, bytes: pending.bytes, oldestAt: pending.oldestMs === null ? null : new Date(pending.oldestMs).toISOString() },
    };
  }

  /** A tenant's series for /metrics, with its backups. */
  withBackupSample(sample: Omit<TenantSample, 'lastBackup' | 'archiveFailing' | 'archivePending'>): TenantSample {
    const { supervisor, backupPlane } = this.deps;
    const tenant = this.catalog.tenants.find((t) => t.id === sample.id);
    const status = supervisor.archiverStatus(sample.id);
    const last = backupPlane.lastBackupAt(sample.id);
    const state = tenant ? backupPlane.archiving(tenant, status).state : 'unknown';
    return {
      ...sample,
      lastBackup: last === null ? null : Math.floor(Date.parse(last) / 1000),
      archiveFailing: state === 'failing' || state === 'gap' ? 1 : state === 'ok' || state === 'behind' ? 0 : null,
      archivePending: status?.pending ?? null,
    };
  }

  async create(request: CreateRequest & { password: string }): Promise<CreatedTenant> {
    const { backupPlane, disk, pgs, runtime, supervisor, events, log } = this.deps;
    if (backupPlane.reserved.has(request.id)) throw new PgsError('TENANT_EXISTS', `tenant ${request.id} is being made from a backup`);
    const full = await disk.hostProblem();
    if (full) throw new PgsError('DISK_FULL', full);
    const created = await pgs.create(request);
    await this.deps.refresh();
    // A create may take a spare server that already runs: it joins the tenant's control groups now.
    const made = this.catalog.tenants.find((t) => t.id === request.id);
    if (made && (made.memoryBytes !== undefined || made.cpus !== undefined)) {
      await runtime.applyLimits(this.spec(made)).catch((err: Error) => log.warn('could not apply limits', { tenant: request.id, error: err.message }));
    }
    await supervisor.noteRunning(request.id);
    events.emit('created', request.id);
    events.emit('state', request.id, { state: 'running' });
    return created;
  }

  checkDisk(id: string): void {
    void this.deps.disk.check(id);
  }

  /** What a changed catalog entry needs beyond the catalog (which the caller has written and refreshed). */
  async changed(before: Tenant, after: Tenant): Promise<void> {
    const { router, supervisor, runtime, events, log } = this.deps;
    const id = after.id;
    if (after.access !== before.access) {
      if (after.access === 'disabled') {
        const closed = router.closeTenant(id, `access to tenant ${id} was disabled`);
        if (closed > 0) log.info('closed connections', { tenant: id, count: closed, why: 'access disabled' });
      }
      events.emit('access', id, { access: after.access });
    }
    if (after.allow !== undefined && after.allow.join(',') !== (before.allow ?? []).join(',')) {
      // Sessions from addresses the new list leaves out end, as when access is disabled.
      const closed = router.closeUnallowed(id, new AllowList(after.allow));
      if (closed > 0) log.info('closed connections', { tenant: id, count: closed, why: 'address no longer allowed' });
    }
    if (after.autosuspendSeconds !== before.autosuspendSeconds) supervisor.resetIdle(id);
    // Sessions kept for the other mode are of no use now (clients already connected keep their mode).
    if ((after.pool ?? 'session') !== (before.pool ?? 'session')) router.dropServerSessions(id);
    // A running server reads its new archive_timeout (or archive) at once (a reload); a stopped one at its next start.
    if (after.rpoSeconds !== before.rpoSeconds || after.generation !== before.generation) await runtime.configureArchive(this.spec(after));
    // Limits reach a running server at once: its control groups and the settings that follow memory.
    if (after.memoryBytes !== before.memoryBytes || after.cpus !== before.cpus) await runtime.applyLimits(this.spec(after));
  }

  async remove(id: string): Promise<void> {
    const { router, runtime, supervisor, pgs, logins, querySamples, disk, backupPlane, events, log } = this.deps;
    // Its sessions are told why; then the server stops, so that nothing restarts it while its files go.
    await endSessions(router, id, `tenant ${id} was removed`);
    // Its backups stay: the WAL up to now goes to the archive first, so that a restore brings back all of it.
    if ((await runtime.status(id, { fresh: true })).state === 'running') {
      await runtime.flushArchive(id, 30_000).catch((err: Error) => log.warn('could not archive the last WAL before the removal', { tenant: id, error: err.message }));
    }
    await supervisor.stopWanted(id);
    await pgs.remove(id);
    await logins.forget(id);
    await querySamples.forget(id);
    disk.forget(id);
    await this.deps.refresh();
    await backupPlane.forgetIfEmpty(id).catch((err: Error) => log.warn('could not delete an archive without backups', { tenant: id, error: err.message }));
    events.emit('removed', id);
  }

  async act(found: Tenant, action: S.TenantActionName): Promise<void> {
    const { pgs, router, runtime, supervisor, events } = this.deps;
    const id = found.id;
    let tenant = found;
    const wantRunning = action !== 'stop';
    if (!wantRunning || action === 'start' || action === 'restart') {
      tenant = (await pgs.patch(id, { wanted: wantRunning ? 'running' : 'stopped' })).after;
      await this.deps.refresh();
    }
    supervisor.retryNow(id);
    switch (action) {
      case 'stop':
        await endSessions(router, id, `tenant ${id} was stopped`);
        await supervisor.stopWanted(id);
        events.emit('state', id, { state: 'stopped' });
        break;
      case 'restart':
        await endSessions(router, id, `tenant ${id} is restarting`);
        await supervisor.stopWanted(id);
        await supervisor.startNow(tenant);
        break;
      case 'suspend':
        await supervisor.settle(id);
        if (supervisor.isSuspended(id)) break;
        router.closeTenant(id, `tenant ${id} was suspended`);
        await supervisor.suspendNow(id, 'requested');
        break;
      case 'wake':
      case 'start':
        // Waking a tenant that is down for another reason (crashed, say) starts it.
        if (supervisor.isSuspended(id)) await supervisor.wake(id);
        else if ((await runtime.status(id, { fresh: true })).state !== 'running') await supervisor.startNow(tenant);
        break;
    }
  }

  /**
   * Sets the tenant role's password verifier. A running server gets it at once;
   * a suspended one is woken for it (and suspended again when idle); one that
   * is wanted running but down is started; one stopped on purpose is started
   * for the change and stopped again.
   */
  async setVerifier(held: Tenant, verifier: string): Promise<void> {
    const { pgs, runtime, supervisor } = this.deps;
    const tenant = findTenant(await pgs.store.read(), held.id);
    if (supervisor.isSuspended(tenant.id)) await supervisor.wake(tenant.id);
    await setVerifier(runtime, this.spec(tenant), verifier, { keepStarted: tenant.wanted === 'running' });
    if (tenant.wanted === 'running') await supervisor.noteRunning(tenant.id);
  }

  localUrl(tenant: Tenant): string {
    return localUrl(this.deps.runtime.localEndpoint(tenant.id), tenant.id);
  }

  /** Clients on this host (the dashboard's reader, most often) connect to loopback: what pgs url adds here. */
  hostaddr(hostname: string): Promise<string | null> {
    return localHostaddr(hostname);
  }

  async logs(id: string, lines: number): Promise<string[]> {
    if (lines === 0) return [];
    const text = await tail(this.deps.runtime.logFile(id), lines).catch(() => '');
    return text === '' ? [] : text.replace(/\n$/, '').split('\n');
  }

  async queries(id: string, order: 'total' | 'mean' | 'calls', limit: number): Promise<Omit<S.QueriesJson, 'tenant' | 'order'>> {
    if (!Number.isInteger(limit) || limit < 1 || limit > QUERIES_LIMIT) throw new PgsError('INVALID_REQUEST', `invalid limit ${limit}: from 1 to ${QUERIES_LIMIT}`, { field: 'limit' });
    // Never a wake: a suspended (or suspending) tenant is answered from its last sample.
    const running = !this.deps.supervisor.isSuspended(id) && (await this.deps.runtime.status(id, { fresh: true })).state === 'running';
    return this.deps.querySamples.read(id, running, order, limit);
  }

  async resetQueries(id: string): Promise<void> {
    await this.deps.runtime.resetQueryStats(id);
    await this.deps.querySamples.emptied(id);
  }

  async status(): Promise<RuntimeStatus> {
    const { runtime, supervisor, backupPlane } = this.deps;
    const { settings } = this.catalog;
    // A person asked: look at the servers now (1,000 /proc reads cost ~25 ms), not at the last sighting.
    const tenants = await Promise.all(this.catalog.tenants.map((t) => this.observeWithArchive(t)));
    const stopping = this.deps.stopProgress();
    return {
      runtime: runtime.describe(),
      limits: runtime.limitsSupport(),
      serverUsers: runtime.serverUsers(),
      importLimit: await importLimit(settings).then(({ bytes, auto }) => ({ bytes, auto }), () => null),
      disk: await fs.statfs(settings.dataRoot).then((f) => ({ path: settings.dataRoot, freeBytes: f.bavail * f.bsize, totalBytes: f.blocks * f.bsize }), () => null),
      wakesLastHour: supervisor.recentWakes(),
      backupTarget: backupPlane.targetStatus(this.catalog.tenants.map((t) => ({ id: t.id, status: supervisor.archiverStatus(t.id) }))),
      ...(stopping ? { stopping } : {}),
      tenants,
    };
  }

  running(): { running: number; maxRunning: number } {
    return { running: this.deps.supervisor.runningCount(), maxRunning: this.deps.supervisor.budget };
  }

  async startAll(): Promise<S.BulkJson> {
    const { pgs, supervisor } = this.deps;
    await pgs.recordWanted('running');
    await this.deps.refresh();
    supervisor.retryNow();
    await supervisor.reconcile();
    const done: string[] = [];
    const failed: { id: string; error: string }[] = [];
    for (const t of this.catalog.tenants) {
      const seen = await supervisor.observe(t, true);
      if (seen.state === 'running' || seen.state === 'suspended') done.push(t.id);
      else failed.push({ id: t.id, error: seen.lastError ?? `the server is ${seen.state}` });
    }
    return { done, failed };
  }

  doctor(): Promise<S.DoctorFixJson['report']> {
    return this.deps.pgs.doctor();
  }

  async doctorFix(): Promise<S.DoctorFixJson> {
    const { pgs, runtime, events, log, router, supervisor } = this.deps;
    const before = await pgs.doctor();
    const removed: string[] = [];
    for (const id of before.unfinished) {
      await runtime.remove(id);
      removed.push(id);
    }
    const adopted = await pgs.adopt(before.orphans.map((o) => o.id));
    await this.deps.refresh();
    for (const a of adopted) {
      events.emit('created', a.id, { reason: 'adopted' });
      log.info('adopted an orphan data folder', { tenant: a.id, hostname: a.hostname, newHostname: a.newHostname });
    }
    const settled = await pgs.settleMeta();
    await this.deps.refresh();
    for (const s of settled) {
      log.info(s.updated === 'catalog' ? 'took a tenant\'s newer settings from its folder\'s metadata' : 'wrote the catalog\'s settings to a tenant folder\'s metadata', { tenant: s.id, newer: s.newer, fields: s.fields.join(',') });
      if (s.updated !== 'catalog') continue;
      if (s.after.wanted === 'stopped' && s.before.wanted !== 'stopped') {
        await endSessions(router, s.id, `tenant ${s.id} was stopped`);
        await supervisor.stopWanted(s.id);
      }
      await this.changed(s.before, s.after);
    }
    await supervisor.reconcile();
    return { adopted, removed, settled: settled.map(({ id, newer, updated, fields }) => ({ id, newer, updated, fields })), report: await pgs.doctor() };
  }
}
