/**
 * Where everything of the local runtimes lives under the data root, as paths
 * only (nothing here touches the disk): the template, the spares, the tenants'
 * folders and logs, the trash, the backups, and the names of the working
 * folders a create or a restore leaves for a while.
 */
import path from 'node:path';
import { socketDirOf, socketPath } from '../server-config.js';

/** Unix socket paths longer than this do not fit `sockaddr_un.sun_path` (108 bytes with the NUL). */
export const MAX_SOCKET_PATH = 107;
export const MAX_TENANT_ID = 40;
/** Each tenant folder's own record of who it belongs to (its catalog entry), for re-adoption when the catalog loses it. */
export const TENANT_META_FILE = 'pgs-tenant.json';
/** Running spares live in spares/.warm-<name>; the name is their key. */
export const WARM_PREFIX = '.warm-';
/** An in-place restore unpacks into tenants/.restore-<id> before it swaps folders. */
export const RESTORE_PREFIX = '.restore-';
/** The tenant's folder from before an in-place restore, until the restore commits. */
export const PRERESTORE_PREFIX = '.prerestore-';
/** A copy in progress (a create without a spare, a clone) beside the folder it becomes. */
export const PARTIAL_PREFIX = '.tmp-';
/** The folders under the data root that hold tenants' folders (root's, 0711, as root). */
export const SHARED_AREAS = ['tenants', 'spares', 'trash', 'backups'] as const;

export class LocalLayout {
  constructor(readonly dataRoot: string) {}

  get templateDir(): string {
    return path.join(this.dataRoot, 'template');
  }

  /** The template is built here and renamed over templateDir when complete. */
  get templateBuildDir(): string {
    return path.join(this.dataRoot, 'template.new');
  }

  get sparesDir(): string {
    return path.join(this.dataRoot, 'spares');
  }

  get tenantsDir(): string {
    return path.join(this.dataRoot, 'tenants');
  }

  get trashDir(): string {
    return path.join(this.dataRoot, 'trash');
  }

  get logsDir(): string {
    return path.join(this.dataRoot, 'logs');
  }

  get backupsDir(): string {
    return path.join(this.dataRoot, 'backups');
  }

  /** The in-place restores' journals (written by the daemon; listed here as leftovers). */
  get restoresDir(): string {
    return path.join(this.dataRoot, 'restores');
  }

  /** Where setup keeps CATALOG_FINGERPRINT_SQL's answer on the template: what every restored cluster's built-ins must match. */
  get fingerprintFile(): string {
    return path.join(this.dataRoot, 'template-catalog.md5');
  }

  /** A tenant's folder; a running spare's key is its folder name in spares/ (it starts with a dot: never a tenant id). */
  tenantDir(id: string): string {
    if (id.startsWith(WARM_PREFIX)) return path.join(this.sparesDir, id);
    return path.join(this.tenantsDir, id);
  }

  logFile(id: string): string {
    return path.join(this.logsDir, `${id}.log`);
  }

  /** The log a server is started with: the template's build (id '') has one of its own. */
  serverLog(id: string): string {
    return id === '' ? path.join(this.logsDir, 'template.log') : this.logFile(id);
  }

  /** `dir` relative to the data root, or undefined when it is the root itself or outside it. */
  inside(dir: string): string | undefined {
    const relative = path.relative(this.dataRoot, dir);
    return relative === '' || relative.startsWith('..') || path.isAbsolute(relative) ? undefined : relative;
  }

  /** A folder in a tenant's backups (`backups/<id>/…`): the tenant and the path's parts below backups/; throws for any other folder. */
  backupsPath(dir: string): { id: string; parts: string[] } {
    const relative = this.inside(dir);
    if (relative === undefined) throw new Error(`${dir} is outside the data folder`);
    const parts = relative.split(path.sep);
    const [area, id] = parts;
    if (area !== 'backups' || id === undefined || id.startsWith('.')) throw new Error(`${dir} is not in a tenant's backups`);
    return { id, parts: parts.slice(1) };
  }
}

/** The tenant a data folder's key belongs to: an in-place restore's staging folder is its tenant's. */
export function ownerKey(key: string): string {
  return key.startsWith(RESTORE_PREFIX) ? key.slice(RESTORE_PREFIX.length) : key;
}

/** Why the data root cannot hold servers' sockets (the longest tenant id's path does not fit), or undefined. */
export function socketPathProblem(layout: LocalLayout): string | undefined {
  const longest = socketPath(socketDirOf(layout.tenantDir('x'.repeat(MAX_TENANT_ID))));
  const bytes = Buffer.byteLength(longest);
  if (bytes <= MAX_SOCKET_PATH) return undefined;
  return `the data folder ${layout.dataRoot} is too long for unix socket paths (${bytes} > ${MAX_SOCKET_PATH} bytes): set PGS_DATA to a shorter folder and run "pgs setup" again`;
}
