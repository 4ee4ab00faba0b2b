import { PgsError } from '../core/errors.js';
import { ADMIN_DATABASE, ADMIN_ROLE, QUERY_STATS_EXTENSION, QUERY_STATS_SCHEMA, quoteIdent, quoteLiteral } from './server-config.js';

/**
 * What a restored cluster may not keep, taken away before its first client.
 * A cluster pgs did not just make (an import, a backup from a bucket) may
 * have been shaped by a superuser of another host: superuser roles, grants
 * of pg_execute_server_program, a C function bound to libc's system(),
 * event triggers waiting for pgs's own DDL, settings that load a library at
 * log-in. A tenant of pgs can make none of these itself (it is not a
 * superuser), so removing them takes nothing a tenant could have built.
 *
 * Runs as the bootstrap superuser over sessions whose start-up settings
 * (ADMIN_SESSION_SETTINGS) the data cannot override. System catalogs changed
 * in place (a built-in function rebound, a trigger on a catalog) cannot be
 * repaired: the restore is refused.
 */
export type AdminQuery = (database: string, sql: string) => Promise<(string | null)[][]>;

/** Object ids below this are PostgreSQL's own (initdb's); everything users make is above. */
const FIRST_NORMAL_OBJECT_ID = 16384;
const BOOTSTRAP_SUPERUSER_ID = 10;

/** The fingerprint of the built-in functions and languages (identical in every database of a cluster initdb made). */
export const CATALOG_FINGERPRINT_SQL =
  "SELECT md5(coalesce((SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s', oid, proname, pronamespace, proowner, prolang, prokind, prosecdef, prosrc, probin, proacl, proconfig), E'\\n' ORDER BY oid) " +
  `FROM pg_catalog.pg_proc WHERE oid < ${FIRST_NORMAL_OBJECT_ID}), '') || coalesce((SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', oid, lanname, lanowner, lanispl, lanpltrusted, lanplcallfoid, lanacl), E'\\n' ORDER BY oid) ` +
  `FROM pg_catalog.pg_language WHERE oid < ${FIRST_NORMAL_OBJECT_ID}), ''))`;

export interface NeutralizeOptions {
  /** CATALOG_FINGERPRINT_SQL's answer on this host's template. */
  fingerprint: string;
  /** Extensions the template itself has, kept whatever they are. */
  keepExtensions?: readonly string[];
  /** The C library a member function of an extension may name, besides `$libdir/<extension>` (from the control files). */
  modulePath?: (extension: string) => string | undefined;
}

const name = (row: (string | null)[], i: number): string => row[i] ?? '';

