import { promises as fs } from 'node:fs';
import * as v from 'valibot';
import { TENANT_ID_PATTERN, newSuffix, tenantHostname } from '../catalog/ids.js';
import { TenantSchema, type Catalog, type Tenant } from '../catalog/schema.js';
import { compareTenantMeta, type MetaDisagreement } from '../catalog/tenant-meta.js';
import type { Leftover } from '../runtime/runtime.js';
import { notSetUp, type PgsContext } from './context.js';

/** `pgs doctor`: where the catalog and the data folders disagree, and settling it (adopting orphans, the newer metadata). */
export interface DoctorReport {
  /** Data folders the catalog does not name; `hostname` from their metadata file, null without one. */
  orphans: { id: string; folder: string; running: boolean; pid: number | null; hostname: string | null }[];
  /** Folders of creates that never reached the catalog (a daemon removes them at start). */
  unfinished: string[];
  /** Catalog entries whose data folder is missing. */
  missingData: string[];
  /** Catalog entries whose folder's metadata file says otherwise (or is missing), with which is newer. */
  disagreements: MetaDisagreement[];
  /** What pgs's own work left beside the tenants' folders, with what removes it (doctor --fix does not). */
  leftovers: Leftover[];
}

/** What settleMeta did for one tenant: `updated` is the side rewritten to match the newer one. */
export interface SettledMeta {
  id: string;
  newer: MetaDisagreement['newer'];
  updated: 'catalog' | 'folder';
  fields: string[];
  before: Tenant;
  after: Tenant;
}

/** A tenant folder's metadata file, if it holds a valid catalog entry for this id. */
export function tenantFromMeta(id: string, meta: unknown): Tenant | undefined {
  const parsed = v.safeParse(TenantSchema, meta);
  return parsed.success && parsed.output.id === id ? parsed.output : undefined;
}

/**
 * What is on disk and not in the catalog, or the reverse: data folders the
 * catalog does not name (with the entry their own metadata file keeps, when
 * it has one), unfinished creates, and catalog entries without a folder.
 */
export async function doctorReport(ctx: PgsContext, read?: Catalog): Promise<DoctorReport> {
  const catalog = read ?? (await ctx.store.read());
  const runtime = ctx.runtimeFor(catalog.settings);
  // Looks only: a restore may be running, whose working folders are not this call's to tidy.
  const folders = await runtime.dataFolders({ tidy: false });
  const onDisk = new Set(folders.map((f) => f.id));
  const known = new Set(catalog.tenants.map((t) => t.id));
  const orphans: DoctorReport['orphans'] = [];
  for (const folder of folders) {
    if (known.has(folder.id) || folder.unfinished) continue;
    const meta = tenantFromMeta(folder.id, await runtime.readMeta(folder.id));
    const server = await runtime.status(folder.id, { fresh: true });
    orphans.push({
      id: folder.id,
      folder: runtime.dataDir(folder.id),
      running: server.state === 'running',
      pid: server.state === 'stopped' ? null : (server.pid ?? null),
      hostname: meta ? tenantHostname(folder.id, meta.suffix, catalog.settings.domain) : null,
    });
  }
  const disagreements: MetaDisagreement[] = [];
  for (const tenant of catalog.tenants) {
    if (!onDisk.has(tenant.id)) continue;
    const found = compareTenantMeta(tenant, tenantFromMeta(tenant.id, await runtime.readMeta(tenant.id)), catalog.settings.domain);
    if (found) disagreements.push(found);
  }
  return {
    orphans,
    unfinished: folders.filter((f) => f.unfinished && !known.has(f.id)).map((f) => f.id),
    missingData: catalog.tenants.filter((t) => !onDisk.has(t.id)).map((t) => t.id),
    disagreements,
    leftovers: await runtime.leftovers(),
  };
}

/**
 * Puts orphan folders back in the catalog, from their metadata file (same
 * host name, access and settings); one without a usable file gets a new host
 * name. Returns what it adopted.
 */
export async function adopt(ctx: PgsContext, ids: string[]): Promise<{ id: string; hostname: string; newHostname: boolean }[]> {
  return ctx.change(async (current) => {
    if (!current) throw notSetUp(ctx.home);
    const runtime = ctx.runtimeFor(current.settings);
    const adopted: { id: string; hostname: string; newHostname: boolean }[] = [];
    const tenants = [...current.tenants];
    for (const id of ids) {
      if (tenants.some((t) => t.id === id) || !TENANT_ID_PATTERN.test(id)) continue;
      const meta = tenantFromMeta(id, await runtime.readMeta(id));
      const stat = await fs.stat(runtime.dataDir(id)).catch(() => undefined);
      if (!stat) continue;
      const tenant: Tenant = meta ?? {
        id,
        suffix: newSuffix(),
        access: 'enabled',
        wanted: 'running',
        maxConnections: current.settings.defaultMaxConnections,
        createdAt: stat.birthtime.getTime() > 0 ? stat.birthtime.toISOString() : new Date().toISOString(),
      };
      tenants.push(tenant);
      adopted.push({ id, hostname: tenantHostname(id, tenant.suffix, current.settings.domain), newHostname: meta === undefined });
    }
    if (adopted.length === 0) return { result: adopted };
    return { next: { ...current, tenants }, result: adopted };
  });
}

/**
 * Settles every disagreement between a catalog entry and its folder's
 * metadata the way the newer of the two has it: a newer folder's entry
 * replaces the catalog's; otherwise (the catalog newer, or as many changes
 * on both) the catalog's is written to the folder. Returns what it did.
 */
export async function settleMeta(ctx: PgsContext): Promise<SettledMeta[]> {
  return ctx.change(async (current) => {
    if (!current) throw notSetUp(ctx.home);
    const runtime = ctx.runtimeFor(current.settings);
    const settled: SettledMeta[] = [];
    const onDisk = new Set((await runtime.dataFolders({ tidy: false })).map((f) => f.id));
    const tenants: Tenant[] = [];
    for (const tenant of current.tenants) {
      const folder = onDisk.has(tenant.id) ? tenantFromMeta(tenant.id, await runtime.readMeta(tenant.id)) : undefined;
      const found = onDisk.has(tenant.id) ? compareTenantMeta(tenant, folder, current.settings.domain) : undefined;
      if (!found) {
        tenants.push(tenant);
        continue;
      }
      const fields = found.fields.map((f) => f.field);
      if (found.newer === 'folder' && folder) {
        tenants.push(folder);
        settled.push({ id: tenant.id, newer: found.newer, updated: 'catalog', fields, before: tenant, after: folder });
      } else {
        await runtime.writeMeta(tenant.id, tenant);
        tenants.push(tenant);
        settled.push({ id: tenant.id, newer: found.newer, updated: 'folder', fields, before: tenant, after: tenant });
      }
    }
    if (!settled.some((s) => s.updated === 'catalog')) return { result: settled };
    return { next: { ...current, tenants }, result: settled };
  });
}

