import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { PgsHome, waitFor } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string }
interface Shown { id: string; allow: string[] | null; access: string }
interface Listed { id: string; state: string; wakes: number; allow: string[] | null }

/**
 * A TCP socket whose connect() binds `localAddress` first, for pg's `stream` option: pg calls
 * connect(port, host) itself, then starts TLS on the socket after its SSLRequest.
 */
function boundSocket(localAddress: string): net.Socket {
  const socket = new net.Socket();
  const connect = socket.connect.bind(socket);
  socket.connect = ((port: number, host: string) => connect({ port, host, localAddress })) as typeof socket.connect;
  return socket;
}

describe('per-tenant allow-lists: the router lets in only the listed source addresses (real daemon, TLS, pg)', () => {
  let pgs: PgsHome;
  let port: number;
  let gamma: Created;

  const client = (from: string, password = gamma.password) => new pg.Client({
    host: '127.0.0.1', port, user: 'postgres', database: gamma.id, password, connectionTimeoutMillis: 20_000,
    ssl: { servername: gamma.hostname, rejectUnauthorized: false },
    stream: () => boundSocket(from),
  });
  /** Logs in from `from` and runs a query: the address the server saw it from (the router's, over its socket) and 1. */
  const query = async (from: string, password?: string): Promise<number> => {
    const c = client(from, password);
    await c.connect();
    try {
      const { rows } = await c.query<{ one: number }>('SELECT 1 AS one');
      return rows[0]?.one ?? 0;
    } finally {
      await c.end();
    }
  };
  /** The error a login from `from` ends with (it must fail). */
  const refused = async (from: string, password?: string): Promise<pg.DatabaseError> => {
    const c = client(from, password);
    try {
      await c.connect();
    } catch (err) {
      return err as pg.DatabaseError;
    } finally {
      await c.end().catch(() => undefined);
    }
    assert.fail(`a login from ${from} was let in`);
  };
  const shown = () => pgs.json<Shown>(['config', gamma.id]);
  const listed = async () => (await pgs.json<Listed[]>(['list'])).find((t) => t.id === gamma.id) as Listed;

  before(async () => {
    pgs = await PgsHome.make();
    port = await pgs.setup();
    gamma = await pgs.json<Created>(['create', 'gamma']);
    await pgs.ok(['start']);
  });
  after(async () => {
    await pgs.destroy();
  });

  it('a new tenant allows any address: both loopback sources log in', async () => {
    assert.equal((await shown()).allow, null);
    assert.match(await pgs.ok(['config', gamma.id]), /allow\s+any address/);
    assert.equal(await query('127.0.0.1'), 1);
    assert.equal(await query('127.0.0.2'), 1);
  });

  it('a bad CIDR is refused with one line naming it, and changes nothing', async () => {
    const before = await pgs.catalogText();
    for (const bad of ['10.0.0.300/8', '127.0.0.2/33', '10.1.2.3/8', '127.0.0.2/32,nope', '127.0.0.2,', '']) {
      const result = await pgs.run(['config', gamma.id, '--allow', bad]);
      assert.equal(result.code, 2, `${bad}: ${result.stderr}`);
      const lines = result.stderr.trim().split('\n');
      assert.equal(lines.length, 1, result.stderr);
      assert.match(lines[0] ?? '', /^pgs config: invalid --allow/);
    }
    assert.match((await pgs.run(['config', gamma.id, '--allow', '10.1.2.3/8'])).stderr, /bits set right of its \/8 prefix: its network is 10\.0\.0\.0\/8/);
    assert.match((await pgs.run(['config', gamma.id, '--allow', '127.0.0.2/32,nope'])).stderr, /"nope" is not an IPv4 or IPv6 address or CIDR block/);
    // The API refuses the same, naming the field and the entry.
    const api = await pgs.api<{ code: string; field?: string; detail?: string; title?: string }>('PATCH', '/v1/tenants/gamma', { body: { allow: ['127.0.0.2/32', '1.2.3.4/40'] } });
    assert.equal(api.status, 400);
    assert.equal(api.body.code, 'invalid_request');
    assert.equal(api.body.field, 'allow');
    assert.match(JSON.stringify(api.body), /allow\.1 \\"1\.2\.3\.4\/40\\" has a prefix longer than 32 bits/);
    for (const body of [{ allow: [] }, { allow: '' }, { allow: [null] }, { allow: Array.from({ length: 101 }, (_, i) => `10.0.${i}.0/24`) }]) {
      const r = await pgs.api<{ code: string; field?: string }>('PATCH', '/v1/tenants/gamma', { body });
      assert.equal(r.status, 400, JSON.stringify(body).slice(0, 40));
      assert.equal(r.body.field, 'allow');
    }
    assert.equal(await pgs.catalogText(), before, 'the catalog is unchanged');
    assert.equal((await shown()).allow, null);
    assert.equal(await query('127.0.0.1'), 1);
  });

  it('--allow 127.0.0.2/32: 127.0.0.1 gets FATAL 28000 before any password check; 127.0.0.2 logs in', async () => {
    const out = await pgs.ok(['config', gamma.id, '--allow', '127.0.0.2/32']);
    assert.match(out, /allow\s+127\.0\.0\.2\/32/);
    assert.deepEqual((await shown()).allow, ['127.0.0.2/32']);
    const err = await refused('127.0.0.1');
    assert.equal(err.severity, 'FATAL');
    assert.equal(err.code, '28000');
    assert.equal(err.message, `connections from 127.0.0.1 are not allowed for tenant ${gamma.id}`);
    // A wrong password from there is told the same: the password is never looked at.
    const wrong = await refused('127.0.0.1', 'not-the-password');
    assert.equal(wrong.code, '28000');
    assert.equal(await query('127.0.0.2'), 1);
    // And a wrong password from an allowed address is a password failure, as before.
    assert.equal((await refused('127.0.0.2', 'not-the-password')).code, '28P01');
  });

  it('a suspended tenant is not woken for a refused address, and is for an allowed one', async () => {
    const suspended = await pgs.api('POST', `/v1/tenants/${gamma.id}/suspend`);
    assert.equal(suspended.status, 200, JSON.stringify(suspended.body));
    await waitFor('gamma to be suspended', async () => (await listed()).state === 'suspended');
    const wakes = (await listed()).wakes;
    for (let i = 0; i < 3; i++) assert.equal((await refused('127.0.0.1')).code, '28000');
    await new Promise((resolve) => setTimeout(resolve, 500));
    const after = await listed();
    assert.equal(after.state, 'suspended', 'still suspended after refused attempts');
    assert.equal(after.wakes, wakes, 'no wake');
    assert.equal(await query('127.0.0.2'), 1);
    assert.equal((await listed()).state, 'running');
  });

  it('a new list closes the open sessions it leaves out, with the reason', async () => {
    await pgs.ok(['config', gamma.id, '--allow', 'any']);
    const one = client('127.0.0.1');
    const two = client('127.0.0.2');
    await one.connect();
    await two.connect();
    one.on('error', () => undefined); // the closed socket, after the ErrorResponse
    // A query in flight gets the router's ErrorResponse (an idle pg client reports only the closed socket).
    const running = one.query('SELECT pg_sleep(30)').then(() => undefined, (err: Error) => err);
    try {
      // IPv4-mapped IPv6 is kept as the IPv4 block it is.
      const patched = await pgs.api<Listed>('PATCH', `/v1/tenants/${gamma.id}`, { body: { allow: ['::ffff:127.0.0.2', '::1'] } });
      assert.equal(patched.status, 200);
      assert.deepEqual(patched.body.allow, ['127.0.0.2/32', '::1/128']);
      const err = (await running) as pg.DatabaseError | undefined;
      assert.ok(err, 'the query was ended');
      assert.equal(err.code, '57P01');
      assert.match(err.message, /connections from 127\.0\.0\.1 are no longer allowed for tenant gamma/);
      assert.equal((await two.query<{ one: number }>('SELECT 1 AS one')).rows[0]?.one, 1, 'the allowed session stays');
    } finally {
      await one.end().catch(() => undefined);
      await two.end();
    }
  });

  it('--allow any lets both in again; the API\'s null does the same', async () => {
    const out = await pgs.ok(['config', gamma.id, '--allow', 'any']);
    assert.match(out, /allow\s+any address/);
    assert.equal((await shown()).allow, null);
    assert.equal(await query('127.0.0.1'), 1);
    assert.equal(await query('127.0.0.2'), 1);
    await pgs.ok(['config', gamma.id, '--allow', '127.0.0.2']);
    assert.deepEqual((await shown()).allow, ['127.0.0.2/32']);
    assert.equal((await refused('127.0.0.1')).code, '28000');
    const cleared = await pgs.api<Listed>('PATCH', `/v1/tenants/${gamma.id}`, { body: { allow: null } });
    assert.equal(cleared.status, 200);
    assert.equal(cleared.body.allow, null);
    assert.equal(await query('127.0.0.1'), 1);
    assert.doesNotMatch(await pgs.catalogText(), /"allow"/);
  });
});
