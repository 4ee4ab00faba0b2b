import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { PgsHome, psql, waitFor } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string }
interface Status { running: number; maxRunning: number; tenants: { id: string; state: string }[] }

/** `pgs setup --max-running 3`: at most three servers run; a fourth tenant's wake makes room or waits. */
describe('the running-server budget', () => {
  let pgs: PgsHome;
  let port: number;
  const t: Record<string, Created> = {};
  const conn = (c: Created) => `host=${c.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=${c.id} sslmode=require`;
  const states = async () => Object.fromEntries((await pgs.json<Status>(['status'])).tenants.map((x) => [x.id, x.state]));
  const hold = async (c: Created) => {
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: c.id, password: c.password, ssl: { servername: c.hostname, rejectUnauthorized: false } });
    await client.connect();
    return client;
  };

  before(async () => {
    pgs = await PgsHome.make({ PGS_RUNNING_SPARES: '0' });
    port = await pgs.setup(['--max-running', '3']);
    for (const id of ['b1', 'b2', 'b3', 'b4']) {
      t[id] = await pgs.json<Created>(['create', id, '--autosuspend', '1h']);
      const suspended = await pgs.api<{ state: string }>('POST', `/v1/tenants/${id}/suspend`);
      assert.equal(suspended.body.state, 'suspended');
    }
  });
  after(async () => {
    await pgs.destroy();
  });

  it('status, list and the metrics show running of the budget', async () => {
    const status = await pgs.json<Status>(['status']);
    assert.equal(status.maxRunning, 3);
    assert.equal(status.running, 0);
    assert.match(await pgs.ok(['status']), /servers\s+0 running of at most 3/);
    assert.match(await pgs.ok(['list']), /0 of at most 3 servers running/);
    const metrics = (await pgs.api('GET', '/metrics')).text;
    assert.match(metrics, /^pgs_running_budget 3$/m);
    assert.match(metrics, /^pgs_running_servers 0$/m);
  });

  it('waking a fourth tenant suspends the idle one unused the longest', async () => {
    for (const id of ['b1', 'b2', 'b3']) assert.equal((await psql(conn(t[id] as Created), 'SELECT 1', (t[id] as Created).password)).stdout, '1');
    assert.deepEqual(await states(), { b1: 'running', b2: 'running', b3: 'running', b4: 'suspended' });
    // b1 is used again: b2 becomes the least recently used.
    assert.equal((await psql(conn(t.b1 as Created), 'SELECT 1', (t.b1 as Created).password)).stdout, '1');
    assert.equal((await psql(conn(t.b4 as Created), 'SELECT 4', (t.b4 as Created).password)).stdout, '4');
    assert.deepEqual(await states(), { b1: 'running', b2: 'suspended', b3: 'running', b4: 'running' });
    assert.equal((await pgs.json<Status>(['status'])).running, 3);
  });

  it('with every running tenant busy, the next wake waits and then gets 53300; a freed slot lets it in', async () => {
    const held = await Promise.all(['b1', 'b3', 'b4'].map((id) => hold(t[id] as Created)));
    try {
      const refused = await psql(conn(t.b2 as Created), 'SELECT 1', (t.b2 as Created).password, { PGCONNECT_TIMEOUT: '30' });
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /FATAL: {2}too many tenants running on this host \(at most 3, none idle\)/);
      assert.equal((await states()).b2, 'suspended');
      assert.match((await pgs.api('GET', '/metrics')).text, /^pgs_budget_refusals_total 1$/m);
      // A client that waits while a slot frees up gets in.
      const waiting = psql(conn(t.b2 as Created), 'SELECT 2', (t.b2 as Created).password, { PGCONNECT_TIMEOUT: '30' });
      await new Promise((r) => setTimeout(r, 1_000));
      await held[0]?.end();
      const result = await waiting;
      assert.equal(result.stdout, '2', result.stderr);
      assert.deepEqual(await states(), { b1: 'suspended', b2: 'running', b3: 'running', b4: 'running' });
    } finally {
      await Promise.all(held.slice(1).map((c) => c.end()));
    }
  });

  it('--max-running refuses nonsense and goes back to auto', async () => {
    const bad = await pgs.run(['setup', '--max-running', '0']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--max-running/);
    await pgs.ok(['setup', '--max-running', 'auto']);
    await waitFor('the daemon to reload', async () => (await pgs.json<Status>(['status'])).maxRunning > 3);
  });
});
