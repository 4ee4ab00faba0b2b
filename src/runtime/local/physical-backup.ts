/**
 * Physical copies of a tenant's server and its WAL: base backups (online with
 * BASE_BACKUP, offline as a tar of the stopped server's folder), a backup
 * streamed straight into a new folder (a clone), the WAL position, archiving's
 * progress, and a stopped server's WAL files.
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgsError } from '../../core/errors.js';
import { readControl } from '../../backup/control.js';
import { MANIFEST_FILE, buildManifest, parseManifest, verifyTree } from '../../backup/manifest.js';
import { SEGMENT_NAME, formatLsn, segmentNumber } from '../../backup/wal.js';
import { AdminQueryError } from '../admin-client.js';
import type { ArchiverStatus, BackupResult, ReadyFiles } from '../runtime.js';
import { ADMIN_DATABASE, quoteLiteral } from '../server-config.js';
import type { AdminSessions } from './admin-sessions.js';
import { runCommand, serverEnv, spawnAs } from './commands.js';
import type { LocalFolders } from './folders.js';
import type { LocalLayout } from './layout.js';
import type { Ownership } from './ownership.js';

/** BASE_BACKUP into a folder of the server's host (`targetDir`), with its WAL, a SHA-256 manifest, a fast checkpoint. */
export function baseBackupSql(label: string, targetDir: string): string {
  return `BASE_BACKUP (LABEL ${quoteLiteral(label)}, TARGET 'server', TARGET_DETAIL ${quoteLiteral(targetDir)}, CHECKPOINT 'fast', ` +
    "WAL true, WAIT false, MANIFEST 'yes', MANIFEST_CHECKSUMS 'SHA256')";
}

