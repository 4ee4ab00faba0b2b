#!/usr/bin/env node
// bench/runtimes: the docker runtime beside the native one, in one run: how
// long a create and a remove take, what an idle tenant costs in memory, and
// how long a connection to a suspended tenant takes (the wake) against one to
// a running tenant. Each runtime gets a fresh PGS_HOME and the same steps.
//   node bench/runtimes.js [--tenants 10] [--samples 10] [--image pgs-test/postgres:18]
// Needs a Docker engine (DOCKER_HOST or /var/run/docker.sock) and root; the
// image is built with test/docker/build-image.sh when missing.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { cpus, totalmem } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { benchHome, quantile, routerConnectMs as connectMs, smaps } from './lib.js';

const { values } = parseArgs({ options: {
  tenants: { type: 'string', default: '10' },
  samples: { type: 'string', default: '10' },
  image: { type: 'string', default: 'pgs-test/postgres:18' },
} });
const tenants = Number(values.tenants);
const samples = Number(values.samples);
const image = values.image;
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');

const freePort = () => new Promise((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
});
const median = (xs) => quantile(xs, 0.5);
const ms = (x) => `${x.toFixed(0)} ms`;
const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

function ppidOf(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}


/** RSS and PSS of postmasters and their children; with `shims`, also of each postmaster's parent (the container's shim). */
function memory(postmasters, shims) {
  const children = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const ppid = ppidOf(Number(entry));
    if (ppid !== undefined) children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
  }
  const server = { rss: 0, pss: 0, processes: 0 };
  const shim = { rss: 0, pss: 0, processes: 0 };
  for (const pid of postmasters) {
    for (const p of [pid, ...(children.get(pid) ?? [])]) {
      const m = smaps(p);
      server.rss += m.rss; server.pss += m.pss; server.processes++;
    }
    if (shims) {
      const parent = ppidOf(pid);
      const m = smaps(parent);
      shim.rss += m.rss; shim.pss += m.pss; shim.processes++;
    }
  }
  return { server, shim };
}

/** RSS of the engine's own processes (dockerd, containerd): what it holds for its containers shows as growth. */
function engineRss() {
  let rss = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let comm;
    try { comm = readFileSync(`/proc/${entry}/comm`, 'utf8').trim(); } catch { continue; }
    if (comm === 'dockerd' || comm === 'containerd') rss += smaps(Number(entry)).rss;
  }
  return rss;
}


async function measure(runtime, extraEnv = {}) {
  const bench = benchHome(extraEnv);
  const { pgs } = bench;
  try {
    const port = await freePort();
    pgs('setup', '--port', String(port), '--api-listen', 'off', ...(runtime === 'docker' ? ['--runtime', 'docker', '--image', image] : []));
    pgs('start');
    await sleep(3000); // the spares the daemon keeps
    const engineBefore = engineRss();
    const made = [];
    const create = [];
    for (let i = 0; i < tenants; i++) {
      const r = pgs('create', `t${i}`, '--autosuspend', 'off', '--json');
      create.push(r.ms);
      made.push(JSON.parse(r.stdout));
      await sleep(500);
    }
    await sleep(5000); // idle
    const listed = JSON.parse(pgs('list', '--json').stdout);
    const mem = memory(listed.map((t) => t.pid).filter((p) => p > 0), runtime === 'docker');
    mem.engineGrowth = engineRss() - engineBefore;
    const sleepy = made[0];
    const awake = made[1];
    pgs('config', sleepy.id, '--autosuspend', '1s');
    const wake = [];
    const warm = [];
    const stateOf = (id) => JSON.parse(pgs('list', '--json').stdout).find((t) => t.id === id)?.state;
    for (let i = 0; i < samples; i++) {
      while (stateOf(sleepy.id) !== 'suspended') await sleep(100);
      await sleep(200);
      wake.push(await connectMs(sleepy, port));
      warm.push(await connectMs(awake, port));
    }
    const remove = [];
    for (const t of made) {
      remove.push(pgs('remove', t.id, '--yes').ms);
    }
    return { runtime, create, remove, wake, warm, mem, count: made.length };
  } finally {
    bench.remove();
  }
}

if (process.getuid?.() !== 0) throw new Error('run as root: the docker runtime runs each server as its tenant\'s uid');
const docker = (...args) => spawnSync('docker', args, { encoding: 'utf8' });
if (docker('version').status !== 0) throw new Error('no Docker engine: set DOCKER_HOST=unix:///path or start dockerd');
if (docker('image', 'inspect', image).status !== 0) {
  const built = spawnSync('bash', [path.join(root, 'test/docker/build-image.sh'), image], { stdio: 'inherit' });
  if (built.status !== 0) throw new Error('building the image failed');
}
const engine = docker('version', '--format', '{{.Server.Version}}').stdout.trim();

const runs = [];
runs.push(await measure('native'));
runs.push(await measure('docker'));
console.log(`\n${cpus().length} × ${cpus()[0]?.model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, Docker ${engine}, image ${image}`);
console.log(`${tenants} tenants per runtime, ${samples} wake samples; node bench/runtimes.js --tenants ${tenants} --samples ${samples}\n`);
console.log('| | native | docker |');
console.log('| --- | ---: | ---: |');
const row = (name, f) => console.log(`| ${name} | ${runs.map(f).join(' | ')} |`);
row('`pgs create`, median (p95)', (r) => `${ms(median(r.create))} (${ms(quantile(r.create, 0.95))})`);
row('`pgs remove --yes`, median', (r) => ms(median(r.remove)));
row('connect + `SELECT 1`, running tenant, median', (r) => ms(median(r.warm)));
row('connect + `SELECT 1`, suspended tenant (wake), median (p95)', (r) => `${ms(median(r.wake))} (${ms(quantile(r.wake, 0.95))})`);
row('wake cost (median difference)', (r) => `**${ms(median(r.wake) - median(r.warm))}**`);
row('idle tenant, server processes: RSS / PSS each', (r) => `${mib(r.mem.server.rss / r.count)} / ${mib(r.mem.server.pss / r.count)}`);
row('idle tenant, container shim: RSS / PSS each', (r) => (r.mem.shim.processes ? `${mib(r.mem.shim.rss / r.count)} / ${mib(r.mem.shim.pss / r.count)}` : 'none'));
row('Docker engine (dockerd, containerd): RSS growth per tenant', (r) => (r.runtime === 'docker' ? mib(r.mem.engineGrowth / r.count) : 'none'));
row('idle tenant, all: PSS each', (r) => `**${mib((r.mem.server.pss + r.mem.shim.pss) / r.count)}**`);
