/**
 * The shared parts of the local runtimes (native and docker), made once per
 * runtime from its options: everything about a tenant's files, its SQL, and
 * what was last seen of its server. A ServerHost (server-host.ts) is built on
 * them; LocalRuntime joins them into a TenantRuntime.
 */
import { homeTag } from '../../core/paths.js';
import type { PgBinaries } from '../binaries.js';
import type { ServerUser } from '../system-user.js';
import { AdminSessions } from './admin-sessions.js';
import { AdminSql } from './admin-sql.js';
import { LocalFolders } from './folders.js';
import { HostProcesses } from './host-processes.js';
import { Inventory } from './inventory.js';
import { LocalLayout } from './layout.js';
import { Ownership } from './ownership.js';
import { PhysicalBackups } from './physical-backup.js';
import { LocalRestores } from './restore.js';
import { ServerFiles } from './server-files.js';
import { ServerWatch } from './server-watch.js';
import { ColdSpares } from './spares.js';
import { Template } from './template.js';

export interface LocalRuntimeOptions {
  /** Holds `template/`, `tenants/<id>/` (data + socket) and `logs/<id>.log`. */
  dataRoot: string;
  /** pgs's home: what this runtime names on the host (control groups, containers) carries its tag. */
  home: string;
  serverUser: ServerUser;
  binaries: PgBinaries;
  /** How long a server may take to accept connections (crash recovery included). Default 60 s. */
  startTimeoutMs?: number;
  /** How long a fast shutdown may take before it becomes an immediate one. Default 60 s. */
  stopTimeoutMs?: number;
  /** Ready copies of the template kept in spares/ so that create need not copy. Default 2; 0 turns the pool off. */
  spareServers?: number;
  /** Load pg_stat_statements into every server at its start (default true; PGS_QUERY_STATS=off turns it off). */
  queryStats?: boolean;
}

export interface LocalParts {
  readonly home: string;
  /** The home's tag (see core/paths.ts homeTag). */
  readonly homeTag: string;
  readonly bin: PgBinaries;
  readonly startTimeoutMs: number;
  readonly stopTimeoutMs: number;
  readonly layout: LocalLayout;
  readonly owners: Ownership;
  readonly folders: LocalFolders;
  readonly watch: ServerWatch;
  readonly sessions: AdminSessions;
  readonly sql: AdminSql;
  /** Postmasters as children of this process: the template's build on every runtime, the servers on the native one. */
  readonly processes: HostProcesses;
  readonly template: Template;
  readonly cold: ColdSpares;
  readonly files: ServerFiles;
  readonly backups: PhysicalBackups;
  readonly restores: LocalRestores;
  readonly inventory: Inventory;
}

export function localParts(options: LocalRuntimeOptions): LocalParts {
  const startTimeoutMs = options.startTimeoutMs ?? 60_000;
  const stopTimeoutMs = options.stopTimeoutMs ?? 60_000;
  const bin = options.binaries;
  const layout = new LocalLayout(options.dataRoot);
  const owners = new Ownership(layout, options.serverUser);
  const folders = new LocalFolders(layout, owners);
  const watch = new ServerWatch(layout);
  const sessions = new AdminSessions(layout, watch);
  const processes = new HostProcesses(layout, watch, folders, owners, bin, startTimeoutMs);
  const backups = new PhysicalBackups(layout, folders, owners, sessions);
  return {
    home: options.home,
    homeTag: homeTag(options.home),
    bin,
    startTimeoutMs,
    stopTimeoutMs,
    layout,
    owners,
    folders,
    watch,
    sessions,
    sql: new AdminSql(layout, watch, sessions, bin, options.queryStats ?? true),
    processes,
    template: new Template(layout, folders, owners, processes, sessions, bin, stopTimeoutMs),
    cold: new ColdSpares(layout, folders, owners, options.spareServers ?? 2),
    files: new ServerFiles(layout, folders, options.queryStats ?? true),
    backups,
    restores: new LocalRestores(layout, folders, owners, backups),
    inventory: new Inventory(layout, folders),
  };
}