/** PostgreSQL's timestamptz text ("2026-01-02 03:04:05.6+00") as ISO 8601, or null. */
export function isoTime(value: string | null | undefined): string | null {
  return value ? new Date(value.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00')).toISOString() : null;
}

/** The files of pg_wal a copy of WAL takes: segments and timeline histories. */
export function isWalFile(name: string): boolean {
  return /^[0-9A-F]{24}$/.test(name) || /^[0-9A-F]{8}\.history$/.test(name);
}

export class PhysicalBackups {
  constructor(
    private readonly layout: LocalLayout,
    private readonly folders: LocalFolders,
    private readonly owners: Ownership,
    private readonly sessions: AdminSessions,
  ) {}

  /**
   * BASE_BACKUP on a replication session; the server writes base.tar and the
   * manifest (SHA-256 per file) into `targetDir` itself, with the WAL the backup
   * needs inside the tar, so a backup restores without the archive.
   */
  async online(id: string, targetDir: string, label: string): Promise<BackupResult> {
    await this.folders.mkdirOwnedPath(path.dirname(targetDir)); // the server makes targetDir itself
    const client = await this.sessions.connect(id, ADMIN_DATABASE, { replication: true, timeoutMs: 10_000 });
    try {
      const rows = await client.query(baseBackupSql(label, targetDir));
      const start = rows[0];
      const end = rows[rows.length - 1];
      if (!start?.[0] || !end?.[0]) throw new PgsError('BACKUP_FAILED', `BASE_BACKUP answered ${JSON.stringify(rows)}`);
      const [after] = await client.query('SELECT pg_current_wal_insert_lsn()');
      return { kind: 'online', startLsn: start[0], endLsn: end[0], timeline: Number(start[1] ?? end[1] ?? 1), afterLsn: after?.[0] ?? end[0] };
    } catch (err) {
      if (err instanceof AdminQueryError) {
        const message = err.fields.M ?? err.message;
        // A short write is how PostgreSQL reports a full disk ("wrote only 15872 of 32768 bytes").
        if (/wrote only \d+ of \d+ bytes|No space left on device/i.test(message)) {
          throw new PgsError('BACKUP_FAILED', `the disk that holds ${path.dirname(targetDir)} is full (${message})`);
        }
        throw new PgsError('BACKUP_FAILED', `the server could not take the backup: ${message}`);
      }
      throw err;
    } finally {
      client.destroy();
    }
  }

  /** A tar of the stopped server's folder and a manifest made here. */
  async offline(id: string, targetDir: string): Promise<BackupResult> {
    const dir = this.layout.tenantDir(id);
    const control = await readControl(dir);
    await this.folders.mkdirOwnedPath(targetDir);
    const skipped = new Set(['postmaster.pid', 'postmaster.opts']);
    // ustar has 7 octal digits for a uid (a tenant's is larger): the archive names root, a restore gives the files their own.
    await runCommand('tar', ['--format=ustar', '--numeric-owner', '--owner=0', '--group=0', '-cf', path.join(targetDir, 'base.tar'), '--exclude=./postmaster.pid', '--exclude=./postmaster.opts', '-C', dir, '.'], { as: await this.owners.identityOf(dir) });
    const lsn = formatLsn(control.checkpoint);
    const manifest = await buildManifest(dir, (rel) => skipped.has(rel) || rel === 'pg_wal' || rel.startsWith('pg_wal/'), { timeline: control.timeline, start: formatLsn(control.redo), end: lsn }, control.systemIdentifier);
    await this.folders.writeOwnedFile(targetDir, MANIFEST_FILE, manifest);
    return { kind: 'offline', startLsn: formatLsn(control.redo), endLsn: lsn, timeline: control.timeline, afterLsn: lsn };
  }

  /**
   * BASE_BACKUP without a target: the tar comes over the replication session
   * and goes straight into tar -x (as `dest`'s owner) in `dest`, never to a
   * file in between; the manifest is kept in memory and every file checked.
   */
  async streamInto(id: string, dest: string): Promise<void> {
    const tar = spawn('tar', ['-xf', '-', '-C', dest, '--no-same-owner', '--no-same-permissions'], { stdio: ['pipe', 'ignore', 'pipe'], env: serverEnv(), ...spawnAs(await this.owners.identityOf(dest)) });
    let tarError = '';
    tar.stderr?.setEncoding('utf8').on('data', (t: string) => { tarError += t; });
    const tarDone = new Promise<void>((resolve, reject) => {
      tar.once('error', reject);
      tar.once('close', (code) => (code === 0 ? resolve() : reject(new PgsError('BACKUP_FAILED', `tar could not unpack the stream (exit ${code}): ${tarError.trim().split('\n').slice(-1)[0] ?? ''}`))));
    });
    tar.stdin?.on('error', () => undefined); // tar's own exit says why
    const manifest: Buffer[] = [];
    let part: 'none' | 'archive' | 'manifest' = 'none';
    const client = await this.sessions.connect(id, ADMIN_DATABASE, { replication: true, timeoutMs: 10_000 });
    try {
      await client.copyOut(
        // No checksums: the copy goes from the server straight into the folder over a local socket,
        // with nothing at rest in between to go bad; every file is still checked for presence and size.
        `BASE_BACKUP (LABEL ${quoteLiteral(`pgs clone of ${id}`)}, CHECKPOINT 'fast', WAL true, WAIT false, MANIFEST 'yes', MANIFEST_CHECKSUMS 'NONE')`,
        (payload) => {
          const kind = payload[0];
          if (kind === 0x6e) part = 'archive'; // 'n': a new archive (one: no tablespaces)
          else if (kind === 0x6d) part = 'manifest'; // 'm': the manifest follows
          else if (kind === 0x64) { // 'd': data of the current part
            const data = payload.subarray(1);
            if (part === 'manifest') manifest.push(Buffer.from(data));
            else if (part === 'archive') return tar.stdin?.write(data) ?? true;
          }
          return true; // 'p': progress
        },
        () => new Promise((resolve) => tar.stdin?.once('drain', resolve)),
      );
    } catch (err) {
      tar.kill();
      if (err instanceof AdminQueryError) throw new PgsError('BACKUP_FAILED', `the server could not stream its backup: ${err.fields.M ?? err.message}`);
      throw err;
    } finally {
      client.destroy();
    }
    tar.stdin?.end();
    await tarDone;
    const parsed = parseManifest(Buffer.concat(manifest).toString('utf8'), `the manifest of the clone of ${id}`);
    await verifyTree(dest, parsed, `of ${id} (streamed)`);
  }

  /** Running: where the server inserts; stopped: its last checkpoint. */
  async walPosition(id: string, running: boolean): Promise<string> {
    if (running) {
      const [row] = await this.sessions.withAdmin(id, ADMIN_DATABASE, (client) => client.query('SELECT pg_current_wal_insert_lsn()'));
      if (row?.[0]) return row[0];
    }
    return formatLsn((await readControl(this.layout.tenantDir(id))).checkpoint);
  }

  /**
   * A transaction id taken makes a commit record: a restore to any time up to
   * now then finds a record after it (recovery to a time stops at the first
   * commit past it). The switch finishes the segment; its archiving is awaited.
   */
  async flushArchive(id: string, timeoutMs: number): Promise<void> {
    await this.sessions.withAdmin(id, ADMIN_DATABASE, async (client) => {
      await client.query('SELECT pg_current_xact_id()');
      // The segment the switch finished (or, when nothing was written since the last switch, the one before).
      const [row] = await client.query('SELECT pg_walfile_name(pg_switch_wal() - 1)');
      const target = row?.[0];
      if (!target) return;
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const [done] = await client.query('SELECT last_archived_wal FROM pg_stat_archiver');
        const archived = done?.[0] ?? '';
        if (SEGMENT_NAME.test(archived) && segmentNumber(archived) >= segmentNumber(target)) return;
        if (Date.now() > deadline) throw new PgsError('BACKUP_FAILED', `WAL segment ${target} of tenant ${id} was not archived within ${timeoutMs / 1000} s (archiving fails? see pgs status ${id})`);
        await sleep(50);
      }
    });
  }

  /** pg_stat_archiver of the running server, and what waits in its archive_status. */
  async archiverStatus(id: string): Promise<ArchiverStatus> {
    const query = 'SELECT archived_count, failed_count, last_archived_wal, last_archived_time, last_failed_wal, last_failed_time FROM pg_stat_archiver';
    const rows = await this.sessions.onSession(id, (c) => c.query(query, { timeoutMs: 5_000 }));
    const row = rows[0] ?? [];
    return {
      archivedCount: Number(row[0] ?? 0),
      failedCount: Number(row[1] ?? 0),
      lastArchivedWal: row[2] ?? null,
      lastArchivedAt: isoTime(row[3]),
      lastFailedWal: row[4] ?? null,
      lastFailedAt: isoTime(row[5]),
      ...(await this.readyFiles(id)),
    };
  }

  /** What the server has finished and not yet archived here (its archive_status): read from the folder, running or not. */
  async readyFiles(id: string): Promise<ReadyFiles> {
    const walDir = path.join(this.layout.tenantDir(id), 'pg_wal');
    const statusDir = path.join(walDir, 'archive_status');
    const ready = (await fs.readdir(statusDir).catch(() => [] as string[])).filter((n) => n.endsWith('.ready'));
    // The segments' sizes, and when the oldest was marked.
    let pendingBytes = 0;
    let oldest = Infinity;
    for (const name of ready) {
      const [segment, marked] = await Promise.all([
        fs.stat(path.join(walDir, name.slice(0, -'.ready'.length))).catch(() => undefined),
        fs.stat(path.join(statusDir, name)).catch(() => undefined),
      ]);
      pendingBytes += segment?.size ?? 0;
      if (marked) oldest = Math.min(oldest, marked.mtimeMs);
    }
    return {
      pending: ready.filter((n) => !n.includes('.history')).length,
      readyFiles: ready.length,
      readyBytes: pendingBytes,
      oldestReadyAt: Number.isFinite(oldest) ? new Date(oldest).toISOString() : null,
    };
  }

  /** Copies the WAL files of a stopped server (what it has not archived yet, too) into `dir`, as the server's uid. */
  async copyWal(id: string, dir: string): Promise<void> {
    await this.folders.mkdirOwnedPath(dir);
    const tenant = this.layout.tenantDir(id);
    const walFolder = path.join(tenant, 'pg_wal');
    const names = (await fs.readdir(walFolder)).filter(isWalFile);
    if (names.length > 0) await runCommand('cp', ['-p', '--', ...names.map((n) => path.join(walFolder, n)), dir], { as: await this.owners.identityOf(tenant) });
  }
}
