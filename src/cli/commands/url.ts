import type { ConnectionJson } from '../../api/schemas.js';
import { tenantPath, type Command } from '../command.js';

export const url: Command = {
  summary: 'print a tenant\'s connection string (without the password)',
  usage: 'pgs url <id> [--local]',
  details: [
    '  --local        a libpq URI over the server\'s unix socket on this host (administration, tests);',
    '                 default: the public URI through the router, sslmode=require',
    'API: GET /v1/tenants/{id}/connection (uri, psql, jdbc, local)',
  ].join('\n'),
  options: { local: { type: 'boolean' } },
  positionals: [1, 1],
  async run(ctx, [id], values) {
    const strings = (await ctx.api.getIfRunning<ConnectionJson>(tenantPath(id as string, '/connection'))) ?? (await ctx.pgs().connection(id as string));
    console.log(values.local ? strings.local : strings.uri);
    return 0;
  },
};
