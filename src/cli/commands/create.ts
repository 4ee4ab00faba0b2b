import { readFile } from 'node:fs/promises';
import { PgsError } from '../../core/errors.js';
import type { CreatedTenantJson } from '../../api/schemas.js';
import { announceDaemon, parseCpus, parseDisk, parseDuration, parseInteger, parseMemory, printJson, type Command } from '../command.js';
import { formatTable } from '../table.js';
import { resolves } from '../../core/hostaddr.js';

export const create: Command = {
  summary: 'make a tenant with its own running PostgreSQL 18 server',
  usage: 'pgs create <id> [--password P] [--autosuspend 30s|5m|1h|off] [--max-connections N] [--memory SIZE] [--cpus N] [--disk SIZE] [--init FILE.sql] [--json]',
  details: [
    '  <id>               a DNS label: a-z first, then a-z 0-9 -, at most 40, no trailing -',
    '  --password P       the password of user postgres (at least 8 characters);',
    '                     default: 32 random characters, printed once and never stored',
    '  --autosuspend D    stop the server after D without connections (default 5m; off: never);',
    '                     "pgs config <id> --autosuspend D" changes it later',
    '  --max-connections N  the server\'s max_connections (5 to 10000, default 20)',
    '  --memory SIZE      memory its server may use (512M, 2G; at least 64M); --cpus N: cores (0.5 is',
    '                     half a core). Enforced with cgroups when pgs runs as root; see pgs config',
    '  --disk SIZE        the disk quota of its data folder (10G; at least 128M); see pgs config',
    '  --init FILE.sql    SQL run as user postgres in the new database (one transaction unless the',
    '                     file says otherwise); if it fails, nothing is created and the error names its line',
    '  --json             print {id, hostname, password, database, user, url}',
    '',
    'The daemon makes the tenant (it is started in the background when none runs).',
    'API: POST /v1/tenants {"id": ..., "password"?, "autosuspend"?, "maxConnections"?, "memoryBytes"?, "cpus"?, "diskBytes"?, "init"?}',
  ].join('\n'),
  options: {
    password: { type: 'string' }, autosuspend: { type: 'string' }, 'max-connections': { type: 'string' }, memory: { type: 'string' }, cpus: { type: 'string' }, disk: { type: 'string' },
    init: { type: 'string' }, json: { type: 'boolean' },
  },
  positionals: [1, 1],
  async run(ctx, [id], values) {
    const body = {
      id,
      ...(values.password !== undefined ? { password: String(values.password) } : {}),
      ...(values.autosuspend !== undefined ? { autosuspend: parseDuration(String(values.autosuspend)) } : {}),
      ...(values['max-connections'] !== undefined ? { maxConnections: parseInteger(String(values['max-connections']), '--max-connections', 5, 10_000) } : {}),
      ...(values.memory !== undefined ? { memoryBytes: parseMemory(String(values.memory)) } : {}),
      ...(values.cpus !== undefined ? { cpus: parseCpus(String(values.cpus)) } : {}),
      ...(values.disk !== undefined ? { diskBytes: parseDisk(String(values.disk)) } : {}),
      ...(values.init !== undefined ? { init: await readInit(String(values.init)) } : {}),
    };
    const { body: created } = await ctx.api.change<CreatedTenantJson>('POST', '/v1/tenants', { body }, announceDaemon);
    if (values.json) {
      printJson(created);
      return 0;
    }
    // A line that connects as printed, here: with hostaddr when the name does not resolve on this machine.
    const port = new URL(created.url).port || '5432';
    const hostaddr = (await resolves(created.hostname)) ? '' : ' hostaddr=127.0.0.1';
    const psqlLine = `psql "host=${created.hostname}${hostaddr} port=${port} user=${created.user} dbname=${created.database} sslmode=require"`;
    console.log(`Created tenant ${created.id}`);
    console.log(formatTable([
      ['host', created.hostname],
      ['database', created.database],
      ['user', created.user],
      ['password', created.password],
      ['url', created.url],
      ['psql', `PGPASSWORD=${shellQuote(created.password)} ${psqlLine}`],
    ], { indent: '  ' }));
    console.log('The password is shown only now; "pgs passwd <id>" sets a new one.');
    return 0;
  },
};

async function readInit(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new PgsError('USAGE', `cannot read --init ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** A word a POSIX shell takes as is: bare when safe, else in single quotes. */
function shellQuote(value: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(value) ? value : `'${value.replace(/'/g, "'\\''")}'`;
}
