/**
 * The Kubernetes objects the kubernetes runtime keeps for a tenant, as pure
 * functions of the tenant's catalog entry: a CloudNativePG `Cluster`, the
 * `Secret` its database owner logs in with, and, when backups go to S3, a
 * barman-cloud `ObjectStore` and a `ScheduledBackup`. The same input gives
 * the same objects, so the runtime can compare what it wants with what the
 * API server holds and write only the difference.
 *
 * The tenant's login is `postgres`, as on every runtime; in a CloudNativePG
 * cluster that name is the superuser's (kept disabled here), so the database
 * belongs to the role `app`, and the router, which authenticates the client
 * itself, logs in to the server as `app` with a password only it and the
 * operator read (from the Secret). The client's own password is never stored:
 * the Secret holds its SCRAM verifier, which the router checks.
 */
import type { Tenant } from '../../catalog/schema.js';

export const CNPG_API = 'postgresql.cnpg.io/v1';
export const BARMAN_API = 'barmancloud.cnpg.io/v1';
/** The barman-cloud plugin's name, as CloudNativePG clusters name it. */
export const BARMAN_PLUGIN = 'barman-cloud.cloudnative-pg.io';
export const LABEL_MANAGED_BY = 'app.kubernetes.io/managed-by';
export const LABEL_TENANT = 'pgs.sysnee.io/tenant';
/**
 * pgs's own record of the tenant (the catalog entry: suffix, access, wanted
 * state, autosuspend, limits, pooling...), as JSON in one annotation on its
 * Cluster: the desired state every pgs pod reads from the API server.
 */
export const TENANT_ANNOTATION = 'pgs.sysnee.io/tenant';
/** CloudNativePG's declarative hibernation: "on" stops every instance and keeps the volumes. */
export const HIBERNATION = 'cnpg.io/hibernation';
/** The role that owns the tenant's database on the server (the router logs in as it). */
export const OWNER_ROLE = 'app';
/** The name a recovering cluster gives the cluster whose backups it starts from. */
const RECOVERY_SOURCE = 'origin';
/** A tenant without a disk quota gets a volume of this size. */
export const DEFAULT_STORAGE_BYTES = 2 ** 30;

export interface KubernetesSettings {
  namespace: string;
  /** absent: the cluster's default storage class. */
  storageClass?: string;
  /** 1: a primary only; 2 or 3: streaming replicas and automatic failover. */
  instances: 1 | 2 | 3;
  /** absent: the operator's default PostgreSQL image. */
  imageName?: string;
}

export interface BackupTarget {
  /** s3://bucket/prefix: each tenant's backups and WAL go under prefix/<id>/. */
  url: string;
  endpointURL?: string;
  region?: string;
  /** The Secret (in the namespace) with keys ACCESS_KEY_ID and ACCESS_SECRET_KEY. */
  credentialsSecret: string;
}

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string; labels: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

export const ownerSecretName = (id: string): string => `${id}-app`;
export const objectStoreName = (id: string): string => `${id}-store`;
export const scheduledBackupName = (id: string): string => `${id}-backup`;
/** The read-write service CloudNativePG keeps pointing at the primary, where the router dials. */
export const readWriteHost = (id: string, namespace: string): string => `${id}-rw.${namespace}.svc`;
/** The secret CloudNativePG makes with the CA its servers' certificates come from. */
export const caSecretName = (id: string): string => `${id}-ca`;

function metadata(name: string, tenant: Tenant, kube: KubernetesSettings, annotations?: Record<string, string>): KubeObject['metadata'] {
  return {
    name,
    namespace: kube.namespace,
    labels: { [LABEL_MANAGED_BY]: 'pgs', [LABEL_TENANT]: tenant.id },
    ...(annotations ? { annotations } : {}),
  };
}

/** A size in bytes as a Kubernetes quantity: whole MiB or GiB where exact, else bytes. */
export function quantity(bytes: number): string {
  if (bytes % 2 ** 30 === 0) return `${bytes / 2 ** 30}Gi`;
  if (bytes % 2 ** 20 === 0) return `${bytes / 2 ** 20}Mi`;
  return String(bytes);
}

/** Cores as a CPU quantity in millicores (0.5 → "500m"). */
export function cpuQuantity(cpus: number): string {
  return `${Math.max(1, Math.round(cpus * 1000))}m`;
}

