import type { Readable } from 'node:stream';
import type { ImportLimit, Progress } from '../api/routes.js';
import type * as S from '../api/schemas.js';
import type { Catalog } from '../catalog/schema.js';
import { PgsError, isPgsError } from '../core/errors.js';
import { parsePointInTime } from '../core/time.js';
import type { BackupMeta } from '../backup/layout.js';
import type { BackupPlane } from './backup-plane.js';
import type { BackupProvider, MadeTenant } from './parts.js';
import { importLimit } from './uploads.js';

/** A host's backups (daemon/backup-plane.ts: the local repository and the bucket) as the control plane asks for them. */
export class NativeBackups implements BackupProvider {
  private readonly plane: BackupPlane;
  private readonly catalog: () => Catalog;

  constructor(plane: BackupPlane, catalog: () => Catalog) {
    this.plane = plane;
    this.catalog = catalog;
  }

  async backup(id: string, progress?: Progress): Promise<S.BackupJson> {
    return backupJson(await this.plane.backupNow(id, 'manual', progress));
  }

  async list(id: string): Promise<S.BackupListJson> {
    const list = await this.plane.list(id);
    return { tenant: id, backups: list.backups.map(backupJson), window: list.window, ranges: list.ranges, lastFailure: list.lastFailure };
  }

  deleteAll(id: string): Promise<void> {
    return this.plane.deleteAll(id);
  }

  async restore(id: string, request: S.RestoreRequest, progress?: Progress): Promise<MadeTenant> {
    const choice = { ...(request.backup !== undefined ? { backup: request.backup } : {}), ...(request.time !== undefined ? { time: parseTime(request.time, 'time') } : {}) };
    const exists = this.catalog().tenants.some((t) => t.id === id);
    const target = request.as ?? id;
    if (target === id && exists) return this.plane.restoreInPlace(id, choice, progress);
    // A removed tenant whose backups remain comes back under its id (or another).
    return this.plane.restoreAs(id, target, choice, 'restored', progress).catch(async (err: unknown) => {
      // A tenant that is gone with nothing kept: "pgs backup <id>", which the plan suggests, would fail too.
      if (!exists && isPgsError(err, 'BACKUP_NOT_FOUND') && (await this.plane.list(id).then((l) => l.backups.length, () => 0)) === 0) {
        throw new PgsError('TENANT_NOT_FOUND', `no tenant ${id}, and no backup of one to restore it from: "pgs list" shows the tenants there are`);
      }
      throw err;
    });
  }

  branch(id: string, request: S.BranchRequest, progress?: Progress): Promise<MadeTenant> {
    return this.plane.branch(id, request.id, request.at !== undefined ? parseTime(request.at, 'at') : undefined, progress);
  }

  exportTenant(id: string, progress?: Progress): Promise<{ name: string; bytes: number; sha256: string }> {
    return this.plane.exportTenant(id, progress);
  }

  exportFile(name: string): string {
    return this.plane.exportFile(name);
  }

  importLimit(): Promise<ImportLimit> {
    return importLimit(this.catalog().settings);
  }

  importUploadFile(body: Readable, limit: ImportLimit): Promise<string> {
    return this.plane.importUploadFile(body, limit);
  }

  importFile(file: string, as: string | undefined, progress?: Progress): Promise<MadeTenant> {
    return this.plane.importFile(file, as, progress);
  }
}

export function backupJson(meta: BackupMeta): S.BackupJson {
  const { id, tenant, generation, kind, reason, startedAt, finishedAt, startLsn, endLsn, timeline, bytes, note } = meta;
  return { id, tenant, generation, kind, reason, startedAt, finishedAt, startLsn, endLsn, timeline, bytes, ...(note !== undefined ? { note } : {}) };
}

/** A time from a request (the route made it RFC 3339; other callers may give any form the CLI takes). */
function parseTime(text: string, field: 'time' | 'at'): Date {
  return parsePointInTime(text, field, 'INVALID_REQUEST', field).date;
}
