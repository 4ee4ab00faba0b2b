#!/usr/bin/env node
// bench/router-connect: sequential connect + SELECT 1 + disconnect with the `pg`
// client; prints one JSON line {median_ms, p95_ms, n, errors, first_error}.
// Usage: node bench/router-connect.js --host H --port P [--servername SNI] [--tls] [--count 300]
// The password comes from PGPASSWORD (the pg client reads it itself).
import { parseArgs } from 'node:util';
import pg from 'pg';

const { values } = parseArgs({
  options: {
    host: { type: 'string' }, port: { type: 'string', default: '5432' },
    servername: { type: 'string' }, tls: { type: 'boolean', default: false },
    count: { type: 'string', default: '300' }, user: { type: 'string', default: 'postgres' },
    database: { type: 'string', default: 'bench' },
  },
});
const count = Number(values.count);
let ssl = false;
if (values.tls) ssl = values.servername ? { servername: values.servername, rejectUnauthorized: false } : { rejectUnauthorized: false };
const times = [];
let errors = 0;
let firstError;
for (let i = 0; i < count + 5; i++) {
  const t0 = process.hrtime.bigint();
  const c = new pg.Client({ host: values.host, port: Number(values.port), user: values.user, database: values.database, ssl });
  try {
    await c.connect();
    await c.query('SELECT 1');
    await c.end();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (i >= 5) times.push(ms); // first 5 warm up the JIT and the TLS context
  } catch (e) {
    errors++;
    firstError ??= String(e?.message ?? e);
    try { await c.end(); } catch { /* already closed */ }
  }
}
times.sort((a, b) => a - b);
const q = (p) => (times.length ? times[Math.min(times.length - 1, Math.floor(p * times.length))] : NaN);
console.log(JSON.stringify({ median_ms: q(0.5), p95_ms: q(0.95), n: times.length, errors, first_error: firstError }));
