#!/usr/bin/env node
// bench/router-report: reads the results file of bench/router.sh (tab-separated:
// round, workload, target, value) and prints a markdown table of medians and
// ratios. Usage: node bench/router-report.js results.tsv
import { readFileSync } from 'node:fs';

const rows = readFileSync(process.argv[2], 'utf8').trim().split('\n').map((l) => l.split('\t'));
const workloads = [
  ['S', 'pgbench -S, 8 persistent clients (TPS, higher is better)'],
  ['SC', 'pgbench -S -C, new connection per transaction (TPS, higher is better)'],
  ['conn', 'connect + SELECT 1 + disconnect, sequential, median ms (lower is better)'],
  ['conn95', 'same, p95 ms (lower is better)'],
];
const targets = [['direct', 'direct TLS'], ['pgbouncer', 'PgBouncer (TLS)'], ['router', 'pgs router (TLS)'], ['tenant', 'pgs tenant, unix socket, no TLS']];
// FLOOR=1 runs: the least proxy Node can be (bench/floor-proxy.js), in front of PgBouncer's server.
if (rows.some((r) => r[2] === 'floor')) targets.push(['floor', 'Node floor proxy (TLS)']);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const get = (w, t) => rows.filter((r) => r[1] === w && r[2] === t).map((r) => Number(r[3])).filter(Number.isFinite);
const fmt = (v, ms) => (Number.isFinite(v) ? (ms ? v.toFixed(2) : Math.round(v).toString()) : 'n/a');
const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b ? (a / b).toFixed(2) + 'x' : 'n/a');

const rounds = new Set(rows.map((r) => r[0])).size;
console.log(`Medians over ${rounds} interleaved rounds; (ratio) = value / direct TLS.\n`);
const floor = targets.some(([t]) => t === 'floor');
console.log('| workload | ' + targets.map((t) => t[1]).join(' | ') + ' | router / PgBouncer | router / its tenant |' + (floor ? ' floor / PgBouncer |' : ''));
console.log('| --- | ' + targets.map(() => '---:').join(' | ') + ' | ---: | ---: |' + (floor ? ' ---: |' : ''));
for (const [w, label] of workloads) {
  const ms = w.startsWith('conn');
  const m = Object.fromEntries(targets.map(([t]) => [t, median(get(w, t))]));
  const cells = targets.map(([t]) => (t === 'direct' ? `**${fmt(m[t], ms)}**` : `${fmt(m[t], ms)} (${ratio(m[t], m.direct)})`));
  console.log(`| ${label} | ${cells.join(' | ')} | ${ratio(m.router, m.pgbouncer)} | ${ratio(m.router, m.tenant)} |` + (floor ? ` ${ratio(m.floor, m.pgbouncer)} |` : ''));
}
console.log('\nAll rounds (value per round, in run order):\n');
for (const [w] of workloads) {
  console.log(`- ${w}: ` + targets.map(([t]) => `${t} ${get(w, t).map((v) => fmt(v, w.startsWith('conn'))).join(' / ')}`).join('; '));
}
