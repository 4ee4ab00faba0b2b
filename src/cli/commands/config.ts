import type { TenantJson } from '../../api/schemas.js';
import { DEFAULT_AUTOSUSPEND_SECONDS } from '../../catalog/schema.js';
import { announceDaemon, parseDuration, parseInteger, printJson, tenantPath, type Command } from '../command.js';
import { formatTable } from '../table.js';

export const config: Command = {
  summary: 'show or change a tenant\'s settings (autosuspend, max connections)',
  usage: 'pgs config <id> [--autosuspend 30s|5m|1h|off] [--max-connections N] [--json]',
  details: [
    '  --autosuspend D      stop the server after D without connections through the router (default 5m);',
    '                       the next connection wakes it. "off" keeps it running.',
    '  --max-connections N  the server\'s max_connections (5 to 10000); takes effect at its next start',
    '                       ("pgs stop <id> && pgs start <id>", or POST /v1/tenants/{id}/restart)',
    '  --json               print {id, autosuspendSeconds, maxConnections, access}',
    'API: PATCH /v1/tenants/{id} {"autosuspend": 300, "maxConnections": 20}',
  ].join('\n'),
  options: { autosuspend: { type: 'string' }, 'max-connections': { type: 'string' }, json: { type: 'boolean' } },
  positionals: [1, 1],
  async run(ctx, [id], values) {
    const patch = {
      ...(values.autosuspend !== undefined ? { autosuspend: parseDuration(String(values.autosuspend)) } : {}),
      ...(values['max-connections'] !== undefined ? { maxConnections: parseInteger(String(values['max-connections']), '--max-connections', 5, 10_000) } : {}),
    };
    let shown: { id: string; autosuspendSeconds: number | null; maxConnections: number; access: string };
    if (Object.keys(patch).length > 0) {
      const { body } = await ctx.api.change<TenantJson>('PATCH', tenantPath(id as string), { body: patch }, announceDaemon);
      shown = body;
    } else {
      // Reading needs no daemon.
      const fromDaemon = await ctx.api.getIfRunning<TenantJson>(tenantPath(id as string));
      if (fromDaemon) shown = fromDaemon;
      else {
        const { tenant } = await ctx.pgs().tenant(id as string);
        shown = { ...tenant, autosuspendSeconds: tenant.autosuspendSeconds === undefined ? DEFAULT_AUTOSUSPEND_SECONDS : tenant.autosuspendSeconds };
      }
    }
    if (values.json) {
      printJson({ id: shown.id, autosuspendSeconds: shown.autosuspendSeconds, maxConnections: shown.maxConnections, access: shown.access });
      return 0;
    }
    console.log(formatTable([
      ['autosuspend', shown.autosuspendSeconds === null ? 'off' : `${shown.autosuspendSeconds}s`],
      ['max connections', String(shown.maxConnections)],
      ['access', shown.access],
    ]));
    return 0;
  },
};
