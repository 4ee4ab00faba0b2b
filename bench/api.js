#!/usr/bin/env node
// bench/api: the daemon's REST API under a fleet. In a fresh PGS_HOME it times
//   POST /v1/tenants (one request per create, back to back and with a pause),
//   GET /v1/tenants of the whole fleet (one page of up to 1,000),
//   GET /metrics (a Prometheus scrape with per-tenant series),
// over TCP with a bearer token, as automation calls it.
// Usage: node bench/api.js [--tenants 1000] [--samples 50] [--gap-ms 500]
import http from 'node:http';
import { cpus, totalmem } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { benchHome, quantile } from './lib.js';

const { values } = parseArgs({ options: { tenants: { type: 'string', default: '1000' }, samples: { type: 'string', default: '50' }, 'gap-ms': { type: 'string', default: '500' } } });
const fleet = Number(values.tenants);
const samples = Number(values.samples);
const gapMs = Number(values['gap-ms']);
const bench = benchHome();
const pgs = (...args) => bench.pgs(...args).stdout;

function request(address, token, method, urlPath, body) {
  const [host, port] = address.split(':');
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const req = http.request({ host, port: Number(port), method, path: urlPath, agent: keepAlive, headers: { authorization: `Bearer ${token}`, ...(payload ? { 'content-type': 'application/json' } : {}) } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (s) => { text += s; });
      res.on('end', () => {
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        if ((res.statusCode ?? 500) >= 300) reject(new Error(`${method} ${urlPath}: ${res.statusCode} ${text}`));
        else resolve({ ms, text });
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}
const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
const fmt = (xs) => `p50 ${quantile(xs, 0.5).toFixed(1)} ms, p95 ${quantile(xs, 0.95).toFixed(1)} ms, max ${Math.max(...xs).toFixed(1)} ms (n=${xs.length})`;

try {
  pgs('setup', '--port', '55999', '--api-listen', '127.0.0.1:0');
  pgs('start');
  const address = JSON.parse(pgs('status', '--json')).api;
  const token = JSON.parse(pgs('token', 'create', 'bench', '--scope', 'admin', '--json')).token;
  await sleep(3000); // the first spares finish copying

  const paused = [];
  const backToBack = [];
  for (let i = 0; i < samples; i++) {
    paused.push((await request(address, token, 'POST', '/v1/tenants', { id: `p${i}`, autosuspend: null })).ms);
    await sleep(gapMs);
  }
  for (let i = 0; i < samples; i++) backToBack.push((await request(address, token, 'POST', '/v1/tenants', { id: `b${i}`, autosuspend: null })).ms);

  // The rest of the fleet, as fast as the daemon takes them.
  const madeAt = Date.now();
  for (let i = 2 * samples; i < fleet; i++) await request(address, token, 'POST', '/v1/tenants', { id: `f${i}`, autosuspend: null });
  const fleetSeconds = (Date.now() - madeAt) / 1000;
  await sleep(5000); // the first health checks of the new servers settle

  const lists = [];
  let listed = 0;
  for (let i = 0; i < 50; i++) {
    const { ms, text } = await request(address, token, 'GET', '/v1/tenants?limit=1000');
    lists.push(ms);
    listed = JSON.parse(text).items.length;
  }
  const scrapes = [];
  let series = 0;
  for (let i = 0; i < 50; i++) {
    const { ms, text } = await request(address, token, 'GET', '/metrics');
    scrapes.push(ms);
    series = text.split('\n').filter((l) => l && !l.startsWith('#')).length;
  }
  const cli = [];
  for (let i = 0; i < 10; i++) cli.push(bench.pgs('create', `cli${i}`, '--autosuspend', 'off').ms);

  console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`);
  console.log(`POST /v1/tenants, ${gapMs} ms apart: ${fmt(paused)}`);
  console.log(`POST /v1/tenants, back to back: ${fmt(backToBack)}`);
  console.log(`pgs create (whole command, Node start-up included), back to back, with ${listed} tenants: ${fmt(cli)}`);
  console.log(`fleet: ${fleet - 2 * samples} more creates in ${fleetSeconds.toFixed(0)} s`);
  console.log(`GET /v1/tenants?limit=1000 with ${listed} tenants running: ${fmt(lists)}`);
  console.log(`GET /metrics with ${listed} tenants (${series} series): ${fmt(scrapes)}`);
} finally {
  keepAlive.destroy();
  bench.remove();
}
