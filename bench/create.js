#!/usr/bin/env node
// bench/create: times whole `pgs create` commands (Node start-up included: a
// new process asking the daemon over its unix socket) and `pgs remove`, in a
// fresh PGS_HOME with a running daemon, and the idle memory of one tenant server.
// Usage: node bench/create.js [--count 20] [--gap-ms 1000]
//   --gap-ms: pause between creates (the spare pool refills in the background;
//             0 measures back-to-back creates that may outrun the refill).
import { readFileSync, readdirSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { benchHome, quantile } from './lib.js';

const { values } = parseArgs({ options: { count: { type: 'string', default: '20' }, 'gap-ms': { type: 'string', default: '1000' } } });
const count = Number(values.count);
const gapMs = Number(values['gap-ms']);
const bench = benchHome();
const pgs = bench.pgs;
const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** RSS and PSS (KiB) of a postmaster and all its children, from /proc/<pid>/smaps_rollup. */
function serverMemory(pid) {
  const pids = [pid];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) pids.push(Number(entry));
    } catch { /* gone */ }
  }
  let rss = 0;
  let pss = 0;
  for (const p of pids) {
    const text = readFileSync(`/proc/${p}/smaps_rollup`, 'utf8');
    rss += Number(/^Rss:\s+(\d+)/m.exec(text)?.[1] ?? 0);
    pss += Number(/^Pss:\s+(\d+)/m.exec(text)?.[1] ?? 0);
  }
  return { processes: pids.length, rss, pss };
}

try {
  pgs('setup', '--port', '55998', '--api-listen', 'off');
  pgs('start'); // the daemon makes every tenant; a create is one request to it
  sleep(3000); // let the first spares finish copying
  const run = (prefix, gap) => {
    const creates = [];
    const removes = [];
    for (let i = 0; i < count; i++) {
      creates.push(pgs('create', `${prefix}-${i}`).ms);
      if (gap > 0) sleep(gap);
    }
    for (let i = 0; i < count; i++) removes.push(pgs('remove', `${prefix}-${i}`, '--yes').ms);
    return { creates, removes };
  };
  const paused = run('gap', gapMs);
  pgs('create', 'idle');
  sleep(2000);
  const idle = JSON.parse(pgs('list', '--json').stdout).find((t) => t.id === 'idle');
  const memory = serverMemory(idle.pid);
  const backToBack = run('b2b', 0);
  const fmt = (xs) => `median ${quantile(xs, 0.5).toFixed(0)} ms, p95 ${quantile(xs, 0.95).toFixed(0)} ms, min ${Math.min(...xs).toFixed(0)} ms`;
  console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`);
  console.log(`NODE_EXTRA_CA_CERTS ${process.env.NODE_EXTRA_CA_CERTS ? 'set (Node loads extra CA certificates at start-up)' : 'unset'}`);
  console.log(`pgs create x${count}, ${gapMs} ms apart: ${fmt(paused.creates)}`);
  console.log(`pgs create x${count}, back to back: ${fmt(backToBack.creates)}`);
  console.log(`pgs remove x${count}: ${fmt([...paused.removes, ...backToBack.removes])}`);
  console.log(`one idle tenant server (${memory.processes} processes): RSS ${(memory.rss / 1024).toFixed(1)} MiB, PSS ${(memory.pss / 1024).toFixed(1)} MiB`);
} finally {
  sleep(500); // a spare refill may still be copying
  bench.remove();
}
