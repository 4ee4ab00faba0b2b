/**
 * What pgs asks of a tenant's server in SQL, as its admin role (or, for an
 * init script, as the tenant): naming the database and setting the password,
 * reading login roles and verifiers, query statistics, the neutralization of a
 * restored server. The statements are built by the pure functions below.
 */
import { promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { PgsError } from '../../core/errors.js';
import { AdminClient, AdminQueryError } from '../admin-client.js';
import type { PgBinaries } from '../binaries.js';
import { neutralize } from '../neutralize.js';
import { redactSecrets } from '../redact.js';
import type { LoginRole, QueryStat } from '../runtime.js';
import {
  ADMIN_DATABASE, ADMIN_ROLE, QUERY_STATS_EXTENSION, QUERY_STATS_SCHEMA, SERVER_PORT, TEMPLATE_DATABASE, TENANT_ROLE, quoteIdent, quoteLiteral,
} from '../server-config.js';
import type { AdminSessions } from './admin-sessions.js';
import type { LocalLayout } from './layout.js';
import type { ServerWatch } from './server-watch.js';

/** A new tenant's server (a copy of the template): its database gets the tenant's name and its role the password, in one transaction. */
export function nameTenantSql(id: string, passwordVerifier: string): string {
  return `ALTER DATABASE ${quoteIdent(TEMPLATE_DATABASE)} RENAME TO ${quoteIdent(id)};` +
    `ALTER ROLE ${quoteIdent(TENANT_ROLE)} WITH LOGIN PASSWORD ${quoteLiteral(passwordVerifier)}`;
}

/** The roles that may log in, all but pgs's admin role (or just `role`), with VALID UNTIL in ms since the epoch. */
export function loginRolesSql(role?: string): string {
  const validUntil = "CASE WHEN rolvaliduntil IS NULL OR rolvaliduntil = 'infinity' THEN NULL WHEN rolvaliduntil = '-infinity' THEN 0 ELSE floor(extract(epoch FROM rolvaliduntil) * 1000)::bigint END";
  return `SELECT rolname, rolpassword, ${validUntil} FROM pg_authid WHERE rolcanlogin AND rolname <> ${quoteLiteral(ADMIN_ROLE)}${role === undefined ? '' : ` AND rolname = ${quoteLiteral(role)}`}`;
}

export function loginRoleOf(row: (string | null)[]): LoginRole {
  return { name: row[0] ?? '', verifier: row[1] ?? null, validUntil: row[2] === null || row[2] === undefined ? null : Number(row[2]) };
}

/** The tenant role's top-level statements in its database: the first `limit` by total time, by mean time and by calls. */
export function queryStatsSql(id: string, limit: number): string {
  if (!Number.isSafeInteger(limit) || limit < 1) throw new PgsError('INVALID_REQUEST', `invalid limit ${limit}`);
  const stats = `${quoteIdent(QUERY_STATS_SCHEMA)}.pg_stat_statements(true)`;
  return 'SELECT queryid::text, query, calls, total_exec_time, mean_exec_time, rows FROM (' +
    'SELECT s.*, row_number() OVER (ORDER BY total_exec_time DESC) AS by_total, row_number() OVER (ORDER BY mean_exec_time DESC) AS by_mean, row_number() OVER (ORDER BY calls DESC) AS by_calls ' +
    `FROM ${stats} s WHERE s.toplevel AND s.userid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = ${quoteLiteral(TENANT_ROLE)}) ` +
    `AND s.dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = ${quoteLiteral(id)})) t ` +
    `WHERE by_total <= ${limit} OR by_mean <= ${limit} OR by_calls <= ${limit} ORDER BY total_exec_time DESC`;
}

/** A row of queryStatsSql, its text with secrets redacted. */
export function queryStatOf(row: (string | null)[]): QueryStat {
  return {
    queryId: row[0] ?? '',
    query: redactSecrets(row[1] ?? ''),
    calls: Number(row[2] ?? 0),
    totalMs: Number(row[3] ?? 0),
    meanMs: Number(row[4] ?? 0),
    rows: Number(row[5] ?? 0),
  };
}

/** A control file's module_pathname (an extension's library), or undefined. */
export function modulePathname(control: string): string | undefined {
  return /^\s*module_pathname\s*=\s*'([^']*)'/m.exec(control)?.[1];
}

export class AdminSql {
  constructor(
    private readonly layout: LocalLayout,
    private readonly watch: ServerWatch,
    private readonly sessions: AdminSessions,
    private readonly bin: PgBinaries,
    private readonly queryStatsOn: boolean,
  ) {}

  /** Not connected to the database being renamed (the tenant's own sessions cannot exist yet). */
  async nameTenant(id: string, passwordVerifier: string, session?: AdminClient): Promise<void> {
    if (session) await session.query(nameTenantSql(id, passwordVerifier), { timeoutMs: 30_000 });
    else await this.sessions.withAdmin(id, ADMIN_DATABASE, (client) => client.query(nameTenantSql(id, passwordVerifier)));
  }

  async setPassword(id: string, passwordVerifier: string): Promise<void> {
    await this.sessions.withAdmin(id, ADMIN_DATABASE, (client) => client.query(`ALTER ROLE ${quoteIdent(TENANT_ROLE)} WITH LOGIN PASSWORD ${quoteLiteral(passwordVerifier)}`));
  }

