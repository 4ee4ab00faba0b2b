import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { PgsHome, waitFor } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string }
interface QueryStat { queryId: string; query: string; calls: number; totalMs: number; meanMs: number; rows: number }
interface Queries { tenant: string; order: string; sample: boolean; sampledAt: string | null; items: QueryStat[] }
interface Listed { id: string; state: string; wakes: number; pid: number | null }

/** Query insights: pg_stat_statements of each tenant's own server, read through the daemon (real servers, real clients through the router). */
describe('query statistics of tenants', () => {
  let pgs: PgsHome;
  let port: number;
  let alpha: Created;
  let beta: Created;

  before(async () => {
    pgs = await PgsHome.make();
    port = await pgs.setup();
    alpha = await pgs.json<Created>(['create', 'alpha', '--autosuspend', 'off']);
    beta = await pgs.json<Created>(['create', 'beta', '--autosuspend', 'off']);
  });
  after(async () => {
    await pgs.destroy();
  });

  const client = (t: Created) => new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: t.id, password: t.password, ssl: { servername: t.hostname, rejectUnauthorized: false } });
  const queries = async (id: string, query = ''): Promise<Queries> => {
    const r = await pgs.api<Queries>('GET', `/v1/tenants/${id}/queries${query}`);
    assert.equal(r.status, 200, r.text);
    return r.body;
  };
  const tenant = async (id: string) => (await pgs.json<Listed[]>(['list'])).find((t) => t.id === id);
  const find = (answer: Queries, pattern: RegExp) => answer.items.find((q) => pattern.test(q.query));

  it('counts the statements a tenant runs through the router, and only its own', async () => {
    const a = client(alpha);
    await a.connect();
    try {
      for (let i = 0; i < 7; i++) await a.query('SELECT $1::int + 40 AS alpha_answer', [i]);
      await a.query('CREATE TABLE alpha_items (n int)');
      await a.query('INSERT INTO alpha_items SELECT generate_series(1, 25)');
      await a.query('SELECT pg_sleep(0.05) AS alpha_slow');
      await a.query("CREATE ROLE alpha_app LOGIN PASSWORD 'queries-secret-1'");
    } finally {
      await a.end();
    }
    const b = client(beta);
    await b.connect();
    try {
      for (let i = 0; i < 3; i++) await b.query("SELECT 'beta' AS beta_marker");
    } finally {
      await b.end();
    }

    const byCalls = await queries('alpha', '?order=calls&limit=100');
    assert.equal(byCalls.tenant, 'alpha');
    assert.equal(byCalls.order, 'calls');
    assert.equal(byCalls.sample, false, 'read from the running server');
    assert.ok(byCalls.sampledAt !== null && !Number.isNaN(Date.parse(byCalls.sampledAt)));
    const answer = find(byCalls, /alpha_answer/);
    assert.ok(answer, `the parameterised SELECT is listed: ${JSON.stringify(byCalls.items)}`);
    assert.equal(answer.calls, 7);
    assert.equal(answer.rows, 7);
    assert.match(answer.query, /\$1::int \+ \$2/, 'normalised: constants are parameters');
    assert.ok(answer.totalMs >= answer.meanMs && answer.meanMs > 0);
    assert.equal(find(byCalls, /INSERT INTO alpha_items/)?.rows, 25);
    for (let i = 1; i < byCalls.items.length; i++) assert.ok((byCalls.items[i - 1]?.calls ?? 0) >= (byCalls.items[i]?.calls ?? 0), 'highest calls first');
    // Another tenant's statements and pgs's own (health checks, login lookups, these reads) are never there.
    assert.equal(find(byCalls, /beta_marker/), undefined);
    assert.equal(find(byCalls, /pg_authid|pg_stat_statements|pgs_stats|pg_stat_archiver/), undefined, JSON.stringify(byCalls.items.map((q) => q.query)));
    assert.equal(find(await queries('beta', '?limit=100'), /alpha_/), undefined);
    assert.equal(find(await queries('beta', '?limit=100'), /beta_marker/)?.calls, 3);

    // pg_stat_statements keeps a utility statement's text as sent: pgs shows and keeps no password.
    assert.match(find(byCalls, /CREATE ROLE alpha_app/)?.query ?? '', /PASSWORD '\*\*\*'/);
    const raw = await pgs.api('GET', '/v1/tenants/alpha/queries?limit=100');
    assert.ok(!raw.text.includes('queries-secret-1'), 'no password in the answer');
    const sampleFile = path.join(await pgs.dataRoot(), 'queries', 'alpha.json');
    assert.ok(!(await fs.readFile(sampleFile, 'utf8')).includes('queries-secret-1'), 'no password in the kept sample');
    assert.equal((await fs.stat(sampleFile)).mode & 0o777, 0o600);

    const byMean = await queries('alpha', '?order=mean&limit=1');
    assert.equal(byMean.items.length, 1);
    assert.match(byMean.items[0]?.query ?? '', /alpha_slow/, 'the slowest on average first');

    // The CLI shows the same counts.
    const cli = await pgs.json<Queries>(['queries', 'alpha', '--order', 'calls']);
    assert.equal(find(cli, /alpha_answer/)?.calls, 7);
    const table = await pgs.ok(['queries', 'alpha']);
    assert.match(table, /^CALLS\s+TOTAL\s+MEAN\s+ROWS\s+QUERY$/m);
    assert.match(table, /^7\s+.*SELECT \$1::int \+ \$2 AS alpha_answer$/m);
  });

  it('answers a suspended tenant from its last sample without waking it, and a reset empties it', async () => {
    const suspended = await pgs.api('POST', '/v1/tenants/alpha/suspend');
    assert.equal(suspended.status, 200, suspended.text);
    await waitFor('alpha to be suspended', async () => (await tenant('alpha'))?.state === 'suspended');
    const wakes = (await tenant('alpha'))?.wakes;

    const sample = await queries('alpha', '?order=calls');
    assert.equal(sample.sample, true);
    assert.ok(sample.sampledAt !== null);
    assert.equal(find(sample, /alpha_answer/)?.calls, 7, 'the sample taken before the server stopped');
    const text = await pgs.ok(['queries', 'alpha']);
    assert.match(text, /not running: its last sample, from \d{4}-/);
    assert.match(text, /alpha_answer/);
    assert.equal((await tenant('alpha'))?.state, 'suspended', 'reading did not wake it');
    assert.equal((await tenant('alpha'))?.wakes, wakes);

    // A reset of the suspended tenant: not woken, and what its server saved at shutdown is gone too.
    await pgs.ok(['config', 'alpha', '--reset-queries']);
    assert.deepEqual((await queries('alpha')).items, []);
    assert.equal((await tenant('alpha'))?.state, 'suspended');

    const a = client(alpha); // wakes it
    await a.connect();
    try {
      await a.query('SELECT 2 AS alpha_after_wake');
      const woken = await queries('alpha', '?limit=100');
      assert.equal(woken.sample, false);
      assert.equal(find(woken, /alpha_after_wake/)?.calls, 1);
      assert.equal(find(woken, /alpha_answer/), undefined, 'counts from before the reset did not come back with the server');
      // A reset of the running server (the client is idle: nothing runs between the reset and its answer).
      const reset = await pgs.api<Queries>('POST', '/v1/tenants/alpha/queries/reset');
      assert.equal(reset.status, 200, reset.text);
      assert.deepEqual(reset.body.items, []);
      await a.query('SELECT 3 AS alpha_after_reset');
      const after = await queries('alpha', '?limit=100');
      assert.equal(find(after, /alpha_after_wake/), undefined);
      assert.equal(find(after, /alpha_after_reset/)?.calls, 1);
    } finally {
      await a.end();
    }
  });

  it('refuses bad input with one clear line', async () => {
    const order = await pgs.run(['queries', 'alpha', '--order', 'slowest']);
    assert.equal(order.code, 2);
    assert.match(order.stderr, /invalid --order "slowest": total, mean or calls/);
    const limit = await pgs.run(['queries', 'alpha', '--limit', '0']);
    assert.equal(limit.code, 2);
    assert.match(limit.stderr, /invalid --limit "0"/);
    const ghost = await pgs.run(['queries', 'ghost']);
    assert.equal(ghost.code, 1);
    assert.match(ghost.stderr, /ghost/);
    assert.equal(ghost.stderr.trim().split('\n').length, 1);
  });
});
