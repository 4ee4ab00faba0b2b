import { announceDaemon, printJson, tenantPath, type Command } from '../command.js';

export const passwd: Command = {
  summary: 'set a new password for a tenant\'s user postgres',
  usage: 'pgs passwd <id> [--password P] [--json]',
  details: [
    '  --password P   the new password (at least 8 characters); default: 32 random characters, printed once',
    '  --json         print {id, password}',
    '  Passwords are never stored by pgs: this is the way back from a lost one. A suspended tenant is',
    '  woken for the change; a stopped one is started for it and stopped again.',
    'API: POST /v1/tenants/{id}/password {"password"?: ...}',
  ].join('\n'),
  options: { password: { type: 'string' }, json: { type: 'boolean' } },
  positionals: [1, 1],
  async run(ctx, [id], values) {
    const body = values.password === undefined ? {} : { password: String(values.password) };
    const { body: result } = await ctx.api.change<{ id: string; password: string }>('POST', tenantPath(id as string, '/password'), { body }, announceDaemon);
    if (values.json) printJson(result);
    else if (values.password === undefined) console.log(`New password for ${id}: ${result.password}`);
    else console.log(`Password of ${id} changed`);
    return 0;
  },
};
