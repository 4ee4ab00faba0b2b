/**
 * What is on disk: the tenants' folders (finished or an unfinished create),
 * each one's record of its catalog entry, and the leftovers of pgs's own work
 * (partial copies, restore folders, the trash, restore journals, borrowed WAL).
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fsyncDir, pathExists } from '../../core/files.js';
import type { Leftover } from '../runtime.js';
import { TEMPLATE_MARKER } from '../server-config.js';
import type { LocalFolders } from './folders.js';
import { PARTIAL_PREFIX, PRERESTORE_PREFIX, RESTORE_PREFIX, TENANT_META_FILE, type LocalLayout } from './layout.js';

/** What a name in tenants/ is when it is not a tenant's folder, and what becomes of it; undefined for a tenant's. */
export function tenantsLeftover(name: string): { kind: Leftover['kind']; note: string } | undefined {
  if (name.startsWith(PARTIAL_PREFIX)) return { kind: 'partial-copy', note: 'a create, branch or clone that did not finish copying: the daemon deletes it at its next start' };
  if (name.startsWith(RESTORE_PREFIX)) return { kind: 'restore-staging', note: `an in-place restore's new folder for ${name.slice(RESTORE_PREFIX.length)}: it becomes the tenant's when the restore commits; one a dead daemon left is finished or undone by the next start` };
  if (name.startsWith(PRERESTORE_PREFIX)) return { kind: 'pre-restore', note: `${name.slice(PRERESTORE_PREFIX.length)}'s folder from before an in-place restore: deleted once the restore commits, put back by the next start if it did not` };
  return undefined;
}

/** Bytes of a file or of everything under a folder (links not followed); stops counting past 100,000 entries. */
export async function treeBytes(file: string): Promise<number> {
  let total = 0;
  let seen = 0;
  const walk = async (at: string): Promise<void> => {
    if (++seen > 100_000) return;
    const stat = await fs.lstat(at).catch(() => undefined);
    if (!stat) return;
    if (!stat.isDirectory()) {
      total += stat.size;
      return;
    }
    for (const name of await fs.readdir(at).catch(() => [] as string[])) await walk(path.join(at, name));
  };
  await walk(file);
  return total;
}

export class Inventory {
  constructor(private readonly layout: LocalLayout, private readonly folders: LocalFolders) {}

  /** Written in the tenant's folder, as its uid's, replaced whole (see LocalFolders.writeOwnedFile). */
  async writeMeta(id: string, meta: unknown): Promise<void> {
    await this.folders.writeOwnedFile(this.layout.tenantDir(id), TENANT_META_FILE, `${JSON.stringify(meta, null, 2)}\n`);
  }

  async readMeta(id: string): Promise<unknown> {
    try {
      return JSON.parse(await fs.readFile(path.join(this.layout.tenantDir(id), TENANT_META_FILE), 'utf8')) as unknown;
    } catch {
      return undefined;
    }
  }

  async finishCreate(id: string): Promise<void> {
    await fs.rm(path.join(this.layout.tenantDir(id), TEMPLATE_MARKER), { force: true });
    await fsyncDir(this.layout.tenantDir(id));
  }

  async folderState(id: string): Promise<'none' | 'unfinished' | 'finished'> {
    if (!(await pathExists(this.layout.tenantDir(id)))) return 'none';
    return (await pathExists(path.join(this.layout.tenantDir(id), TEMPLATE_MARKER))) ? 'unfinished' : 'finished';
  }

  /** With `tidy`, also deletes the partial copies (`.tmp-*`) of creates that died while copying and puts back a half-swapped restore's folder. */
  async dataFolders(options: { tidy?: boolean } = {}): Promise<{ id: string; unfinished: boolean }[]> {
    const tenants = this.layout.tenantsDir;
    let names = await fs.readdir(tenants).catch(() => [] as string[]);
    if (options.tidy !== false) {
      for (const name of names.filter((n) => n.startsWith(PARTIAL_PREFIX) || n.startsWith(RESTORE_PREFIX))) await this.folders.removeTree(path.join(tenants, name));
      // An in-place restore that died between its two renames: the tenant's old folder goes back.
      for (const name of names.filter((n) => n.startsWith(PRERESTORE_PREFIX))) {
        const id = name.slice(PRERESTORE_PREFIX.length);
        if (!(await pathExists(this.layout.tenantDir(id)))) await fs.rename(path.join(tenants, name), this.layout.tenantDir(id));
      }
      names = await fs.readdir(tenants).catch(() => [] as string[]);
    }
    return Promise.all(names.filter((n) => !n.startsWith('.')).map(async (id) => ({ id, unfinished: await pathExists(path.join(this.layout.tenantDir(id), TEMPLATE_MARKER)) })));
  }

  async leftovers(): Promise<Leftover[]> {
    const out: Leftover[] = [];
    const add = async (file: string, kind: Leftover['kind'], note: string) => out.push({ path: file, kind, bytes: await treeBytes(file), note });
    const list = async (dir: string) => (await fs.readdir(dir).catch(() => [] as string[])).sort();
    for (const name of await list(this.layout.tenantsDir)) {
      const what = tenantsLeftover(name);
      if (what) await add(path.join(this.layout.tenantsDir, name), what.kind, what.note);
    }
    for (const name of await list(this.layout.trashDir)) await add(path.join(this.layout.trashDir, name), 'trash', 'deleted (a removed tenant, a restore\'s old folder): the daemon empties the trash in the background and at its start');
    for (const name of (await list(this.layout.restoresDir)).filter((n) => n.endsWith('.json'))) {
      await add(path.join(this.layout.restoresDir, name), 'restore-journal', `the journal of an in-place restore of ${name.slice(0, -'.json'.length)}: removed when it ends; the next daemon start finishes or undoes one a dead daemon left`);
    }
    const backups = this.layout.backupsDir;
    for (const id of (await list(backups)).filter((n) => !n.startsWith('.'))) {
      for (const name of (await list(path.join(backups, id))).filter((n) => n.startsWith('.pgwal-'))) {
        await add(path.join(backups, id, name), 'borrowed-wal', `WAL a restore of ${id} borrowed from its server: removed when the restore ends, or at the next daemon start`);
      }
    }
    return out;
  }
}
