import type { TenantJson } from '../../api/schemas.js';
import type { ApiClient } from '../api-client.js';
import { printJson, type Command } from '../command.js';
import { formatDuration, formatTable } from '../table.js';

export const list: Command = {
  summary: 'show every tenant: host name, access, state, uptime, connections, health',
  usage: 'pgs list [--json]',
  details: [
    '  --json         print an array of tenants, each as GET /v1/tenants/{id} gives it: {id, hostname,',
    '                 access, state, wanted, pid, database, user, port, maxConnections, pool, poolSize,',
    '                 maxClientConnections, autosuspendSeconds,',
    '                 createdAt, serverStartedAt, uptimeSeconds, connections, health, healthCheckedAt,',
    '                 healthError?, lastError?, restarts, wakes, backupSchedule, backupRetain, rpoSeconds,',
    '                 lastBackupAt, archiving, archivingError?}',
    '  BACKUP: how long ago the newest backup finished, or the WAL archive\'s trouble (failing, behind,',
    '  gap: a segment missing), explained below the table.',
    '  States: running, starting, stopping, stopped; with a daemon also suspended (idle, wakes on',
    '  connect) and crashed (keeps failing to start; lastError says why). Connections and health',
    '  (ok, failing, unknown: a SELECT 1 over the server\'s socket every minute) come from the daemon.',
  ].join('\n'),
  options: { json: { type: 'boolean' } },
  positionals: [0, 0],
  async run(ctx, _args, values) {
    const catalog = await ctx.pgs().store.read(); // a missing setup or broken catalog is reported before asking the daemon
    const pages = await allTenants(ctx.api);
    const fromDaemon = pages?.items;
    const tenants = fromDaemon ?? (await ctx.pgs().list(catalog));
    if (values.json) {
      printJson(tenants);
      return 0;
    }
    if (tenants.length === 0) {
      console.log('No tenants yet: pgs create <id>');
      return 0;
    }
    console.log(formatTable([
      ['ID', 'HOSTNAME', 'ACCESS', 'STATE', 'UPTIME', 'CONNS', 'HEALTH', 'BACKUP'],
      ...tenants.map((t) => [
        t.id, t.hostname, t.access, t.state,
        t.uptimeSeconds === null ? '-' : formatDuration(t.uptimeSeconds),
        t.connections === null ? '-' : String(t.connections),
        fromDaemon ? t.health : '-',
        fromDaemon ? backupCell(t) : '-',
      ]),
    ]));
    const troubled = fromDaemon ? tenants.filter((t) => t.archivingError !== undefined && t.archiving !== 'ok') : [];
    for (const t of troubled.slice(0, 5)) console.log(`${t.id}: ${t.archivingError ?? ''}`);
    if (pages) {
      console.log(catalog.settings.runtime === 'kubernetes'
        ? `${pages.running} of ${pages.maxRunning} clusters serving`
        : `${pages.running} of at most ${pages.maxRunning} servers running (spares included)`);
    }
    if (!fromDaemon) console.log('(no daemon runs: connections and health are unknown; "pgs start" starts it)');
    return 0;
  },
};

/** "3h ago", "none yet", or the archive's trouble ("failing", "gap", "behind"). */
function backupCell(t: TenantJson): string {
  if (t.archiving === 'failing' || t.archiving === 'gap' || t.archiving === 'behind') return t.archiving;
  if (t.lastBackupAt === null) return t.archiving === 'off' ? 'off' : 'none yet';
  return `${formatDuration((Date.now() - Date.parse(t.lastBackupAt)) / 1000)} ago`;
}

/** Every page of GET /v1/tenants and the running count of the last, or undefined when no daemon runs. */
async function allTenants(api: ApiClient): Promise<{ items: TenantJson[]; running: number; maxRunning: number } | undefined> {
  const items: TenantJson[] = [];
  let cursor: string | null = null;
  let running = 0;
  let maxRunning = 0;
  do {
    const page: { items: TenantJson[]; nextCursor: string | null; running: number; maxRunning: number } | undefined =
      await api.getIfRunning(`/v1/tenants?limit=1000${cursor === null ? '' : `&cursor=${cursor}`}`);
    if (!page) return undefined;
    items.push(...page.items);
    cursor = page.nextCursor;
    ({ running, maxRunning } = page);
  } while (cursor !== null);
  return { items, running, maxRunning };
}
