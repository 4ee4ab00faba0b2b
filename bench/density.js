#!/usr/bin/env node
// bench/density: many tenants on one host. Creates --count tenants (autosuspend
// off, so that all run), lets them settle, then measures over one window: the
// memory of every server and the daemon (RSS and PSS from smaps_rollup, and the
// machine's MemAvailable before and after), the CPU of the idle fleet (servers,
// their short-lived children such as health-check backends, and the daemon) and
// of the whole machine, `pgs list` / `pgs status` latency, a connection through
// the router, the disk per tenant, and `pgs stop` of everything.
// --query-stats off: the servers run without pg_stat_statements (PGS_QUERY_STATS=off), to see what it costs.
// Usage: node bench/density.js [--count 1000] [--parallel 2] [--settle 120] [--window 60] [--query-stats on|off] [--profile-list DIR]
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { removePgsHome, routerConnectMs, smaps } from './lib.js';

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '1000' },
    parallel: { type: 'string', default: '2' },
    settle: { type: 'string', default: '120' },
    window: { type: 'string', default: '60' },
    'query-stats': { type: 'string', default: 'on' },
    // Write a V8 CPU profile of one `pgs list` into this folder (read it with bench/cpuprofile-top.js).
    'profile-list': { type: 'string' },
  },
});
const count = Number(values.count);
const parallel = Number(values.parallel);
const settleS = Number(values.settle);
const windowS = Number(values.window);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(root, 'bin', 'pgs.js');
const home = mkdtempSync(path.join(tmpdir(), 'pgs-density-'));
if (!['on', 'off'].includes(values['query-stats'])) throw new Error('--query-stats: on or off');
const env = { ...process.env, PGS_HOME: home, PGS_QUERY_STATS: values['query-stats'] };
const CLK_TCK = 100;
const cores = cpus().length;

