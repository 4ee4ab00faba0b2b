/**
 * Tenants as CloudNativePG clusters: the desired state lives in the
 * Kubernetes API (each Cluster carries pgs's record of its tenant), and every
 * pgs pod holds the same view through a watch. Writes are optimistic: an
 * update names the version it read and is retried on a conflict, so two pods
 * changing one tenant at once both get their change in.
 */
import * as v from 'valibot';
import { PgsError } from '../../core/errors.js';
import { TenantSchema, type Tenant } from '../../catalog/schema.js';
import { Informer, KubeError, RESOURCES, type KubeClient, type KubeResource, type ResourceRef } from './client.js';
import {
  HIBERNATION, LABEL_MANAGED_BY, TENANT_ANNOTATION, ownerSecretName, objectStoreName, scheduledBackupName, tenantCluster, tenantObjectStore, tenantObjects, tenantScheduledBackup,
  type BackupTarget, type KubeObject, type KubernetesSettings, type RecoverySource,
} from './objects.js';

export const HEALTHY_PHASE = 'Cluster in healthy state';
const HIBERNATION_CONDITION = 'cnpg.io/hibernation';
/** The label CloudNativePG puts on a cluster's volumes. */
const CLUSTER_LABEL = 'cnpg.io/cluster';
const UPDATE_ATTEMPTS = 8;
/** The annotation whose change makes CloudNativePG restart a cluster's instances. */
const RESTARTED_AT = 'kubectl.kubernetes.io/restartedAt';

export interface ClusterStatus {
  phase?: string;
  instances?: number;
  readyInstances?: number;
  currentPrimary?: string;
  writeService?: string;
  conditions?: { type: string; status: string; reason?: string; message?: string }[];
}
export type ClusterObject = KubeResource & { spec?: Record<string, unknown>; status?: ClusterStatus };

export interface KubeTenantView {
  id: string;
  /** pgs's record of the tenant; undefined when the Cluster's annotation cannot be read (problem says why). */
  tenant: Tenant | undefined;
  problem?: string;
  /** The operator's phase, or "pending" before it has said anything. */
  phase: string;
  /** Serving: healthy phase, at least one ready instance, not hibernated. */
  healthy: boolean;
  /** What pgs asked: hibernation on. */
  suspended: boolean;
  /** What the operator says: every instance is down, the volumes kept. */
  hibernated: boolean;
  primary: string | undefined;
  /** Where the router dials: the read-write service, which follows the primary through a failover. */
  writeHost: string;
  /** The operator's ContinuousArchiving condition: WAL reaches the object store (undefined: not said). */
  archiving?: { ok: boolean; message?: string };
}

const refOf = (o: KubeObject): ResourceRef => {
  switch (o.kind) {
    case 'Cluster': return RESOURCES.clusters;
    case 'ScheduledBackup': return RESOURCES.scheduledBackups;
    case 'ObjectStore': return RESOURCES.objectStores;
    case 'Secret': return RESOURCES.secrets;
    default: throw new Error(`no resource for kind ${o.kind}`);
  }
};

/**
 * A JSON merge patch that turns `from` into `to`, touching only the fields
 * either names: a field `from` had and `to` lacks becomes null (deleted);
 * fields neither names (the operator's defaults) are left alone.
 */
export function mergeDiff(from: unknown, to: unknown): unknown {
  const isObject = (x: unknown): x is Record<string, unknown> => x !== null && typeof x === 'object' && !Array.isArray(x);
  if (!isObject(from) || !isObject(to)) return to;
  const patch: Record<string, unknown> = {};
  for (const key of new Set([...Object.keys(from), ...Object.keys(to)])) {
    if (!(key in to)) patch[key] = null;
    else if (!(key in from)) patch[key] = to[key];
    else if (JSON.stringify(from[key]) !== JSON.stringify(to[key])) patch[key] = mergeDiff(from[key], to[key]);
  }
  return patch;
}

