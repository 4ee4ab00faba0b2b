import type * as S from '../api/schemas.js';
import { generatePassword, scramVerifier } from '../auth/scram.js';
import type { Settings, Tenant } from '../catalog/schema.js';
import { PgsError } from '../core/errors.js';
import type { Log } from '../core/log.js';
import type { Router } from '../router/router.js';
import { RESOURCES, type KubeClient } from '../runtime/kubernetes/client.js';
import { DEFAULT_STORAGE_BYTES, ownerSecretName, type KubernetesSettings } from '../runtime/kubernetes/objects.js';
import type { KubeTenants, KubeTenantView } from '../runtime/kubernetes/tenants.js';
import { createdAnswer, type CreatedTenant } from '../service/connection.js';
import { assertWantedRunning, newTenantEntry, type CreateRequest, type PatchRequest } from '../service/tenant-rules.js';
import type { ObservedTenant } from '../service/tenant-view.js';
import type { EventLog } from '../telemetry/events.js';
import type { KubeBackups } from './kube-backups.js';
import type { KubeIdle } from './kube-idle.js';
import type { HeldView, KubeRecords } from './kube-records.js';
import type { Lacking, RuntimeStatus, ServerRuntime } from './parts.js';

export interface KubeServersDeps {
  client: KubeClient;
  tenants: KubeTenants;
  records: KubeRecords;
  backups: KubeBackups | undefined;
  router: Router;
  idle: KubeIdle;
  events: EventLog;
  log: Log;
  settings: () => Settings;
  kube: () => KubernetesSettings;
  pod: string;
  isLeader: () => boolean;
  /** How long a create, start or wake waits for the cluster to serve. */
  readyTimeoutMs: number;
}

/** A tenant's state as pgs names it, from what pgs asked and what the operator says. */
export function stateOf(view: KubeTenantView): S.TenantJson['state'] {
  if (view.tenant?.wanted === 'stopped') return view.hibernated ? 'stopped' : 'stopping';
  if (view.suspended) return view.hibernated ? 'suspended' : 'stopping';
  if (view.healthy) return 'running';
  return 'starting';
}

const DUMP_INSTEAD = 'pg_dump through the tenant\'s connection string';
const RESTORE_INSTEAD = 'pg_restore through the tenant\'s connection string';

/**
 * The tenants' servers on Kubernetes: CloudNativePG clusters, one per
 * tenant, that the operator runs. A stop or suspension is hibernation (every
 * instance stops, the volumes stay); what a host measures (pids, uptime,
 * disk use) the operator does not say.
 */
export class KubeServers implements ServerRuntime {
  readonly name = 'kubernetes';
  readonly lacking: Lacking;
  /** Wakes this pod asked for, per tenant (for the status, the history and /metrics). */
  readonly wakes = new Map<string, number>();
  private readonly deps: KubeServersDeps;

  constructor(deps: KubeServersDeps) {
    this.deps = deps;
    const namespace = deps.client.namespace;
    const primary = (id: string | undefined) => (id === undefined ? undefined : deps.tenants.view(id)?.primary) ?? `${id ?? 'TENANT'}-1`;
    this.lacking = {
      init: () => ({ what: 'an init script (--init)', instead: 'create the tenant, then run the script with psql through its connection string' }),
      logs: (id) => ({ what: 'pgs logs', instead: `the server's log is its pod's: kubectl -n ${namespace} logs -l cnpg.io/cluster=${id ?? 'TENANT'}` }),
      queries: (id) => ({ what: 'query statistics (pgs queries)', instead: `read pg_stat_statements in the tenant's database, if its cluster loads it: kubectl -n ${namespace} exec -it ${primary(id)} -- psql -c 'SELECT * FROM pg_stat_statements'` }),
      resetQueries: () => ({ what: 'resetting query statistics (pgs config --reset-queries)', instead: 'run SELECT pg_stat_statements_reset() in the tenant\'s cluster as a superuser' }),
      export: () => ({ what: 'pgs export', instead: DUMP_INSTEAD }),
      exportFile: () => ({ what: 'exports', instead: DUMP_INSTEAD }),
      import: () => ({ what: 'pgs import', instead: RESTORE_INSTEAD }),
    };
  }

