import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Tenant } from '../catalog/schema.js';
import { DEFAULT_BACKUP_RETAIN } from '../catalog/schema.js';
import { PgsError, errnoCode, isPgsError } from '../core/errors.js';
import { fsyncDir } from '../core/files.js';
import {
  BACKUP_META, GENERATION_META, STAMP_PATTERN, backupsRoot, baseDir, generationDir, newStamp, tenantBackupsDir, walDir,
  type BackupMeta, type GenerationMeta,
} from '../backup/layout.js';
import { MANIFEST_FILE, parseManifest, verifyTar } from '../backup/manifest.js';
import { parseBackupMeta, parseGenerationMeta } from '../backup/records.js';
import { SEGMENT_NAME, firstGap, parseLsn, segmentName, segmentNumber } from '../backup/wal.js';
import type { MaterializedFolder, TenantRuntime, TenantServerSpec } from '../runtime/runtime.js';

/**
 * A host's backups of its tenants: taking base backups into the local
 * repository (backups/<tenant>/<generation>/), reading what is there, the
 * restorable window, gaps in the WAL archive, and retention. It knows
 * nothing of the daemon: the caller keeps the tenant's server as it is
 * while a backup runs.
 */
export interface RestorableRange {
  generation: string;
  from: string;
  to: string;
  /** The first WAL segment missing from this generation's archive: nothing after it can be replayed. */
  gap?: string;
}

export interface BackupList {
  backups: BackupMeta[];
  /** Earliest and latest point in time a restore can reach; null when there is no backup. */
  window: { earliest: string; latest: string } | null;
  ranges: RestorableRange[];
}

/** Where a restore starts and how far it replays. */
export interface RestorePlan {
  backup: BackupMeta;
  backupDir: string;
  /** ISO time, 'immediate' or 'latest' (see RecoverySettings). */
  target: string;
  /** The archive the WAL comes from. */
  walDir: string;
}

export class Backups {
  private readonly runtime: TenantRuntime;
  private readonly dataRoot: string;

  constructor(runtime: TenantRuntime, dataRoot: string) {
    this.runtime = runtime;
    this.dataRoot = dataRoot;
  }

  /**
   * Takes a base backup of the tenant into its current generation: written
   * under a `.tmp-` name and renamed when whole, so that a backup that
   * failed or was cut short (the daemon killed) is never listed; its
   * leftovers are deleted here on failure, and by `cleanup` at the next start.
   */
  async take(tenant: Tenant, reason: string, onStart?: (dir: string) => void, note?: string): Promise<BackupMeta> {
    if (tenant.generation === undefined) throw new PgsError('INVALID_STATE', `tenant ${tenant.id} has no WAL archive yet; the daemon gives it one when it starts`);
    const id = newStamp();
    const base = baseDir(this.dataRoot, tenant.id, tenant.generation);
    const partial = path.join(base, `.tmp-${id}`);
    const done = path.join(base, id);
    await this.runtime.mkdirOwnedPath(base);
    const startedAt = new Date().toISOString();
    onStart?.(partial);
    try {
      const result = await this.runtime.backup(tenant.id, partial, `pgs ${tenant.id} ${id}`);
      // Checked before it is listed: every file the manifest names, in the tar, with its checksum.
      const manifest = parseManifest(await fs.readFile(path.join(partial, MANIFEST_FILE), 'utf8'), `the manifest of backup ${id}`);
      await verifyTar(path.join(partial, 'base.tar'), manifest, id);
      const bytes = (await fs.stat(path.join(partial, 'base.tar'))).size;
      const meta: BackupMeta = {
        format: 1, id, tenant: tenant.id, generation: tenant.generation, kind: result.kind, reason,
        startedAt, finishedAt: new Date().toISOString(),
        startLsn: result.startLsn, endLsn: result.endLsn, timeline: result.timeline, afterLsn: result.afterLsn,
        bytes, ...(note !== undefined ? { note } : {}), tenantEntry: tenant,
      };
      await this.runtime.writeOwnedFile(partial, BACKUP_META, `${JSON.stringify(meta, null, 2)}\n`);
      await fs.rename(partial, done);
      await fsyncDir(base);
      return meta;
    } catch (err) {
      await this.runtime.removeOwned(partial).catch(() => undefined);
      if (err instanceof PgsError) throw err;
      const why = errnoCode(err) === 'ENOSPC' ? 'the disk is full' : (err as Error).message;
      throw new PgsError('BACKUP_FAILED', `the backup of ${tenant.id} failed: ${why}`);
    }
  }

