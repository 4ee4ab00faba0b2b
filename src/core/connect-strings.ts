/**
 * Connection strings that work where they are printed, one source for the
 * CLI (`pgs url`) and the dashboard. `*.localhost` names resolve only where
 * systemd-resolved or nss-myhostname does it (not on a stock Debian or in
 * most containers): when the tenant's host name does not resolve, the psql and
 * env forms add `hostaddr=127.0.0.1` (libpq still sends the name as SNI, so
 * the router finds the tenant). Nothing here touches the network: whether the
 * name resolves is the caller's to find out (core/hostaddr.ts).
 */
export type ConnectionFormat = 'uri' | 'psql' | 'jdbc' | 'env';
export const CONNECTION_FORMATS: readonly ConnectionFormat[] = ['uri', 'psql', 'jdbc', 'env'];

/** What the strings are made of: the API's connection answer, with or without its hostaddr. */
/** The parts of a tenant's connection (the API's ConnectionJson has them, and more) that the formats are made of. */
export interface ConnectionParts {
  uri: string;
  psql: string;
  jdbc: string;
  env: string;
  hostname: string;
  user: string;
}

/** `password` is added only when given (create prints it once). */
export function formatConnection(c: ConnectionParts, format: ConnectionFormat, options: { hostaddr?: string | null; password?: string } = {}): string {
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
