import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Tenant } from '../catalog/schema.js';
/** Writing files and folders that the tenant servers' user owns (the runtime does it). */
export interface OwnedFiles {
  mkdirOwnedPath(dir: string): Promise<void>;
  writeOwnedFile(dir: string, name: string, content: string): Promise<void>;
}

/**
 * Where backups live on the host: `<dataRoot>/backups/<tenant>/<generation>/`
 * holds `wal/` (the continuous archive) and `base/<backup>/` (base.tar,
 * backup_manifest, pgs-backup.json).
 *
 * A generation is one unbroken line of WAL. A tenant starts one when it is
 * made, and a new one each time it is restored (its restored server goes on
 * from an older point, on a new timeline): no archive ever holds two
 * histories of the same WAL names, and every tenant made from the one
 * template (all share one system identifier) archives into a folder of its own.
 */
export const BACKUP_META = 'pgs-backup.json';
export const GENERATION_META = 'pgs-generation.json';
export const STAMP_PATTERN = /^\d{8}-\d{6}-[0-9a-f]{4}$/;

export function backupsRoot(dataRoot: string): string {
  return path.join(dataRoot, 'backups');
}

export function tenantBackupsDir(dataRoot: string, id: string): string {
  return path.join(backupsRoot(dataRoot), id);
}

export function generationDir(dataRoot: string, id: string, generation: string): string {
  return path.join(tenantBackupsDir(dataRoot, id), generation);
}

export function walDir(dataRoot: string, id: string, generation: string): string {
  return path.join(generationDir(dataRoot, id, generation), 'wal');
}

export function baseDir(dataRoot: string, id: string, generation: string): string {
  return path.join(generationDir(dataRoot, id, generation), 'base');
}

/** "20261130-061530-a3f9": sorts by time; the random tail keeps two in one second apart. */
export function newStamp(at = new Date()): string {
  const iso = at.toISOString();
  return `${iso.slice(0, 10).replaceAll('-', '')}-${iso.slice(11, 19).replaceAll(':', '')}-${randomBytes(2).toString('hex')}`;
}


export interface BackupMeta {
  format: 1;
  id: string;
  tenant: string;
  generation: string;
  kind: 'online' | 'offline';
  /** manual, scheduled, pre-restore, branch, export */
  reason: string;
  startedAt: string;
  finishedAt: string;
  startLsn: string;
  endLsn: string;
  timeline: number;
  afterLsn: string;
  /** Bytes of base.tar. */
  bytes: number;
  /** What it was taken for, when its reason does not say all: "before restore to backup <id>" (or to a time, or to the latest point). */
  note?: string;
  /** The tenant's catalog entry when the backup was taken (no secret in it). */
  tenantEntry: Tenant;
}

export interface GenerationMeta {
  format: 1;
  tenant: string;
  generation: string;
  createdAt: string;
  /** What it was restored from; absent for a tenant's first generation. */
  origin?: { tenant: string; backup: string; target: string };
}

/** Records which tenant a generation belongs to (and where it came from) in the generation's folder. */
export async function writeGenerationMeta(
  runtime: OwnedFiles,
  dataRoot: string,
  tenant: Pick<Tenant, 'id' | 'generation'>,
  origin?: GenerationMeta['origin'],
): Promise<void> {
  if (tenant.generation === undefined) return;
  const dir = generationDir(dataRoot, tenant.id, tenant.generation);
  await runtime.mkdirOwnedPath(dir);
  const meta: GenerationMeta = { format: 1, tenant: tenant.id, generation: tenant.generation, createdAt: new Date().toISOString(), ...(origin ? { origin } : {}) };
  await runtime.writeOwnedFile(dir, GENERATION_META, `${JSON.stringify(meta, null, 2)}\n`);
}