  /** Deletes what backups cut short left (`.tmp-*` folders); at daemon start. */
  async cleanup(): Promise<void> {
    for (const id of await this.tenantsWithBackups()) {
      for (const generation of await this.generationNames(id)) {
        const base = baseDir(this.dataRoot, id, generation);
        for (const name of await fs.readdir(base).catch(() => [] as string[])) {
          if (name.startsWith('.tmp-')) await this.runtime.removeOwned(path.join(base, name));
        }
      }
    }
  }

  async tenantsWithBackups(): Promise<string[]> {
    return (await fs.readdir(backupsRoot(this.dataRoot)).catch(() => [] as string[])).filter((n) => !n.startsWith('.'));
  }

  async generationNames(id: string): Promise<string[]> {
    return (await fs.readdir(tenantBackupsDir(this.dataRoot, id)).catch(() => [] as string[])).filter((n) => STAMP_PATTERN.test(n)).sort();
  }

  async generationMeta(id: string, generation: string): Promise<GenerationMeta | undefined> {
    try {
      const file = path.join(generationDir(this.dataRoot, id, generation), GENERATION_META);
      return parseGenerationMeta(await fs.readFile(file, 'utf8'), file, { tenant: id, generation });
    } catch {
      return undefined;
    }
  }

  /** Every whole backup of the tenant, oldest first. */
  async list(id: string): Promise<BackupMeta[]> {
    const out: BackupMeta[] = [];
    for (const generation of await this.generationNames(id)) {
      const base = baseDir(this.dataRoot, id, generation);
      for (const name of await fs.readdir(base).catch(() => [] as string[])) {
        if (!STAMP_PATTERN.test(name)) continue;
        try {
          const file = path.join(base, name, BACKUP_META);
          out.push(parseBackupMeta(await fs.readFile(file, 'utf8'), file, { tenant: id, generation, id: name }));
        } catch {
          // Not whole (no metadata), or a record that is not pgs's (from a bucket): never listed, never restored from.
        }
      }
    }
    return out.sort((a, b) => (a.finishedAt < b.finishedAt ? -1 : a.finishedAt > b.finishedAt ? 1 : 0));
  }

  backupDir(meta: Pick<BackupMeta, 'tenant' | 'generation' | 'id'>): string {
    return path.join(baseDir(this.dataRoot, meta.tenant, meta.generation), meta.id);
  }

  /** The archived WAL segments of a generation, with when each was archived. */
  async segments(id: string, generation: string): Promise<{ name: string; at: number }[]> {
    const dir = walDir(this.dataRoot, id, generation);
    const names = (await fs.readdir(dir).catch(() => [] as string[])).filter((n) => SEGMENT_NAME.test(n));
    return Promise.all(names.map(async (name) => ({ name, at: (await fs.stat(path.join(dir, name))).mtimeMs })));
  }

