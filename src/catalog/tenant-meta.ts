import { tenantHostname } from './ids.js';
import { DEFAULT_AUTOSUSPEND_SECONDS, DEFAULT_BACKUP_RETAIN, DEFAULT_BACKUP_SCHEDULE, DEFAULT_POOL_SIZE, DEFAULT_RPO_SECONDS, type Tenant } from './schema.js';

/**
 * A tenant's catalog entry against the copy its data folder keeps
 * (pgs-tenant.json). Both count the entry's changes (`rev`), so after a
 * catalog was restored from its backup the folder's copy tells what it lost.
 */
export type MetaValue = string | number | null;

export interface FieldDisagreement {
  field: string;
  catalog: MetaValue;
  folder: MetaValue;
}

export interface MetaDisagreement {
  id: string;
  /** The side with more changes counted; `same`: as many on both (a hand edit), and a fix takes the catalog's. */
  newer: 'catalog' | 'folder' | 'same';
  catalogRev: number;
  /** null: the folder has no usable metadata file. */
  folderRev: number | null;
  /** Empty when the folder has no usable metadata file. */
  fields: FieldDisagreement[];
}

/**
 * What the two can meaningfully disagree on, as `pgs config` and `pgs list` show it (an
 * absent setting is its default). Not compared: id (the same by construction), createdAt,
 * rev itself, and diskState (the daemon derives it from the disk).
 */
const FIELDS: readonly (readonly [string, (t: Tenant, domain: string) => MetaValue])[] = [
  ['hostname', (t, domain) => tenantHostname(t.id, t.suffix, domain)],
  ['access', (t) => t.access],
  ['wanted', (t) => t.wanted],
  ['generation', (t) => t.generation ?? null],
  ['maxConnections', (t) => t.maxConnections],
  ['autosuspendSeconds', (t) => (t.autosuspendSeconds === undefined ? DEFAULT_AUTOSUSPEND_SECONDS : t.autosuspendSeconds)],
  ['memoryBytes', (t) => t.memoryBytes ?? null],
  ['cpus', (t) => t.cpus ?? null],
  ['diskBytes', (t) => t.diskBytes ?? null],
  ['pool', (t) => t.pool ?? 'session'],
  ['poolSize', (t) => t.poolSize ?? DEFAULT_POOL_SIZE],
  ['maxClientConnections', (t) => t.maxClientConnections ?? null],
  ['allow', (t) => (t.allow === undefined ? null : t.allow.join(','))],
  ['backupSchedule', (t) => t.backupSchedule ?? DEFAULT_BACKUP_SCHEDULE],
  ['backupRetain', (t) => t.backupRetain ?? DEFAULT_BACKUP_RETAIN],
  ['rpoSeconds', (t) => t.rpoSeconds ?? DEFAULT_RPO_SECONDS],
  ['database', (t) => t.database ?? t.id],
];

/** How the folder's copy (undefined: none usable) differs from the catalog's entry; undefined when they agree. */
export function compareTenantMeta(catalog: Tenant, folder: Tenant | undefined, domain: string): MetaDisagreement | undefined {
  const catalogRev = catalog.rev ?? 0;
  if (folder === undefined) return { id: catalog.id, newer: 'catalog', catalogRev, folderRev: null, fields: [] };
  const fields: FieldDisagreement[] = [];
  for (const [field, value] of FIELDS) {
    const [a, b] = [value(catalog, domain), value(folder, domain)];
    if (a !== b) fields.push({ field, catalog: a, folder: b });
  }
  if (fields.length === 0) return undefined;
  const folderRev = folder.rev ?? 0;
  const newer = folderRev > catalogRev ? 'folder' : folderRev < catalogRev ? 'catalog' : 'same';
  return { id: catalog.id, newer, catalogRev, folderRev, fields };
}

/** True when two entries say the same, whatever their change counters and key order. */
export function sameEntry(a: Tenant, b: Tenant): boolean {
  const canonical = (t: Tenant) => JSON.stringify(Object.entries(t).filter(([k, v]) => k !== 'rev' && v !== undefined).sort(([x], [y]) => (x < y ? -1 : 1)));
  return canonical(a) === canonical(b);
}