/**
 * The tenant's Cluster. Hibernated when pgs keeps the tenant stopped or has
 * suspended it (`suspended`); its limits are the pods' requests and limits
 * (memory requested as much as allowed, so the scheduler places it honestly);
 * its disk quota is its volume's size. pgs's record of the tenant rides
 * along as an annotation (TENANT_ANNOTATION).
 */
/**
 * Where a new cluster's data comes from instead of initdb: another tenant's
 * base backup and WAL in the object store (its ObjectStore, its server name
 * there), replayed to a time or to the end of one backup, or to the end of
 * the archive.
 */
export interface RecoverySource {
  objectStore: string;
  serverName: string;
  targetTime?: string;
  backupId?: string;
}

/**
 * The name the tenant's base backups and WAL have in its object store: its id,
 * or, after a restore under the same id, id-<generation> (a new line of WAL
 * beside the one it came from, which the plugin will not overwrite).
 */
export const archiveServerName = (tenant: Pick<Tenant, 'id' | 'generation'>): string => (tenant.generation ? `${tenant.id}-${tenant.generation}` : tenant.id);

/** An on-demand base backup of the tenant's cluster through the plugin, named <id>-<stamp>. */
export function tenantBackup(tenant: Tenant, kube: KubernetesSettings, stamp: string, reason: string): KubeObject {
  return {
    apiVersion: CNPG_API,
    kind: 'Backup',
    metadata: metadata(`${tenant.id}-${stamp}`, tenant, kube, { [BACKUP_REASON]: reason }),
    spec: { cluster: { name: tenant.id }, method: 'plugin', pluginConfiguration: { name: BARMAN_PLUGIN } },
  };
}

/** On a tenant's Secret, the name of its database on the server when it is not its id (kept with the login after a removal). */
export const DATABASE_ANNOTATION = 'pgs.sysnee.io/database';

/** Why pgs asked for a backup (manual, pre-suspend), on the Backup. */
export const BACKUP_REASON = 'pgs.sysnee.io/reason';

export function tenantCluster(tenant: Tenant, kube: KubernetesSettings, options: { suspended: boolean; backup?: BackupTarget; recovery?: RecoverySource }): KubeObject {
  const annotations: Record<string, string> = {
    [TENANT_ANNOTATION]: JSON.stringify(tenant),
    [HIBERNATION]: tenant.wanted === 'stopped' || options.suspended ? 'on' : 'off',
  };
  const limits: Record<string, string> = {};
  if (tenant.memoryBytes !== undefined) limits.memory = quantity(tenant.memoryBytes);
  if (tenant.cpus !== undefined) limits.cpu = cpuQuantity(tenant.cpus);
  const spec: Record<string, unknown> = {
    instances: kube.instances,
    ...(kube.imageName ? { imageName: kube.imageName } : {}),
    enableSuperuserAccess: false,
    storage: {
      size: quantity(tenant.diskBytes ?? DEFAULT_STORAGE_BYTES),
      ...(kube.storageClass ? { storageClass: kube.storageClass } : {}),
    },
    ...(Object.keys(limits).length > 0 ? { resources: { requests: { ...limits }, limits } } : {}),
    postgresql: {
      // CloudNativePG takes every parameter as a string.
      parameters: { max_connections: String(tenant.maxConnections) },
    },
    bootstrap: options.recovery
      ? {
        recovery: {
          source: RECOVERY_SOURCE,
          // The restored data holds its source's database, under its source's name.
          database: tenant.database ?? tenant.id,
          owner: OWNER_ROLE,
          secret: { name: ownerSecretName(tenant.id) },
          ...(options.recovery.targetTime || options.recovery.backupId ? {
            recoveryTarget: {
              ...(options.recovery.targetTime ? { targetTime: options.recovery.targetTime } : {}),
              ...(options.recovery.backupId ? { backupID: options.recovery.backupId } : {}),
            },
          } : {}),
        },
      }
      : {
        initdb: {
          database: tenant.id,
          owner: OWNER_ROLE,
          secret: { name: ownerSecretName(tenant.id) },
          dataChecksums: true,
        },
      },
  };
  if (options.recovery) {
    spec.externalClusters = [{
      name: RECOVERY_SOURCE,
      plugin: { name: BARMAN_PLUGIN, parameters: { barmanObjectName: options.recovery.objectStore, serverName: options.recovery.serverName } },
    }];
  }
  if (options.backup) {
    spec.plugins = [{ name: BARMAN_PLUGIN, isWALArchiver: true, parameters: { barmanObjectName: objectStoreName(tenant.id), serverName: archiveServerName(tenant) } }];
  }
  return { apiVersion: CNPG_API, kind: 'Cluster', metadata: metadata(tenant.id, tenant, kube, annotations), spec };
}