  async runScript(id: string, password: string, sql: string, timeoutMs: number): Promise<void> {
    const client = await AdminClient.connect(this.watch.socketDir(id), SERVER_PORT, TENANT_ROLE, id, { password, timeoutMs: 10_000 });
    try {
      await client.query(sql, { timeoutMs });
    } finally {
      await client.close().catch(() => undefined);
    }
  }

  async tenantVerifier(id: string): Promise<string | null> {
    const [row] = await this.sessions.withAdmin(id, ADMIN_DATABASE, (c) => c.query(`SELECT rolpassword FROM pg_authid WHERE rolname = ${quoteLiteral(TENANT_ROLE)}`));
    return row?.[0] ?? null;
  }

  async loginRoles(id: string, role?: string): Promise<LoginRole[]> {
    const rows = await this.sessions.onSession(id, (c) => c.query(loginRolesSql(role), { timeoutMs: 5_000 }));
    return rows.map(loginRoleOf);
  }

  async renameDatabase(id: string, from: string): Promise<void> {
    if (from === id) return;
    await this.sessions.withAdmin(id, ADMIN_DATABASE, (c) => c.query(`ALTER DATABASE ${quoteIdent(from)} RENAME TO ${quoteIdent(id)}`, { timeoutMs: 30_000 }));
  }

  async queryStats(id: string, limit: number): Promise<QueryStat[]> {
    this.assertQueryStats(id);
    const rows = await this.onQueryStats(id, queryStatsSql(id, limit));
    return rows.map(queryStatOf);
  }

  /** Empties the statistics of a running server; a stopped one's saved file is deleted. */
  async resetQueryStats(id: string, running: boolean): Promise<void> {
    this.assertQueryStats(id);
    if (running) {
      await this.onQueryStats(id, `SELECT ${quoteIdent(QUERY_STATS_SCHEMA)}.pg_stat_statements_reset()`);
      return;
    }
    // A stopped server keeps its statistics in this file (written at its clean shutdown, read at its next start).
    await fs.rm(path.join(this.layout.tenantDir(id), 'pg_stat', 'pg_stat_statements.stat'), { force: true });
  }

  private assertQueryStats(id: string): void {
    if (!this.queryStatsOn) throw new PgsError('QUERY_STATS_UNAVAILABLE', `query statistics are off on this host (PGS_QUERY_STATS=off): tenant ${id}'s server runs without pg_stat_statements`);
  }

  /**
   * A statement on pgs's copy of pg_stat_statements in pgs_admin, over the health check's open
   * session where there is one. A server from an older template has no copy yet: it is made
   * (in a schema of its own, see neutralize.ts remakeQueryStats) and the statement tried again.
   */
  private onQueryStats(id: string, sql: string): Promise<(string | null)[][]> {
    return this.sessions.onSession(id, async (client) => {
      try {
        return await client.query(sql, { timeoutMs: 10_000 });
      } catch (err) {
        if (!(err instanceof AdminQueryError)) throw err;
        if (err.fields.C === '3F000' || err.fields.C === '42883' || err.fields.C === '42P01') {
          const [exists] = await client.query(`SELECT count(*) FROM pg_catalog.pg_extension WHERE extname = ${quoteLiteral(QUERY_STATS_EXTENSION)}`);
          if (exists?.[0] !== '0') throw err; // there, somewhere else: not pgs's to move
          await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(QUERY_STATS_SCHEMA)}`);
          await client.query(`CREATE EXTENSION ${quoteIdent(QUERY_STATS_EXTENSION)} SCHEMA ${quoteIdent(QUERY_STATS_SCHEMA)}`);
          return client.query(sql, { timeoutMs: 10_000 });
        }
        // 55000: "pg_stat_statements must be loaded via shared_preload_libraries".
        if (err.fields.C === '55000') throw new PgsError('QUERY_STATS_UNAVAILABLE', `tenant ${id}'s server was started without pg_stat_statements (by an older pgs, or with PGS_QUERY_STATS=off): it counts statements after its next restart`);
        throw err;
      }
    });
  }

  async neutralize(id: string): Promise<string[]> {
    const file = this.layout.fingerprintFile;
    const fingerprint = (await fs.readFile(file, 'utf8').catch(() => '')).trim();
    if (fingerprint === '') throw new PgsError('NOT_SET_UP', `the template's catalog fingerprint (${file}) is missing: run "pgs setup" again`);
    const sessions = new Map<string, AdminClient>();
    try {
      return await neutralize(async (database, sql) => {
        let client = sessions.get(database);
        if (!client) {
          client = await this.sessions.connect(id, database, { timeoutMs: 10_000 });
          sessions.set(database, client);
        }
        return client.query(sql, { timeoutMs: 60_000 });
      }, { fingerprint, modulePath: (extension) => this.extensionModule(extension) });
    } catch (err) {
      if (err instanceof AdminQueryError) throw new PgsError('BACKUP_DAMAGED', `not restored: pgs could not check its roles and functions: ${err.fields.M ?? err.message}`);
      throw err;
    } finally {
      for (const client of sessions.values()) await client.close().catch(() => undefined);
    }
  }

  /** An extension's library as its control file names it (module_pathname), from the binaries' share folder. */
  private extensionModule(extension: string): string | undefined {
    if (!/^[A-Za-z0-9_-]+$/.test(extension)) return undefined;
    try {
      return modulePathname(readFileSync(path.join(this.bin.binDir, '..', 'share', 'postgresql', 'extension', `${extension}.control`), 'utf8'));
    } catch {
      return undefined;
    }
  }
}
