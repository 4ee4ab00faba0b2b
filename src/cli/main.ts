import { debuglog, parseArgs } from 'node:util';
import { codeWord, isPgsError, type PgsErrorCode } from '../core/errors.js';
import { EXIT_USAGE, makeContext, type Command, type Values } from './command.js';
import { accessCommand } from './commands/access.js';
import { backup, backups, branch, exportCommand, importCommand, restore } from './commands/backup.js';
import { config } from './commands/config.js';
import { create } from './commands/create.js';
import { doctor } from './commands/doctor.js';
import { exportCompose } from './commands/export-compose.js';
import { list } from './commands/list.js';
import { logs } from './commands/logs.js';
import { queries } from './commands/queries.js';
import { passwd } from './commands/passwd.js';
import { reload } from './commands/reload.js';
import { remove } from './commands/remove.js';
import { restart } from './commands/restart.js';
import { setup } from './commands/setup.js';
import { start } from './commands/start.js';
import { status } from './commands/status.js';
import { stop } from './commands/stop.js';
import { token } from './commands/token.js';
import { url } from './commands/url.js';

/**
 * `pgs <command>`: parses, asks the daemon's API (or, for setup and for
 * reading without a daemon, the files), prints; one clear line on stderr and
 * a non-zero exit on error: 2 for usage errors, 1 otherwise.
 */
const debug = debuglog('pgs');

const COMMANDS: Record<string, Command> = {
  setup, create, list, remove, start, stop, restart, status, reload,
  'enable-access': accessCommand('enabled'),
  'disable-access': accessCommand('disabled'),
  config, logs, queries, url, passwd, token, doctor,
  backup, backups, restore, branch, export: exportCommand, import: importCommand,
  'export-compose': exportCompose,
};

/** Mistakes in what was typed, not failures of pgs: exit code 2. */
const USAGE_CODES: ReadonlySet<PgsErrorCode> = new Set(['USAGE', 'INVALID_ID', 'WEAK_PASSWORD', 'INVALID_SETTING', 'INVALID_REQUEST', 'NOT_CONFIRMED']);

export async function main(argv: string[]): Promise<number> {
  debug('main at %s ms', performance.now().toFixed(1));
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? rest[0] : undefined;
    if (topic !== undefined && COMMANDS[topic]) console.log(commandHelp(topic, COMMANDS[topic]));
    else console.log(overview());
    return name === undefined ? EXIT_USAGE : 0;
  }
  if (name === '--version' || name === '-v') {
    const { packageVersion } = await import('../core/version.js');
    console.log(`pgs ${await packageVersion()}`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    console.error(`pgs: unknown command ${JSON.stringify(name)}; see "pgs --help"`);
    return EXIT_USAGE;
  }
  let values: Values;
  let positionals: string[];
  try {
    const parsed = parseArgs({ args: rest, options: { ...command.options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
    values = parsed.values as Values;
    positionals = parsed.positionals;
  } catch (err) {
    console.error(`pgs ${name}: ${argsProblem(err)}; usage: ${command.usage}`);
    return EXIT_USAGE;
  }
  if (values.help) {
    console.log(commandHelp(name, command));
    return 0;
  }
  const [min, max] = command.positionals;
  if (positionals.length < min || positionals.length > max) {
    const what = positionals.length < min ? 'missing argument' : `unexpected argument ${JSON.stringify(positionals[max])}`;
    console.error(`pgs ${name}: ${what}; usage: ${command.usage}`);
    return EXIT_USAGE;
  }
  try {
    const code = await command.run(makeContext(), positionals, values);
    debug('done at %s ms', performance.now().toFixed(1));
    return code;
  } catch (err) {
    if (isPgsError(err)) {
      console.error(`pgs ${name}: ${err.message}`);
      debug('error code %s', codeWord(err.code));
      return USAGE_CODES.has(err.code) ? EXIT_USAGE : 1;
    }
    console.error(`pgs ${name}: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    return 1;
  }
}

function overview(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  return [
    'pgs: one PostgreSQL 18 server per tenant, all behind one TLS port routed by host name.',
    '',
    'Usage: pgs <command> [options]      pgs <command> --help for its options',
    '',
    'Commands:',
    ...Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(width)}  ${c.summary}`),
    '',
    'Every change goes through the pgs daemon (started in the background when none runs);',
    'its REST API is on $PGS_HOME/daemon.sock and, with a token, on TCP (see "pgs token --help").',
    '',
    'Environment:',
    '  PGS_HOME         config folder (default ~/.sysnee-config)',
    '  PGS_DATA         where tenant data lives (default $PGS_HOME/data; as root /var/lib/pgs)',
    '  PGS_PG_BIN       folder with PostgreSQL 18 initdb and postgres (default: the npm package)',
    '  PGS_SERVER_USER  as root, the system user that runs the servers (default pgs)',
  ].join('\n');
}

function commandHelp(name: string, command: Command): string {
  return [`pgs ${name}: ${command.summary}`, '', `Usage: ${command.usage}`, '', command.details].join('\n');
}

/** parseArgs's error as one line in pgs's words: "unknown option --bogus", "--memory needs a value". */
export function argsProblem(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const option = /'(-{1,2}[^' <]+)/.exec(message)?.[1];
  const code = (err as { code?: unknown }).code;
  if (option && code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown option ${option}`;
  if (option && /argument missing/.test(message)) return `${option} needs a value`;
  if (option && /does not take an argument/.test(message)) return `${option} takes no value`;
  return message.split('\n')[0]?.replace(/[.]$/, '') ?? 'invalid arguments';
}
