#!/usr/bin/env node
// Runs the built test files (dist/test/...) side by side: a few workers, each
// running one file at a time, longest first (by test/durations.json). Every
// file's output goes to a log; a failing file's log is printed whole. At the
// end: the count of tests, each worker's time, the slowest files.
//
//   node scripts/test.mjs [area ...] [--jobs N] [--record]
//
// An area is a group of files (see AREAS): `npm run test:router` runs one.
// --jobs: how many files run at once (PGS_TEST_JOBS, default 3: most of a
// test's time is spent waiting on servers, disks and sleeps, not on a core).
// --record: write each file's time to test/durations.json (the order of the
// next runs). Test homes never collide (their own ports, data roots, control
// groups and container names), so any files may run together.
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIST = path.join(ROOT, 'dist', 'test');
const DURATIONS = path.join(ROOT, 'test', 'durations.json');

/** Areas of the suite: a file belongs to the first whose pattern matches its path under dist/test. */
const AREAS = [
  ['unit', /^unit\//],
  ['kubernetes', /^integration\/(kube|kubernetes)/],
  ['router', /^integration\/(router|admission|allow|auth|connection-limit|security|server-sessions|transaction-pool|pool-drivers|remote-backend)/],
  ['backup', /^integration\/(backup|restore|disaster|s3|export|hostile-import|import-uploads)/],
  ['runtime', /^integration\/(lifecycle|runtimes|spares|os-users|resources|limits|disk-quota|homes|pgs-image|root-first-run|doctor|budget)/],
  ['daemon', /^integration\//],
];

function usage(message) {
  if (message) console.error(`scripts/test.mjs: ${message}`);
  console.error(`usage: node scripts/test.mjs [${AREAS.map(([name]) => name).join('|')} ...] [--jobs N] [--record]`);
  process.exit(2);
}

const wanted = new Set();
let jobs = Number(process.env.PGS_TEST_JOBS ?? 3);
let record = false;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const arg = argv[i];
  if (arg === '--jobs') jobs = Number(argv[++i]);
  else if (arg === '--record') record = true;
  else if (AREAS.some(([name]) => name === arg)) wanted.add(arg);
  else usage(`unknown area or option ${JSON.stringify(arg)}`);
}
if (!Number.isInteger(jobs) || jobs < 1 || jobs > 32) usage('--jobs takes a number from 1 to 32');
if (!existsSync(DIST)) usage('no dist/test: run npm run build first');

const areaOf = (rel) => AREAS.find(([, pattern]) => pattern.test(rel))?.[0];
const files = [];
for (const dir of ['unit', 'integration']) {
  for (const name of readdirSync(path.join(DIST, dir)).sort()) {
    if (!name.endsWith('.test.js')) continue;
    const rel = `${dir}/${name}`;
    if (wanted.size === 0 || wanted.has(areaOf(rel))) files.push(rel);
  }
}
let known = {};
try {
  known = JSON.parse(readFileSync(DURATIONS, 'utf8'));
} catch {
  // no record yet: every file counts the same
}
// Longest first, so that the last file to finish is a short one; unknown files first of all.
const queue = [...files].sort((a, b) => (known[b] ?? 1e9) - (known[a] ?? 1e9) || a.localeCompare(b));

const logs = mkdtempSync(path.join(tmpdir(), 'pgs-test-logs-'));
const started = Date.now();
const results = [];
const children = new Set();
const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

console.log(`${files.length} test files, ${jobs} at a time; each file's output is in ${logs}/`);

function runFile(rel, worker) {
  return new Promise((resolve) => {
    const log = path.join(logs, rel.replace(/\//g, '_').replace(/\.js$/, '.log'));
    const out = createWriteStream(log);
    const t0 = Date.now();
    const child = spawn(process.execPath, ['--test', '--test-reporter=tap', path.join(DIST, rel)], {
      cwd: ROOT,
      env: { ...process.env, PGS_TEST_WORKER: String(worker) },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    children.add(child);
    let tail = '';
    const keep = (chunk) => {
      out.write(chunk);
      tail = (tail + chunk.toString('utf8')).slice(-4096);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('close', (code, signal) => {
      children.delete(child);
      out.end(() => {
        const ms = Date.now() - t0;
        const text = readFileSync(log, 'utf8');
        const count = (what) => Number(new RegExp(`^# ${what} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
        const result = { rel, worker, ms, code: code ?? -1, signal, pass: count('pass'), fail: count('fail'), log };
        results.push(result);
        const ok = result.code === 0 && result.fail === 0;
        console.log(`${ok ? 'ok  ' : 'FAIL'} ${seconds(ms).padStart(8)}  ${rel}  (${result.pass} passed${result.fail ? `, ${result.fail} failed` : ''}${signal ? `, ${signal}` : ''})`);
        if (!ok) console.log(`----- ${rel} -----\n${text}\n----- end of ${rel} -----`);
        resolve(result);
      });
    });
  });
}

const busy = new Array(jobs).fill(0);
async function worker(n) {
  for (let rel = queue.shift(); rel !== undefined; rel = queue.shift()) {
    const result = await runFile(rel, n);
    busy[n] += result.ms;
  }
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    for (const child of children) {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        // already gone
      }
    }
    process.exit(130);
  });
}

await Promise.all(Array.from({ length: jobs }, (_, n) => worker(n)));

const pass = results.reduce((sum, r) => sum + r.pass, 0);
const failed = results.filter((r) => r.code !== 0 || r.fail > 0);
const fail = results.reduce((sum, r) => sum + r.fail, 0);
console.log('');
console.log(`# tests ${pass + fail}`);
console.log(`# pass ${pass}`);
console.log(`# fail ${fail}`);
console.log(`# files ${results.length}, failed files ${failed.length}${failed.length ? `: ${failed.map((r) => r.rel).join(', ')}` : ''}`);
console.log(`# wall time ${seconds(Date.now() - started)} with ${jobs} at a time`);
busy.forEach((ms, n) => console.log(`# worker ${n}: ${seconds(ms)} busy, ${results.filter((r) => r.worker === n).length} files`));
console.log(`# slowest: ${[...results].sort((a, b) => b.ms - a.ms).slice(0, 8).map((r) => `${r.rel} ${seconds(r.ms)}`).join(', ')}`);

if (record) {
  const next = { ...known };
  for (const r of results) next[r.rel] = Math.round(r.ms / 100) / 10;
  const sorted = Object.fromEntries(Object.entries(next).filter(([rel]) => existsSync(path.join(DIST, rel))).sort(([a], [b]) => a.localeCompare(b)));
  writeFileSync(DURATIONS, `${JSON.stringify(sorted, null, 1)}\n`);
  console.log(`# recorded the times in ${path.relative(ROOT, DURATIONS)}`);
}
process.exit(failed.length > 0 ? 1 : 0);
