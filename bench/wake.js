#!/usr/bin/env node
// bench/wake: time from TCP connect to the first row of SELECT 1 through the
// router, for a suspended tenant (the connection wakes it) and for a running
// one, interleaved in one run. Usage: node bench/wake.js [--samples 20]
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { removePgsHome, routerConnectMs as connectMs } from './lib.js';
import { setTimeout as delay } from 'node:timers/promises';

const { values } = parseArgs({ options: { samples: { type: 'string', default: '20' } } });
const samples = Number(values.samples);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(root, 'bin', 'pgs.js');
const home = mkdtempSync(path.join(tmpdir(), 'pgs-wake-'));
const env = { ...process.env, PGS_HOME: home };
const pgs = (...args) => {
  const r = spawnSync(process.execPath, [bin, ...args], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`pgs ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
};
const sleep = (ms) => delay(ms);
const freePort = () => new Promise((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
});
const quantile = (xs, q) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(q * xs.length) - 1)];

const stateOf = (id) => JSON.parse(pgs('status', '--json')).tenants.find((t) => t.id === id)?.state;

try {
  const port = await freePort();
  pgs('setup', '--port', String(port), '--api-listen', 'off');
  const sleepy = JSON.parse(pgs('create', 'sleepy', '--json'));
  const awake = JSON.parse(pgs('create', 'awake', '--json'));
  pgs('start');
  pgs('config', 'sleepy', '--autosuspend', '1s');
  pgs('config', 'awake', '--autosuspend', 'off');
  const wake = [];
  const warm = [];
  for (let i = 0; i < samples; i++) {
    while (stateOf('sleepy') !== 'suspended') await sleep(100);
    await sleep(200); // let the stop settle
    wake.push(await connectMs(sleepy, port));
    warm.push(await connectMs(awake, port));
  }
  const fmt = (xs) => `median ${quantile(xs, 0.5).toFixed(0)} ms, p95 ${quantile(xs, 0.95).toFixed(0)} ms, min ${Math.min(...xs).toFixed(0)} ms`;
  console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`);
  console.log(`suspended tenant, connect to first row x${samples}: ${fmt(wake)}`);
  console.log(`running tenant, connect to first row x${samples}: ${fmt(warm)}`);
  console.log(`wake cost (median difference): ${(quantile(wake, 0.5) - quantile(warm, 0.5)).toFixed(0)} ms`);
} finally {
  removePgsHome(home, bin, env);
}
