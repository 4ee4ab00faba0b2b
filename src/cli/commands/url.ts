import type { ConnectionJson } from '../../api/schemas.js';
import { PgsError } from '../../core/errors.js';
import { tenantPath, type Command } from '../command.js';
import { CONNECTION_FORMATS, formatConnection, type ConnectionFormat } from '../../core/connect-strings.js';
import { localHostaddr } from '../../core/hostaddr.js';

export const url: Command = {
  summary: 'print a tenant\'s connection string (without the password)',
  usage: 'pgs url <id> [--format uri|psql|jdbc|env] [--local]',
  details: [
    '  --format F     uri (default: postgresql://...?sslmode=require), psql (libpq keywords for psql "..."),',
    '                 jdbc, or env (PGHOST=... lines for `export`). When the host name does not resolve',
    '                 on this machine (*.localhost often does not), psql and env add hostaddr=127.0.0.1:',
    '                 libpq still sends the name for TLS (SNI), which picks the tenant.',
    '  --local        a libpq URI over the server\'s unix socket on this host (administration, tests)',
    '  To verify the server, add sslmode=verify-full sslrootcert=<the certificate "pgs status" names>.',
    'API: GET /v1/tenants/{id}/connection (uri, psql, jdbc, env, local, sslrootcert)',
  ].join('\n'),
  options: { local: { type: 'boolean' }, format: { type: 'string' } },
  positionals: [1, 1],
  async run(ctx, [id], values) {
    const format = (values.format ?? 'uri') as ConnectionFormat;
    if (!CONNECTION_FORMATS.includes(format)) throw new PgsError('USAGE', `invalid --format ${JSON.stringify(values.format)}: uri, psql, jdbc or env`);
    const strings = (await ctx.api.getIfRunning<ConnectionJson>(tenantPath(id as string, '/connection'))) ?? (await ctx.pgs().connection(id as string));
    if (values.local) {
      console.log(strings.local);
      return 0;
    }
    // Resolved here, where the string is used (the daemon's hostaddr field is for its own host).
    const hostaddr = format === 'psql' || format === 'env' ? await localHostaddr(strings.hostname) : null;
    console.log(formatConnection(strings, format, { hostaddr }));
    return 0;
  },
};