  async observe(tenant: Tenant): Promise<ObservedTenant> {
    const { router, backups } = this.deps;
    const view = this.deps.records.observedView(tenant) ?? { id: tenant.id, tenant, phase: 'pending', healthy: false, suspended: false, hibernated: false, primary: undefined, writeHost: '' };
    const last = router.lastUsed(tenant.id);
    const problem = !view.healthy && !view.suspended && tenant.wanted === 'running' && view.phase !== 'pending' && view.phase !== 'Setting up primary' && view.phase !== 'Cluster in healthy state' ? `the operator says: ${view.phase}` : undefined;
    return {
      state: stateOf(view),
      pid: null,
      serverStartedAt: null,
      connections: router.connectionCount(tenant.id),
      health: view.healthy ? 'ok' : view.suspended || tenant.wanted === 'stopped' ? 'unknown' : 'failing',
      healthCheckedAt: null,
      ...(problem ? { lastError: problem } : {}),
      restarts: 0,
      wakes: this.wakes.get(tenant.id) ?? 0,
      lastBackupAt: backups?.newest.get(tenant.id) ?? null,
      lastActiveAt: last === undefined ? null : new Date(last).toISOString(),
      ...this.archivingOf(view),
    };
  }

  /** WAL archiving as the operator reports it (its ContinuousArchiving condition). */
  private archivingOf(view: KubeTenantView): Pick<ObservedTenant, 'archiving' | 'archivingError'> {
    if (!this.deps.backups) return { archiving: 'off' };
    if (!view.archiving) return { archiving: 'unknown' };
    return view.archiving.ok ? { archiving: 'ok' } : { archiving: 'failing', ...(view.archiving.message ? { archivingError: view.archiving.message } : {}) };
  }

  async create(request: CreateRequest & { password: string }): Promise<CreatedTenant> {
    const { client, tenants, backups, log, events } = this.deps;
    const settings = this.deps.settings();
    const tenant = newTenantEntry(settings, request);
    if (backups && (await client.get(RESOURCES.secrets, ownerSecretName(tenant.id)))) {
      throw new PgsError('TENANT_EXISTS', `tenant ${tenant.id} was removed and its backups are kept: "pgs restore ${tenant.id}" brings it back, "pgs backups ${tenant.id} --delete" deletes them and frees the id`);
    }
    await tenants.create(tenant, { ownerPassword: generatePassword(), clientVerifier: scramVerifier(request.password) });
    try {
      await tenants.awaitHealthy(tenant.id, this.deps.readyTimeoutMs);
    } catch (err) {
      // No half tenant: a cluster that never served is removed with its volumes (it holds no data yet).
      await tenants.remove(tenant.id, { volumes: true }).catch((e: Error) => log.warn('could not remove a failed create', { tenant: tenant.id, error: e.message }));
      throw err;
    }
    events.emit('created', tenant.id);
    return createdAnswer(settings, tenant, request.password);
  }

  checkPatch(current: Tenant, patch: PatchRequest): void {
    if (patch.diskBytes !== undefined && (patch.diskBytes ?? DEFAULT_STORAGE_BYTES) < (current.diskBytes ?? DEFAULT_STORAGE_BYTES)) {
      throw new PgsError('USAGE', `tenant ${current.id}'s volume holds ${current.diskBytes ?? DEFAULT_STORAGE_BYTES} bytes and a volume cannot shrink: give a larger --disk`);
    }
  }

  /** The Cluster follows its record as written (KubeTenants.update); a new autosuspend counts from now. */
  async changed(_before: Tenant, after: Tenant, patch?: PatchRequest): Promise<void> {
    if (patch?.autosuspend !== undefined) this.deps.idle.forget(after.id);
  }

  async remove(id: string): Promise<void> {
    const { router, tenants, backups } = this.deps;
    if (router.closeTenant(id, `tenant ${id} was removed`) > 0) await router.drained(id);
    // The person confirmed deleting the tenant's data: its volumes go with its cluster (its backups stay).
    await tenants.remove(id, { volumes: true, keepBackups: backups !== undefined });
  }

