import type { BackupListJson } from '../../api/schemas.js';
import { isPgsError } from '../../core/errors.js';
import { announceDaemon, confirm, tenantPath, type Command } from '../command.js';

export const remove: Command = {
  summary: 'stop a tenant and delete its server and its data (its backups stay)',
  usage: 'pgs remove <id> [--yes]',
  details: [
    '  --yes          do not ask; without it pgs asks on a terminal and refuses otherwise',
    '  Its backups and WAL archive stay: "pgs restore <id>" brings the tenant back as it was when',
    '  removed, "pgs backups <id> --delete" deletes them. A tenant without a backup yet leaves',
    '  nothing (its archive goes too), and pgs says so.',
    '',
    'API: DELETE /v1/tenants/{id}',
  ].join('\n'),
  options: { yes: { type: 'boolean' } },
  positionals: [1, 1],
  async run(ctx, [id], values) {
    const tenant = id as string;
    // An unknown id fails before any question.
    await ctx.api.change('GET', tenantPath(tenant), {}, announceDaemon);
    if (!values.yes) await confirm(`Remove tenant ${tenant} and delete all its data? Type its id to confirm: `, tenant, `not removing ${tenant}`);
    await ctx.api.change('DELETE', tenantPath(tenant), {}, announceDaemon);
    // Without a backup its archive went with it, and neither hint below would work.
    const kept = await ctx.api.request<BackupListJson>('GET', tenantPath(tenant, '/backups'), { timeoutMs: 30_000 }).then((r) => r.body.backups.length, (err: unknown) => (isPgsError(err, 'TENANT_NOT_FOUND') ? 0 : undefined));
    if (kept === 0) console.log(`Removed tenant ${tenant}; it had no backup, so nothing of it is kept`);
    else {
      const what = kept === undefined ? 'its backups, if it has any, and its WAL archive stay' : `its ${kept === 1 ? 'backup' : `${kept} backups`} and its WAL archive stay`;
      console.log(`Removed tenant ${tenant}; ${what} ("pgs restore ${tenant}" brings it back, "pgs backups ${tenant} --delete" deletes them)`);
    }
    return 0;
  },
};
