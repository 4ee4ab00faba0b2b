import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { PgsError } from '../core/errors.js';

/** Who the PostgreSQL servers run as. PostgreSQL refuses to run as root. */
export interface ServerUser {
  name: string;
  uid: number;
  gid: number;
  /** True when processes must be spawned with this uid/gid (pgs runs as root). */
  switchTo: boolean;
}

export const DEFAULT_SERVER_USER = 'pgs';

export function lookupUser(name: string): { uid: number; gid: number } | undefined {
  let passwd: string;
  try {
    passwd = readFileSync('/etc/passwd', 'utf8');
  } catch {
    return undefined;
  }
  for (const line of passwd.split('\n')) {
    const fields = line.split(':');
    if (fields[0] === name && fields.length >= 4) {
      return { uid: Number(fields[2]), gid: Number(fields[3]) };
    }
  }
  return undefined;
}

/** The server user named in settings (null: whoever runs pgs). */
export function resolveServerUser(name: string | null): ServerUser {
  if (name === null) {
    const me = userInfo();
    return { name: me.username, uid: me.uid, gid: me.gid, switchTo: false };
  }
  const found = lookupUser(name);
  if (!found) {
    throw new PgsError('SYSTEM_USER', `the system user ${JSON.stringify(name)} that runs the servers does not exist: run "pgs setup" to create it`);
  }
  if (found.uid === 0) throw new PgsError('SYSTEM_USER', `the server user ${name} is root; PostgreSQL refuses to run as root`);
  return { name, uid: found.uid, gid: found.gid, switchTo: true };
}

/** Creates the unprivileged system user; returns true when it was created now. */
export function ensureSystemUser(name: string): boolean {
  if (lookupUser(name)) return false;
  const result = spawnSync(
    'useradd',
    ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', '--comment', 'pgs PostgreSQL servers', name],
    { encoding: 'utf8' },
  );
  if (result.error || result.status !== 0) {
    if (lookupUser(name)) return false; // another pgs setup made it at the same moment
    const why = result.error ? result.error.message : result.stderr.trim();
    throw new PgsError('SYSTEM_USER', `could not create the system user ${name} with useradd (${why}); create it yourself or set PGS_SERVER_USER to an existing unprivileged user`);
  }
  return true;
}
