import type { Progress } from '../api/routes.js';
import type * as S from '../api/schemas.js';
import { generatePassword } from '../auth/scram.js';
import { newStamp } from '../backup/layout.js';
import { assertTenantId, newSuffix } from '../catalog/ids.js';
import type { Settings, Tenant } from '../catalog/schema.js';
import { PgsError } from '../core/errors.js';
import type { Log } from '../core/log.js';
import { parsePointInTime } from '../core/time.js';
import { RESOURCES, type KubeClient, type KubeResource } from '../runtime/kubernetes/client.js';
import { DATABASE_ANNOTATION, ownerSecretName } from '../runtime/kubernetes/objects.js';
import { S3_SECRET } from '../runtime/kubernetes/probe.js';
import type { KubeTenants } from '../runtime/kubernetes/tenants.js';
import type { EventLog } from '../telemetry/events.js';
import { secretValue } from './kube-backends.js';
import { backupJson, type KubeBackups } from './kube-backups.js';
import type { KubeRecords } from './kube-records.js';
import type { BackupProvider, MadeTenant } from './parts.js';

export interface KubeBackupProviderDeps {
  client: KubeClient;
  tenants: KubeTenants;
  records: KubeRecords;
  /** Undefined without a backup target: every call says how to set one. */
  backups: KubeBackups | undefined;
  events: EventLog;
  log: Log;
  settings: () => Settings;
  readyTimeoutMs: number;
}

/**
 * Backups on Kubernetes: CloudNativePG's barman plugin archives WAL and takes
 * base backups into the object store; a restore or branch is a new cluster
 * that recovers from it. A removed tenant's login Secret is kept with its
 * backups, so that it comes back under its id with its login.
 */
export class KubeBackupProvider implements BackupProvider {
  private readonly deps: KubeBackupProviderDeps;

  constructor(deps: KubeBackupProviderDeps) {
    this.deps = deps;
  }

  private need(): KubeBackups {
    if (!this.deps.backups) throw new PgsError('INVALID_STATE', `no backup target is set: pgs setup --backup-target s3://BUCKET/PREFIX (with the Secret ${S3_SECRET} in namespace ${this.deps.client.namespace}: ACCESS_KEY_ID, ACCESS_SECRET_KEY)`);
    return this.deps.backups;
  }

  async backup(id: string, progress?: Progress): Promise<S.BackupJson> {
    const backups = this.need();
    const tenant = this.deps.records.held(id);
    progress?.('backing up');
    const made = backupJson(id, await backups.backupNow(tenant, 'manual', this.deps.readyTimeoutMs));
    if (!made) throw new PgsError('BACKUP_FAILED', `the backup of tenant ${id} finished but the operator reports no times for it`);
    return made;
  }

  async list(id: string): Promise<S.BackupListJson> {
    assertTenantId(id);
    return this.need().list(id);
  }

  /** Deletes what is kept of a removed tenant: its files in the object store, its Backups, its ObjectStore, its login. */
  async deleteAll(id: string): Promise<void> {
    const backups = this.need();
    assertTenantId(id);
    if (this.deps.tenants.view(id)) throw new PgsError('INVALID_STATE', `tenant ${id} exists: its backups are deleted only after "pgs remove ${id}"`);
    const s = this.deps.settings();
    const files = await backups.deleteAll(id, { url: s.backupTarget as string, ...(s.s3Endpoint ? { endpoint: s.s3Endpoint } : {}), ...(s.s3Region ? { region: s.s3Region } : {}) }, S3_SECRET);
    this.deps.log.info('deleted the backups of a removed tenant', { tenant: id, files });
  }

  /**
   * A new cluster from the tenant's backups: `as` names a new tenant (the one
   * it comes from stays as it is); without it, a removed tenant comes back
   * under its id, with its login.
   */
  async restore(id: string, request: S.RestoreRequest, progress?: Progress): Promise<MadeTenant> {
    const { client, tenants, records, log, events, readyTimeoutMs } = this.deps;
    const backups = this.need();
    assertTenantId(id);
    const target = request.as ?? id;
    assertTenantId(target);
    const existing = tenants.view(id)?.tenant;
    if (existing && target === id) {
      throw new PgsError('INVALID_STATE', `tenant ${id} exists: on the kubernetes runtime a restore makes a new cluster. Restore it as another tenant (pgs restore ${id} --as ${id}-restored), move its clients, then pgs remove ${id}`);
    }
    if (!existing && target !== id) {
      // Only a removal with backups on keeps the login Secret: without it there is nothing to restore under the id either.
      if (!(await client.get(RESOURCES.secrets, ownerSecretName(id)))) throw new PgsError('TENANT_NOT_FOUND', `no tenant ${id}, and no backups of one (see "pgs list")`);
      throw new PgsError('INVALID_STATE', `tenant ${id} was removed: restore it under its own id first (pgs restore ${id})`);
    }
    if (tenants.view(target)) throw new PgsError('TENANT_EXISTS', `tenant ${target} already exists`);
    const time = request.time !== undefined ? parsePointInTime(request.time, 'time', 'INVALID_REQUEST', 'time').date.toISOString() : undefined;
    const source = await backups.source(id, existing, { ...(request.backup !== undefined ? { backup: request.backup } : {}), ...(time !== undefined ? { time } : {}) });
    // The login: a branch keeps its source's; a removed tenant's comes back from the Secret its removal kept.
    const kept = await client.get<KubeResource & { data?: Record<string, string> }>(RESOURCES.secrets, ownerSecretName(id));
    const clientVerifier = secretValue(kept, 'client-verifier');
    if (!clientVerifier) throw new PgsError('BACKUP_NOT_FOUND', `the login of tenant ${id} is gone (no Secret ${ownerSecretName(id)})`);
    const ownerPassword = existing ? generatePassword() : secretValue(kept, 'password') ?? generatePassword();
    const tenant: Tenant = {
      ...(existing ?? { maxConnections: this.deps.settings().defaultMaxConnections }),
      id: target,
      suffix: newSuffix(),
      access: 'enabled',
      wanted: 'running',
      createdAt: new Date().toISOString(),
      // Back under its own id, it archives as a new server beside the one it came from.
      ...(existing ? {} : { generation: newStamp() }),
      // Its database on the server is its source's, under that name: the router maps clients' requests for the id to it.
      ...(existing && (existing.database ?? existing.id) !== target ? { database: existing.database ?? existing.id } : {}),
      // A removed tenant's kept login says what its database was called.
      ...(!existing && kept?.metadata.annotations?.[DATABASE_ANNOTATION] ? { database: kept.metadata.annotations[DATABASE_ANNOTATION] } : {}),
    } as Tenant;
    if (existing) delete (tenant as { generation?: string }).generation;
    progress?.('restoring');
    // A removed tenant's login Secret is kept as it is (a failed restore must not lose it).
    await tenants.create(tenant, { ownerPassword, clientVerifier }, source, { secretExists: !existing });
    try {
      await tenants.awaitHealthy(target, readyTimeoutMs);
    } catch (err) {
      await tenants.remove(target, { volumes: true, keepBackups: target === id }).catch((e: Error) => log.warn('could not remove a failed restore', { tenant: target, error: e.message }));
      throw err;
    }
    events.emit('created', target, { reason: 'restored' });
    // The record as written, whether or not this pod's watch has brought it back yet.
    return { tenant: await records.fresh(target) };
  }

  branch(id: string, request: S.BranchRequest, progress?: Progress): Promise<MadeTenant> {
    return this.restore(id, { as: request.id, ...(request.at !== undefined ? { time: request.at } : {}) }, progress);
  }
}