  /**
   * The backups and how far a restore can reach. In each generation: from its
   * oldest backup's end to its newest archived segment, or to the segment
   * before a gap. `live`: the tenant's current generation, whose server pgs can
   * make archive everything before a restore: it reaches up to now.
   */
  async describe(id: string, live?: string): Promise<BackupList> {
    const backups = await this.list(id);
    const ranges: RestorableRange[] = [];
    for (const generation of await this.generationNames(id)) {
      const own = backups.filter((b) => b.generation === generation);
      const first = own[0];
      if (!first) continue;
      const segments = await this.segments(id, generation);
      const startSegment = segmentName(first.timeline, parseLsn(first.startLsn));
      const gap = firstGap(segments.map((s) => s.name), startSegment);
      const before = gap === undefined ? segments : segments.filter((s) => segmentNumber(s.name) < segmentNumber(gap));
      const archivedUntil = Math.max(Date.parse(own[own.length - 1]?.finishedAt ?? first.finishedAt), ...before.map((s) => s.at));
      const to = generation === live && gap === undefined ? new Date() : new Date(archivedUntil);
      ranges.push({ generation, from: first.finishedAt, to: to.toISOString(), ...(gap !== undefined ? { gap } : {}) });
    }
    const window = ranges.length === 0 ? null : { earliest: ranges[0]?.from ?? '', latest: ranges.reduce((a, r) => (r.to > a ? r.to : a), '') };
    return { backups, window, ranges };
  }

  /**
   * What a restore to `time` (or from `backupId`, or to the latest point) starts
   * from: the newest backup that ended at or before the time, in the newest
   * generation that reaches it. A time outside every range is refused, naming them.
   */
  async plan(id: string, choice: { backup?: string; time?: Date }, live?: string): Promise<RestorePlan> {
    const list = await this.describe(id, live);
    if (list.backups.length === 0) throw new PgsError('BACKUP_NOT_FOUND', `tenant ${id} has no backup yet ("pgs backup ${id}" takes one)`);
    const planFor = (backup: BackupMeta, target: string): RestorePlan => ({
      backup, backupDir: this.backupDir(backup), target, walDir: walDir(this.dataRoot, id, backup.generation),
    });
    if (choice.backup !== undefined) {
      const backup = list.backups.find((b) => b.id === choice.backup);
      if (!backup) throw new PgsError('BACKUP_NOT_FOUND', `tenant ${id} has no backup ${choice.backup} (see "pgs backups ${id}")`);
      if (choice.time === undefined) return planFor(backup, 'immediate');
    }
    if (choice.time === undefined) {
      const newest = list.backups[list.backups.length - 1] as BackupMeta;
      const range = list.ranges.find((r) => r.generation === newest.generation);
      if (range?.gap !== undefined) {
        throw new PgsError('ARCHIVE_GAP', `the WAL archive of ${id} misses segment ${range.gap}: the latest point it reaches is ${range.to}; restore with --time at or before it, or --backup ${newest.id}`);
      }
      return planFor(newest, 'latest');
    }
    const at = choice.time.toISOString();
    const windowText = list.ranges.map((r) => `${r.from} to ${r.to}${r.gap ? ` (archive gap at ${r.gap})` : ''}`).join(', ');
    const ranges = [...list.ranges].reverse().filter((r) => r.from <= at && at <= r.to);
    for (const range of ranges) {
      const candidates = list.backups.filter((b) => b.generation === range.generation && b.finishedAt <= at && (choice.backup === undefined || b.id === choice.backup));
      const backup = candidates[candidates.length - 1];
      if (backup) return planFor(backup, at);
    }
    throw new PgsError('OUT_OF_WINDOW', `${at} is outside what the backups of ${id} can restore: ${windowText}`);
  }

