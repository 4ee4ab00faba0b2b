import { lookup } from 'node:dns/promises';
import type { ConnectionJson } from '../api/schemas.js';

/**
 * Connection strings that work where they are printed. `*.localhost` names
 * resolve only where systemd-resolved or nss-myhostname does it (not on a
 * stock Debian or in most containers): when the tenant's host name does not
 * resolve on this machine, the psql and env forms add `hostaddr=127.0.0.1`
 * (libpq still sends the name as SNI, so the router finds the tenant).
 */
export type ConnectionFormat = 'uri' | 'psql' | 'jdbc' | 'env';
export const CONNECTION_FORMATS: readonly ConnectionFormat[] = ['uri', 'psql', 'jdbc', 'env'];

export async function resolves(hostname: string, timeoutMs = 1_000): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      lookup(hostname).then(() => true, () => false),
      new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs); }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** `password` is added only when given (create prints it once). */
export function formatConnection(c: ConnectionJson, format: ConnectionFormat, options: { hostaddr?: string; password?: string } = {}): string {
  const hostaddr = options.hostaddr;
  switch (format) {
    case 'uri':
      return options.password === undefined ? c.uri : c.uri.replace(`${c.user}@`, `${c.user}:${encodeURIComponent(options.password)}@`);
    case 'psql':
      return `${c.psql.replace(`host=${c.hostname} `, `host=${c.hostname} ${hostaddr ? `hostaddr=${hostaddr} ` : ''}`)}${options.password === undefined ? '' : ` password=${quoteLibpq(options.password)}`}`;
    case 'jdbc':
      return c.jdbc;
    case 'env':
      return [...c.env.split('\n').flatMap((line) => (line.startsWith('PGHOST=') && hostaddr ? [line, `PGHOSTADDR=${hostaddr}`] : [line])), ...(options.password === undefined ? [] : [`PGPASSWORD=${options.password}`])].join('\n');
  }
}

/** A libpq keyword value: quoted when it holds spaces or quotes. */
function quoteLibpq(value: string): string {
  return /^[^\s'\\]+$/.test(value) ? value : `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** The hostaddr the strings need here: 127.0.0.1 when the name does not resolve on this machine. */
export async function localHostaddr(c: ConnectionJson): Promise<string | undefined> {
  return (await resolves(c.hostname)) ? undefined : '127.0.0.1';
}
