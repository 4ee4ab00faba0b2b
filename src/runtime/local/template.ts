/**
 * The template cluster: built once with initdb (as the server user), its
 * roles, databases and settings made on a server of its own, then shut down,
 * trimmed and synced. Every tenant is a copy of it.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgsError } from '../../core/errors.js';
import { pathExists, writeAtomic } from '../../core/files.js';
import type { PgBinaries } from '../binaries.js';
import { CATALOG_FINGERPRINT_SQL } from '../neutralize.js';
import { readPostmasterPid } from '../postmaster.js';
import {
  ADMIN_DATABASE, ADMIN_ROLE, QUERY_STATS_EXTENSION, QUERY_STATS_SCHEMA, TEMPLATE_DATABASE, TEMPLATE_MARKER, TEMPLATE_VERSION, TENANT_ROLE,
  hbaConfText, identConfText, quoteIdent, serverConfText,
} from '../server-config.js';
import type { AdminSessions } from './admin-sessions.js';
import { runCommand, serverEnv, spawnAs } from './commands.js';
import type { LocalFolders } from './folders.js';
import { READY_POLL_MS, signalProcess, type HostProcesses } from './host-processes.js';
import { WARM_PREFIX, type LocalLayout } from './layout.js';
import type { Ownership } from './ownership.js';

/** What the template's marker file says: a copy whose marker differs is from another version's template. */
export function templateMarker(): string {
  return `pgs-template ${TEMPLATE_VERSION}`;
}

/** The version `postgres --version` names ("postgres (PostgreSQL) 18.1"): `major` only, or major.minor. */
export function versionOf(output: string, major = false): string | undefined {
  return (major ? /\(PostgreSQL\) (\d+)/ : /\(PostgreSQL\) (\d+(?:\.\d+)?)/).exec(output)?.[1];
}

/**
 * After a clean shutdown only the segment holding the shutdown checkpoint (the
 * insert position's, or the next if it crossed over) is needed; recycled future
 * segments and older ones would only make every copy of the template larger.
 * Names are TTTTTTTT LLLLLLLL SSSSSSSS; with 1 MB segments a log file holds 4096.
 */
export async function trimWal(walDir: string, current: string): Promise<void> {
  const seq = (name: string) => Number.parseInt(name.slice(8, 16), 16) * 4096 + Number.parseInt(name.slice(16, 24), 16);
  const keep = seq(current);
  for (const name of await fs.readdir(walDir)) {
    if (!/^[0-9A-F]{24}$/.test(name) || name.slice(0, 8) !== current.slice(0, 8)) continue;
    const n = seq(name);
    if (n < keep || n > keep + 1) await fs.rm(path.join(walDir, name));
  }
}

export class Template {
  private version: string | undefined;

  constructor(
    private readonly layout: LocalLayout,
    private readonly folders: LocalFolders,
    private readonly owners: Ownership,
    private readonly processes: HostProcesses,
    private readonly sessions: AdminSessions,
    private readonly bin: PgBinaries,
    private readonly stopTimeoutMs: number,
  ) {}

  async isCurrent(): Promise<boolean> {
    try {
      const marker = await fs.readFile(path.join(this.layout.templateDir, TEMPLATE_MARKER), 'utf8');
      return marker.trim() === templateMarker();
    } catch {
      return false;
    }
  }

  /** Current, and made by binaries of the same major version. */
  async isUsable(): Promise<boolean> {
    const major = (await fs.readFile(path.join(this.layout.templateDir, 'PG_VERSION'), 'utf8').catch(() => '')).trim();
    return (await this.isCurrent()) && major === this.binariesMajor();
  }

  /** The PostgreSQL version the servers run ("18.1"). */
  serverVersion(): string {
    this.version ??= versionOf(this.postgresVersionOutput().stdout ?? '') ?? 'unknown';
    return this.version;
  }

  /** The major version of the binaries. As the server user: the answer also shows that it can load the binaries' libraries. */
  private binariesMajor(): string {
    const out = this.postgresVersionOutput();
    const major = versionOf(out.stdout ?? '', true);
    if (!major) throw new PgsError('PG_BINARIES_MISSING', `${this.bin.postgres} --version did not answer as PostgreSQL: ${(out.stderr || out.stdout || String(out.error)).trim()}`);
    return major;
  }

  private postgresVersionOutput(): SpawnSyncReturns<string> {
    return spawnSync(this.bin.postgres, ['--version'], { encoding: 'utf8', env: serverEnv(), ...spawnAs(this.owners.serverIdentity()) });
  }

