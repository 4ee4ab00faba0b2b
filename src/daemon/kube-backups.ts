/**
 * Backups of tenants that are CloudNativePG clusters, through the
 * barman-cloud plugin: each tenant's cluster archives its WAL to its own
 * path of the object store, and base backups are `Backup` objects (on a
 * schedule, on demand, and before an idle tenant is hibernated when its data
 * changed since its last one). A restore or a branch is a new cluster
 * bootstrapped from the object store (`bootstrap.recovery`), replayed to a
 * time or to the end of a backup; the tenant it came from is left as it is.
 */
import { createHash } from 'node:crypto';
import type * as S from '../api/schemas.js';
import { newStamp } from '../backup/layout.js';
import type { Tenant } from '../catalog/schema.js';
import { PgsError } from '../core/errors.js';
import { S3Client, parseS3Url } from '../backup/s3.js';
import { Informer, RESOURCES, type KubeClient, type KubeResource } from '../runtime/kubernetes/client.js';
import {
  BACKUP_REASON, archiveServerName, objectStoreName, ownerSecretName, tenantBackup, type KubernetesSettings, type RecoverySource,
} from '../runtime/kubernetes/objects.js';
import { secretValue } from './kube-backends.js';

export type BackupObject = KubeResource & {
  spec?: { cluster?: { name?: string } };
  status?: { phase?: string; startedAt?: string; stoppedAt?: string; beginLSN?: string; endLSN?: string; backupId?: string; error?: string; serverName?: string };
};
type ObjectStore = KubeResource & { status?: { serverRecoveryWindow?: Record<string, { firstRecoverabilityPoint?: string; lastSuccessfulBackupTime?: string; lastFailedBackupTime?: string }> } };

const STAMP = /-(\d{8}-\d{6}-[0-9a-f]{4})$/;

/**
 * A Backup's id as pgs shows it (YYYYMMDD-HHMMSS-xxxx): from its name when
 * pgs made it; for one the operator made from the schedule, from its start
 * and its name.
 */
export function backupId(b: BackupObject): string | undefined {
  const named = STAMP.exec(b.metadata.name)?.[1];
  if (named) return named;
  const at = b.status?.startedAt ?? b.metadata.creationTimestamp;
  if (!at || Number.isNaN(Date.parse(at))) return undefined;
  const iso = new Date(at).toISOString();
  return `${iso.slice(0, 10).replaceAll('-', '')}-${iso.slice(11, 19).replaceAll(':', '')}-${createHash('sha256').update(b.metadata.name).digest('hex').slice(0, 4)}`;
}

/** A Backup's phase as CloudNativePG writes it. */
const done = (b: BackupObject) => b.status?.phase === 'completed';
const failed = (b: BackupObject) => b.status?.phase === 'failed';

/** After a backup before hibernation fails, the next try waits this long (the tenant stays up meanwhile). */
const PRE_SUSPEND_RETRY_MS = 60 * 60_000;

export class KubeBackups {
  private readonly client: KubeClient;
  private readonly kube: KubernetesSettings;
  /** Every Backup of the namespace, kept by a watch (the operator's scheduled ones too). */
  private readonly watch: Informer<BackupObject>;
  /** The newest finished backup of each cluster (ISO time), for lists. */
  readonly newest = new Map<string, string>();

  constructor(client: KubeClient, kube: KubernetesSettings) {
    this.client = client;
    this.kube = kube;
    this.watch = new Informer<BackupObject>(client, RESOURCES.backups, () => this.noteNewest());
  }

  start(): Promise<void> {
    return this.watch.start().then(() => this.noteNewest());
  }

  stop(): void {
    this.watch.stop();
  }

  private noteNewest(): void {
    this.newest.clear();
    for (const b of this.watch.cache.values()) {
      const id = b.spec?.cluster?.name;
      const at = done(b) ? b.status?.stoppedAt : undefined;
      if (id && at && at > (this.newest.get(id) ?? '')) this.newest.set(id, at);
    }
  }

