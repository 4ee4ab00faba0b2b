import { createInterface } from 'node:readline/promises';
import { debuglog, parseArgs, type ParseArgsConfig } from 'node:util';
import { PgsError, isPgsError } from '../core/errors.js';
import { daemonRequest, daemonStatus, notifyDaemon, startDaemonInBackground, stopDaemon } from '../daemon/client.js';
import { Daemon, daemonPaths, jsonLog } from '../daemon/daemon.js';
import { DEFAULT_AUTOSUSPEND_SECONDS } from '../catalog/schema.js';
import { Pgs } from '../service/pgs.js';
import { formatDuration, formatTable } from './table.js';

/** `pgs <command>`: parses, calls, prints; one clear line on stderr and a non-zero exit on error. */
type Options = NonNullable<ParseArgsConfig['options']>;
type Values = Record<string, string | boolean | undefined>;

interface Command {
  summary: string;
  usage: string;
  details: string;
  options: Options;
  /** How many positional arguments: [min, max]. */
  positionals: [number, number];
  run(pgs: Pgs, args: string[], values: Values): Promise<number>;
}

const EXIT_USAGE = 2;
const debug = debuglog('pgs');

const COMMANDS: Record<string, Command> = {
  setup: {
    summary: 'write the config, make the server template and a TLS certificate (idempotent)',
    usage: 'pgs setup [--domain D] [--port P] [--cert FILE --key FILE] [--json]',
    details: [
      '  --domain D     tenants get host names <id>-<suffix>.D (default pgs.localhost)',
      '  --port P       the TLS port the router listens on (default 5432)',
      '  --cert FILE    PEM certificate for *.D (default: a self-signed one is generated)',
      '  --key FILE     its PEM private key',
      '  --json         print the settings as JSON',
      '',
      'Run it again at any time: it keeps what exists and changes only what you pass.',
      'As root, the servers run as the unprivileged system user "pgs" (created if missing).',
    ].join('\n'),
    options: { domain: { type: 'string' }, port: { type: 'string' }, cert: { type: 'string' }, key: { type: 'string' }, json: { type: 'boolean' } },
    positionals: [0, 0],
    async run(pgs, _args, values) {
      const port = values.port === undefined ? undefined : parsePort(String(values.port));
      const report = await pgs.setup({
        domain: values.domain as string | undefined,
        port,
        certFile: values.cert as string | undefined,
        keyFile: values.key as string | undefined,
      });
      await notifyDaemon(pgs.home); // a new certificate reaches new connections at once
      if (values.json) {
        printJson({ home: report.home, ...report.settings, certificateExpires: report.certificate.validTo.toISOString() });
        return 0;
      }
      for (const action of report.actions) console.log(`- ${action}`);
      const s = report.settings;
      console.log(`pgs is set up in ${report.home}`);
      console.log(formatTable([
        ['domain', s.domain],
        ['port', String(s.port)],
        ['certificate', `${s.certFile}${s.certSelfSigned ? ' (self-signed)' : ''}, expires ${report.certificate.validTo.toISOString().slice(0, 10)}`],
        ['data', s.dataRoot],
        ['servers run as', s.serverUser ?? 'the user running pgs'],
      ], { indent: '  ' }));
      console.log('Next: pgs create <id>');
      return 0;
    },
  },

  create: {
    summary: 'make a tenant with its own running PostgreSQL 18 server',
    usage: 'pgs create <id> [--password P] [--autosuspend 30s|5m|1h|off] [--json]',
    details: [
      '  <id>           a DNS label: a-z first, then a-z 0-9 -, at most 40, no trailing -',
      '  --password P   the password of user postgres (at least 8 characters);',
      '                 default: 32 random characters, printed once and never stored',
      '  --autosuspend D  stop the server after D without connections (default 5m; off: never);',
      '                 "pgs config <id> --autosuspend D" changes it later',
      '  --json         print {id, hostname, password, database, user, url}',
    ].join('\n'),
    options: { password: { type: 'string' }, autosuspend: { type: 'string' }, json: { type: 'boolean' } },
    positionals: [1, 1],
    async run(pgs, [id], values) {
      const autosuspendSeconds = values.autosuspend === undefined ? undefined : parseDuration(String(values.autosuspend));
      const created = await pgs.create(id as string, { password: values.password as string | undefined, autosuspendSeconds });
      await notifyDaemon(pgs.home);
      if (values.json) {
        printJson(created);
        return 0;
      }
      console.log(`Created tenant ${created.id}`);
      console.log(formatTable([
        ['host', created.hostname],
        ['database', created.database],
        ['user', created.user],
        ['password', created.password],
        ['url', created.url],
      ], { indent: '  ' }));
      console.log('The password is shown only now; "pgs passwd <id>" sets a new one.');
      return 0;
    },
  },

  list: {
    summary: 'show every tenant: host name, access, state, uptime, connections, health',
    usage: 'pgs list [--json]',
    details: [
      '  --json         print an array of {id, hostname, access, state, wanted, pid, database, user, port,',
      '                 maxConnections, createdAt, serverStartedAt, uptimeSeconds, connections, health,',
      '                 healthCheckedAt, healthError?, lastError?}',
      '  States: running, starting, stopping, stopped; with a daemon also suspended (idle, wakes on',
      '  connect) and crashed (keeps failing to start; lastError says why). Connections and health',
      '  (ok, failing, unknown: a SELECT 1 over the server\'s socket every minute) come from the daemon.',
    ].join('\n'),
    options: { json: { type: 'boolean' } },
    positionals: [0, 0],
    async run(pgs, _args, values) {
      const catalog = await pgs.store.read(); // a missing setup or broken catalog is reported before asking the daemon
      const daemon = await daemonStatus(pgs.home).catch(() => undefined);
      const tenants = await pgs.list(daemon ? new Map(daemon.tenants.map((d) => [d.id, d])) : undefined, catalog);
      if (values.json) {
        printJson(tenants);
        return 0;
      }
      if (tenants.length === 0) {
        console.log('No tenants yet: pgs create <id>');
        return 0;
      }
      console.log(formatTable([
        ['ID', 'HOSTNAME', 'ACCESS', 'STATE', 'UPTIME', 'CONNS', 'HEALTH'],
        ...tenants.map((t) => [
          t.id, t.hostname, t.access, t.state,
          t.uptimeSeconds === null ? '-' : formatDuration(t.uptimeSeconds),
          t.connections === null ? '-' : String(t.connections),
          daemon ? t.health : '-',
        ]),
      ]));
      if (!daemon) console.log('(no daemon runs: connections and health are unknown; "pgs start" starts it)');
      return 0;
    },
  },

  remove: {
    summary: 'stop a tenant and delete its server and all its data',
    usage: 'pgs remove <id> [--yes]',
    details: '  --yes          do not ask; without it pgs asks on a terminal and refuses otherwise',
    options: { yes: { type: 'boolean' } },
    positionals: [1, 1],
    async run(pgs, [id], values) {
      await pgs.tenant(id as string); // unknown ids fail before any question
      if (!values.yes) await confirmRemoval(id as string);
      const { tenant } = await pgs.tenant(id as string); // as it is now, after the question
      // The daemon stops the server first, so that its supervisor cannot restart it while the files go.
      if (tenant.wanted !== 'stopped' && (await daemonStatus(pgs.home))) await stopThroughDaemon(pgs, id as string);
      await pgs.remove(id as string);
      await notifyDaemon(pgs.home);
      console.log(`Removed tenant ${id}`);
      return 0;
    },
  },

  start: {
    summary: 'start the daemon (router on the TLS port) and one tenant\'s server, or all of them',
    usage: 'pgs start [<id>] [--foreground]',
    details: [
      '  <id>           start this tenant (and the daemon, when none runs)',
      '                 without <id>: every tenant, and the daemon',
      '  --foreground   run the daemon in this process (systemd, npm start); stops on SIGTERM or "pgs stop"',
      '',
      'The daemon listens on the configured port (pgs setup --port), routes each TLS connection',
      'to its tenant by host name, and logs to $PGS_HOME/daemon.log.',
    ].join('\n'),
    options: { foreground: { type: 'boolean' } },
    positionals: [0, 1],
    async run(pgs, [id], values) {
      if (values.foreground) {
        if (id !== undefined) throw new PgsError('USAGE', '--foreground starts the daemon, not one tenant: pgs start --foreground');
        return runForeground(pgs);
      }
      const running = await daemonStatus(pgs.home);
      if (running) {
        // The daemon starts the servers itself, so that it is their parent and sees them die.
        await pgs.start(id, { recordOnly: true });
        await notifyDaemon(pgs.home);
        const after = await daemonStatus(pgs.home);
        let code = 0;
        for (const t of after?.tenants ?? []) {
          if (id !== undefined && t.id !== id) continue;
          if (t.state === 'running') console.log(`Started ${t.id}`);
          else if (t.state === 'suspended') console.log(`${t.id} is suspended: its next connection wakes it`);
          else {
            console.error(`pgs start: ${t.id}: ${t.lastError ?? `the server is ${t.state}`}`);
            code = 1;
          }
        }
        console.log(`The daemon runs (pid ${running.pid}) on port ${running.port}`);
        return code;
      }
      const code = await startOrStop(pgs, id, 'start');
      const started = await startDaemonInBackground(pgs.home, process.env);
      console.log(`Started the daemon (pid ${started.pid}) on port ${started.port}; log: ${daemonPaths(pgs.home).log}`);
      return code;
    },
  },

  stop: {
    summary: 'stop one tenant\'s server, or the daemon and all servers (fast shutdown, nothing committed is lost)',
    usage: 'pgs stop [<id>]',
    details: [
      '  <id>           stop this tenant\'s server; the daemon keeps running',
      '                 without <id>: the daemon and every server',
    ].join('\n'),
    options: {},
    positionals: [0, 1],
    async run(pgs, [id]) {
      if (id === undefined) {
        if (await stopDaemon(pgs.home)) console.log('Stopped the daemon');
        return startOrStop(pgs, id, 'stop');
      }
      if (await daemonStatus(pgs.home)) {
        await stopThroughDaemon(pgs, id);
        const after = (await daemonStatus(pgs.home))?.tenants.find((t) => t.id === id);
        if (after && after.state !== 'stopped') {
          console.error(`pgs stop: ${id}: the server is still ${after.state}${after.lastError ? `: ${after.lastError}` : ''}; see pgs logs ${id} and ${daemonPaths(pgs.home).log}`);
          return 1;
        }
        console.log(`Stopped ${id}`);
        return 0;
      }
      const code = await startOrStop(pgs, id, 'stop');
      await notifyDaemon(pgs.home); // one may have started meanwhile
      return code;
    },
  },

  status: {
    summary: 'show the daemon: pid, uptime, port, certificate expiry, tenants by state',
    usage: 'pgs status [--json]',
    details: [
      '  --json         print {pid, startedAt, port, domain, connections, certificateExpires, refusals, tenants}',
      '                 with tenants [{id, state, pid, serverStartedAt, connections, health, healthCheckedAt,',
      '                 healthError?, restarts, wakes, lastError?}]',
      '  Exit code 3 when no daemon runs.',
    ].join('\n'),
    options: { json: { type: 'boolean' } },
    positionals: [0, 0],
    async run(pgs, _args, values) {
      await pgs.store.read();
      const status = await daemonStatus(pgs.home);
      if (values.json) {
        printJson(status ?? null);
        return status ? 0 : 3;
      }
      if (!status) {
        console.log('No daemon runs: "pgs start" starts it');
        return 3;
      }
      const byState = new Map<string, number>();
      for (const t of status.tenants) byState.set(t.state, (byState.get(t.state) ?? 0) + 1);
      console.log(formatTable([
        ['daemon', `pid ${status.pid}, up since ${status.startedAt}`],
        ['port', `${status.port} (tenants at <id>-<suffix>.${status.domain})`],
        ['connections', String(status.connections)],
        ['certificate', status.certificateExpires ? `expires ${status.certificateExpires}` : 'unreadable'],
        ['tenants', [...byState].map(([state, n]) => `${n} ${state}`).join(', ') || 'none'],
        ['health', summarizeHealth(status.tenants)],
      ]));
      return 0;
    },
  },

  reload: {
    summary: 'make a running daemon re-read the catalog and the certificate files',
    usage: 'pgs reload',
    details: '  A certificate that does not load is refused; the daemon keeps the old one and says so in its log.',
    options: {},
    positionals: [0, 0],
    async run(pgs) {
      await pgs.store.read();
      if ((await daemonRequest(pgs.home, 'POST', '/reload')) === undefined) {
        console.log('No daemon runs: nothing to reload');
        return 0;
      }
      console.log('Reloaded');
      return 0;
    },
  },

  'enable-access': accessCommand('enabled'),
  'disable-access': accessCommand('disabled'),

  config: {
    summary: 'show or change a tenant\'s settings (autosuspend)',
    usage: 'pgs config <id> [--autosuspend 30s|5m|1h|off] [--json]',
    details: [
      '  --autosuspend D  stop the server after D without connections through the router (default 5m);',
      '                   the next connection wakes it. "off" keeps it running.',
      '  --json           print the tenant\'s settings',
    ].join('\n'),
    options: { autosuspend: { type: 'string' }, json: { type: 'boolean' } },
    positionals: [1, 1],
    async run(pgs, [id], values) {
      const changes = values.autosuspend === undefined ? {} : { autosuspendSeconds: parseDuration(String(values.autosuspend)) };
      const tenant = await pgs.configure(id as string, changes);
      if (values.autosuspend !== undefined) await notifyDaemon(pgs.home);
      const seconds = tenant.autosuspendSeconds === undefined ? DEFAULT_AUTOSUSPEND_SECONDS : tenant.autosuspendSeconds;
      if (values.json) {
        printJson({ id: tenant.id, autosuspendSeconds: seconds, maxConnections: tenant.maxConnections, access: tenant.access });
        return 0;
      }
      console.log(formatTable([
        ['autosuspend', seconds === null ? 'off' : `${seconds}s`],
        ['max connections', String(tenant.maxConnections)],
        ['access', tenant.access],
      ]));
      return 0;
    },
  },

  logs: {
    summary: 'show a tenant server\'s log',
    usage: 'pgs logs <id> [-n N] [-f]',
    details: [
      '  -n, --lines N  the last N lines (default 50)',
      '  -f, --follow   keep printing new lines until interrupted',
    ].join('\n'),
    options: { lines: { type: 'string', short: 'n' }, follow: { type: 'boolean', short: 'f' } },
    positionals: [1, 1],
    async run(pgs, [id], values) {
      const count = values.lines === undefined ? 50 : Number(values.lines);
      if (!Number.isInteger(count) || count < 0) throw new PgsError('USAGE', `invalid --lines ${JSON.stringify(values.lines)}: a whole number`);
      const file = await pgs.logFile(id as string);
      const { readFile, open, stat } = await import('node:fs/promises');
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch {
        throw new PgsError('TENANT_NOT_FOUND', `tenant ${id} has no log yet (${file})`);
      }
      const lines = text.split('\n');
      if (lines[lines.length - 1] === '') lines.pop();
      if (count > 0) process.stdout.write(`${lines.slice(-count).join('\n')}\n`);
      if (!values.follow) return 0;
      let offset = Buffer.byteLength(text);
      for (;;) {
        await new Promise((r) => setTimeout(r, 250));
        const size = (await stat(file).catch(() => ({ size: offset }))).size;
        if (size < offset) offset = 0; // the log was truncated or replaced
        if (size === offset) continue;
        const handle = await open(file, 'r');
        try {
          const chunk = Buffer.alloc(size - offset);
          await handle.read(chunk, 0, chunk.length, offset);
          process.stdout.write(chunk);
          offset = size;
        } finally {
          await handle.close();
        }
      }
    },
  },

  url: {
    summary: 'print a tenant\'s connection string (without the password)',
    usage: 'pgs url <id> [--local]',
    details: [
      '  --local        a libpq URI over the server\'s unix socket on this host (administration, tests);',
      '                 default: the public URI through the router, sslmode=require',
    ].join('\n'),
    options: { local: { type: 'boolean' } },
    positionals: [1, 1],
    async run(pgs, [id], values) {
      console.log(await pgs.url(id as string, { local: Boolean(values.local) }));
      return 0;
    },
  },

  passwd: {
    summary: 'set a new password for a tenant\'s user postgres',
    usage: 'pgs passwd <id> [--password P] [--json]',
    details: [
      '  --password P   the new password (at least 8 characters); default: 32 random characters, printed once',
      '  --json         print {id, password}',
      '  Passwords are never stored by pgs: this is the way back from a lost one.',
    ].join('\n'),
    options: { password: { type: 'string' }, json: { type: 'boolean' } },
    positionals: [1, 1],
    async run(pgs, [id], values) {
      const result = await pgs.passwd(id as string, {
        password: values.password as string | undefined,
        viaDaemon: async (verifier) => (await daemonRequest(pgs.home, 'POST', `/tenants/${id}/password`, 90_000, { verifier })) !== undefined,
      });
      if (values.json) printJson(result);
      else if (values.password === undefined) console.log(`New password for ${id}: ${result.password}`);
      else console.log(`Password of ${id} changed`);
      return 0;
    },
  },
};

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
    console.log(await version());
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
    console.error(`pgs ${name}: ${(err as Error).message.split('\n')[0]}; usage: ${command.usage}`);
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
    const code = await command.run(new Pgs(), positionals, values);
    debug('done at %s ms', performance.now().toFixed(1));
    return code;
  } catch (err) {
    if (isPgsError(err)) {
      console.error(`pgs ${name}: ${err.message}`);
      return err.code === 'USAGE' ? EXIT_USAGE : 1;
    }
    console.error(`pgs ${name}: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    return 1;
  }
}

function accessCommand(access: 'enabled' | 'disabled'): Command {
  const verb = access === 'enabled' ? 'enable-access' : 'disable-access';
  return {
    summary: access === 'enabled'
      ? 'allow connections to a tenant through the router'
      : 'refuse connections to a tenant through the router and close its open ones',
    usage: `pgs ${verb} <id>`,
    details: access === 'enabled'
      ? '  New tenants start with access enabled.'
      : '  The router refuses the tenant\'s host name with a clear error until enable-access; its server keeps running.',
    options: {},
    positionals: [1, 1],
    async run(pgs, [id]) {
      const changed = await pgs.setAccess(id as string, access);
      await notifyDaemon(pgs.home); // takes effect at once; disabling closes the tenant's open connections
      console.log(changed ? `Access to ${id} ${access}` : `Access to ${id} was already ${access}`);
      return 0;
    },
  };
}

async function runForeground(pgs: Pgs): Promise<number> {
  const log = jsonLog((line) => process.stderr.write(line));
  const interval = process.env.PGS_HEALTH_INTERVAL;
  const healthSeconds = interval === undefined || interval === '' ? undefined : parseDuration(interval, 'PGS_HEALTH_INTERVAL');
  const daemon = new Daemon(pgs, log, healthSeconds ? { healthIntervalMs: healthSeconds * 1000 } : {});
  let signalled = false;
  const onSignal = (signal: string) => {
    log.info('signal', { signal });
    signalled = true;
    if (started) void daemon.stop();
  };
  let started = false;
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  await daemon.start();
  started = true;
  if (signalled) void daemon.stop(); // a signal during start-up: stop as soon as there is something to stop
  await daemon.stopped;
  return 0;
}

async function startOrStop(pgs: Pgs, id: string | undefined, verb: 'start' | 'stop'): Promise<number> {
  const result = verb === 'start' ? await pgs.start(id) : await pgs.stop(id);
  const past = verb === 'start' ? 'Started' : 'Stopped';
  if (result.started.length > 0) console.log(`${past} ${result.started.join(', ')}`);
  else if (result.failed.length === 0) console.log('No tenants');
  for (const failure of result.failed) console.error(`pgs ${verb}: ${failure.id}: ${failure.error}`);
  return result.failed.length > 0 ? 1 : 0;
}

/**
 * With a daemon running, a stop is recorded and the daemon stops the server:
 * the CLI stopping it itself would race the supervisor, which restarts a
 * wanted-running server it finds dead before the catalog says stopped.
 */
async function stopThroughDaemon(pgs: Pgs, id: string): Promise<void> {
  await pgs.stop(id, { recordOnly: true });
  await notifyDaemon(pgs.home);
}

async function confirmRemoval(id: string): Promise<void> {
  if (!process.stdin.isTTY) {
    throw new PgsError('NOT_CONFIRMED', `not removing ${id}: stdin is not a terminal, pass --yes to confirm`);
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`Remove tenant ${id} and delete all its data? Type its id to confirm: `);
    if (answer.trim() !== id) throw new PgsError('NOT_CONFIRMED', `not removing ${id}: the answer did not match`);
  } finally {
    rl.close();
  }
}

/** "30s", "5m", "1h", "90" (seconds) or "off" (null). */
function parseDuration(text: string, what = '--autosuspend'): number | null {
  if (text === 'off') return null;
  const match = /^(\d+)(s|m|h)?$/.exec(text);
  const seconds = match ? Number(match[1]) * { s: 1, m: 60, h: 3600 }[(match[2] ?? 's') as 's' | 'm' | 'h'] : NaN;
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 31_536_000) {
    throw new PgsError('USAGE', `invalid ${what} ${JSON.stringify(text)}: a duration such as 30s, 5m, 1h${what === '--autosuspend' ? ', or off' : ''}`);
  }
  return seconds;
}

function parsePort(text: string): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new PgsError('USAGE', `invalid --port ${JSON.stringify(text)}: a number from 1 to 65535`);
  }
  return port;
}

function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
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

async function version(): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  const { fileURLToPath } = await import('node:url');
  const path = await import('node:path');
  // From dist/pgs.mjs (the bundle) or dist/src/cli/main.js: the package root is the first parent with package.json.
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++, dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(await readFile(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === '@sysnee/pgs') return `pgs ${pkg.version}`;
    } catch {
      // not here
    }
  }
  return 'pgs (unknown version)';
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
