import * as v from 'valibot';
import { StampSchema, TenantIdSchema, TenantSchema, int, isoTime, matching, schemaProblem } from '../catalog/schema.js';
import { PgsError } from '../core/errors.js';
import type { BackupMeta, GenerationMeta } from './layout.js';

/**
 * The schemas of the small records pgs writes beside its backups
 * (pgs-backup.json, pgs-generation.json). The same records come back from a
 * bucket or inside an export, which pgs does not trust: every read checks the
 * whole record (ids and stamps that become paths, LSNs, sizes) and that it
 * names the tenant, generation and backup it was found under.
 */

/** pgs writes these at a few KiB; anything near this is not one of its files. */
export const MAX_RECORD_BYTES = 1 << 20;

export const LSN = matching(/^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/, 'an LSN such as 0/3000028');
/** Printable text without control characters. */
export const label = (max: number) => matching(new RegExp(`^[\\x20-\\x7e]{1,${max}}$`), `printable text of at most ${max} characters`);

export const BackupMetaSchema = v.strictObject({
  format: v.literal(1, 'must be 1'),
  id: StampSchema,
  tenant: TenantIdSchema,
  generation: StampSchema,
  kind: v.picklist(['online', 'offline'], 'must be online or offline'),
  reason: label(100),
  startedAt: isoTime,
  finishedAt: isoTime,
  startLsn: LSN,
  endLsn: LSN,
  timeline: int(1, 2 ** 31 - 1),
  afterLsn: LSN,
  bytes: int(0, Number.MAX_SAFE_INTEGER),
  note: v.optional(label(1000)),
  tenantEntry: TenantSchema,
}, 'must be a backup record');

export const GenerationMetaSchema = v.strictObject({
  format: v.literal(1, 'must be 1'),
  tenant: TenantIdSchema,
  generation: StampSchema,
  createdAt: isoTime,
  origin: v.optional(v.strictObject({ tenant: TenantIdSchema, backup: StampSchema, target: label(1000) }, 'must be where the generation was restored from')),
}, 'must be a generation record');

function parseRecord<T>(schema: v.GenericSchema, text: string, what: string): T {
  if (Buffer.byteLength(text) > MAX_RECORD_BYTES) throw new PgsError('BACKUP_DAMAGED', `${what} is larger than ${MAX_RECORD_BYTES >> 20} MiB: not a record pgs wrote`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new PgsError('BACKUP_DAMAGED', `${what} is not JSON`);
  }
  const problem = schemaProblem(schema, value, '');
  if (problem) throw new PgsError('BACKUP_DAMAGED', `${what}: ${problem}`);
  return value as T;
}

/** A pgs-backup.json, checked whole; `under` is where it was found, and it must name that place. */
export function parseBackupMeta(text: string, what: string, under?: { tenant: string; generation: string; id: string }): BackupMeta {
  const meta = parseRecord<BackupMeta>(BackupMetaSchema, text, what);
  if (under && (meta.tenant !== under.tenant || meta.generation !== under.generation || meta.id !== under.id)) {
    throw new PgsError('BACKUP_DAMAGED', `${what} names backup ${meta.tenant}/${meta.generation}/${meta.id}, not the ${under.tenant}/${under.generation}/${under.id} it is kept under`);
  }
  if (meta.tenantEntry.id !== meta.tenant) throw new PgsError('BACKUP_DAMAGED', `${what} holds the settings of tenant ${meta.tenantEntry.id}, not of ${meta.tenant}`);
  return meta;
}

/** A pgs-generation.json, checked whole; it must name the tenant and generation it was found under. */
export function parseGenerationMeta(text: string, what: string, under?: { tenant: string; generation: string }): GenerationMeta {
  const meta = parseRecord<GenerationMeta>(GenerationMetaSchema, text, what);
  if (under && (meta.tenant !== under.tenant || meta.generation !== under.generation)) {
    throw new PgsError('BACKUP_DAMAGED', `${what} names generation ${meta.tenant}/${meta.generation}, not the ${under.tenant}/${under.generation} it is kept under`);
  }
  return meta;
}