export class KubeTenants {
  private readonly client: KubeClient;
  private readonly kube: KubernetesSettings;
  private readonly backup: BackupTarget | undefined;
  private readonly informer: Informer<ClusterObject>;
  private readonly listeners = new Set<(id: string, view: KubeTenantView | undefined) => void>();
  private readonly views = new Map<string, KubeTenantView>();

  constructor(client: KubeClient, kube: KubernetesSettings, backup?: BackupTarget) {
    this.client = client;
    this.kube = kube;
    this.backup = backup;
    this.informer = new Informer<ClusterObject>(client, RESOURCES.clusters, (name, object) => {
      // Each record is read once per change, not at every look.
      const view = object ? this.toView(object) : undefined;
      if (view) this.views.set(name, view);
      else this.views.delete(name);
      for (const listener of this.listeners) listener(name, view);
    }, { labelSelector: `${LABEL_MANAGED_BY}=pgs` });
  }

  /** Reads every tenant and keeps watching. */
  start(): Promise<void> {
    return this.informer.start();
  }

  stop(): void {
    this.informer.stop();
  }

  /** Called with each tenant whose Cluster changed (undefined: deleted). */
  onChange(listener: (id: string, view: KubeTenantView | undefined) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  list(): KubeTenantView[] {
    return [...this.views.values()].sort((a, b) => a.id.localeCompare(b.id));
  }

  view(id: string): KubeTenantView | undefined {
    return this.views.get(id);
  }

  /** The tenant as the API server holds it now, not as the watch last said. */
  async read(id: string): Promise<KubeTenantView | undefined> {
    const held = await this.client.get<ClusterObject>(RESOURCES.clusters, id);
    return held ? this.toView(held) : undefined;
  }

  /** Restarts the cluster's instances one by one (replicas first), as `kubectl cnpg restart` does. */
  async restart(id: string): Promise<void> {
    await this.client.patch(RESOURCES.clusters, id, { metadata: { annotations: { [RESTARTED_AT]: new Date().toISOString() } } });
  }

  private toView(cluster: ClusterObject): KubeTenantView {
    const id = cluster.metadata.name;
    const status = cluster.status ?? {};
    const annotation = cluster.metadata.annotations?.[TENANT_ANNOTATION];
    let tenant: Tenant | undefined;
    let problem: string | undefined;
    try {
      const parsed = v.safeParse(TenantSchema, JSON.parse(annotation ?? 'null'));
      if (parsed.success && parsed.output.id === id) tenant = parsed.output;
      else problem = `annotation ${TENANT_ANNOTATION} of cluster ${id} is not a tenant record: ${parsed.success ? `it names ${parsed.output.id}` : parsed.issues[0]?.message ?? 'invalid'}`;
    } catch (e) {
      problem = `annotation ${TENANT_ANNOTATION} of cluster ${id} is not JSON: ${(e as Error).message}`;
    }
    const suspended = cluster.metadata.annotations?.[HIBERNATION] === 'on';
    const hibernated = status.conditions?.some((c) => c.type === HIBERNATION_CONDITION && c.status === 'True') ?? false;
    const phase = status.phase ?? 'pending';
    const archiving = status.conditions?.find((c) => c.type === 'ContinuousArchiving');
    return {
      ...(archiving ? { archiving: { ok: archiving.status === 'True', ...(archiving.message ? { message: archiving.message } : {}) } } : {}),
      id,
      tenant,
      ...(problem ? { problem } : {}),
      phase,
      healthy: phase === HEALTHY_PHASE && (status.readyInstances ?? 0) > 0 && !hibernated && !suspended,
      suspended,
      hibernated,
      primary: status.currentPrimary,
      writeHost: `${status.writeService ?? `${id}-rw`}.${this.client.namespace}.svc`,
    };
  }

  /**
   * Makes the tenant's objects: its Secret, ObjectStore, Cluster and
   * ScheduledBackup. A failure removes what was made: no half tenant.
   */
  async create(tenant: Tenant, secrets: { ownerPassword: string; clientVerifier: string }, recovery?: RecoverySource, options: { secretExists?: boolean } = {}): Promise<void> {
    if (this.informer.cache.has(tenant.id) || (await this.client.get(RESOURCES.clusters, tenant.id))) {
      throw new PgsError('TENANT_EXISTS', `tenant ${tenant.id} already exists`);
    }
    // A removed tenant's object store stays with its backups: a restore under its id uses it again.
    const objectStoreExists = this.backup !== undefined && (await this.client.get(RESOURCES.objectStores, objectStoreName(tenant.id))) !== undefined;
    const made: KubeObject[] = [];
    try {
      for (const object of tenantObjects(tenant, this.kube, { suspended: false, ...(this.backup ? { backup: this.backup } : {}), ...(recovery ? { recovery } : {}), objectStoreExists, secretExists: options.secretExists === true, ...secrets })) {
        await this.client.create(refOf(object), object);
        made.push(object);
      }
    } catch (e) {
      for (const object of made.reverse()) await this.client.delete(refOf(object), object.metadata.name).catch(() => false);
      if (e instanceof KubeError && e.reason === 'AlreadyExists') throw new PgsError('TENANT_EXISTS', `tenant ${tenant.id} already exists (${e.message})`);
      throw e;
    }
  }

  /** Resolves when the tenant's cluster serves; PG_START_FAILED with the operator's phase after `timeoutMs`. */
  awaitHealthy(id: string, timeoutMs: number): Promise<KubeTenantView> {
    return this.awaitView(id, (view) => view.healthy, timeoutMs, 'serving', 'PG_START_FAILED');
  }

  /** Resolves when every instance of the tenant's cluster is down (hibernated); PG_STOP_FAILED after `timeoutMs`. */
  awaitHibernated(id: string, timeoutMs: number): Promise<KubeTenantView> {
    return this.awaitView(id, (view) => view.hibernated, timeoutMs, 'hibernated', 'PG_STOP_FAILED');
  }

  private awaitView(id: string, reached: (view: KubeTenantView) => boolean, timeoutMs: number, what: string, code: 'PG_START_FAILED' | 'PG_STOP_FAILED'): Promise<KubeTenantView> {
    return new Promise((resolve, reject) => {
      const check = (view: KubeTenantView | undefined) => {
        if (!view || !reached(view)) return false;
        finish();
        resolve(view);
        return true;
      };
      const timer = setTimeout(() => {
        finish();
        const view = this.view(id);
        reject(new PgsError(code, `the cluster of tenant ${id} is not ${what} after ${Math.round(timeoutMs / 1000)} s: phase "${view?.phase ?? 'no cluster'}"${view?.hibernated ? ', hibernated' : ''}`));
      }, timeoutMs);
      const unsubscribe = this.onChange((changed, view) => {
        if (changed === id) check(view);
      });
      const finish = () => {
        clearTimeout(timer);
        unsubscribe();
      };
      check(this.view(id));
    });
  }

  /**
   * Changes pgs's record of a tenant (retried on a conflict, see rewrite).
   */
  async update(id: string, change: (t: Tenant) => Tenant): Promise<Tenant> {
    // Hibernation that a stop asked for is not a suspension: a start ends it.
    return this.rewrite(id, (t, suspended) => ({ tenant: change(t), suspended: suspended && t.wanted === 'running' }));
  }

  /** Suspends (hibernation on: every instance stops, the volumes stay) or wakes the tenant's cluster; its backup schedule follows. */
  async setSuspended(id: string, suspended: boolean): Promise<void> {
    await this.rewrite(id, (t) => ({ tenant: t, suspended }));
  }

  /**
   * Writes the tenant's record and what follows from it (the Cluster's spec,
   * its backup schedule), against the version read: on a conflict it is read
   * again and `next` applied to it again.
   */
  private async rewrite(id: string, next: (t: Tenant, suspended: boolean) => { tenant: Tenant; suspended: boolean }): Promise<Tenant> {
    for (let attempt = 1; ; attempt++) {
      const held = await this.client.get<ClusterObject>(RESOURCES.clusters, id);
      if (!held) throw new PgsError('TENANT_NOT_FOUND', `tenant ${id} does not exist`);
      const view = this.toView(held);
      if (!view.tenant) throw new PgsError('INVALID_STATE', view.problem ?? `tenant ${id} cannot be read`);
      const { tenant, suspended } = next(view.tenant, view.suspended);
      try {
        if (this.backup && !held.spec?.plugins && !(await this.client.get(RESOURCES.objectStores, objectStoreName(id)))) {
          await this.client.create(RESOURCES.objectStores, tenantObjectStore(tenant, this.kube, this.backup));
        }
        await this.writeCluster(held, view.tenant, tenant, suspended);
        await this.syncSchedule(tenant, suspended);
        return tenant;
      } catch (e) {
        if (!(e instanceof KubeError && e.statusCode === 409) || attempt >= UPDATE_ATTEMPTS) throw e;
      }
    }
  }

  private async writeCluster(held: ClusterObject, before: Tenant, after: Tenant, suspended: boolean): Promise<void> {
    const options = this.backup ? { backup: this.backup } : {};
    const was = tenantCluster(before, this.kube, { suspended: held.metadata.annotations?.[HIBERNATION] === 'on', ...options });
    const will = tenantCluster(after, this.kube, { suspended: suspended && after.wanted === 'running', ...options });
    // How the cluster began (initdb, or recovery from a backup) is history: never rewritten.
    for (const spec of [was.spec, will.spec] as Record<string, unknown>[]) {
      delete spec.bootstrap;
      delete spec.externalClusters;
    }
    const spec = mergeDiff(was.spec, will.spec) as Record<string, unknown>;
    // A cluster made before backups were set up gets its WAL archiving at its next change.
    if (this.backup && !held.spec?.plugins) spec.plugins = (will.spec as Record<string, unknown>).plugins;
    const patch = {
      metadata: { annotations: will.metadata.annotations },
      spec,
    };
    await this.client.patch(RESOURCES.clusters, held.metadata.name, patch, held.metadata.resourceVersion);
  }

  private async syncSchedule(tenant: Tenant, suspended: boolean): Promise<void> {
    if (!this.backup) return;
    const wanted = tenantScheduledBackup(tenant, this.kube, { suspended });
    const name = scheduledBackupName(tenant.id);
    const held = await this.client.get(RESOURCES.scheduledBackups, name);
    if (!wanted) {
      if (held) await this.client.delete(RESOURCES.scheduledBackups, name);
    } else if (!held) {
      await this.client.create(RESOURCES.scheduledBackups, wanted);
    } else {
      await this.client.patch(RESOURCES.scheduledBackups, name, { spec: wanted.spec });
    }
  }

  /**
   * Deletes the tenant's objects. Its volumes (the data) stay unless
   * `volumes` is true, which a person confirmed.
   */
  async remove(id: string, options: { volumes: boolean; keepBackups?: boolean }): Promise<{ volumesDeleted: string[] }> {
    if (!(await this.client.get(RESOURCES.clusters, id))) throw new PgsError('TENANT_NOT_FOUND', `tenant ${id} does not exist`);
    await this.client.delete(RESOURCES.scheduledBackups, scheduledBackupName(id));
    await this.client.delete(RESOURCES.clusters, id);
    // Its backups stay unless asked otherwise: the object store that names them stays with them.
    // With them stays the Secret, so that a restore under its id brings its login back.
    if (!options.keepBackups) {
      await this.client.delete(RESOURCES.objectStores, objectStoreName(id));
      await this.client.delete(RESOURCES.secrets, ownerSecretName(id));
    }
    const volumesDeleted: string[] = [];
    if (options.volumes) {
      for (const pvc of (await this.client.list(RESOURCES.persistentVolumeClaims, `${CLUSTER_LABEL}=${id}`)).items) {
        if (await this.client.delete(RESOURCES.persistentVolumeClaims, pvc.metadata.name)) volumesDeleted.push(pvc.metadata.name);
      }
    }
    return { volumesDeleted };
  }
}