  async act(tenant: Tenant, action: S.TenantActionName): Promise<void> {
    const { router, tenants, events, readyTimeoutMs } = this.deps;
    const id = tenant.id;
    const view = this.deps.records.heldView(id);
    switch (action) {
      case 'stop':
        await this.backupBeforeHibernating(view);
        router.closeTenant(id, `tenant ${id} was stopped`);
        await tenants.update(id, (t) => ({ ...t, wanted: 'stopped' }));
        await tenants.awaitHibernated(id, readyTimeoutMs);
        events.emit('state', id, { state: 'stopped' });
        break;
      case 'suspend':
        await this.backupBeforeHibernating(view);
        router.closeTenant(id, `tenant ${id} was suspended`);
        await tenants.setSuspended(id, true);
        await tenants.awaitHibernated(id, readyTimeoutMs);
        events.emit('state', id, { state: 'suspended', reason: 'requested' });
        break;
      case 'restart':
        assertWantedRunning(view.tenant, 'restart');
        router.closeTenant(id, `tenant ${id} is restarting`);
        await tenants.restart(id);
        break;
      case 'start':
      case 'wake':
        if (view.tenant.wanted !== 'running') await tenants.update(id, (t) => ({ ...t, wanted: 'running' }));
        else if (view.suspended) {
          await tenants.setSuspended(id, false);
          this.wakes.set(id, (this.wakes.get(id) ?? 0) + 1);
        }
        await tenants.awaitHealthy(id, readyTimeoutMs);
        events.emit('state', id, { state: 'running' });
        break;
    }
  }

  /** With backups on, a serving tenant whose data may have changed since its last backup is backed up before it is hibernated. */
  private async backupBeforeHibernating(view: HeldView): Promise<void> {
    const { backups, router } = this.deps;
    if (!backups || !view.healthy) return;
    const newest = backups.newest.get(view.id);
    const last = router.lastUsed(view.id) ?? Date.now();
    if (newest !== undefined && Date.parse(newest) >= last && router.connectionCount(view.id) === 0) return;
    await backups.backupNow(view.tenant, 'pre-suspend', this.deps.readyTimeoutMs);
  }

  async setVerifier(tenant: Tenant, verifier: string): Promise<void> {
    await this.deps.client.patch(RESOURCES.secrets, ownerSecretName(tenant.id), { stringData: { 'client-verifier': verifier } });
  }

  /** Administration goes through the operator's pod, not a socket on this host. */
  localUrl(tenant: Tenant): string {
    const primary = this.deps.tenants.view(tenant.id)?.primary ?? `${tenant.id}-1`;
    return `kubectl -n ${this.deps.client.namespace} exec -it ${primary} -- psql ${tenant.database ?? tenant.id}`;
  }

  /** Clients reach the router through the cluster's service, never this pod's loopback. */
  async hostaddr(): Promise<string | null> {
    return null;
  }

  async status(): Promise<RuntimeStatus> {
    const { client, tenants, router, pod } = this.deps;
    const settings = this.deps.settings();
    const kube = this.deps.kube();
    return {
      runtime: `kubernetes: CloudNativePG clusters in namespace ${client.namespace} at ${client.connection.server}, ${kube.instances} instance${kube.instances === 1 ? '' : 's'} each; pod ${pod}${this.deps.isLeader() ? ' (leader)' : ''}`,
      limits: { enforced: true, how: 'the pods\' resource limits' },
      serverUsers: { perTenant: true, detail: 'a pod of its own per instance' },
      importLimit: null,
      disk: null,
      wakesLastHour: { count: [...this.wakes.values()].reduce((a, b) => a + b, 0), p50Seconds: null, p95Seconds: null },
      backupTarget: settings.backupTarget ? { url: settings.backupTarget, pendingFiles: 0, failingSince: null } : null,
      tenants: tenants.list().map((view) => ({
        id: view.id, state: stateOf(view), pid: null, serverStartedAt: null, connections: router.connectionCount(view.id),
        health: view.healthy ? 'ok' as const : 'unknown' as const, healthCheckedAt: null, restarts: 0, wakes: this.wakes.get(view.id) ?? 0,
        ...(view.problem ? { lastError: view.problem } : {}),
      })),
    };
  }

  running(): { running: number; maxRunning: number } {
    const views = this.deps.tenants.list();
    return { running: views.filter((v) => v.healthy).length, maxRunning: views.length };
  }

  async startAll(): Promise<S.BulkJson> {
    const done: string[] = [];
    const failed: { id: string; error: string }[] = [];
    for (const view of this.deps.tenants.list()) {
      try {
        if (view.tenant?.wanted === 'stopped') await this.deps.tenants.update(view.id, (t) => ({ ...t, wanted: 'running' }));
        done.push(view.id);
      } catch (err) {
        failed.push({ id: view.id, error: (err as Error).message });
      }
    }
    return { done, failed };
  }

  async doctor(): Promise<S.DoctorFixJson['report']> {
    return { orphans: [], unfinished: [], missingData: this.deps.tenants.list().filter((v) => v.problem !== undefined).map((v) => v.id), disagreements: [], leftovers: [] };
  }

  async doctorFix(): Promise<S.DoctorFixJson> {
    return { adopted: [], removed: [], settled: [], report: await this.doctor() };
  }
}