/** Takes away what no tenant may have; returns one line per thing taken, for the user. */
export async function neutralize(query: AdminQuery, options: NeutralizeOptions): Promise<string[]> {
  const taken: string[] = [];
  const [boot] = await query(ADMIN_DATABASE, `SELECT rolname FROM pg_catalog.pg_authid WHERE oid = ${BOOTSTRAP_SUPERUSER_ID}`);
  if (boot?.[0] !== ADMIN_ROLE) throw new PgsError('BACKUP_DAMAGED', `not restored: the cluster's bootstrap superuser is ${JSON.stringify(boot?.[0] ?? null)}, not ${ADMIN_ROLE} (it was not made by pgs)`);

  // Roles: only the bootstrap superuser keeps SUPERUSER, REPLICATION or BYPASSRLS.
  for (const row of await query(ADMIN_DATABASE, `SELECT rolname, rolsuper, rolreplication, rolbypassrls FROM pg_catalog.pg_authid WHERE oid <> ${BOOTSTRAP_SUPERUSER_ID} AND (rolsuper OR rolreplication OR rolbypassrls) ORDER BY rolname`)) {
    const attrs = [row[1] === 't' ? 'SUPERUSER' : '', row[2] === 't' ? 'REPLICATION' : '', row[3] === 't' ? 'BYPASSRLS' : ''].filter(Boolean);
    await query(ADMIN_DATABASE, `ALTER ROLE ${quoteIdent(name(row, 0))} NOSUPERUSER NOREPLICATION NOBYPASSRLS`);
    taken.push(`role ${name(row, 0)}: ${attrs.join(', ')} removed`);
  }
  await query(ADMIN_DATABASE, `ALTER ROLE ${quoteIdent(ADMIN_ROLE)} WITH LOGIN CONNECTION LIMIT -1 PASSWORD NULL`);

  // A role's membership in a predefined role (pg_execute_server_program, pg_write_server_files...) or in the bootstrap superuser (pg_monitor's own are PostgreSQL's).
  for (const row of await query(ADMIN_DATABASE,
    'SELECT r.rolname, m.rolname, g.rolname FROM pg_catalog.pg_auth_members a JOIN pg_catalog.pg_authid r ON r.oid = a.roleid ' +
    'JOIN pg_catalog.pg_authid m ON m.oid = a.member JOIN pg_catalog.pg_authid g ON g.oid = a.grantor ' +
    `WHERE a.roleid < ${FIRST_NORMAL_OBJECT_ID} AND a.member >= ${FIRST_NORMAL_OBJECT_ID} ORDER BY 2, 1`)) {
    await query(ADMIN_DATABASE, `REVOKE ${quoteIdent(name(row, 0))} FROM ${quoteIdent(name(row, 1))} GRANTED BY ${quoteIdent(name(row, 2))} CASCADE`);
    taken.push(`role ${name(row, 1)}: membership in ${name(row, 0)} revoked`);
  }

  taken.push(...(await resetSettings(query)));

  const databases = await query(ADMIN_DATABASE, 'SELECT datname, datallowconn FROM pg_catalog.pg_database ORDER BY datname');
  if (!databases.some((row) => row[0] === ADMIN_DATABASE)) throw new PgsError('BACKUP_DAMAGED', `not restored: the cluster has no database ${ADMIN_DATABASE} (it was not made by pgs)`);
  for (const row of databases) {
    const db = name(row, 0);
    const closed = row[1] !== 't';
    if (closed) await query(ADMIN_DATABASE, `ALTER DATABASE ${quoteIdent(db)} WITH ALLOW_CONNECTIONS true`);
    try {
      for (const line of await neutralizeDatabase((sql) => query(db, sql), options)) taken.push(`database ${db}: ${line}`);
      for (const line of await remakeQueryStats((sql) => query(db, sql), db === ADMIN_DATABASE)) taken.push(`database ${db}: ${line}`);
    } finally {
      if (closed) await query(ADMIN_DATABASE, `ALTER DATABASE ${quoteIdent(db)} WITH ALLOW_CONNECTIONS false`);
    }
  }
  // pgs's own database and the templates as the template has them: no connections but pgs's, template1 and template0 closed.
  for (const row of await query(ADMIN_DATABASE, `SELECT DISTINCT a.grantee = 0, pg_catalog.pg_get_userbyid(a.grantee) FROM pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a WHERE d.datname = ${quoteLiteral(ADMIN_DATABASE)} AND a.grantee <> ${BOOTSTRAP_SUPERUSER_ID}`)) {
    const everyone = row[0] === 't';
    await query(ADMIN_DATABASE, `REVOKE ALL ON DATABASE ${quoteIdent(ADMIN_DATABASE)} FROM ${everyone ? 'PUBLIC' : quoteIdent(name(row, 1))}`);
    taken.push(`database ${ADMIN_DATABASE}: access of ${everyone ? 'PUBLIC' : `role ${name(row, 1)}`} revoked`);
  }
  for (const template of ['template0', 'template1']) {
    const [open] = await query(ADMIN_DATABASE, `SELECT datallowconn FROM pg_catalog.pg_database WHERE datname = ${quoteLiteral(template)}`);
    if (open?.[0] === 't') await query(ADMIN_DATABASE, `ALTER DATABASE ${template} WITH ALLOW_CONNECTIONS false`);
  }
  return taken;
}

/**
 * pg_stat_statements as this host's PostgreSQL makes it, whatever the data held: dropped (with
 * whatever a superuser of another host may have added to it) and created again, in pgs's own
 * database in a schema pgs makes afresh (pgs reads the statistics there as superuser, so nothing
 * of the data may be found on the way), in another database where it was. Its script resolves
 * nothing a tenant could have planted: an object of its own name that is already there fails it.
 */
