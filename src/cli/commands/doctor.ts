import type { DoctorFixJson } from '../../api/schemas.js';
import { announceDaemon, printJson, type Command } from '../command.js';

type Report = DoctorFixJson['report'];

export const doctor: Command = {
  summary: 'find data the catalog does not know (and the reverse); --fix adopts it',
  usage: 'pgs doctor [--fix] [--json]',
  details: [
    '  Lists data folders that the catalog does not name (say, after catalog.json was restored from',
    '  catalog.json.bak), creates that never finished, and catalog entries without a data folder.',
    '  --fix          adopt the orphan folders back into the catalog: each folder keeps its own',
    '                 metadata file, so a tenant comes back with its host name and settings (one',
    '                 without that file gets a new host name); remove unfinished creates.',
    '                 Entries without data are reported only: pgs never deletes what it cannot explain.',
    '  --json         print the report (with --fix: {adopted, removed, report})',
    '  Exit code 1 when something needs attention and --fix was not given.',
    'API: GET /v1/doctor, POST /v1/doctor/fix',
  ].join('\n'),
  options: { fix: { type: 'boolean' }, json: { type: 'boolean' } },
  positionals: [0, 0],
  async run(ctx, _args, values) {
    if (values.fix) {
      const { body } = await ctx.api.change<DoctorFixJson>('POST', '/v1/doctor/fix', {}, announceDaemon);
      if (values.json) {
        printJson(body);
        return 0;
      }
      for (const a of body.adopted) console.log(`Adopted ${a.id} as ${a.hostname}${a.newHostname ? ' (a new host name: its folder had no metadata)' : ''}`);
      for (const id of body.removed) console.log(`Removed the unfinished create ${id}`);
      if (body.adopted.length === 0 && body.removed.length === 0) console.log('Nothing to fix');
      printReport(body.report, false);
      return 0;
    }
    const { body } = await ctx.api.change<Report>('GET', '/v1/doctor', {}, announceDaemon);
    if (values.json) printJson(body);
    else printReport(body, true);
    return body.orphans.length + body.unfinished.length + body.missingData.length > 0 ? 1 : 0;
  },
};

function printReport(report: Report, hint: boolean): void {
  for (const o of report.orphans) {
    console.log(`orphan ${o.id}: ${o.folder}${o.running ? ` (its server runs, pid ${o.pid})` : ''}; ${o.hostname ? `was ${o.hostname}` : 'no metadata file'}`);
  }
  for (const id of report.unfinished) console.log(`unfinished create ${id}: removed by the next daemon start or --fix`);
  for (const id of report.missingData) console.log(`missing data ${id}: the catalog names it, its data folder is gone`);
  const problems = report.orphans.length + report.unfinished.length + report.missingData.length;
  if (problems === 0) console.log('All data folders and catalog entries match');
  else if (hint && report.orphans.length + report.unfinished.length > 0) console.log('"pgs doctor --fix" adopts the orphans and removes unfinished creates');
}