  /**
   * initdb once; every tenant is a copy of this cluster. Small WAL segments keep
   * the copy small. Built beside the old one and swapped in only when complete.
   */
  async build(): Promise<void> {
    const build = this.layout.templateBuildDir;
    const as = this.owners.serverIdentity();
    await this.folders.removeTree(build);
    await this.folders.mkdirOwned(build, as); // initdb fills an empty folder; the data root is not the server user's to write
    await runCommand(this.bin.initdb, [
      '-D', build, '-U', ADMIN_ROLE, '--auth=peer', '--wal-segsize=1', '--no-sync', '--no-instructions',
      '--no-locale', '--locale-provider=builtin', '--builtin-locale=C.UTF-8', '--encoding=UTF8',
    ], { as });
    await fs.appendFile(path.join(build, 'postgresql.conf'), serverConfText());
    await fs.writeFile(path.join(build, 'pg_hba.conf'), hbaConfText());
    await fs.writeFile(path.join(build, 'pg_ident.conf'), identConfText());
    await this.processes.spawn('', build);
    let walSegment: string | undefined;
    let fingerprint: string | undefined;
    try {
      await this.sessions.withAdmin('', 'template1', async (client) => {
        await client.query(`CREATE ROLE ${quoteIdent(TENANT_ROLE)} NOLOGIN NOSUPERUSER CREATEDB CREATEROLE NOREPLICATION NOBYPASSRLS`);
        await client.query(`CREATE DATABASE ${quoteIdent(TEMPLATE_DATABASE)} OWNER ${quoteIdent(TENANT_ROLE)}`);
        // A tenant has template0, template1, its own database, and pgs's (initdb's `postgres`, renamed).
        await client.query(`ALTER DATABASE postgres RENAME TO ${quoteIdent(ADMIN_DATABASE)}`);
        await client.query(`REVOKE CONNECT, TEMPORARY ON DATABASE ${quoteIdent(ADMIN_DATABASE)} FROM PUBLIC`);
        // template1 stays the template of CREATE DATABASE (which needs no connection to it) but,
        // like template0, takes no connections (below): no session there ever gives it activity
        // statistics, so autovacuum passes it by (see the removal of pgstat.stat below). Frozen,
        // it needs no anti-wraparound vacuum for ~200 million transactions.
        await client.query('VACUUM (FREEZE)');
      });
      // Query statistics: the tenant's own view in its database, and pgs's copy, which it reads as superuser, in a schema of its own.
      await this.sessions.withAdmin('', TEMPLATE_DATABASE, async (client) => {
        await client.query(`CREATE EXTENSION ${quoteIdent(QUERY_STATS_EXTENSION)} SCHEMA public`);
      });
      await this.sessions.withAdmin('', ADMIN_DATABASE, async (client) => {
        await client.query(`CREATE SCHEMA ${quoteIdent(QUERY_STATS_SCHEMA)}`);
        await client.query(`CREATE EXTENSION ${quoteIdent(QUERY_STATS_EXTENSION)} SCHEMA ${quoteIdent(QUERY_STATS_SCHEMA)}`);
        const [print] = await client.query(CATALOG_FINGERPRINT_SQL);
        fingerprint = print?.[0] ?? undefined;
        await client.query('ALTER DATABASE template1 WITH ALLOW_CONNECTIONS false'); // not from inside template1
        await client.query('CHECKPOINT');
        const [row] = await client.query('SELECT pg_walfile_name(pg_current_wal_insert_lsn())');
        walSegment = row?.[0] ?? undefined;
      });
    } finally {
      const pidFile = await readPostmasterPid(build);
      if (pidFile) {
        signalProcess(pidFile.pid, 'SIGINT');
        const deadline = Date.now() + this.stopTimeoutMs;
        while ((await pathExists(path.join(build, 'postmaster.pid'))) && Date.now() < deadline) await sleep(READY_POLL_MS);
      }
    }
    await fs.rm(path.join(build, 'postmaster.opts'), { force: true });
    // The activity statistics the clean shutdown saved: without them a new server starts as after
    // a crash, with none. Autovacuum's launcher sends a worker (a fork and ~20 ms of CPU) each
    // naptime to every database that has statistics, whether or not anything changed there; with
    // the build's statistics that was template1, the tenant's database and pgs_admin on every idle
    // server. Now only databases that see sessions get them: pgs_admin (the health checks) and the
    // tenant's database once the tenant uses it.
    await fs.rm(path.join(build, 'pg_stat', 'pgstat.stat'), { force: true });
    if (walSegment) await trimWal(path.join(build, 'pg_wal'), walSegment);
    // The build's own segments' marks (.ready, as it had no archive): a copy whose archiver found
    // them would warn of each as an orphan (its segment trimmed) or of an unconfigured archive.
    const statusDir = path.join(build, 'pg_wal', 'archive_status');
    for (const name of await fs.readdir(statusDir).catch(() => [] as string[])) await fs.rm(path.join(statusDir, name), { force: true });
    await runCommand(this.bin.initdb, ['--sync-only', '-D', build], { as });
    await fs.writeFile(path.join(build, TEMPLATE_MARKER), `${templateMarker()}\n`);
    if (fingerprint === undefined) throw new PgsError('PG_COMMAND_FAILED', 'the template server did not answer for its catalog fingerprint');
    await writeAtomic(this.layout.fingerprintFile, `${fingerprint}\n`, 0o644);
    await this.folders.removeTree(this.layout.templateDir);
    await fs.rename(build, this.layout.templateDir);
    // Copies of the old template; running spares (.warm-*) are a daemon's: it replaces them itself.
    for (const name of await fs.readdir(this.layout.sparesDir).catch(() => [] as string[])) {
      if (!name.startsWith(WARM_PREFIX)) await this.folders.removeTree(path.join(this.layout.sparesDir, name));
    }
  }
}
