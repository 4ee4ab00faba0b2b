#!/usr/bin/env node
// bench/cpuprofile-top: top N self-time functions of a V8 .cpuprofile file.
// Usage: node bench/cpuprofile-top.js file.cpuprofile [N]
import { readFileSync } from 'node:fs';

const prof = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const n = Number(process.argv[3] ?? 10);
const byId = new Map(prof.nodes.map((x) => [x.id, x]));
const self = new Map();
const dts = prof.timeDeltas;
for (let i = 0; i < prof.samples.length; i++) self.set(prof.samples[i], (self.get(prof.samples[i]) ?? 0) + (dts[i] ?? 0));
const agg = new Map();
let total = 0;
for (const [id, us] of self) {
  const cf = byId.get(id).callFrame;
  const file = cf.url ? cf.url.replace(/^.*\//, '') : '';
  const key = `${cf.functionName || '(anonymous)'} ${file}${file ? ':' + (cf.lineNumber + 1) : ''}`;
  agg.set(key, (agg.get(key) ?? 0) + us);
  total += us;
}
console.log(`total sampled ${(total / 1e3).toFixed(0)} ms`);
for (const [k, us] of [...agg].sort((a, b) => b[1] - a[1]).slice(0, n)) {
  console.log(`${((100 * us) / total).toFixed(1).padStart(5)}%  ${(us / 1e3).toFixed(0).padStart(6)} ms  ${k}`);
}
