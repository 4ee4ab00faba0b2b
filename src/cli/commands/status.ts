import type { StatusJson } from '../../api/schemas.js';
import { EXIT_NO_DAEMON, formatBytes, printJson, type Command } from '../command.js';
import { formatTable } from '../table.js';

export const status: Command = {
  summary: 'show the daemon: pid, uptime, port, API address, certificate expiry, tenants by state',
  usage: 'pgs status [--json]',
  details: [
    '  --json         print GET /v1/status: {pid, version, startedAt, port, domain, api, connections,',
    '                 certificateExpires, certificate, certificateSelfSigned, running, maxRunning, importLimit: {bytes, auto},',
    '                 limits, refusals, tenants: [{id, state, pid,',
    '                 serverStartedAt, connections,',
    '                 health, healthCheckedAt, healthError?, restarts, wakes, lastError?, archiving?, archivingError?}],',
    '                 backupTarget: {url, pendingFiles, pendingBytes, oldestPendingAt, lastCopiedAt, failingSince, error?} | null}',
    '  "files to copy" counts everything not in the bucket yet: files not copied, WAL segments a server has',
    '  finished but not archived, and a base backup being written.',
    '  Exit code 3 when no daemon runs.',
  ].join('\n'),
  options: { json: { type: 'boolean' } },
  positionals: [0, 0],
  async run(ctx, _args, values) {
    const catalog = await ctx.pgs().store.readIfExists(); // a broken catalog is reported; no setup yet is "no daemon"
    const current = await ctx.api.getIfRunning<StatusJson>('/v1/status');
    if (values.json) {
      printJson(current ?? null);
      return current ? 0 : EXIT_NO_DAEMON;
    }
    if (!current) {
      console.log(catalog ? 'No daemon runs: "pgs start" starts it' : `No daemon runs, and pgs is not set up in ${ctx.home}: "pgs setup" sets it up, then "pgs start" starts it`);
      return EXIT_NO_DAEMON;
    }
    const byState = new Map<string, number>();
    for (const t of current.tenants) byState.set(t.state, (byState.get(t.state) ?? 0) + 1);
    // On Kubernetes the operator runs the servers: no budget, no archive of pgs's own.
    const kubernetes = current.runtime.startsWith('kubernetes');
    console.log(formatTable([
      ['daemon', `pid ${current.pid}, up since ${current.startedAt}, pgs ${current.version}`],
      ['port', `${current.port} (tenants at <id>-<suffix>.${current.domain})`],
      ['api', current.api ?? 'unix socket only'],
      ['connections', String(current.connections)],
      ['servers', kubernetes ? `${current.running} of ${current.maxRunning} clusters serving` : `${current.running} running of at most ${current.maxRunning} (pgs setup --max-running)`],
      ['runtime', current.runtime],
      ['limits', current.limits.enforced ? `memory and CPU enforced with ${current.limits.how ?? 'cgroups'}` : `memory and CPU not enforced: ${current.limits.why ?? 'unknown'}`],
      ['server users', current.serverUsers.detail],
      ['certificate', `${current.certificate}, ${current.certificateExpires ? `expires ${current.certificateExpires}` : 'unreadable'}${current.certificateSelfSigned ? ' (self-signed: verify with sslmode=verify-full sslrootcert=<this file>)' : ''}`],
      ['tenants', [...byState].map(([state, n]) => `${n} ${state}`).join(', ') || 'none'],
      ['health', summarizeHealth(current.tenants)],
      ...(kubernetes ? [] : [['archiving', summarizeArchiving(current.tenants)]]),
      ...(current.importLimit ? [['imports', `uploads up to ${formatBytes(current.importLimit.bytes)}${current.importLimit.auto ? ' (auto: half the free space above 5 %; pgs setup --import-limit)' : ' (pgs setup --import-limit)'}`]] : []),
      ['backups to', kubernetes
        ? (current.backupTarget ? `${current.backupTarget.url}, through the barman-cloud plugin` : 'none (pgs setup --backup-target s3://...)')
        : current.backupTarget
          ? `${current.backupTarget.url}: ${current.backupTarget.failingSince ? `failing since ${current.backupTarget.failingSince} (${current.backupTarget.error ?? ''}), ` : ''}${pendingText(current.backupTarget)}`
          : 'the data folder only'],
    ]));
    return 0;
  },
};

/** "999 ok, 1 failing (acme: archiving WAL segment ... fails since ...)" */
function summarizeArchiving(tenants: readonly { id: string; archiving?: string; archivingError?: string }[]): string {
  if (tenants.length === 0) return 'no tenant';
  const counts = new Map<string, number>();
  for (const t of tenants) counts.set(t.archiving ?? 'unknown', (counts.get(t.archiving ?? 'unknown') ?? 0) + 1);
  const bad = tenants.find((t) => t.archiving === 'failing' || t.archiving === 'gap' || t.archiving === 'behind');
  const summary = [...counts].map(([state, n]) => `${n} ${state}`).join(', ');
  return bad ? `${summary} (${bad.id}: ${bad.archivingError ?? bad.archiving})` : summary;
}

/** "998 ok, 2 failing (acme: the server did not answer within 5000 ms)" over the running tenants. */
function summarizeHealth(tenants: readonly { id: string; state: string; health: string; healthError?: string }[]): string {
  const running = tenants.filter((t) => t.state === 'running');
  if (running.length === 0) return 'no server runs';
  const counts = new Map<string, number>();
  for (const t of running) counts.set(t.health, (counts.get(t.health) ?? 0) + 1);
  const failing = running.find((t) => t.health === 'failing');
  const summary = [...counts].map(([health, n]) => `${n} ${health}`).join(', ');
  return failing ? `${summary} (${failing.id}: ${failing.healthError ?? 'no answer'})` : summary;
}

/** "3 files (2.0 MiB) to copy, the oldest 12 s old; last copied 14:02:03Z", or "nothing to copy". */
function pendingText(target: NonNullable<StatusJson['backupTarget']>): string {
  const last = target.lastCopiedAt ? `; last copied ${target.lastCopiedAt}` : '';
  if (target.pendingFiles === 0) return `nothing to copy${last}`;
  const age = target.oldestPendingAt ? `, the oldest ${Math.max(0, Math.round((Date.now() - Date.parse(target.oldestPendingAt)) / 1000))} s old` : '';
  return `${target.pendingFiles} files (${formatBytes(target.pendingBytes ?? 0)}) to copy${age}${last}`;
}
