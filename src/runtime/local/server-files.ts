/**
 * The settings files pgs writes into a tenant's data folder before every start
 * (and when its limits or archive change): pgs.conf (archiving, limits,
 * read-only, recovery), the recovery and standby signals, pg_hba.conf and
 * pg_ident.conf; a folder made from an older template is brought up to date.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { TenantServerSpec } from '../runtime.js';
import {
  ARCHIVE_CONF, ARCHIVE_INCLUDE, ARCHIVE_MIGRATION, RECOVERY_CONF, archiveConfText, hbaConfText, identConfText, recoveryConfText,
} from '../server-config.js';
import type { LocalFolders } from './folders.js';
import type { LocalLayout } from './layout.js';

/** What a postgresql.conf from an older template lacks (the archiving settings and the include of pgs.conf), or '' when it has them. */
export function confMigration(conf: string): string {
  if (conf.includes(ARCHIVE_INCLUDE)) return '';
  const lines = ['', '# --- pgs: continuous archiving (added by a newer pgs) ---'];
  for (const [name, value] of Object.entries(ARCHIVE_MIGRATION)) lines.push(`${name} = ${value}`);
  lines.push(ARCHIVE_INCLUDE, '');
  return lines.join('\n');
}

export class ServerFiles {
  constructor(private readonly layout: LocalLayout, private readonly folders: LocalFolders, readonly queryStatsOn: boolean) {}

  /** pgs.conf as `spec` has it (with its recovery settings when `recovery`). */
  archiveConf(spec: TenantServerSpec, recovery = false): string {
    return archiveConfText(spec.maxConnections, spec.archive, recovery ? spec.recovery : undefined, spec.limits?.memoryBytes, spec.readOnly, this.queryStatsOn);
  }

  /** Writes pgs.conf for `spec` (its archive folder made first); the caller reloads a running server. */
  async writeArchiveConf(spec: TenantServerSpec): Promise<void> {
    if (spec.archive) await this.folders.mkdirOwnedPath(spec.archive.directory);
    await this.folders.writeOwnedFile(this.layout.tenantDir(spec.id), ARCHIVE_CONF, this.archiveConf(spec));
  }

  /** A running spare's: no archive, no recovery, no limits. */
  async writeSpareConf(key: string, maxConnections: number): Promise<void> {
    const dir = this.layout.tenantDir(key);
    await this.folders.writeOwnedFile(dir, ARCHIVE_CONF, archiveConfText(maxConnections, undefined, undefined, undefined, undefined, this.queryStatsOn));
    await this.folders.writeOwnedFile(dir, RECOVERY_CONF, recoveryConfText(undefined));
  }

  /**
   * Before every start: a folder made from an older template gets what this
   * version needs (archiving settings, the replication line for BASE_BACKUP),
   * and the archive settings are written afresh, so a copied folder (restore,
   * branch, import) never archives into its source's archive.
   */
  async prepare(spec: TenantServerSpec): Promise<void> {
    const dir = this.layout.tenantDir(spec.id);
    const conf = await fs.readFile(path.join(dir, 'postgresql.conf'), 'utf8');
    const migration = confMigration(conf);
    if (migration !== '') await this.folders.writeOwnedFile(dir, 'postgresql.conf', conf + migration);
    await this.writeAuthFiles(dir, spec.adminOnly === true);
    if (spec.archive) await this.folders.mkdirOwnedPath(spec.archive.directory);
    await this.folders.writeOwnedFile(dir, ARCHIVE_CONF, this.archiveConf(spec, true));
    await this.folders.writeOwnedFile(dir, RECOVERY_CONF, recoveryConfText(spec.recovery));
    if (spec.recovery) await this.folders.writeOwnedFile(dir, 'recovery.signal', '');
    // Past its hard disk limit a tenant runs as a standby with no WAL source: reads work, nothing is written.
    // Leaving it (the quota was raised) is a start without the file: the same timeline goes on.
    if (spec.readOnly === 'standby' && !spec.recovery) await this.folders.writeOwnedFile(dir, 'standby.signal', '');
    else await fs.rm(path.join(dir, 'standby.signal'), { force: true });
  }

  /** pg_hba.conf and pg_ident.conf as this version has them. Returns whether anything changed. */
  async writeAuthFiles(dir: string, adminOnly = false): Promise<boolean> {
    let changed = false;
    for (const [name, text] of [['pg_hba.conf', hbaConfText(adminOnly)], ['pg_ident.conf', identConfText()]] as const) {
      if ((await fs.readFile(path.join(dir, name), 'utf8').catch(() => '')) === text) continue;
      await this.folders.writeOwnedFile(dir, name, text);
      changed = true;
    }
    return changed;
  }
}
