import type { Command } from '../command.js';

export const reload: Command = {
  summary: 'make a running daemon re-read the catalog and the certificate files',
  usage: 'pgs reload',
  details: [
    '  For hand edits of catalog.json and renewed certificate files. A certificate that does not load',
    '  is refused; the daemon keeps the old one and says so in its log.',
    'API: POST /v1/reload',
  ].join('\n'),
  options: {},
  positionals: [0, 0],
  async run(ctx) {
    await ctx.pgs().store.read();
    if ((await ctx.api.getIfRunning('/v1/status')) === undefined) {
      console.log('No daemon runs: nothing to reload');
      return 0;
    }
    await ctx.api.request('POST', '/v1/reload');
    console.log('Reloaded');
    return 0;
  },
};
