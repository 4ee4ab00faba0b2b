import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import postgres from 'postgres';
import type { Router } from '../../src/router/router.js';
import { PgsHome, psql, waitFor } from '../helpers/pgs.js';
import { assertCancels, libpq18Env, startRouter } from '../helpers/router.js';

interface Created { id: string; hostname: string; password: string }

describe('the router: one TLS port, tenants chosen by SNI host name', () => {
  let pgs: PgsHome;
  let router: Router;
  let port: number;
  let reload: () => Promise<void>;
  let alpha: Created;
  let beta: Created;
  const cancels = { forwarded: 0, unknown_key: 0 };
  const conn = (t: Created, extra = '') => `host=${t.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=${t.id} sslmode=require connect_timeout=10 ${extra}`;

  before(async () => {
    pgs = await PgsHome.make();
    await pgs.setup();
    alpha = await pgs.json<Created>(['create', 'alpha']);
    beta = await pgs.json<Created>(['create', 'beta']);
    ({ router, port, reload } = await startRouter(pgs, {
      observer: {
        tlsHandshake: () => undefined,
        backendConnect: () => undefined,
        connectionClosed: () => undefined,
        cancelRequest: (outcome) => { cancels[outcome]++; },
        authentication: () => undefined,
      },
    }));
  });
  after(async () => {
    await router?.close();
    await pgs.destroy();
  });

  it('routes psql (libpq 15, SSLRequest) to each tenant\'s own server', async () => {
    assert.equal((await psql(conn(alpha), "CREATE TABLE who(name text); INSERT INTO who VALUES ('alpha')", alpha.password)).code, 0);
    assert.equal((await psql(conn(beta), "CREATE TABLE who(name text); INSERT INTO who VALUES ('beta')", beta.password)).code, 0);
    assert.equal((await psql(conn(alpha), 'SELECT string_agg(name, \',\') FROM who', alpha.password)).stdout, 'alpha');
    assert.equal((await psql(conn(beta), 'SELECT string_agg(name, \',\') FROM who', beta.password)).stdout, 'beta');
    const ssl = await psql(conn(alpha), 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()', alpha.password);
    assert.equal(ssl.stdout, 'f', 'TLS ends in the router: the server sees a local socket');
  });

  it('host names are case-insensitive', async () => {
    const result = await psql(conn({ ...alpha, hostname: alpha.hostname.toUpperCase() }), 'SELECT current_database()', alpha.password);
    assert.equal(result.stdout, 'alpha', result.stderr);
  });

  it('routes libpq 18 with sslnegotiation=direct (TLS first, ALPN postgresql)', async () => {
    const result = await psql(conn(alpha, 'sslnegotiation=direct'), 'SELECT current_database()', alpha.password, libpq18Env());
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'alpha');
  });

  it('routes node-postgres with servername', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'beta', password: beta.password, ssl: { servername: beta.hostname, rejectUnauthorized: false } });
    await client.connect();
    try {
      const { rows } = await client.query<{ name: string }>('SELECT name FROM who');
      assert.deepEqual(rows, [{ name: 'beta' }]);
    } finally {
      await client.end();
    }
  });

  it('routes postgres.js with servername', async () => {
    const sql = postgres({ host: '127.0.0.1', port, user: 'postgres', database: 'alpha', password: alpha.password, ssl: { servername: alpha.hostname, rejectUnauthorized: false }, max: 1 });
    try {
      const rows = await sql<{ name: string }[]>`SELECT name FROM who`;
      assert.equal(rows[0]?.name, 'alpha');
    } finally {
      await sql.end();
    }
  });

  it('an unknown host name gets a readable FATAL', async () => {
    const result = await psql(conn({ ...alpha, hostname: 'nobody-abcdef.pgs.localhost' }), 'SELECT 1', 'x');
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /FATAL: {2}unknown host name "nobody-abcdef\.pgs\.localhost": no such tenant/);
    const foreign = await psql(conn({ ...alpha, hostname: 'db.example.org' }), 'SELECT 1', 'x');
    assert.match(foreign.stderr, /unknown host name "db\.example\.org": tenants are reached as <id>-<suffix>\.pgs\.localhost/);
  });

  it('a plain-text client gets FATAL "SSL/TLS required"', async () => {
    const result = await psql(conn(alpha).replace('sslmode=require', 'sslmode=disable'), 'SELECT 1', alpha.password);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /FATAL: {2}SSL\/TLS required: connect with sslmode=require/);
  });

  it('without SNI, options=endpoint=<id>-<suffix> names the tenant', async () => {
    const label = alpha.hostname.split('.')[0];
    const noSni = `host=127.0.0.1 port=${port} user=postgres dbname=alpha sslmode=require options='endpoint=${label}'`;
    const result = await psql(noSni, 'SELECT current_database(), current_setting(\'search_path\')', alpha.password);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^alpha\|/);
    const withOther = await psql(`${noSni.replace(`'endpoint=${label}'`, `'-c search_path=pg_catalog endpoint=${label}'`)}`, "SELECT current_setting('search_path')", alpha.password);
    assert.equal(withOther.stdout, 'pg_catalog', withOther.stderr);
    const none = await psql(`host=127.0.0.1 port=${port} user=postgres dbname=alpha sslmode=require`, 'SELECT 1', alpha.password);
    assert.match(none.stderr, /no tenant host name: the client sent no TLS SNI name and no endpoint option/);
  });

  it('SNI and endpoint naming different tenants are refused', async () => {
    const betaLabel = beta.hostname.split('.')[0];
    const result = await psql(conn(alpha, `options='endpoint=${betaLabel}'`), 'SELECT 1', alpha.password);
    assert.match(result.stderr, /name different tenants/);
  });

  it('the admin role cannot log in through the router', async () => {
    const result = await psql(conn(alpha).replace('user=postgres', 'user=pgs_admin'), 'SELECT 1', 'x');
    assert.match(result.stderr, /role "pgs_admin" cannot log in through pgs/);
  });

  it('a wrong password is PostgreSQL\'s own error, passed through', async () => {
    const result = await psql(conn(alpha), 'SELECT 1', 'wrong-password');
    assert.match(result.stderr, /password authentication failed for user "postgres"/);
  });

  it('disable-access refuses new connections and closes open ones; enable-access lets them in', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'alpha', password: alpha.password, ssl: { servername: alpha.hostname, rejectUnauthorized: false } });
    await client.connect();
    const ended = new Promise<void>((resolve) => client.once('end', () => resolve()));
    client.on('error', () => undefined);
    await pgs.ok(['disable-access', 'alpha']);
    await reload();
    assert.equal(router.closeTenant('alpha'), 1);
    await ended;
    const refused = await psql(conn(alpha), 'SELECT 1', alpha.password);
    assert.match(refused.stderr, /FATAL: {2}access to tenant alpha is disabled/);
    assert.equal((await psql(conn(beta), 'SELECT 1', beta.password)).stdout, '1', 'other tenants are not affected');
    await pgs.ok(['enable-access', 'alpha']);
    await reload();
    assert.equal((await psql(conn(alpha), 'SELECT 1', alpha.password)).stdout, '1');
  });

  it('a CancelRequest through the router cancels pg_sleep (SQLSTATE 57014)', async () => {
    const sql = postgres({ host: '127.0.0.1', port, user: 'postgres', database: 'beta', password: beta.password, ssl: { servername: beta.hostname, rejectUnauthorized: false }, max: 1 });
    try {
      await assertCancels(sql);
    } finally {
      await sql.end();
    }
  });

  it('a plain (non-TLS) CancelRequest with the client\'s key cancels through the router', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'alpha', password: alpha.password, ssl: { servername: alpha.hostname, rejectUnauthorized: false } });
    await client.connect();
    try {
      const { processID, secretKey } = client as unknown as { processID: number; secretKey: number };
      const running = client.query('SELECT pg_sleep(30)');
      await new Promise((r) => setTimeout(r, 300));
      const cancel = Buffer.alloc(16);
      cancel.writeInt32BE(16, 0);
      cancel.writeInt32BE(80877102, 4);
      cancel.writeInt32BE(processID, 8);
      cancel.writeInt32BE(secretKey, 12);
      assert.equal((await rawExchange(port, cancel)).length, 0, 'nothing is sent back');
      await assert.rejects(running, (err: { code?: string }) => err.code === '57014');
    } finally {
      await client.end();
    }
  });

  it('protocol 3.2 (libpq 18, variable-length cancel secret) passes through', async () => {
    const result = await psql(conn(alpha, 'max_protocol_version=latest'), 'SELECT current_database()', alpha.password, libpq18Env());
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'alpha');
  });

  it('direct TLS without ALPN postgresql is closed', async () => {
    // A valid StartupMessage after the handshake: a router that ignored ALPN would answer it.
    const startup = Buffer.from('\0\0\0\x1b\0\x03\0\0user\0postgres\0database\0alpha\0\0', 'latin1');
    startup.writeInt32BE(startup.length, 0);
    for (const alpn of [['http/1.1'], undefined]) {
      const received = await new Promise<number>((resolve) => {
        let bytes = 0;
        const socket = tls.connect({ port, host: '127.0.0.1', servername: alpha.hostname, rejectUnauthorized: false, ...(alpn ? { ALPNProtocols: alpn } : {}) });
        socket.on('data', (chunk: Buffer) => { bytes += chunk.length; });
        socket.on('error', () => undefined);
        socket.on('close', () => resolve(bytes));
        socket.on('secureConnect', () => socket.write(startup));
      });
      assert.equal(received, 0, `ALPN ${String(alpn)}: the router must not answer`);
    }
  });

  it('the client sees the router\'s cancel key, not the server\'s', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'alpha', password: alpha.password, ssl: { servername: alpha.hostname, rejectUnauthorized: false } });
    await client.connect();
    try {
      const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      const seen = (client as unknown as { processID: number }).processID;
      assert.notEqual(seen, rows[0]?.pid);
    } finally {
      await client.end();
    }
  });

  it('a forged cancel key does nothing; the real one, sent the same way right after, cancels', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'alpha', password: alpha.password, ssl: { servername: alpha.hostname, rejectUnauthorized: false } });
    await client.connect();
    client.on('error', () => undefined);
    try {
      const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      const { processID, secretKey } = client as unknown as { processID: number; secretKey: number };
      let settled = false;
      const running = client.query('SELECT pg_sleep(30) AS slept');
      void running.then(() => { settled = true; }, () => { settled = true; });
      await new Promise((r) => setTimeout(r, 300));
      const cancelPacket = (pid: number, secret: number) => {
        const packet = Buffer.alloc(16);
        packet.writeInt32BE(16, 0);
        packet.writeInt32BE(80877102, 4);
        packet.writeInt32BE(pid, 8);
        packet.writeInt32BE(secret, 12);
        return packet;
      };
      const unknownBefore = cancels.unknown_key;
      // Even the real server pid, and the router's pid with a guessed secret.
      await rawExchange(port, cancelPacket(rows[0]?.pid ?? 1, 12345));
      await rawExchange(port, cancelPacket(processID, (secretKey ^ 0x5a5a5a5a) | 0));
      await new Promise((r) => setTimeout(r, 1_000));
      assert.equal(settled, false, 'the query still runs after the forged keys');
      assert.equal(cancels.unknown_key, unknownBefore + 2, 'both were taken as unknown keys');
      await rawExchange(port, cancelPacket(processID, secretKey));
      await assert.rejects(running, (err: { code?: string }) => err.code === '57014');
    } finally {
      await client.end();
    }
  });

  it('bytes sent after SSLRequest before the handshake close the connection (CVE-2021-23214)', async () => {
    const ssl = Buffer.from([0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]);
    const reply = await rawExchange(port, Buffer.concat([ssl, Buffer.from('Q\0\0\0\x0dSELECT 1\0')]));
    assert.equal(reply.length, 0, 'no S, no data: closed');
  });

  it('GSSENCRequest is answered N, then SSLRequest works', async () => {
    const gss = Buffer.from([0, 0, 0, 8, 4, 0xd2, 0x16, 0x30]);
    const ssl = Buffer.from([0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]);
    const { router: quick, port: quickPort } = await startRouter(pgs, { startupTimeoutMs: 300 });
    try {
      // No TLS handshake follows the S: the router gives up after its start-up time-out.
      const reply = await rawExchange(quickPort, gss, ssl);
      assert.equal(reply.toString('latin1'), 'NS');
    } finally {
      await quick.close();
    }
  });

  it('start-up packets that are too short, too long or garbage get a protocol FATAL', async () => {
    for (const packet of [Buffer.from([0, 0, 0, 4, 0, 0, 0, 0]), Buffer.from([0, 0, 0x4e, 0x21, 0, 3, 0, 0]), Buffer.from([0, 0, 0, 8, 0, 9, 0, 0])]) {
      const reply = await rawExchange(port, packet);
      assert.equal(reply[0], 0x45, 'an ErrorResponse');
      assert.match(reply.toString('latin1'), /C08P01/);
    }
  });

  it('a client that sends nothing is closed after the start-up time-out', async () => {
    const { router: slow, port: slowPort } = await startRouter(pgs, { startupTimeoutMs: 200 });
    try {
      const reply = await rawExchange(slowPort);
      assert.match(reply.toString('latin1'), /start-up took too long/);
    } finally {
      await slow.close();
    }
  });

  it('the per-tenant connection cap answers 53300', async () => {
    const { router: capped, port: cappedPort } = await startRouter(pgs, { maxConnectionsPerTenant: 1 });
    const open = new pg.Client({ host: '127.0.0.1', port: cappedPort, user: 'postgres', database: 'alpha', password: alpha.password, ssl: { servername: alpha.hostname, rejectUnauthorized: false } });
    try {
      await open.connect();
      const second = new pg.Client({ host: '127.0.0.1', port: cappedPort, user: 'postgres', database: 'alpha', password: alpha.password, ssl: { servername: alpha.hostname, rejectUnauthorized: false } });
      await assert.rejects(second.connect(), (err: { code?: string; message: string }) => err.code === '53300' && err.message === 'too many connections for tenant alpha (limit 1)');
    } finally {
      await open.end();
      await capped.close();
    }
  });

  it('connections still in start-up are bounded: when all are taken the busiest network pays, and they do not count against tenants', async () => {
    const { router: bounded, port: boundedPort } = await startRouter(pgs, { maxPendingStartups: 2, maxConnections: 1 });
    const flood = (address: string) => net.connect({ port: boundedPort, host: '127.0.0.1', localAddress: address });
    const idle = [flood('127.0.1.1'), flood('127.0.1.2')];
    const others: net.Socket[] = [];
    try {
      for (const socket of idle) socket.on('error', () => undefined);
      await Promise.all(idle.map((socket) => new Promise((r) => socket.once('connect', r))));
      await waitFor('both to start up', async () => bounded.startups.size === 2);
      // A newcomer of the network with the most (127.0.1.0/24) is the one closed, before any TLS.
      const same = flood('127.0.1.3');
      others.push(same);
      same.on('error', () => undefined);
      await new Promise((r) => same.once('close', r));
      assert.equal(idle[0]?.destroyed, false, 'the oldest stays for a newcomer of its own network');
      // One of another network (127.0.0.0/24) is let in: the oldest of 127.0.1.0/24 makes room.
      const firstClosed = new Promise((r) => idle[0]?.once('close', r));
      const comer = net.connect(boundedPort, '127.0.0.1');
      others.push(comer);
      comer.on('error', () => undefined);
      await new Promise((r) => comer.once('connect', r));
      await firstClosed;
      assert.equal(bounded.startups.size, 2);
      for (const socket of [...idle, ...others]) socket.destroy();
      await waitFor('the start-ups to end', async () => bounded.startups.size === 0);
      // The global cap (1) counts admitted connections only: one real client gets in.
      const result = await psql(conn(alpha).replace(`port=${port}`, `port=${boundedPort}`), 'SELECT 1', alpha.password);
      assert.equal(result.stdout, '1', result.stderr);
    } finally {
      for (const socket of [...idle, ...others]) socket.destroy();
      await bounded.close();
    }
  });

  it('connections still in start-up from one address are bounded: the next waits its turn, unread; other addresses come in', async () => {
    const { router: bounded, port: boundedPort } = await startRouter(pgs, { maxStartupsPerAddress: 2 });
    const idle = [net.connect(boundedPort, '127.0.0.1'), net.connect(boundedPort, '127.0.0.1')];
    const third = net.connect(boundedPort, '127.0.0.1');
    const other = net.connect({ port: boundedPort, host: '127.0.0.1', localAddress: '127.0.0.2' });
    try {
      for (const socket of [...idle, third, other]) socket.on('error', () => undefined);
      await Promise.all([...idle, third, other].map((socket) => new Promise((r) => socket.once('connect', r))));
      let answer = Buffer.alloc(0);
      third.on('data', (chunk: Buffer) => { answer = Buffer.concat([answer, chunk]); });
      third.write(SSL_REQUEST);
      await waitFor('the third to wait and the other to start', async () => bounded.startups.waitingCount === 1 && bounded.startups.size === 4);
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(answer.length, 0, 'the third from 127.0.0.1 is not answered while two start up');
      assert.equal(third.destroyed, false, 'nor closed');
      assert.equal(other.destroyed, false, 'one from 127.0.0.2 stays');
      idle[0]?.destroy();
      await waitFor('the third to be answered', async () => answer.length > 0);
      assert.equal(answer.toString('latin1'), 'S', 'its SSLRequest, sent while it waited, is read and answered once its turn comes');
      assert.equal(bounded.startups.waitingCount, 0);
    } finally {
      for (const socket of [...idle, third, other]) socket.destroy();
      await bounded.close();
    }
  });

  it('a stopped tenant is refused with 57P03, and told how to start it', async () => {
    await pgs.ok(['stop', 'beta']);
    try {
      const result = await psql(conn(beta), 'SELECT 1', beta.password);
      assert.match(result.stderr, /FATAL: {2}tenant beta is not running \(stopped\)/);
      assert.match(result.stderr, /HINT: {2}pgs start beta starts it/);
    } finally {
      await pgs.ok(['start', 'beta']);
    }
  });
});

/** SSLRequest: length 8, code 80877103. */
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]);

/** Writes each buffer (in turn) on a raw TCP connection and collects all bytes until the router closes it. */
function rawExchange(port: number, ...writes: Buffer[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('connect', async () => {
      for (const w of writes) {
        socket.write(w);
        await new Promise((r) => setTimeout(r, 50));
      }
    });
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(Buffer.concat(chunks)));
    setTimeout(() => { socket.destroy(); reject(new Error('the router did not close the connection')); }, 5_000).unref();
  });
}
