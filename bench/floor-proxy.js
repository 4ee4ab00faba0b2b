#!/usr/bin/env node
// bench/floor-proxy: the least a PostgreSQL proxy written on Node's tls and
// net can do: answer SSLRequest with 'S', end TLS, and pipe the bytes both
// ways to a server's unix socket; no routing, no authentication, no message
// tracking. What it reaches is the ceiling for any router built on Node's
// sockets on this host (bench/floor.sh runs it beside PgBouncer and pgs).
//   node bench/floor-proxy.js --port P --cert F --key F --socket /dir/.s.PGSQL.5432
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string' }, cert: { type: 'string' }, key: { type: 'string' }, socket: { type: 'string' } } });
const context = tls.createSecureContext({ cert: readFileSync(values.cert), key: readFileSync(values.key) });

net.createServer({ noDelay: true }, (raw) => {
  raw.once('data', (first) => {
    // SSLRequest: length 8, code 80877103.
    if (first.length !== 8 || first.readInt32BE(4) !== 80877103) return raw.destroy();
    raw.write('S');
    const secure = new tls.TLSSocket(raw, { isServer: true, secureContext: context });
    const server = net.connect(values.socket);
    secure.pipe(server).pipe(secure);
    const end = () => { secure.destroy(); server.destroy(); };
    secure.on('error', end).on('close', end);
    server.on('error', end).on('close', end);
  });
}).listen(Number(values.port), '127.0.0.1');
