import type { TenantJson } from '../../api/schemas.js';
import { DEFAULT_AUTOSUSPEND_SECONDS, DEFAULT_BACKUP_RETAIN, DEFAULT_POOL_SIZE, DEFAULT_BACKUP_SCHEDULE, DEFAULT_RPO_SECONDS, type BackupSchedule } from '../../catalog/schema.js';
import { MAX_ALLOW_ENTRIES, normalizeAllowList } from '../../core/cidr.js';
import { PgsError } from '../../core/errors.js';
import { parseSeconds } from '../../core/duration.js';
import { announceDaemon, formatBytes, parseCpus, parseDisk, parseDuration, parseInteger, parseMemory, printJson, tenantPath, type Command } from '../command.js';
import { formatTable } from '../table.js';

export const config: Command = {
  summary: 'show or change a tenant\'s settings (autosuspend, connections and pooling, limits, backups, allowed addresses)',
  usage: 'pgs config <id> [--autosuspend 30s|5m|1h|off] [--max-connections N] [--memory SIZE|off] [--cpus N|off] [--disk SIZE|off]\n' +
    '                  [--pool session|transaction] [--pool-size N] [--max-client-conn N|default]\n' +
    '                  [--backup-schedule hourly|daily|off] [--retain N] [--rpo D] [--allow CIDR[,CIDR...]|any] [--reset-queries] [--json]',
  details: [
    '  --autosuspend D      stop the server after D without connections through the router (default 5m);',
    '                       the next connection wakes it. "off" keeps it running.',
    '  --max-connections N  the server\'s max_connections (5 to 10000); takes effect at its next start',
    '                       ("pgs stop <id> && pgs start <id>", or POST /v1/tenants/{id}/restart)',
    '  --pool MODE          how its clients share server sessions through the router. session (default):',
    '                       each client has one of its own while connected. transaction: --pool-size',
    '                       sessions serve all its clients, each holding one for a transaction only; for',
    '                       many short or idle clients. In transaction mode what lasts beyond a',
    '                       transaction (SET of most settings, LISTEN, session advisory locks, SQL',
    '                       PREPARE, WITH HOLD cursors, temporary tables) is refused; prepared',
    '                       statements of the protocol work. New connections get the new mode.',
    '  --pool-size N        server sessions shared in transaction mode (default 10, at most',
    '                       --max-connections); a client finding none free waits up to 30 s',
    '  --max-client-conn N  client connections at once through the router (default: --max-connections',
    '                       in session mode, 1000 in transaction mode; "default" goes back to it)',
    '  --memory SIZE        memory its server may use (512M, 2G; at least 64M; off: no limit). Past it the',
    '                       kernel stops the tenant\'s process, not another tenant\'s; work_mem and',
    '                       maintenance_work_mem follow it so that big sorts spill to disk first',
    '  --cpus N             cores its server may use (0.5: half a core; off: no limit)',
    '                       Both take effect at once, with cgroups (v2, or v1) when pgs runs as root;',
    '                       elsewhere they are kept but not enforced, and this command says so',
    '  --disk SIZE          the quota of its data folder, data and WAL (10G; at least 128M; off: none).',
    '                       At 90 % it is warned; at the quota it becomes read-only (BEGIN READ WRITE;',
    '                       DELETE ...; COMMIT still works, to clean up) until it is under again;',
    '                       10 % past it, its server runs as a standby (nothing can be written) until',
    '                       the quota is raised. Sessions are told with a WARNING.',
    '  --backup-schedule S  base backups the daemon takes: hourly, daily (default) or off; a tenant',
    '                       unchanged since its last backup is skipped',
    '  --retain N           backups kept (1 to 1000, default 7); older ones and the WAL only they',
    '                       need are deleted',
    '  --rpo D              at most D of writes (default 60s, 1s to 1h) wait before their WAL is',
    '                       archived: what losing the disk can cost',
    '  --allow LIST         the source addresses the router lets connect: IPv4 and IPv6 CIDR blocks',
    `                       separated by commas (203.0.113.0/24,2001:db8::/32; a bare address is its /32 or`,
    `                       /128; at most ${MAX_ALLOW_ENTRIES}), or "any" (the default). Others get FATAL 28000 right after`,
    '                       their start-up packet: no password is checked, a suspended tenant is not woken.',
    '                       Open sessions from addresses a new list leaves out are closed. It is the',
    '                       router\'s check, the same on every runtime, and it sees the address of the TCP',
    '                       connection that reaches it: behind a proxy or load balancer that does not keep',
    '                       it (kubernetes: a Service without externalTrafficPolicy: Local) that is the',
    '                       proxy\'s, not the client\'s (the router reads no PROXY protocol header). The',
    '                       daemon\'s own connections to the servers do not go through the router.',
    '                       pgs export-compose writes it as a Traefik ipAllowList, which closes a refused',
    '                       connection without a PostgreSQL error.',
    '  --reset-queries      empty its statement statistics ("pgs queries <id>"; pg_stat_statements_reset()),',
    '                       without waking a suspended tenant',
    '  --json               print {id, autosuspendSeconds, maxConnections, pool, poolSize,',
    '                       maxClientConnections, access, allow, backupSchedule, backupRetain, rpoSeconds,',
    '                       memoryBytes, cpus, diskBytes, diskUsedBytes, disk?, usage?, limitsNotEnforced?}',
    '                       (allow: a list of CIDR blocks, or null for any address)',
    'API: PATCH /v1/tenants/{id} {"autosuspend": 300, "maxConnections": 20, "pool": "transaction",',
    '     "poolSize": 10, "maxClientConnections": 500, "backupSchedule": "hourly", "backupRetain": 7,',
    '     "rpoSeconds": 60, "memoryBytes": 536870912, "cpus": 0.5, "diskBytes": 10737418240,',
    '     "allow": ["203.0.113.0/24"]}',
    '     (null lifts a limit, or for maxClientConnections goes back to the default; allow null: any address);',
    '     POST /v1/tenants/{id}/queries/reset',
  ].join('\n'),
  options: {
    autosuspend: { type: 'string' }, 'max-connections': { type: 'string' }, pool: { type: 'string' }, 'pool-size': { type: 'string' }, 'max-client-conn': { type: 'string' }, 'backup-schedule': { type: 'string' }, retain: { type: 'string' }, rpo: { type: 'string' },
    memory: { type: 'string' }, cpus: { type: 'string' }, disk: { type: 'string' }, allow: { type: 'string' },
    'reset-queries': { type: 'boolean' },
    json: { type: 'boolean' },
  },
  positionals: [1, 1],
  async run(ctx, [id], values) {
    const patch = {
      ...(values.autosuspend !== undefined ? { autosuspend: parseDuration(String(values.autosuspend)) } : {}),
      ...(values['max-connections'] !== undefined ? { maxConnections: parseInteger(String(values['max-connections']), '--max-connections', 5, 10_000) } : {}),
      ...(values.pool !== undefined ? { pool: parsePool(String(values.pool)) } : {}),
      ...(values['pool-size'] !== undefined ? { poolSize: parseInteger(String(values['pool-size']), '--pool-size', 1, 10_000) } : {}),
      ...(values['max-client-conn'] !== undefined
        ? { maxClientConnections: String(values['max-client-conn']) === 'default' ? null : parseInteger(String(values['max-client-conn']), '--max-client-conn', 1, 100_000) }
        : {}),
      ...(values['backup-schedule'] !== undefined ? { backupSchedule: parseSchedule(String(values['backup-schedule'])) } : {}),
      ...(values.retain !== undefined ? { backupRetain: parseInteger(String(values.retain), '--retain', 1, 1000) } : {}),
      ...(values.rpo !== undefined ? { rpoSeconds: parseRpo(String(values.rpo)) } : {}),
      ...(values.memory !== undefined ? { memoryBytes: parseMemory(String(values.memory)) } : {}),
      ...(values.cpus !== undefined ? { cpus: parseCpus(String(values.cpus)) } : {}),
      ...(values.disk !== undefined ? { diskBytes: parseDisk(String(values.disk)) } : {}),
      ...(values.allow !== undefined ? { allow: parseAllow(String(values.allow)) } : {}),
    };
    if (values['reset-queries']) {
      await ctx.api.change('POST', tenantPath(id as string, '/queries/reset'), {}, announceDaemon);
      if (!values.json) console.log(`reset the query statistics of ${id as string}`);
    }
    let shown: Pick<TenantJson, 'id' | 'autosuspendSeconds' | 'maxConnections' | 'pool' | 'poolSize' | 'maxClientConnections' | 'access' | 'allow' | 'backupSchedule' | 'backupRetain' | 'rpoSeconds' | 'memoryBytes' | 'cpus' | 'usage' | 'limitsNotEnforced' | 'diskBytes' | 'diskUsedBytes' | 'disk'>;
    if (Object.keys(patch).length > 0) {
      const { body } = await ctx.api.change<TenantJson>('PATCH', tenantPath(id as string), { body: patch }, announceDaemon);
      shown = body;
    } else {
      // Reading needs no daemon.
      const fromDaemon = await ctx.api.getIfRunning<TenantJson>(tenantPath(id as string));
      if (fromDaemon) shown = fromDaemon;
      else {
        const { tenant } = await ctx.pgs().tenant(id as string);
        shown = {
          ...tenant,
          autosuspendSeconds: tenant.autosuspendSeconds === undefined ? DEFAULT_AUTOSUSPEND_SECONDS : tenant.autosuspendSeconds,
          backupSchedule: tenant.backupSchedule ?? DEFAULT_BACKUP_SCHEDULE,
          backupRetain: tenant.backupRetain ?? DEFAULT_BACKUP_RETAIN,
          rpoSeconds: tenant.rpoSeconds ?? DEFAULT_RPO_SECONDS,
          pool: tenant.pool ?? 'session',
          poolSize: Math.min(tenant.poolSize ?? DEFAULT_POOL_SIZE, tenant.maxConnections),
          maxClientConnections: tenant.maxClientConnections ?? null,
          allow: tenant.allow ?? null,
          memoryBytes: tenant.memoryBytes ?? null,
          cpus: tenant.cpus ?? null,
          diskBytes: tenant.diskBytes ?? null,
          diskUsedBytes: null,
        };
      }
    }
    if (values.json) {
      printJson({
        id: shown.id, autosuspendSeconds: shown.autosuspendSeconds, maxConnections: shown.maxConnections,
        pool: shown.pool, poolSize: shown.poolSize, maxClientConnections: shown.maxClientConnections, access: shown.access, allow: shown.allow,
        backupSchedule: shown.backupSchedule, backupRetain: shown.backupRetain, rpoSeconds: shown.rpoSeconds,
        memoryBytes: shown.memoryBytes, cpus: shown.cpus, diskBytes: shown.diskBytes, diskUsedBytes: shown.diskUsedBytes,
        ...(shown.disk ? { disk: shown.disk } : {}),
        ...(shown.usage ? { usage: shown.usage } : {}),
        ...(shown.limitsNotEnforced ? { limitsNotEnforced: shown.limitsNotEnforced } : {}),
      });
      return 0;
    }
    console.log(formatTable([
      ['autosuspend', shown.autosuspendSeconds === null ? 'off' : `${shown.autosuspendSeconds}s`],
      ['max connections', String(shown.maxConnections)],
      ['pool', shown.pool === 'transaction' ? `transaction (${shown.poolSize} server sessions)` : 'session'],
      ['max client connections', shown.maxClientConnections === null ? `${shown.pool === 'transaction' ? 1000 : shown.maxConnections} (default)` : String(shown.maxClientConnections)],
      ['access', shown.access],
      ['allow', shown.allow === null ? 'any address' : shown.allow.join(', ')],
      ['backup schedule', shown.backupSchedule],
      ['backups kept', String(shown.backupRetain)],
      ['rpo', `${shown.rpoSeconds}s`],
      ['memory', shown.memoryBytes === null ? 'no limit' : `${formatBytes(shown.memoryBytes)}${shown.usage ? `, using ${formatBytes(shown.usage.memoryBytes)} (${shown.usage.memorySource === 'cgroup' ? 'cgroup' : 'PSS'})` : ''}`],
      ['cpus', shown.cpus === null ? 'no limit' : `${shown.cpus}${shown.usage ? ` (${shown.usage.cpuSeconds.toFixed(1)} s of CPU used so far)` : ''}`],
      ['disk', shown.diskBytes === null ? 'no quota' : `${formatBytes(shown.diskBytes)}${shown.diskUsedBytes !== null ? ` (using ${formatBytes(shown.diskUsedBytes)})` : ''}${shown.disk && shown.disk !== 'ok' ? `: ${shown.disk}` : ''}`],
    ]));
    if (shown.limitsNotEnforced) console.log(`note: ${shown.limitsNotEnforced}`);
    return 0;
  },
};

