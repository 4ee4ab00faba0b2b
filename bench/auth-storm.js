#!/usr/bin/env node
// bench/auth-storm: wrong passwords against suspended tenants. The router checks
// passwords before it wakes anything, so none of the attempts may start a server.
// Reports how many were refused with 28P01, how long each waited, the servers
// running and wakes afterwards, and the daemon's CPU time. (bench/wake.js times
// a right password's wake.)
//
//   npm run build && node bench/auth-storm.js [--tenants 100] [--attempts 1000] [--concurrency 50]
import { cpus, totalmem } from 'node:os';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { benchHome, quantile } from './lib.js';

const { values } = parseArgs({ options: { tenants: { type: 'string', default: '100' }, attempts: { type: 'string', default: '1000' }, concurrency: { type: 'string', default: '50' } } });
const TENANTS = Number(values.tenants);
const ATTEMPTS = Number(values.attempts);
const CONCURRENCY = Number(values.concurrency);

const b = benchHome({ PGS_RUNNING_SPARES: '0' });
const { pgs } = b;

function daemonCpuSeconds() {
  const pid = JSON.parse(pgs('status', '--json').stdout).pid;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(stat[11]) + Number(stat[12])) / 100; // utime + stime, in clock ticks of 10 ms
}

try {
  pgs('setup', '--port', '25440', '--api-listen', 'off');
  const made = [];
  const began = performance.now();
  for (let i = 0; i < TENANTS; i++) made.push(JSON.parse(pgs('create', `s${i}`, '--autosuspend', '1s', '--json').stdout));
  console.log(`${TENANTS} tenants created in ${((performance.now() - began) / 1000).toFixed(0)} s`);
  const deadline = Date.now() + 120_000;
  let status;
  for (;;) {
    status = JSON.parse(pgs('status', '--json').stdout);
    if (status.tenants.every((t) => t.state === 'suspended') || Date.now() > deadline) break;
    await sleep(1_000);
  }
  const wakesBefore = status.tenants.reduce((n, t) => n + (t.wakes ?? 0), 0);
  console.log(`suspended: ${status.tenants.filter((t) => t.state === 'suspended').length} of ${TENANTS}; servers running: ${status.running}`);

  const cpuBefore = daemonCpuSeconds();
  const failures = [];
  const results = { refused28P01: 0, other: 0 };
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < ATTEMPTS) {
      const i = next++;
      const t = made[i % made.length];
      const started = performance.now();
      const client = new pg.Client({ host: '127.0.0.1', port: 25440, user: i % 2 ? 'postgres' : `guess${i}`, database: t.id, password: `wrong-${i}`, ssl: { servername: t.hostname, rejectUnauthorized: false } });
      client.on('error', () => undefined);
      try {
        await client.connect();
        results.other++;
        await client.end();
      } catch (err) {
        if (err.code === '28P01') results.refused28P01++;
        else results.other++;
      }
      failures.push(performance.now() - started);
    }
  }));
  const seconds = (performance.now() - t0) / 1000;
  const cpu = daemonCpuSeconds() - cpuBefore;
  const after = JSON.parse(pgs('status', '--json').stdout);
  const wakesAfter = after.tenants.reduce((n, t) => n + (t.wakes ?? 0), 0);
  console.log(`${ATTEMPTS} wrong-password attempts (${CONCURRENCY} at a time, half for roles that do not exist) in ${seconds.toFixed(1)} s: ${results.refused28P01} refused with 28P01, ${results.other} other`);
  console.log(`  each answered after: median ${quantile(failures, 0.5).toFixed(0)} ms, p99 ${quantile(failures, 0.99).toFixed(0)} ms (the failure delay grows to 2 s per address)`);
  console.log(`  servers running after: ${after.running}; wakes during the storm: ${wakesAfter - wakesBefore}; daemon CPU: ${cpu.toFixed(2)} s`);
  console.log(`machine: ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; data root ${path.basename(JSON.parse(readFileSync(path.join(b.home, 'catalog.json'), 'utf8')).settings.dataRoot)}`);
} finally {
  b.remove();
}