const pgsSync = (...args) => {
  const r = spawnSync(process.execPath, [bin, ...args], { env, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`pgs ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
};
const pgsAsync = (...args) => new Promise((resolve, reject) => {
  const child = spawn(process.execPath, [bin, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (s) => { out += s; });
  child.stderr.setEncoding('utf8').on('data', (s) => { err += s; });
  child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`pgs ${args.join(' ')}: ${err}`))));
});
const timed = (fn) => { const t = performance.now(); fn(); return performance.now() - t; };
const quantile = (xs, q) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.max(0, Math.ceil(q * xs.length) - 1))];
const ms = (x) => `${x.toFixed(0)} ms`;
const gib = (bytes) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;
const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
const freePort = () => new Promise((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
});

function memAvailable() {
  return Number(/MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'))[1]) * 1024;
}

/** Jiffies of the whole machine: [busy, total]. */
function machineTicks() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + f[4];
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return [total - idle, total];
}

function stat(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // fields after the name start at field 3 (state): utime 14, stime 15, cutime 16, cstime 17, ppid 4
    const own = Number(f[11]) + Number(f[12]);
    const reaped = Number(f[13]) + Number(f[14]);
    return { state: f[0], ppid: Number(f[1]), own, reaped, ticks: own + reaped };
  } catch {
    return undefined;
  }
}

/** A process's short name; '' when it is gone. */
function comm(pid) {
  try { return readFileSync(`/proc/${pid}/comm`, 'utf8').trim(); } catch { return ''; }
}

/** What a fleet process is, from its title: "postgres: checkpointer", "postgres: pgs_admin pgs_admin [local] idle", the postmaster. */
function kind(pid, daemonPid) {
  if (pid === daemonPid) return 'daemon';
  let title = '';
  try { title = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim(); } catch { return 'gone'; }
  if (!title.startsWith('postgres: ')) return 'postmaster';
  const rest = title.slice('postgres: '.length);
  if (rest.startsWith('pgs_admin ')) return 'health session';
  for (const k of ['checkpointer', 'background writer', 'walwriter', 'autovacuum launcher', 'logical replication launcher', 'io worker']) if (rest.startsWith(k)) return k;
  return `other (${rest.split(' ')[0]})`;
}

/** Every live process of the fleet: postgres processes whose working directory is under the data root, and the daemon. */
function fleet(dataRoot, daemonPid) {
  const pids = [daemonPid];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let cwd;
    try { cwd = readlinkSync(`/proc/${entry}/cwd`); } catch { continue; }
    if (cwd.startsWith(`${dataRoot}/tenants/`) && stat(entry)?.state !== 'Z') pids.push(Number(entry));
  }
  return pids;
}



const report = [];
const say = (line) => { report.push(line); console.log(line); };

try {
  const port = await freePort();
  const memBefore = memAvailable();
  pgsSync('setup', '--port', String(port), '--api-listen', 'off');
  pgsSync('start');
  const dataRoot = JSON.parse(readFileSync(path.join(home, 'catalog.json'), 'utf8')).settings.dataRoot;
  const daemonPid = JSON.parse(pgsSync('status', '--json')).pid;

  // --- create ---
  const tenants = [];
  const createMs = [];
  const started = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (next < count) {
      const id = `t${String(next++).padStart(4, '0')}`;
      const t0 = performance.now();
      tenants.push(JSON.parse(await pgsAsync('create', id, '--autosuspend', 'off', '--json')));
      createMs.push(performance.now() - t0);
      if (tenants.length % 100 === 0) console.error(`  ${tenants.length} created, ${((performance.now() - started) / 1000).toFixed(0)} s`);
    }
  }));
  const createAllS = (performance.now() - started) / 1000;

  const status = JSON.parse(pgsSync('status', '--json'));
  const running = status.tenants.filter((t) => t.state === 'running').length;
  if (running !== count) throw new Error(`${running} of ${count} servers run`);

  console.error(`  settling ${settleS} s`);
  await delay(settleS * 1000);

  // --- CPU over the window ---
  const pids = fleet(dataRoot, daemonPid);
  const before = new Map(pids.map((p) => [p, stat(p)]));
  // Outside the fleet, for context: kernel threads such as kdamond (this VM's proactive reclaim) and init.
  const others = readdirSync('/proc').filter((e) => /^\d+$/.test(e)).map(Number).filter((p) => p === 1 || /^kdamond/.test(comm(p)));
  const othersBefore = new Map(others.map((p) => [p, stat(p)?.own ?? 0]));
  const [busy0, total0] = machineTicks();
  await delay(windowS * 1000);
  const [busy1, total1] = machineTicks();
  let fleetTicks = 0;
  let daemonTicks = 0;
  const byKind = new Map();
  const add = (k, ticks) => byKind.set(k, (byKind.get(k) ?? 0) + ticks);
  for (const p of pids) {
    const now = stat(p);
    if (!now) continue; // exited in the window (none should: the fleet is idle)
    const was = before.get(p);
    const d = now.ticks - (was?.ticks ?? 0);
    fleetTicks += d;
    if (p === daemonPid) daemonTicks = d;
    const k = kind(p, daemonPid);
    if (k === 'postmaster') {
      // A postmaster reaps its short-lived children (autovacuum workers, backends): their CPU arrives as its cutime.
      add('postmaster', now.own - (was?.own ?? 0));
      add('reaped children of postmasters (autovacuum workers)', now.reaped - (was?.reaped ?? 0));
    } else add(k, d);
  }
  const otherPct = others.map((p) => `${comm(p)} ${((100 * ((stat(p)?.own ?? 0) - (othersBefore.get(p) ?? 0))) / (CLK_TCK * windowS * cores)).toFixed(1)} %`);
  const fleetPct = (100 * fleetTicks) / (CLK_TCK * windowS * cores);
  const daemonPct = (100 * daemonTicks) / (CLK_TCK * windowS * cores);
  const machinePct = (100 * (busy1 - busy0)) / (total1 - total0);

  // --- memory ---
  const live = fleet(dataRoot, daemonPid);
  let rss = 0;
  let pss = 0;
  for (const p of live) {
    const m = smaps(p);
    rss += m.rss;
    pss += m.pss;
  }
  const daemonMem = smaps(daemonPid);
  const memAfter = memAvailable();

  // --- responsiveness ---
  const listMs = [];
  const listJsonMs = [];
  const statusMs = [];
  for (let i = 0; i < 5; i++) {
    listMs.push(timed(() => pgsSync('list')));
    listJsonMs.push(timed(() => pgsSync('list', '--json')));
    statusMs.push(timed(() => pgsSync('status', '--json')));
  }
  if (values['profile-list']) {
    spawnSync(process.execPath, ['--cpu-prof', '--cpu-prof-dir', values['profile-list'], bin, 'list'], { env, stdio: 'ignore' });
  }
  const connectMs = [];
  for (let i = 0; i < 20; i++) connectMs.push(await routerConnectMs(tenants[Math.floor(Math.random() * tenants.length)], port));
  const health = JSON.parse(pgsSync('status', '--json')).tenants.reduce((acc, t) => { acc[t.health] = (acc[t.health] ?? 0) + 1; return acc; }, {});

  // --- disk ---
  const du = spawnSync('du', ['-s', '--block-size=1', path.join(dataRoot, 'tenants')], { encoding: 'utf8' });
  const diskBytes = Number(du.stdout.split('\t')[0]);

  // --- stop everything ---
  const stopMs = timed(() => pgsSync('stop'));

  say(`machine: ${cores} x ${cpus()[0]?.model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`);
  say(`tenants: ${count}, all running (autosuspend off), created ${parallel} at a time; pg_stat_statements ${values['query-stats']}`);
  say(`create all: ${createAllS.toFixed(0)} s (${(count / createAllS).toFixed(1)} tenants/s); one create: median ${ms(quantile(createMs, 0.5))}, p95 ${ms(quantile(createMs, 0.95))}`);
  say(`processes: ${live.length - 1} server processes (${((live.length - 1) / count).toFixed(1)} per tenant) + the daemon`);
  say(`memory: RSS sum ${gib(rss)}, PSS sum ${gib(pss)} (${mib((pss - daemonMem.pss) / count)} PSS per idle server); daemon RSS ${mib(daemonMem.rss)}; MemAvailable fell by ${gib(memBefore - memAfter)} (${mib((memBefore - memAfter) / count)} per tenant)`);
  say(`idle CPU over ${windowS} s after ${settleS} s settling: fleet ${fleetPct.toFixed(1)} % of ${cores} cores (daemon ${daemonPct.toFixed(1)} %), whole machine ${machinePct.toFixed(1)} % (of which outside pgs: ${otherPct.join(', ') || 'none seen'})`);
  for (const [k, ticks] of [...byKind].sort((a, b) => b[1] - a[1])) say(`  ${k}: ${((100 * ticks) / (CLK_TCK * windowS * cores)).toFixed(2)} %`);
  say(`health: ${JSON.stringify(health)}`);
  say(`pgs list: median ${ms(quantile(listMs, 0.5))} (max ${ms(Math.max(...listMs))}); list --json ${ms(quantile(listJsonMs, 0.5))}; status --json ${ms(quantile(statusMs, 0.5))}`);
  say(`router connect + SELECT 1 to a random tenant x20: median ${ms(quantile(connectMs, 0.5))}, p95 ${ms(quantile(connectMs, 0.95))}`);
  say(`disk: ${gib(diskBytes)} for ${count} tenants (${mib(diskBytes / count)} each)`);
  say(`pgs stop (daemon + ${count} servers, fast shutdown): ${(stopMs / 1000).toFixed(1)} s`);
} finally {
  console.error('  cleaning up');
  removePgsHome(home, bin, env);
}
