import type { TenantJson } from '../../api/schemas.js';
import { announceDaemon, tenantPath, type Command } from '../command.js';
import { stopDaemon } from '../api-client.js';

export const stop: Command = {
  summary: 'stop one tenant\'s server, or the daemon and all servers (fast shutdown, nothing committed is lost)',
  usage: 'pgs stop [<id>] [--no-wait-ship]',
  details: [
    '  <id>           stop this tenant\'s server (it stays stopped until "pgs start <id>"); the daemon keeps running',
    '                 without <id>: every server, and the daemon ("pgs start" brings them all back);',
    '                 on the kubernetes runtime only this daemon stops (the clusters and other pods keep serving)',
    '  --no-wait-ship with a backup bucket, the daemon first copies to it what is not there yet (the servers\'',
    '                 last WAL above all; at most 2 min, PGS_STOP_SHIP_TIMEOUT in the daemon\'s environment when',
    '                 it started) and fails naming what stayed',
    '                 only on this host; this stops without waiting (the next start copies it)',
    '',
    'API: POST /v1/tenants/{id}/stop, POST /v1/stop',
  ].join('\n'),
  options: { 'no-wait-ship': { type: 'boolean' } },
  positionals: [0, 1],
  async run(ctx, [id], values) {
    const how = { ship: values['no-wait-ship'] !== true, progress: (line: string) => console.error(line) };
    if (id === undefined) {
      const kubernetes = (await ctx.pgs().store.readIfExists())?.settings.runtime === 'kubernetes';
      if (await stopDaemon(ctx.home, how)) {
        console.log(kubernetes ? 'Stopped the daemon; the tenants\' clusters keep running (pgs stop <id> stops one)' : 'Stopped the daemon and every server');
        return 0;
      }
      if (kubernetes) {
        console.log('No daemon runs; the tenants\' clusters are the cluster\'s (pgs stop <id> stops one, through a daemon)');
        return 0;
      }
      // No daemon, but servers a killed daemon left running: a daemon adopts and stops them.
      const running = (await ctx.pgs().list()).filter((t) => t.state !== 'stopped');
      if (running.length === 0) {
        console.log('No daemon runs; no server runs');
        return 0;
      }
      await ctx.api.change('GET', '/v1/status', {}, announceDaemon);
      await stopDaemon(ctx.home, how);
      console.log(`Stopped ${running.map((t) => t.id).join(', ')} and the daemon`);
      return 0;
    }
    const { body: after } = await ctx.api.change<TenantJson>('POST', tenantPath(id, '/stop'), {}, announceDaemon);
    if (after.state !== 'stopped') {
      console.error(`pgs stop: ${id}: the server is still ${after.state}${after.lastError ? `: ${after.lastError}` : ''}; see pgs logs ${id}`);
      return 1;
    }
    console.log(`Stopped ${id}`);
    return 0;
  },
};
