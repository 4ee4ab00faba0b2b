import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { PgsHome, waitFor } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string }
interface Points { state?: (string | null)[]; connections?: (number | null)[]; tps?: (number | null)[]; wakes?: (number | null)[] }
interface HistoryJson { intervalSeconds: number; times: number[]; host: { running: number[]; wakes: number[] }; tenants: Record<string, Points> }
interface Listed { id: string; state: string; wakes: number }

/** The daemon's own history of each tenant (GET /v1/history), sampled every second here. */
describe('history of tenants', () => {
  let pgs: PgsHome;
  let port: number;
  let busy: Created;
  let sleepy: Created;

  before(async () => {
    pgs = await PgsHome.make({ PGS_HISTORY_INTERVAL: '1s' });
    port = await pgs.setup();
    busy = await pgs.json<Created>(['create', 'busy', '--autosuspend', 'off']);
    sleepy = await pgs.json<Created>(['create', 'sleepy', '--autosuspend', '2s']);
  });
  after(async () => {
    await pgs.destroy();
  });

  const history = async (query = ''): Promise<HistoryJson> => {
    const r = await pgs.api<HistoryJson>('GET', `/v1/history${query}`);
    assert.equal(r.status, 200, r.text);
    return r.body;
  };

  it('shows a tenant\'s transactions per second and connections while it works', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'busy', password: busy.password, ssl: { servername: busy.hostname, rejectUnauthorized: false } });
    await client.connect();
    try {
      await waitFor('busy to show TPS', async () => {
        for (let i = 0; i < 100; i++) await client.query('SELECT 1');
        const h = await history('?tenant=busy');
        const series = h.tenants.busy;
        return series !== undefined && (series.tps ?? []).some((v) => v !== null && v >= 10) && (series.connections ?? []).some((v) => v !== null && v >= 1);
      }, 30_000);
    } finally {
      await client.end();
    }
    const h = await history('?tenant=busy');
    assert.deepEqual(Object.keys(h.tenants), ['busy']);
    assert.equal(h.intervalSeconds, 1);
    assert.equal(h.times.length, h.tenants.busy?.tps?.length);
    assert.ok(h.host.running.some((n) => n >= 1), 'the host counts running tenants');
    assert.ok(h.times.every((t, i) => i === 0 || t > (h.times[i - 1] as number)), 'times in order');
  });

  it('a suspended tenant is a gap, and sampling it does not wake it', async () => {
    const state = async () => (await pgs.json<Listed[]>(['list'])).find((t) => t.id === 'sleepy');
    await waitFor('sleepy to be suspended', async () => (await state())?.state === 'suspended', 30_000);
    const wakes = (await state())?.wakes;
    await new Promise((r) => setTimeout(r, 4_000));
    assert.equal((await state())?.state, 'suspended');
    assert.equal((await state())?.wakes, wakes);
    const series = (await history('?tenant=sleepy&tenant=busy')).tenants.sleepy;
    assert.ok(series);
    assert.deepEqual(series.state?.slice(-3), ['suspended', 'suspended', 'suspended']);
    assert.deepEqual(series.tps?.slice(-3), [null, null, null]);
    // A connection wakes it: the wake is a point of its own and of the host's.
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'sleepy', password: sleepy.password, ssl: { servername: sleepy.hostname, rejectUnauthorized: false } });
    await client.connect();
    await client.query('SELECT 1');
    await client.end();
    await waitFor('the wake to show', async () => {
      const h = await history('?tenant=sleepy&field=wakes');
      return (h.tenants.sleepy?.wakes ?? []).some((w) => w !== null && w >= 1) && h.host.wakes.some((w) => w >= 1);
    }, 15_000);
    const only = await history('?tenant=sleepy&field=wakes&field=state');
    assert.deepEqual(Object.keys(only.tenants.sleepy ?? {}).sort(), ['state', 'wakes']);
  });

  it('the day\'s range and bad input', async () => {
    const day = await history('?range=1d');
    assert.equal(day.intervalSeconds, 6);
    const hostOnly = await history('?tenants=none');
    assert.deepEqual(hostOnly.tenants, {});
    assert.equal(hostOnly.host.running.length, hostOnly.times.length);
    const bad = await pgs.api('GET', '/v1/history?range=1y');
    assert.equal(bad.status, 400);
  });
});