/**
 * The owner's credentials (a basic-auth Secret, as CloudNativePG's initdb
 * wants) and the client's SCRAM verifier, which the router checks logins
 * against. `ownerPassword` is random, made by pgs, never shown to anyone.
 */
export function ownerSecret(tenant: Tenant, kube: KubernetesSettings, ownerPassword: string, clientVerifier: string): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: metadata(ownerSecretName(tenant.id), tenant, kube, tenant.database ? { [DATABASE_ANNOTATION]: tenant.database } : undefined),
    type: 'kubernetes.io/basic-auth',
    stringData: { username: OWNER_ROLE, password: ownerPassword, 'client-verifier': clientVerifier },
  };
}

/** Where the tenant's base backups and WAL go: its own path under the target's prefix. */
export function tenantObjectStore(tenant: Tenant, kube: KubernetesSettings, backup: BackupTarget, retainDays = 30): KubeObject {
  const destination = `${backup.url.replace(/\/+$/, '')}/${tenant.id}`;
  const key = (name: string) => ({ name: backup.credentialsSecret, key: name });
  return {
    apiVersion: BARMAN_API,
    kind: 'ObjectStore',
    metadata: metadata(objectStoreName(tenant.id), tenant, kube),
    spec: {
      configuration: {
        destinationPath: destination,
        ...(backup.endpointURL ? { endpointURL: backup.endpointURL } : {}),
        s3Credentials: {
          accessKeyId: key('ACCESS_KEY_ID'),
          secretAccessKey: key('ACCESS_SECRET_KEY'),
          ...(backup.region ? { region: key('REGION') } : {}),
        },
        wal: { compression: 'gzip' },
      },
      retentionPolicy: `${retainDays}d`,
    },
  };
}

/** Six-field cron lines (seconds first), as CloudNativePG reads them. */
const SCHEDULES = { hourly: '0 0 * * * *', daily: '0 0 3 * * *' } as const;

/**
 * The tenant's scheduled base backups through the plugin; undefined when its
 * schedule is off. Suspended with the tenant: a schedule that fires for a
 * hibernated Cluster fails at every run.
 */
export function tenantScheduledBackup(tenant: Tenant, kube: KubernetesSettings, options: { suspended: boolean }): KubeObject | undefined {
  const schedule = tenant.backupSchedule ?? 'daily';
  if (schedule === 'off') return undefined;
  return {
    apiVersion: CNPG_API,
    kind: 'ScheduledBackup',
    metadata: metadata(scheduledBackupName(tenant.id), tenant, kube),
    spec: {
      schedule: SCHEDULES[schedule],
      cluster: { name: tenant.id },
      method: 'plugin',
      pluginConfiguration: { name: BARMAN_PLUGIN },
      backupOwnerReference: 'cluster',
      suspend: tenant.wanted === 'stopped' || options.suspended,
    },
  };
}

/** Everything the runtime keeps for one tenant, in the order to apply them. */
export function tenantObjects(tenant: Tenant, kube: KubernetesSettings, options: { suspended: boolean; backup?: BackupTarget; recovery?: RecoverySource; ownerPassword: string; clientVerifier: string; objectStoreExists?: boolean; secretExists?: boolean }): KubeObject[] {
  const objects = options.secretExists ? [] : [ownerSecret(tenant, kube, options.ownerPassword, options.clientVerifier)];
  if (options.backup && !options.objectStoreExists) objects.push(tenantObjectStore(tenant, kube, options.backup));
  objects.push(tenantCluster(tenant, kube, options));
  const scheduled = options.backup ? tenantScheduledBackup(tenant, kube, options) : undefined;
  if (scheduled) objects.push(scheduled);
  return objects;
}