function parsePool(text: string): 'session' | 'transaction' {
  if (text === 'session' || text === 'transaction') return text;
  throw new PgsError('USAGE', `invalid --pool ${JSON.stringify(text)}: session or transaction`);
}

function parseSchedule(text: string): BackupSchedule {
  if (text === 'hourly' || text === 'daily' || text === 'off') return text;
  throw new PgsError('USAGE', `invalid --backup-schedule ${JSON.stringify(text)}: hourly, daily or off`);
}

function parseRpo(text: string): number {
  const seconds = parseSeconds(text, '--rpo');
  if (seconds < 1 || seconds > 3600) throw new PgsError('USAGE', `invalid --rpo ${JSON.stringify(text)}: from 1s to 1h`);
  return seconds;
}

/** "any" (null: every address), or CIDR blocks separated by commas, normalised. */
function parseAllow(text: string): string[] | null {
  if (text.trim().toLowerCase() === 'any') return null;
  const entries = text.split(',').map((e) => e.trim());
  if (entries.some((e) => e === '')) throw new PgsError('USAGE', `invalid --allow ${JSON.stringify(text)}: CIDR blocks separated by commas, or any`);
  const result = normalizeAllowList(entries, '--allow');
  // "--allow.1 ..." names the entry by its place; the CLI names it by its text, which the problem already quotes.
  if ('problem' in result) throw new PgsError('USAGE', `invalid ${result.problem.replace(/^--allow\.\d+ /, '--allow: ')}`);
  return result.allow;
}
