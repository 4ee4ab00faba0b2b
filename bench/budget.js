#!/usr/bin/env node
// bench/budget: more tenants registered than the running budget lets run.
// Creates --count tenants (through the daemon's API, scheduled backups off),
// suspends them all, wakes --budget of them (filling the budget), measures the
// idle fleet's CPU over --window seconds, then connects to --probes tenants
// that are suspended: each wake first suspends the least recently used idle
// tenant. Reports the wake latency with that eviction, the servers running
// (never above the budget) and the disk per tenant.
//
//   npm run build && node bench/budget.js [--count 1000] [--budget 250] [--probes 100] [--window 60]
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { Buffer } from 'node:buffer';
import http from 'node:http';
import { cpus, totalmem } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { benchHome, quantile } from './lib.js';

const { values } = parseArgs({ options: { count: { type: 'string', default: '1000' }, budget: { type: 'string', default: '250' }, probes: { type: 'string', default: '100' }, window: { type: 'string', default: '60' } } });
const COUNT = Number(values.count);
const BUDGET = Number(values.budget);
const PROBES = Number(values.probes);
const WINDOW = Number(values.window);
const PORT = 25460;
const CLK_TCK = 100;

const b = benchHome({ PGS_RUNNING_SPARES: '0' });
const socket = path.join(b.home, 'daemon.sock');
const api = (method, url, body) => new Promise((resolve, reject) => {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const req = http.request({ socketPath: socket, method, path: url, headers: payload ? { 'content-type': 'application/json' } : {} }, (res) => {
    const chunks = [];
    res.on('data', (c) => chunks.push(c));
    res.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (res.statusCode >= 400) reject(new Error(`${method} ${url}: ${res.statusCode} ${text}`));
      else resolve(text ? JSON.parse(text) : undefined);
    });
  });
  req.on('error', reject);
  req.end(payload);
});

async function connectMs(t) {
  const started = performance.now();
  const client = new pg.Client({ host: '127.0.0.1', port: PORT, user: 'postgres', database: t.id, password: t.password, ssl: { servername: t.hostname, rejectUnauthorized: false }, connectionTimeoutMillis: 30_000 });
  await client.connect();
  await client.query('SELECT 1');
  const ms = performance.now() - started;
  await client.end();
  return ms;
}

/** CPU ticks of the daemon and every postgres process (the fleet), and of the whole machine. */
function cpuTicks() {
  let fleet = 0;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      if (comm !== 'postgres' && !(comm === 'node' && readFileSync(`/proc/${name}/cmdline`, 'utf8').includes('--foreground'))) continue;
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      fleet += Number(fields[11]) + Number(fields[12]);
    } catch { /* exited */ }
  }
  const all = readFileSync('/proc/stat', 'utf8').split('\n')[0].split(/\s+/).slice(1).map(Number);
  return { fleet, machine: all.reduce((a, x) => a + x, 0) - all[3] - all[4] };
}

try {
  b.pgs('setup', '--port', String(PORT), '--api-listen', 'off', '--max-running', String(BUDGET));
  b.pgs('start');
  const tenants = [];
  let t0 = performance.now();
  for (let i = 0; i < COUNT; i++) {
    const created = await api('POST', '/v1/tenants', { id: `b${i}`, autosuspend: 3600 });
    await api('PATCH', `/v1/tenants/b${i}`, { backupSchedule: 'off' });
    await api('POST', `/v1/tenants/b${i}/suspend`);
    tenants.push(created);
  }
  console.log(`${COUNT} tenants created and suspended in ${((performance.now() - t0) / 1000).toFixed(0)} s (budget ${BUDGET})`);

  // Fill the budget.
  t0 = performance.now();
  const fill = [];
  for (const t of tenants.slice(0, BUDGET)) fill.push(await connectMs(t));
  let status = await api('GET', '/v1/status');
  console.log(`woke ${BUDGET} (filling the budget) in ${((performance.now() - t0) / 1000).toFixed(0)} s: median ${quantile(fill, 0.5).toFixed(0)} ms; running ${status.running} of ${status.maxRunning}`);

  await sleep(30_000); // let the woken servers settle
  const before = cpuTicks();
  const wall0 = performance.now();
  await sleep(WINDOW * 1000);
  const after = cpuTicks();
  const seconds = (performance.now() - wall0) / 1000;
  const fleetPct = (100 * (after.fleet - before.fleet)) / CLK_TCK / seconds / cpus().length;
  const machinePct = (100 * (after.machine - before.machine)) / CLK_TCK / seconds / cpus().length;
  console.log(`idle, ${status.running} servers running, ${COUNT - status.running} suspended: fleet CPU ${fleetPct.toFixed(1)} % of the machine, machine ${machinePct.toFixed(1)} % (over ${seconds.toFixed(0)} s)`);

  // Wakes beyond the budget: each suspends the least recently used idle tenant first.
  const probes = [];
  let maxRunning = 0;
  for (let i = 0; i < PROBES; i++) {
    const t = tenants[BUDGET + Math.floor(Math.random() * (COUNT - BUDGET))];
    probes.push(await connectMs(t));
    status = await api('GET', '/v1/status');
    maxRunning = Math.max(maxRunning, status.running);
  }
  console.log(`${PROBES} connections to suspended tenants with the budget full: median ${quantile(probes, 0.5).toFixed(0)} ms, p95 ${quantile(probes, 0.95).toFixed(0)} ms, max ${Math.max(...probes).toFixed(0)} ms; most running at once ${maxRunning} (budget ${BUDGET})`);

  const dataRoot = JSON.parse(readFileSync(path.join(b.home, 'catalog.json'), 'utf8')).settings.dataRoot;
  const du = spawnSync('du', ['-sb', path.join(dataRoot, 'tenants')], { encoding: 'utf8' }).stdout.split('\t')[0];
  console.log(`disk: ${(Number(du) / COUNT / 2 ** 20).toFixed(1)} MiB per tenant folder (${(Number(du) / 2 ** 30).toFixed(1)} GiB for ${COUNT})`);
  console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`);
} finally {
  b.remove();
}
