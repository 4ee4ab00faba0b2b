#!/usr/bin/env node
// bench/admission: logins from 127.0.0.1 while 127.0.1.x floods the router with
// start-ups that never finish: idle TCP connections and TLS slow-loris ones
// (handshake done, start-up packet never finished), each reopened as soon as the
// router closes it. Reports each login's time (TLS, SCRAM, ReadyForQuery) without
// the flood and during it, what the router shed, and the daemon's CPU.
// (test/integration/admission.test.ts checks that all logins succeed.)
//
//   npm run build && node bench/admission.js [--idle 1000] [--loris 1000] [--clients 200] [--concurrency 10]
//
// Needs ulimit -n of 8192 or more (this process and the daemon hold ~2,100 sockets each).
import { Buffer } from 'node:buffer';
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import { cpus, totalmem } from 'node:os';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { setImmediate } from 'node:timers';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { benchHome, quantile } from './lib.js';

const { values } = parseArgs({ options: { idle: { type: 'string', default: '1000' }, loris: { type: 'string', default: '1000' }, clients: { type: 'string', default: '200' }, concurrency: { type: 'string', default: '10' } } });
const IDLE = Number(values.idle);
const LORIS = Number(values.loris);
const CLIENTS = Number(values.clients);
const CONCURRENCY = Number(values.concurrency);
const PORT = 25441;
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]);
const PARTIAL_STARTUP = Buffer.from([0, 0, 0, 200, 0, 3, 0, 0, 0x75, 0x73]);

const b = benchHome({ PGS_RUNNING_SPARES: '0' });
const { pgs } = b;

function daemonCpuSeconds() {
  const pid = JSON.parse(pgs('status', '--json').stdout).pid;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(stat[11]) + Number(stat[12])) / 100;
}

function flood(count, open) {
  let stopped = false;
  const sockets = new Set();
  const stats = { opened: 0, closed: 0 };
  const keep = (i) => {
    if (stopped) return;
    const socket = open(i);
    stats.opened++;
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.once('close', () => {
      sockets.delete(socket);
      if (stopped) return;
      stats.closed++;
      setImmediate(() => keep(i));
    });
  };
  for (let i = 0; i < count; i++) keep(i);
  return { stats, stop: () => { stopped = true; for (const s of sockets) s.destroy(); } };
}

async function logins(t) {
  const times = [];
  let failed = 0;
  let next = 0;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < CLIENTS) {
      next++;
      const began = performance.now();
      const client = new pg.Client({ host: '127.0.0.1', port: PORT, user: 'postgres', database: t.id, password: t.password, ssl: { servername: t.hostname, rejectUnauthorized: false }, connectionTimeoutMillis: 60_000 });
      client.on('error', () => undefined);
      try {
        await client.connect();
        times.push(performance.now() - began);
        await client.query('select 1');
      } catch {
        failed++;
      } finally {
        await client.end().catch(() => undefined);
      }
    }
  }));
  return { times, failed };
}

const show = ({ times, failed }) => `${times.length} of ${CLIENTS} logged in (${failed} failed); login min ${quantile(times, 0).toFixed(0)} ms, median ${quantile(times, 0.5).toFixed(0)} ms, p99 ${quantile(times, 0.99).toFixed(0)} ms, max ${quantile(times, 1).toFixed(0)} ms`;

try {
  pgs('setup', '--port', String(PORT), '--api-listen', 'off');
  const t = JSON.parse(pgs('create', 'fair', '--max-connections', '100', '--json').stdout);
  await logins(t); // warm: the first login reads the role from the server
  console.log(`without a flood: ${show(await logins(t))}`);

  const cpuBefore = daemonCpuSeconds();
  const idle = flood(IDLE, (i) => net.connect({ port: PORT, host: '127.0.0.1', localAddress: `127.0.1.${1 + (i % 20)}` }));
  let handshakes = 0;
  const loris = flood(LORIS, (i) => {
    const raw = net.connect({ port: PORT, host: '127.0.0.1', localAddress: `127.0.1.${101 + (i % 10)}` });
    raw.once('connect', () => raw.write(SSL_REQUEST));
    raw.once('data', (answer) => {
      if (answer[0] !== 0x53) return;
      const secure = tls.connect({ socket: raw, servername: t.hostname, rejectUnauthorized: false });
      secure.on('error', () => raw.destroy());
      secure.on('close', () => raw.destroy());
      secure.resume();
      secure.once('secureConnect', () => { handshakes++; secure.write(PARTIAL_STARTUP); });
    });
    return raw;
  });
  await sleep(3_000);
  const t0 = performance.now();
  const during = await logins(t);
  const seconds = (performance.now() - t0) / 1000 + 3;
  idle.stop();
  loris.stop();
  const cpu = daemonCpuSeconds() - cpuBefore;
  console.log(`during the flood (${IDLE} idle TCP from 20 addresses, ${LORIS} TLS slow-loris from 10, all in 127.0.1.0/24): ${show(during)}`);
  console.log(`  flood over ${seconds.toFixed(1)} s: idle opened ${idle.stats.opened} (closed by the router ${idle.stats.closed}), slow-loris opened ${loris.stats.opened} (closed ${loris.stats.closed}, TLS handshakes ${handshakes}); daemon CPU ${cpu.toFixed(1)} s`);
  const log = readFileSync(path.join(b.home, 'daemon.log'), 'utf8').split('\n').filter((l) => l.includes('"start-ups shed"'));
  console.log(`  log lines "start-ups shed": ${log.length}; the first: ${log[0] ?? 'none'}`);
  console.log(`machine: ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`);
} finally {
  b.remove();
}
