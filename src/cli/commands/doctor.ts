import type { DoctorFixJson } from '../../api/schemas.js';
import { announceDaemon, printJson, type Command } from '../command.js';
import { formatBytes } from '../../core/size.js';

type Report = DoctorFixJson['report'];

export const doctor: Command = {
  summary: 'find data the catalog does not know (and the reverse), and folders whose own metadata disagrees with it; --fix settles both',
  usage: 'pgs doctor [--fix] [--json]',
  details: [
    '  Lists data folders that the catalog does not name (say, after catalog.json was restored from',
    '  catalog.json.bak), creates that never finished, catalog entries without a data folder, and',
    '  tenants whose folder\'s own metadata (pgs-tenant.json) says otherwise than the catalog: each',
    '  setting that differs, both values, and which side is newer (each counts the entry\'s changes).',
    '  --fix          adopt the orphan folders back into the catalog: each folder keeps its own',
    '                 metadata file, so a tenant comes back with its host name and settings (one',
    '                 without that file gets a new host name); remove unfinished creates; settle',
    '                 each disagreement the way the newer side has it (a newer folder updates the',
    '                 catalog, and the change applies at once; otherwise the folder\'s file is',
    '                 rewritten from the catalog). Entries without data are reported only: pgs',
    '                 never deletes what it cannot explain.',
    '  --json         print the report (with --fix: {adopted, removed, settled, report})',
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
      for (const s of body.settled) {
        const what = s.fields.length > 0 ? s.fields.join(', ') : 'its metadata file';
        console.log(s.updated === 'catalog'
          ? `Updated the catalog's ${s.id} from its folder's newer metadata: ${what}`
          : `Rewrote ${s.id}'s folder metadata from the catalog (${s.newer === 'catalog' ? 'newer' : 'as many changes on both; the catalog is the desired state'}): ${what}`);
      }
      if (body.adopted.length === 0 && body.removed.length === 0 && body.settled.length === 0) console.log('Nothing to fix');
      printReport(body.report, false);
      return 0;
    }
    const { body } = await ctx.api.change<Report>('GET', '/v1/doctor', {}, announceDaemon);
    if (values.json) printJson(body);
    else printReport(body, true);
    return problemCount(body) > 0 ? 1 : 0;
  },
};

function printReport(report: Report, hint: boolean): void {
  for (const o of report.orphans) {
    console.log(`orphan ${o.id}: ${o.folder}${o.running ? ` (its server runs, pid ${o.pid})` : ''}; ${o.hostname ? `was ${o.hostname}` : 'no metadata file'}`);
  }
  for (const id of report.unfinished) console.log(`unfinished create ${id}: removed by the next daemon start or --fix`);
  for (const id of report.missingData) console.log(`missing data ${id}: the catalog names it, its data folder is gone`);
  for (const d of report.disagreements) {
    if (d.folderRev === null) {
      console.log(`metadata ${d.id}: its folder has no usable pgs-tenant.json; --fix writes it from the catalog`);
      continue;
    }
    const newer = d.newer === 'same' ? `as many changes on both (${d.catalogRev}): the catalog's is taken` : `the ${d.newer}'s is newer (${d.newer === 'folder' ? d.folderRev : d.catalogRev} changes against ${d.newer === 'folder' ? d.catalogRev : d.folderRev})`;
    for (const f of d.fields) console.log(`disagreement ${d.id} ${f.field}: catalog ${show(f.catalog)}, folder ${show(f.folder)}; ${newer}`);
  }
  for (const l of report.leftovers) console.log(`leftover ${l.path} (${formatBytes(l.bytes)}): ${l.note}`);
  if (problemCount(report) === 0) console.log('All data folders and catalog entries match');
  else if (hint && report.orphans.length + report.unfinished.length + report.disagreements.length > 0) {
    console.log('"pgs doctor --fix" adopts the orphans, removes unfinished creates and takes the newer side of each disagreement');
  }
}

function problemCount(report: Report): number {
  return report.orphans.length + report.unfinished.length + report.missingData.length + report.disagreements.length + report.leftovers.filter((l) => l.kind !== 'trash').length; // the trash empties itself
}

function show(value: string | number | null): string {
  return value === null ? 'none' : String(value);
}
