#!/usr/bin/env node
// bench/history.js: the daemon's history (src/telemetry/history.ts) at 1,000 tenants:
// memory once both rings are full, the time one sample of every tenant takes to
// record, and the size and build time of GET /v1/history's answer.
// Usage: npm run build && node --expose-gc bench/history.js [--tenants 1000]
import { performance } from 'node:perf_hooks';
import { History } from '../dist/src/telemetry/history.js';

const arg = (name, fallback) => {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? Number(process.argv[at + 1]) : fallback;
};
const tenants = arg('tenants', 1000);
const gc = () => globalThis.gc?.();

gc();
const before = process.memoryUsage();
const history = new History(10_000);
const ids = Array.from({ length: tenants }, (_, i) => `tenant-${String(i).padStart(4, '0')}`);
const xacts = new Float64Array(tenants);
let at = Date.now();
const samples = 360 + 1440 * 6; // both rings full
const times = [];
for (let s = 0; s < samples; s++) {
  const batch = new Map();
  for (let i = 0; i < tenants; i++) {
    const running = (i + s) % 7 !== 0;
    xacts[i] += running ? Math.floor(Math.random() * 500) : 0;
    batch.set(ids[i], running ? { state: 'running', connections: i % 13, xacts: xacts[i] } : { state: 'suspended', connections: 0 });
  }
  const t0 = performance.now();
  history.record(at, batch);
  times.push(performance.now() - t0);
  at += 10_000;
}
gc();
const after = process.memoryUsage();
const mib = (b) => (b / 2 ** 20).toFixed(1);
const held = after.heapUsed + after.arrayBuffers - before.heapUsed - before.arrayBuffers;
times.sort((a, b) => a - b);
const t0 = performance.now();
const hour = JSON.stringify(history.series('1h'));
const serialize = performance.now() - t0;
const one = JSON.stringify(history.series('1h', [ids[0]]));
console.log(JSON.stringify({
  tenants,
  samplesRecorded: samples,
  memoryMiB: Number(mib(held)),
  perTenantKiB: Number((held / tenants / 1024).toFixed(1)),
  recordMedianMs: Number(times[times.length >> 1].toFixed(2)),
  recordP99Ms: Number(times[Math.floor(times.length * 0.99)].toFixed(2)),
  hourAllTenantsKiB: Math.round(hour.length / 1024),
  hourAllTenantsBuildMs: Number(serialize.toFixed(1)),
  hourOneTenantKiB: Number((one.length / 1024).toFixed(1)),
}, null, 2));