async function remakeQueryStats(run: (sql: string) => Promise<(string | null)[][]>, admin: boolean): Promise<string[]> {
  const [had] = await run(`SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = ${quoteLiteral(QUERY_STATS_EXTENSION)}`);
  if (!admin && !had) return [];
  await run(`DROP EXTENSION IF EXISTS ${quoteIdent(QUERY_STATS_EXTENSION)} CASCADE`);
  let schema = had?.[0] ?? 'public';
  if (admin) {
    await run(`DROP SCHEMA IF EXISTS ${quoteIdent(QUERY_STATS_SCHEMA)} CASCADE`);
    await run(`CREATE SCHEMA ${quoteIdent(QUERY_STATS_SCHEMA)}`);
    schema = QUERY_STATS_SCHEMA;
  } else if (/^pg_/.test(schema) || schema === 'information_schema') {
    schema = 'public';
  }
  try {
    await run(`CREATE EXTENSION ${quoteIdent(QUERY_STATS_EXTENSION)} SCHEMA ${quoteIdent(schema)}`);
    return [];
  } catch (err) {
    return [`extension ${QUERY_STATS_EXTENSION} dropped (pgs could not make it again: ${err instanceof Error ? err.message : String(err)})`];
  }
}

/** Role and database settings: a tenant may keep what any user may SET; nothing stays on pgs's role or database. */
async function resetSettings(query: AdminQuery): Promise<string[]> {
  const taken: string[] = [];
  const rows = await query(ADMIN_DATABASE,
    'SELECT d.datname, r.rolname, s.setdatabase, s.setrole, split_part(c.cfg, \'=\', 1), ' +
    '(SELECT p.context FROM pg_catalog.pg_settings p WHERE p.name = lower(split_part(c.cfg, \'=\', 1))) ' +
    'FROM pg_catalog.pg_db_role_setting s LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase ' +
    'LEFT JOIN pg_catalog.pg_authid r ON r.oid = s.setrole, unnest(s.setconfig) AS c(cfg)');
  for (const row of rows) {
    const [database, role, dbOid, roleOid, setting, context] = row;
    if ((dbOid !== '0' && database === null) || (roleOid !== '0' && role === null)) continue; // the database or role is gone: never applied
    const ours = role === ADMIN_ROLE || database === ADMIN_DATABASE;
    if (!ours && context === 'user') continue;
    if (!setting || !/^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)*$/.test(setting)) throw new PgsError('BACKUP_DAMAGED', `not restored: a role or database setting has the invalid name ${JSON.stringify(setting)}`);
    const who = roleOid === '0' ? (dbOid === '0' ? 'ALTER ROLE ALL' : `ALTER DATABASE ${quoteIdent(database ?? '')}`) : `ALTER ROLE ${quoteIdent(role ?? '')}${dbOid === '0' ? '' : ` IN DATABASE ${quoteIdent(database ?? '')}`}`;
    const where = roleOid === '0' ? (dbOid === '0' ? 'every role' : `database ${database ?? ''}`) : `role ${role ?? ''}${dbOid === '0' ? '' : ` in database ${database ?? ''}`}`;
    await query(ADMIN_DATABASE, `${who} RESET ${setting}`);
    taken.push(`${where}: setting ${setting} removed`);
  }
  return taken;
}

