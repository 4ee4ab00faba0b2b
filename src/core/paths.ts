import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import path from 'node:path';

/** The config folder: `PGS_HOME`, else `~/.sysnee-config/` (the original product's). */
export function pgsHome(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.PGS_HOME;
  return path.resolve(fromEnv && fromEnv.length > 0 ? fromEnv : path.join(homedir(), '.sysnee-config'));
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/**
 * Where tenant data, sockets and logs live unless `PGS_DATA` says otherwise.
 * As root the config folder sits under /root (0700), which the unprivileged
 * server user cannot traverse, so data goes under /var/lib/pgs instead; a
 * non-default PGS_HOME gets its own sub-folder so that two homes never share data.
 */
export function defaultDataRoot(home: string, env: NodeJS.ProcessEnv = process.env): string {
  if (env.PGS_DATA && env.PGS_DATA.length > 0) return path.resolve(env.PGS_DATA);
  if (!isRoot()) return path.join(home, 'data');
  const isDefaultHome = home === path.resolve(path.join(homedir(), '.sysnee-config'));
  if (isDefaultHome) return '/var/lib/pgs';
  return path.join('/var/lib/pgs/homes', homeTag(home));
}

/**
 * A short, stable name for a pgs home (its resolved path's hash), for what
 * the host shares between homes: data folders, control groups, container names.
 */
export function homeTag(home: string): string {
  return createHash('sha256').update(path.resolve(home)).digest('hex').slice(0, 10);
}

export interface HomePaths {
  home: string;
  catalog: string;
  catalogBackup: string;
  lock: string;
  certDir: string;
}

export function homePaths(home: string): HomePaths {
  return {
    home,
    catalog: path.join(home, 'catalog.json'),
    catalogBackup: path.join(home, 'catalog.json.bak'),
    lock: path.join(home, 'catalog.lock'),
    certDir: path.join(home, 'certs'),
  };
}

/** The daemon's files in the config folder: its pid, its API socket (0600), its log and the API tokens. */
export interface DaemonPaths {
  pidFile: string;
  socket: string;
  log: string;
  tokens: string;
  /** What the last stop could not copy to the backup bucket (pgs stop reads it after the daemon exits). */
  lastStop: string;
}

export function daemonPaths(home: string): DaemonPaths {
  return { pidFile: path.join(home, 'daemon.pid'), socket: path.join(home, 'daemon.sock'), log: path.join(home, 'daemon.log'), tokens: path.join(home, 'tokens.json'), lastStop: path.join(home, 'last-stop.json') };
}
