import type { QueriesJson } from '../../api/schemas.js';
import { PgsError } from '../../core/errors.js';
import { parseInteger, printJson, tenantPath, type Command } from '../command.js';
import { formatTable } from '../table.js';

const ORDERS = ['total', 'mean', 'calls'] as const;

export const queries: Command = {
  summary: 'show a tenant\'s top statements (pg_stat_statements): calls, total and mean time, rows',
  usage: 'pgs queries <id> [--order total|mean|calls] [--limit N] [--json]',
  details: [
    '  --order O      total: the most time in all (default); mean: the slowest on average; calls: the',
    '                 most often run',
    '  --limit N      the first N statements (1 to 100, default 20)',
    '  --json         print {tenant, order, sample, sampledAt, items: [{queryId, query, calls, totalMs,',
    '                 meanMs, rows}]}',
    '  The tenant role\'s statements in its database since the last reset ("pgs config <id>',
    '  --reset-queries"), normalised (constants are $1, $2...); pgs\'s own are never counted. A',
    '  suspended or stopped tenant is not woken: it is answered from the last sample, taken at each',
    '  read and just before its server stopped, and says from when.',
    'API: GET /v1/tenants/{id}/queries?order=total|mean|calls&limit=N',
  ].join('\n'),
  options: { order: { type: 'string' }, limit: { type: 'string' }, json: { type: 'boolean' } },
  positionals: [1, 1],
  async run(ctx, [id], values) {
    const order = String(values.order ?? 'total');
    if (!(ORDERS as readonly string[]).includes(order)) throw new PgsError('USAGE', `invalid --order ${JSON.stringify(order)}: total, mean or calls`);
    const limit = values.limit === undefined ? 20 : parseInteger(String(values.limit), '--limit', 1, 100);
    let answer: QueriesJson;
    try {
      answer = await ctx.api.get<QueriesJson>(tenantPath(id as string, `/queries?order=${order}&limit=${limit}`));
    } catch (err) {
      if (err instanceof PgsError && err.code === 'DAEMON_UNAVAILABLE') throw new PgsError('DAEMON_UNAVAILABLE', `${err.message}: query statistics come from the daemon ("pgs start" starts it)`);
      throw err;
    }
    if (values.json) {
      printJson(answer);
      return 0;
    }
    if (answer.sample) {
      console.log(answer.sampledAt === null
        ? `tenant ${answer.tenant}'s server is not running and no sample was taken yet (it shows once the server has run)`
        : `tenant ${answer.tenant}'s server is not running: its last sample, from ${answer.sampledAt}`);
    }
    if (answer.items.length === 0) {
      console.log('No statements counted yet.');
      return 0;
    }
    console.log(formatTable([
      ['CALLS', 'TOTAL', 'MEAN', 'ROWS', 'QUERY'],
      ...answer.items.map((q) => [String(q.calls), formatMs(q.totalMs), formatMs(q.meanMs), String(q.rows), oneLine(q.query, 100)]),
    ]));
    return 0;
  },
};

/** 0.042 ms, 12.3 ms, 4.56 s, 12m03s. */
function formatMs(ms: number): string {
  if (ms < 1) return `${ms.toFixed(3)} ms`;
  if (ms < 1000) return `${ms.toFixed(1)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

/** The statement on one line (whitespace runs become one space), cut at `max` characters. */
function oneLine(text: string, max: number): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}