async function neutralizeDatabase(run: (sql: string) => Promise<(string | null)[][]>, options: NeutralizeOptions): Promise<string[]> {
  const taken: string[] = [];
  const [print] = await run(CATALOG_FINGERPRINT_SQL);
  if (print?.[0] !== options.fingerprint) throw new PgsError('BACKUP_DAMAGED', 'not restored: its built-in functions differ from this host\'s PostgreSQL (a system catalog was changed in place, or it comes from another PostgreSQL build)');
  const [hooks] = await run(`SELECT (SELECT count(*) FROM pg_catalog.pg_trigger WHERE tgrelid < ${FIRST_NORMAL_OBJECT_ID}) + (SELECT count(*) FROM pg_catalog.pg_rewrite WHERE ev_class < ${FIRST_NORMAL_OBJECT_ID} AND oid >= ${FIRST_NORMAL_OBJECT_ID}) + (SELECT count(*) FROM pg_catalog.pg_policy WHERE polrelid < ${FIRST_NORMAL_OBJECT_ID})`);
  if (hooks?.[0] !== '0') throw new PgsError('BACKUP_DAMAGED', 'not restored: it has triggers, rules or policies on system catalogs');
  const [owner] = await run('SELECT pg_catalog.pg_get_userbyid(datdba), (SELECT rolsuper FROM pg_catalog.pg_authid WHERE oid = datdba) FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()');
  const dbOwner = owner?.[0] ?? '';
  const ownerIsSuperuser = owner?.[1] === 't';

  for (const row of await run('SELECT evtname FROM pg_catalog.pg_event_trigger ORDER BY 1')) {
    await run(`DROP EVENT TRIGGER ${quoteIdent(name(row, 0))}`);
    taken.push(`event trigger ${name(row, 0)} dropped`);
  }
  for (const row of await run('SELECT subname FROM pg_catalog.pg_subscription WHERE subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) ORDER BY 1')) {
    const sub = quoteIdent(name(row, 0));
    await run(`ALTER SUBSCRIPTION ${sub} DISABLE`);
    await run(`ALTER SUBSCRIPTION ${sub} SET (slot_name = NONE)`);
    await run(`DROP SUBSCRIPTION ${sub}`);
    taken.push(`subscription ${name(row, 0)} dropped`);
  }
  // Extensions a tenant could not have made: untrusted ones (file_fdw, dblink, plperlu...), or unknown to this host.
  const keep = new Set(options.keepExtensions ?? []);
  for (const row of await run(
    'SELECT e.extname, coalesce((SELECT v.trusted FROM pg_catalog.pg_available_extension_versions v WHERE v.name = e.extname AND v.version = e.extversion), false) ' +
    `FROM pg_catalog.pg_extension e WHERE e.oid >= ${FIRST_NORMAL_OBJECT_ID} ORDER BY 1`)) {
    // pg_stat_statements is pgs's own (in every server): made again from this host's files below.
    if (row[1] === 't' || keep.has(name(row, 0)) || name(row, 0) === QUERY_STATS_EXTENSION) continue;
    await run(`DROP EXTENSION ${quoteIdent(name(row, 0))} CASCADE`);
    taken.push(`extension ${name(row, 0)} dropped (only a superuser can make it)`);
  }
  // Functions in C, in `internal` or in an untrusted language: only a superuser makes them; those of a kept extension must name its own library.
  for (const row of await run(
    // An internal function of an extension (citext's citextin is textin) must wrap a built-in that everyone may call, never pg_read_file.
    'SELECT p.oid::pg_catalog.regprocedure::text, l.lanname, p.probin, e.extname, ' +
    `EXISTS (SELECT 1 FROM pg_catalog.pg_proc b WHERE b.oid < ${FIRST_NORMAL_OBJECT_ID} AND b.prolang = p.prolang AND b.prosrc = p.prosrc AND b.proacl IS NULL) ` +
    'FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang ' +
    "LEFT JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid AND d.deptype = 'e' " +
    'LEFT JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid ' +
    `WHERE p.oid >= ${FIRST_NORMAL_OBJECT_ID} AND p.prokind <> 'a' AND (l.lanname IN ('c', 'internal') OR NOT l.lanpltrusted) ORDER BY 1`)) {
    const [signature, language, library, extension, publicBuiltin] = row;
    if (extension !== null && extension !== undefined && functionBelongs(language ?? '', library ?? null, publicBuiltin === 't', extension, options)) continue;
    if (extension) await run(`ALTER EXTENSION ${quoteIdent(extension)} DROP ROUTINE ${signature ?? ''}`);
    await run(`DROP ROUTINE IF EXISTS ${signature ?? ''} CASCADE`);
    taken.push(`function ${signature ?? ''} dropped (language ${language ?? '?'}${library ? `, ${library}` : ''})`);
  }
  for (const row of await run(`SELECT lanname FROM pg_catalog.pg_language WHERE oid >= ${FIRST_NORMAL_OBJECT_ID} AND NOT lanpltrusted ORDER BY 1`)) {
    await run(`DROP LANGUAGE IF EXISTS ${quoteIdent(name(row, 0))} CASCADE`);
    taken.push(`language ${name(row, 0)} dropped (untrusted)`);
  }
  // What runs with its owner's rights must not be a superuser's. In a tenant's database nothing of pgs's
  // role is the tenant's doing: what the superuser owned there (but extensions' own objects) becomes the
  // database owner's. In a database only superusers own (the templates), such things lose their rights instead.
  const member = (catalog: string, column: string) => `EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = '${catalog}'::pg_catalog.regclass AND d.objid = ${column} AND d.deptype = 'e')`;
  const superOwned = (column: string) => `(SELECT rolsuper FROM pg_catalog.pg_authid WHERE oid = ${column})`;
  const given: string[] = [];
  for (const row of await run(
    `SELECT p.oid::pg_catalog.regprocedure::text, p.prosecdef, ${member('pg_catalog.pg_proc', 'p.oid')} FROM pg_catalog.pg_proc p ` +
    `WHERE p.oid >= ${FIRST_NORMAL_OBJECT_ID} AND ${superOwned('p.proowner')} ORDER BY 1`)) {
    const [signature, definer, inExtension] = row;
    if (inExtension === 't' && definer !== 't') continue;
    if (ownerIsSuperuser) {
      if (definer !== 't') continue;
      await run(`ALTER ROUTINE ${signature ?? ''} SECURITY INVOKER`);
      taken.push(`function ${signature ?? ''}: SECURITY DEFINER of a superuser removed`);
    } else {
      await run(`ALTER ROUTINE ${signature ?? ''} OWNER TO ${quoteIdent(dbOwner)}`);
      if (definer === 't') taken.push(`function ${signature ?? ''}: owner ${ADMIN_ROLE} changed to ${dbOwner} (SECURITY DEFINER)`);
      else given.push(`function ${signature ?? ''}`);
    }
  }
  const kinds: Record<string, string> = { r: 'TABLE', p: 'TABLE', f: 'FOREIGN TABLE', v: 'VIEW', m: 'MATERIALIZED VIEW' };
  for (const row of await run(
    `SELECT c.oid::pg_catalog.regclass::text, c.relkind FROM pg_catalog.pg_class c WHERE c.oid >= ${FIRST_NORMAL_OBJECT_ID} AND c.relkind IN ('r', 'p', 'f', 'v', 'm') ` +
    `AND ${superOwned('c.relowner')} AND NOT ${member('pg_catalog.pg_class', 'c.oid')} AND NOT c.relispartition ORDER BY 1`)) {
    const [relation, kind] = row;
    if (!ownerIsSuperuser) {
      await run(`ALTER ${kinds[kind ?? 'r'] ?? 'TABLE'} ${relation ?? ''} OWNER TO ${quoteIdent(dbOwner)}`);
      given.push(`${(kinds[kind ?? 'r'] ?? 'table').toLowerCase()} ${relation ?? ''}`);
    } else if (kind === 'v') {
      await run(`ALTER VIEW ${relation ?? ''} SET (security_invoker = true)`);
      taken.push(`view ${relation ?? ''}: reads with its caller's rights, not a superuser's`);
    }
  }
  if (!ownerIsSuperuser) {
    for (const row of await run(`SELECT n.nspname FROM pg_catalog.pg_namespace n WHERE n.oid >= ${FIRST_NORMAL_OBJECT_ID} AND ${superOwned('n.nspowner')} AND n.nspname NOT LIKE 'pg\\_%' AND NOT ${member('pg_catalog.pg_namespace', 'n.oid')} ORDER BY 1`)) {
      await run(`ALTER SCHEMA ${quoteIdent(name(row, 0))} OWNER TO ${quoteIdent(dbOwner)}`);
      given.push(`schema ${name(row, 0)}`);
    }
  }
  if (given.length > 0) taken.push(`${given.length} object${given.length === 1 ? '' : 's'} of ${ADMIN_ROLE} given to ${dbOwner} (${given.slice(0, 5).join(', ')}${given.length > 5 ? ', ...' : ''})`);
  return taken;
}

/** A C (or internal) function of a kept extension is the extension's own when it names the extension's library in $libdir. */
function functionBelongs(language: string, library: string | null, wrapsPublicBuiltin: boolean, extension: string, options: NeutralizeOptions): boolean {
  if (language === 'internal') return wrapsPublicBuiltin;
  if (language !== 'c' || library === null) return false;
  const allowed = new Set([`$libdir/${extension}`, options.modulePath?.(extension)].filter((x): x is string => x !== undefined));
  return allowed.has(library);
}
