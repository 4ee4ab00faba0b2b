import type { TenantJson } from '../../api/schemas.js';
import { announceDaemon, tenantPath, type Command } from '../command.js';

export function accessCommand(access: 'enabled' | 'disabled'): Command {
  const verb = access === 'enabled' ? 'enable-access' : 'disable-access';
  return {
    summary: access === 'enabled'
      ? 'allow connections to a tenant through the router'
      : 'refuse connections to a tenant through the router and close its open ones',
    usage: `pgs ${verb} <id>`,
    details: [
      access === 'enabled'
        ? '  New tenants start with access enabled.'
        : '  The router refuses the tenant\'s host name with a clear error until enable-access; its server keeps running.',
      `API: PATCH /v1/tenants/{id} {"access": "${access}"}`,
    ].join('\n'),
    options: {},
    positionals: [1, 1],
    async run(ctx, [id]) {
      const { body: before, headers } = await ctx.api.change<TenantJson>('GET', tenantPath(id as string), {}, announceDaemon);
      if (before.access === access) {
        console.log(`Access to ${id} was already ${access}`);
        return 0;
      }
      // If-Match: a change made by someone else in between is not overwritten blindly.
      await ctx.api.request('PATCH', tenantPath(id as string), { body: { access }, headers: { 'if-match': String(headers.etag) } });
      console.log(`Access to ${id} ${access}`);
      return 0;
    },
  };
}
