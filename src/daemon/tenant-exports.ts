import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { Progress } from '../api/routes.js';
import { assertTenantId } from '../catalog/ids.js';
import { PgsError, errnoCode } from '../core/errors.js';
import { readExport, writeExport } from '../backup/export-file.js';
import { newStamp } from '../backup/layout.js';
import type { Backups, RestorePlan } from '../service/backups.js';
import type { BackupPlaneDeps, MadeTenant } from './backup-deps.js';
import type { BackupTaking } from './backup-taking.js';
import type { TenantCopies } from './tenant-copies.js';
import { receiveUpload, type ImportLimit } from './uploads.js';

/** Exports wait this long for their download. */
const EXPORT_KEEP_MS = 24 * 60 * 60_000;

/**
 * Moves between hosts: an export is a fresh backup written as one
 * self-contained, checksummed file (`<data>/exports/`); an import receives
 * such a file (`<data>/imports/<stamp>/`) and makes a tenant from it.
 */
export class TenantExports {
  private readonly deps: BackupPlaneDeps;
  private readonly backups: Backups;
  private readonly taking: BackupTaking;
  private readonly copies: TenantCopies;
  /** Made before the API answers: an import folder older than this is a previous daemon's. */
  private readonly bornAt = Date.now();

  constructor(deps: BackupPlaneDeps, backups: Backups, taking: BackupTaking, copies: TenantCopies) {
    this.deps = deps;
    this.backups = backups;
    this.taking = taking;
    this.copies = copies;
  }

  private get dataRoot(): string {
    return this.deps.catalog().settings.dataRoot;
  }

  private get exportsDir(): string {
    return path.join(this.dataRoot, 'exports');
  }

  /** A fresh backup of the tenant, written as one self-contained, checksummed file for download. */
  async exportTenant(id: string, progress?: Progress): Promise<{ name: string; bytes: number; sha256: string }> {
    const meta = await this.taking.backupNow(id, 'export', progress);
    await fs.mkdir(this.exportsDir, { recursive: true, mode: 0o700 });
    const name = `${id}-${meta.id}.pgs`;
    progress?.('writing the export file');
    const written = await writeExport(path.join(this.exportsDir, name), this.backups.backupDir(meta), {
      format: 1, pgsVersion: this.deps.version, exportedAt: new Date().toISOString(), tenant: meta.tenantEntry, backup: meta,
    });
    return { name, ...written };
  }

  exportFile(name: string): string {
    if (!/^[a-z][a-z0-9-]*-\d{8}-\d{6}-[0-9a-f]{4}\.pgs$/.test(name)) throw new PgsError('NOT_FOUND', `no export ${name}`);
    return path.join(this.exportsDir, name);
  }

  /** At daemon start: exports past their time, and uploads a previous daemon left. */
  async clean(): Promise<void> {
    for (const name of await fs.readdir(this.exportsDir).catch(() => [] as string[])) {
      const file = path.join(this.exportsDir, name);
      const stat = await fs.stat(file).catch(() => undefined);
      if (stat && Date.now() - stat.mtimeMs > EXPORT_KEEP_MS) await fs.rm(file, { force: true });
    }
    // Uploads a daemon before this one left; not those of requests this one has taken already (the API answers before this runs).
    const imports = path.join(this.dataRoot, 'imports');
    for (const name of await fs.readdir(imports).catch(() => [] as string[])) {
      const dir = path.join(imports, name);
      const stat = await fs.stat(dir).catch(() => undefined);
      if (stat && stat.mtimeMs < this.bornAt) await fs.rm(dir, { recursive: true, force: true });
    }
  }

  /** Receives an upload to import into a folder of its own: deleted by `importFile`, or at once when the upload fails. */
  async importUploadFile(body: Readable, limit: ImportLimit): Promise<string> {
    const imports = path.join(this.dataRoot, 'imports');
    await fs.mkdir(imports, { recursive: true, mode: 0o700 });
    const dir = path.join(imports, newStamp());
    await fs.mkdir(dir, { mode: 0o700 });
    const file = path.join(dir, 'upload.pgs');
    try {
      await receiveUpload(body, file, limit);
    } catch (err) {
      await fs.rm(dir, { recursive: true, force: true });
      throw err;
    }
    return file;
  }

  /** Makes a tenant from an export file, checked whole before anything is made. */
  async importFile(file: string, as: string | undefined, progress?: Progress): Promise<MadeTenant> {
    const dir = path.join(path.dirname(file), 'unpacked');
    try {
      await fs.mkdir(dir, { mode: 0o700 });
      progress?.('checking the export file');
      const meta = await readExport(file, dir);
      await fs.rm(file, { force: true });
      const id = as ?? meta.tenant.id;
      assertTenantId(id);
      const release = await this.copies.reserve(id);
      try {
        const plan: RestorePlan = { backup: meta.backup, backupDir: dir, target: 'immediate', walDir: '' }; // the backup carries its WAL
        return await this.copies.makeFrom(id, plan, meta.tenant, 'imported', undefined, progress);
      } finally {
        release();
      }
    } catch (err) {
      if (errnoCode(err) === 'ENOSPC') throw new PgsError('BACKUP_FAILED', 'the disk is full: the import was not made');
      throw err;
    } finally {
      await fs.rm(path.dirname(file), { recursive: true, force: true });
    }
  }
}