  /** The tenant's Backups (its cluster's), oldest first, as the watch last saw them. */
  backupsOf(id: string): BackupObject[] {
    return [...this.watch.cache.values()].filter((b) => b.spec?.cluster?.name === id)
      .sort((a, b) => (a.metadata.creationTimestamp ?? '').localeCompare(b.metadata.creationTimestamp ?? '') || a.metadata.name.localeCompare(b.metadata.name));
  }

  /** Asks for a base backup now; with `waitMs`, waits until it is done (BACKUP_FAILED with the operator's error). */
  async backupNow(tenant: Tenant, reason: string, waitMs?: number): Promise<BackupObject> {
    const made = await this.client.create<BackupObject>(RESOURCES.backups, tenantBackup(tenant, this.kube, newStamp(), reason) as unknown as BackupObject);
    if (waitMs === undefined) return made;
    const deadline = Date.now() + waitMs;
    for (;;) {
      const now = await this.client.get<BackupObject>(RESOURCES.backups, made.metadata.name);
      if (now && done(now)) return now;
      if (!now || failed(now)) throw new PgsError('BACKUP_FAILED', `the backup of tenant ${tenant.id} failed: ${now?.status?.error ?? 'its Backup object is gone'}`);
      if (Date.now() > deadline) throw new PgsError('BACKUP_FAILED', `the backup of tenant ${tenant.id} (${made.metadata.name}) is not done after ${Math.round(waitMs / 1000)} s: phase "${now.status?.phase ?? 'pending'}"; it goes on, see pgs backups ${tenant.id}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /**
   * Whether an idle tenant may be hibernated now: its newest base backup is
   * newer than its last client. If not, one is asked for (unless one is under
   * way) and the answer is no: the tenant is hibernated at a later look.
   */
  async readyToHibernate(tenant: Tenant, lastActive: number, now = Date.now()): Promise<boolean> {
    const backups = this.backupsOf(tenant.id);
    const newest = backups.filter(done).at(-1);
    if (newest?.status?.stoppedAt && Date.parse(newest.status.stoppedAt) >= lastActive) return true;
    if (backups.some((b) => !done(b) && !failed(b))) return false; // one is under way
    // One that failed lately is not asked again at every look: the tenant stays up until one succeeds.
    const lastFailed = backups.filter((b) => failed(b) && b.metadata.annotations?.[BACKUP_REASON] === 'pre-suspend').at(-1);
    if (lastFailed && now - Date.parse(lastFailed.metadata.creationTimestamp ?? '') < PRE_SUSPEND_RETRY_MS) return false;
    await this.backupNow(tenant, 'pre-suspend');
    return false;
  }

  async list(id: string, serverName?: string): Promise<S.BackupListJson> {
    const all = this.backupsOf(id);
    const backups = all.filter(done).map((b) => backupJson(id, b)).filter((b): b is S.BackupJson => b !== undefined);
    const last = all.filter(failed).at(-1);
    const window = await this.window(id, serverName);
    return {
      tenant: id,
      backups,
      window,
      ranges: window ? [{ generation: 'archive', from: window.earliest, to: window.latest }] : [],
      lastFailure: last ? { at: last.status?.stoppedAt ?? last.metadata.creationTimestamp ?? new Date().toISOString(), error: last.status?.error ?? 'failed' } : null,
    };
  }

  /** What the plugin says can be restored: from the first recoverability point to the newest archived WAL (taken as now). */
  async window(id: string, serverName?: string): Promise<S.BackupListJson['window']> {
    const store = await this.client.get<ObjectStore>(RESOURCES.objectStores, objectStoreName(id));
    const all = store?.status?.serverRecoveryWindow ?? {};
    // The window of the server a restore will read, when it is known; else the widest.
    const windows = serverName !== undefined ? [all[serverName] ?? {}] : Object.values(all);
    const earliest = windows.map((w) => w.firstRecoverabilityPoint).filter((t): t is string => t !== undefined).sort()[0];
    return earliest ? { earliest, latest: new Date().toISOString() } : null;
  }

  /**
   * Where a restore of `origin` starts: its object store and its name there
   * (for a removed tenant, the server whose last backup is newest), with
   * the backup (`backup`: a pgs backup id) or time to stop at.
   */
  async source(origin: string, current: Tenant | undefined, choice: { backup?: string; time?: string }): Promise<RecoverySource> {
    const store = await this.client.get<ObjectStore>(RESOURCES.objectStores, objectStoreName(origin));
    if (!store) throw new PgsError('BACKUP_NOT_FOUND', `tenant ${origin} has no backups in the object store (no ObjectStore ${objectStoreName(origin)})`);
    let serverName = current ? archiveServerName(current) : origin;
    if (!current) {
      const newest = Object.entries(store.status?.serverRecoveryWindow ?? {}).sort(([, a], [, b]) => (a.lastSuccessfulBackupTime ?? '').localeCompare(b.lastSuccessfulBackupTime ?? '')).at(-1);
      if (newest) serverName = newest[0];
    }
    const source: RecoverySource = { objectStore: objectStoreName(origin), serverName };
    if (choice.backup !== undefined) {
      const found = this.backupsOf(origin).find((b) => backupId(b) === choice.backup);
      if (!found || !done(found) || !found.status?.backupId) throw new PgsError('BACKUP_NOT_FOUND', `tenant ${origin} has no finished backup ${choice.backup} (see pgs backups ${origin})`);
      source.backupId = found.status.backupId;
      // A backup of an earlier life of the tenant is under that life's name.
      if (found.status.serverName) source.serverName = found.status.serverName;
    }
    if (choice.time !== undefined) {
      const window = await this.window(origin, source.serverName);
      const at = Date.parse(choice.time);
      if (!window || at < Date.parse(window.earliest) || at > Date.now()) {
        throw new PgsError('OUT_OF_WINDOW', `tenant ${origin} can be restored to a time from ${window?.earliest ?? '(no backup yet)'} to now, not ${choice.time} (see pgs backups ${origin})`);
      }
      source.targetTime = choice.time;
    }
    return source;
  }

  /**
   * Deletes what is kept of a removed tenant: its files in the object store
   * (with the credentials of the Secret the clusters use), its Backup
   * objects, its ObjectStore and its kept login.
   */
  async deleteAll(id: string, target: { url: string; endpoint?: string; region?: string }, credentialsSecret: string): Promise<number> {
    const secret = await this.client.get<KubeResource & { data?: Record<string, string> }>(RESOURCES.secrets, credentialsSecret);
    const accessKeyId = secretValue(secret, 'ACCESS_KEY_ID');
    const secretAccessKey = secretValue(secret, 'ACCESS_SECRET_KEY');
    if (!accessKeyId || !secretAccessKey) throw new PgsError('INVALID_SETTING', `the Secret ${credentialsSecret} has no ACCESS_KEY_ID and ACCESS_SECRET_KEY to delete with`);
    const { bucket, prefix } = parseS3Url(target.url);
    const s3 = new S3Client({ bucket, prefix, region: target.region ?? 'us-east-1', ...(target.endpoint ? { endpoint: target.endpoint } : {}) }, { accessKeyId, secretAccessKey });
    const objects = await s3.list(s3.key(`${id}/`));
    for (const o of objects) await s3.delete(o.key);
    for (const b of this.backupsOf(id)) await this.client.delete(RESOURCES.backups, b.metadata.name);
    await this.client.delete(RESOURCES.objectStores, objectStoreName(id));
    await this.client.delete(RESOURCES.secrets, ownerSecretName(id));
    return objects.length;
  }
}

/** A finished Backup as pgs shows backups; undefined while it has no times. */
export function backupJson(tenant: string, b: BackupObject): S.BackupJson | undefined {
  const id = backupId(b);
  const st = b.status ?? {};
  if (!id || !st.startedAt || !st.stoppedAt) return undefined;
  return {
    id,
    tenant,
    generation: st.serverName ?? tenant,
    kind: 'online',
    reason: b.metadata.annotations?.[BACKUP_REASON] ?? (b.metadata.labels?.['cnpg.io/scheduled-backup'] ? 'scheduled' : 'manual'),
    startedAt: st.startedAt,
    finishedAt: st.stoppedAt,
    startLsn: st.beginLSN ?? '',
    endLsn: st.endLSN ?? '',
    timeline: 1,
    bytes: 0,
  };
}
