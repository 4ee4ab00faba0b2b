import { PgsError } from '../../core/errors.js';
import { announceDaemon, printJson, type Command } from '../command.js';
import { formatTable } from '../table.js';

interface TokenInfo { name: string; scope: string; createdAt: string; lastUsedAt: string | null }

export const token: Command = {
  summary: 'make, list and revoke API tokens (for the REST API on TCP)',
  usage: 'pgs token create <name> --scope read|admin [--json] | pgs token list [--json] | pgs token revoke <name>',
  details: [
    '  create <name>  make a token and print it once (pgs_ + 43 characters); only a hash is kept',
    '    --scope S    read: GET routes only; admin: every route (default read)',
    '  list           names, scopes, when made and last used (never the tokens)',
    '  revoke <name>  the token stops working at once',
    '  --json         print the API\'s answer',
    '',
    'Use a token as "Authorization: Bearer pgs_..." on the API\'s TCP address (pgs status shows it):',
    '  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:5480/v1/tenants',
    'API: POST /v1/tokens {"name", "scope"}, GET /v1/tokens, DELETE /v1/tokens/{name}',
  ].join('\n'),
  options: { scope: { type: 'string' }, json: { type: 'boolean' } },
  positionals: [1, 2],
  async run(ctx, [action, name], values) {
    if (action === 'list') {
      if (name !== undefined) throw new PgsError('USAGE', `unexpected argument ${JSON.stringify(name)}; usage: pgs token list [--json]`);
      const { body } = await ctx.api.change<{ items: TokenInfo[] }>('GET', '/v1/tokens', {}, announceDaemon);
      if (values.json) printJson(body.items);
      else if (body.items.length === 0) console.log('No tokens: pgs token create <name> --scope read|admin');
      else console.log(formatTable([['NAME', 'SCOPE', 'CREATED', 'LAST USED'], ...body.items.map((t) => [t.name, t.scope, t.createdAt, t.lastUsedAt ?? '-'])]));
      return 0;
    }
    if (action !== 'create' && action !== 'revoke') throw new PgsError('USAGE', `unknown action ${JSON.stringify(action)}: create, list or revoke`);
    if (name === undefined) throw new PgsError('USAGE', `missing name; usage: pgs token ${action} <name>`);
    if (action === 'revoke') {
      await ctx.api.change('DELETE', `/v1/tokens/${encodeURIComponent(name)}`, {}, announceDaemon);
      console.log(`Revoked token ${name}`);
      return 0;
    }
    const scope = values.scope ?? 'read';
    if (scope !== 'read' && scope !== 'admin') throw new PgsError('USAGE', `invalid --scope ${JSON.stringify(scope)}: read or admin`);
    const { body } = await ctx.api.change<TokenInfo & { token: string }>('POST', '/v1/tokens', { body: { name, scope } }, announceDaemon);
    if (values.json) {
      printJson(body);
      return 0;
    }
    console.log(`Created token ${body.name} (scope ${body.scope}); it is shown only now:`);
    console.log(body.token);
    return 0;
  },
};
