#!/usr/bin/env node
// bench/restart: kill -9 of a tenant's postmaster, then the time until a new
// connection over its socket answers SELECT 1 (the supervisor's restart).
// Usage: node bench/restart.js [--rounds 10]
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { URLSearchParams } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { benchHome, quantile } from './lib.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '10' } } });
const bench = benchHome();
const pgs = (...args) => bench.pgs(...args).stdout;

try {
  pgs('setup', '--port', '55997', '--api-listen', 'off');
  const { password } = JSON.parse(pgs('create', 'victim', '--autosuspend', 'off', '--json'));
  const host = new URLSearchParams(pgs('url', 'victim', '--local').trim().split('?')[1]).get('host');
  const times = [];
  for (let round = 0; round < Number(values.rounds); round++) {
    await sleep(1500);
    const { pid } = JSON.parse(pgs('list', '--json'))[0];
    const started = performance.now();
    process.kill(pid, 'SIGKILL');
    for (;;) {
      const client = new pg.Client({ host, port: 5432, user: 'postgres', database: 'victim', password });
      try {
        await client.connect();
        await client.query('SELECT 1');
        await client.end();
        break;
      } catch {
        await sleep(5);
      }
    }
    times.push(performance.now() - started);
  }
  console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}, node ${process.version}`);
  console.log(`kill -9 of the postmaster to SELECT 1 on a new connection: median ${quantile(times, 0.5).toFixed(0)} ms, p95 ${quantile(times, 0.95).toFixed(0)} ms, max ${Math.max(...times).toFixed(0)} ms (n=${times.length})`);
} finally {
  bench.remove();
}
