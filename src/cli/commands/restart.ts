import type { TenantJson } from '../../api/schemas.js';
import { announceDaemon, tenantPath, type Command } from '../command.js';

export const restart: Command = {
  summary: 'restart one tenant\'s server (its sessions end; a stopped or suspended one is started)',
  usage: 'pgs restart <id>',
  details: [
    '  <id>           stop this tenant\'s server (fast shutdown: sessions end, nothing committed is lost)',
    '                 and start it again on the same data; settings that wait for a start',
    '                 (--max-connections) take effect. A stopped or suspended tenant is started.',
    '',
    'API: POST /v1/tenants/{id}/restart',
  ].join('\n'),
  options: {},
  positionals: [1, 1],
  async run(ctx, [id]) {
    const { body: after } = await ctx.api.change<TenantJson>('POST', tenantPath(id as string, '/restart'), {}, announceDaemon);
    if (after.state !== 'running') {
      console.error(`pgs restart: ${id}: the server is ${after.state} after the restart${after.lastError ? `: ${after.lastError}` : ''}; see pgs logs ${id}`);
      return 1;
    }
    console.log(`Restarted ${id}`);
    return 0;
  },
};
