import type { BulkJson, StatusJson, TenantJson } from '../../api/schemas.js';
import { PgsError } from '../../core/errors.js';
import { daemonPaths } from '../../core/paths.js';
import { tenantPath, type Command } from '../command.js';

export const start: Command = {
  summary: 'start the daemon (router on the TLS port) and one tenant\'s server, or all of them',
  usage: 'pgs start [<id>] [--foreground]',
  details: [
    '  <id>           start this tenant, or wake it when suspended (and the daemon, when none runs)',
    '                 without <id>: every tenant, and the daemon',
    '  --foreground   run the daemon in this process (systemd, npm start); stops on SIGTERM or "pgs stop"',
    '',
    'The daemon listens on the configured port (pgs setup --port), routes each TLS connection',
    'to its tenant by host name, serves the REST API, and logs to $PGS_HOME/daemon.log.',
    'API: POST /v1/tenants/{id}/start, POST /v1/start',
  ].join('\n'),
  options: { foreground: { type: 'boolean' } },
  positionals: [0, 1],
  async run(ctx, [id], values) {
    if (values.foreground) {
      if (id !== undefined) throw new PgsError('USAGE', '--foreground starts the daemon, not one tenant: pgs start --foreground');
      const { runForeground } = await import('../../daemon/run.js');
      return runForeground(ctx.pgs());
    }
    let startedPid: number | undefined;
    const onStart = (pid: number) => { startedPid = pid; };
    if (id !== undefined) {
      const before = (await ctx.api.change<TenantJson>('GET', tenantPath(id), {}, onStart)).body;
      const after = (await ctx.api.change<TenantJson>('POST', tenantPath(id, '/start'), {}, onStart)).body;
      if (before.state === 'running') console.log(`${id} is already running`);
      else if (before.state === 'suspended') console.log(`Woke ${id}`);
      else console.log(`Started ${id}${after.state === 'running' ? '' : ` (${after.state})`}`);
    } else {
      const { body: result } = await ctx.api.change<BulkJson>('POST', '/v1/start', {}, onStart);
      if (result.done.length === 0 && result.failed.length === 0) console.log('No tenants');
      else if (result.done.length > 0) console.log(`Running: ${result.done.join(', ')}`);
      for (const failure of result.failed) console.error(`pgs start: ${failure.id}: ${failure.error}`);
      if (result.failed.length > 0) process.exitCode = 1;
    }
    const status = await ctx.api.get<StatusJson>('/v1/status');
    if (startedPid !== undefined) console.log(`Started the daemon (pid ${status.pid}) on port ${status.port}; log: ${daemonPaths(ctx.home).log}`);
    else console.log(`The daemon runs (pid ${status.pid}) on port ${status.port}`);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  },
};