  /**
   * Keeps the newest `retain` backups; deletes older ones, the WAL that only
   * they needed, and generations left without a backup (but the current one).
   * Returns the backups deleted and every path deleted (relative to the backups tree).
   */
  async prune(tenant: Tenant): Promise<{ backups: string[]; removed: string[] }> {
    const retain = tenant.backupRetain ?? DEFAULT_BACKUP_RETAIN;
    const backups = await this.list(tenant.id);
    const doomed = backups.slice(0, Math.max(0, backups.length - retain));
    const removed: string[] = [];
    for (const b of doomed) {
      await this.runtime.removeOwned(this.backupDir(b));
      removed.push(`${b.tenant}/${b.generation}/base/${b.id}`);
    }
    const kept = backups.slice(doomed.length);
    for (const generation of await this.generationNames(tenant.id)) {
      const own = kept.filter((b) => b.generation === generation);
      const oldest = own[0];
      if (!oldest) {
        if (generation !== tenant.generation) {
          await this.runtime.removeOwned(generationDir(this.dataRoot, tenant.id, generation));
          removed.push(`${tenant.id}/${generation}`);
        }
        continue;
      }
      const keepFrom = segmentNumber(segmentName(oldest.timeline, parseLsn(oldest.startLsn)));
      const dir = walDir(this.dataRoot, tenant.id, generation);
      for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
        const segment = name.slice(0, 24);
        if (!SEGMENT_NAME.test(segment) || name.endsWith('.history')) continue;
        if (segmentNumber(segment) < keepFrom) {
          await fs.rm(path.join(dir, name), { force: true });
          removed.push(`${tenant.id}/${generation}/wal/${name}`);
        }
      }
    }
    return { backups: doomed.map((b) => b.id), removed };
  }
}

/** PostgreSQL's words when a time target lies after the last commit in the WAL it could read. */
const TARGET_NOT_REACHED = 'recovery ended before configured recovery target was reached';

/**
 * Starts the server of a folder made from `plan`'s backup as a restore:
 * it replays the archive (and `extraWal`) to the target and becomes a
 * primary on a new timeline; then its settings lose the recovery part.
 * A time after the last commit the WAL holds means the WAL's end is that
 * time's state: PostgreSQL stops with an error there, and the replay then
 * goes on to the end. An offline backup (a clean shutdown's files, no
 * backup_label) is whole as it is: to its end means its own WAL and none of
 * the archive's (PostgreSQL would call 'immediate' unreached, or replay past it).
 *
 * Until its roles and functions are checked (runtime.neutralize) only pgs may
 * log in; then the server opens to clients. Returns what the check took away.
 */
export interface RecoverOptions {
  /** More WAL to replay after the archive's (a stopped server's own). */
  extraWal?: string | undefined;
  /** What materialize said of the folder. */
  folder?: MaterializedFolder;
  /** Runs after the check and before clients may log in (a database renamed, a password set back). */
  beforeOpen?: () => Promise<void>;
  /** Called as the restored server starts, and once it is a primary (the kill -9 tests' crash points). */
  whileStarting?: () => void;
  afterStart?: () => void;
}

export async function recover(runtime: TenantRuntime, spec: TenantServerSpec, plan: Pick<RestorePlan, 'walDir' | 'target'>, options: RecoverOptions = {}): Promise<string[]> {
  const { extraWal, folder, beforeOpen, whileStarting, afterStart } = options;
  // No folder at all: the WAL the backup carries in pg_wal is all there is to replay (a clone, an import).
  let walDirs = [plan.walDir, extraWal].filter((d): d is string => d !== undefined && d !== '');
  let target = plan.target;
  if (target === 'immediate' && folder?.online === false) {
    walDirs = [];
    target = 'latest';
  }
  const closed: TenantServerSpec = { ...spec, adminOnly: true };
  try {
    const started = runtime.start({ ...closed, recovery: { walDirs, target } });
    whileStarting?.();
    await started;
  } catch (err) {
    if (!(isPgsError(err, 'PG_START_FAILED') && err.message.includes(TARGET_NOT_REACHED) && target !== 'immediate' && target !== 'latest')) throw err;
    await runtime.start({ ...closed, recovery: { walDirs, target: 'latest' } });
  }
  afterStart?.();
  let taken: string[];
  try {
    taken = await runtime.neutralize(spec.id);
    await beforeOpen?.();
  } catch (err) {
    await runtime.stop(spec.id, { immediate: true }).catch(() => undefined);
    throw err;
  }
  // The recovery settings are spent once it is a primary: the file loses them, unread until the next start.
  await runtime.configureArchive(spec, { reload: false });
  await runtime.updateAuthFiles(spec.id);
  return taken;
}
