import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { PgsHome, waitFor } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string }
interface Listed { id: string; state: string }

const LIMIT = 20;
const CLIENTS = 25;

/**
 * The connection limit is pgs's, always: however many clients come at once, and
 * whatever pgs holds on the server itself (kept and pooled server sessions, the
 * health check, the admin session), a client over the tenant's limit gets pgs's
 * 53300 naming the limit, never PostgreSQL's "too many clients" nor the
 * superuser-slot refusal.
 */
function suite(name: string, env: NodeJS.ProcessEnv, modes: { transaction: boolean }): void {
  describe(name, () => {
    let pgs: PgsHome;
    let port: number;

    const clientOf = (who: Created) => new pg.Client({
      host: '127.0.0.1', port, user: 'postgres', database: who.id, password: who.password,
      ssl: { servername: who.hostname, rejectUnauthorized: false }, connectionTimeoutMillis: 30_000,
    });

    /**
     * CLIENTS clients connect at once and stay until all have been answered; then the admitted
     * ones run a query each (at once too: in transaction mode they need server sessions together).
     * Every refused client must have pgs's 53300 naming the limit, and `expectRefused` are.
     */
    async function burst(who: Created, { expectRefused }: { expectRefused: number }): Promise<void> {
      const clients = Array.from({ length: CLIENTS }, () => clientOf(who));
      const refusals: { code?: string; message?: string }[] = [];
      try {
        const settled = await Promise.allSettled(clients.map((c) => c.connect()));
        const admitted = clients.filter((_, i) => settled[i]?.status === 'fulfilled');
        for (const s of settled) if (s.status === 'rejected') refusals.push(s.reason as { code?: string; message?: string });
        for (const err of refusals) {
          assert.equal(err.code, '53300', `refused with pgs's 53300, not ${err.code}: ${err.message}`);
          assert.equal(err.message, `too many connections for tenant ${who.id} (limit ${LIMIT})`);
        }
        assert.equal(refusals.length, expectRefused, `${expectRefused} of ${CLIENTS} refused`);
        const answers = await Promise.all(admitted.map(async (c, i) => (await c.query<{ i: number }>('SELECT $1::int AS i, pg_sleep(0.2)', [i])).rows[0]?.i));
        assert.deepEqual(answers, admitted.map((_, i) => i));
      } finally {
        await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
      }
    }

    const state = async (id: string) => (await pgs.json<Listed[]>(['list'])).find((t) => t.id === id)?.state;

    before(async () => {
      pgs = await PgsHome.make(env);
      port = await pgs.setup();
    });
    after(async () => {
      await pgs.destroy();
    });

    it(`session mode: ${CLIENTS} clients at once on a limit of ${LIMIT}, again and again (kept server sessions count)`, async () => {
      const t = await pgs.json<Created>(['create', 'sess', '--max-connections', String(LIMIT), '--autosuspend', 'off']);
      // Rounds back to back: the sessions the router keeps after one round are still on the server at the next.
      for (let round = 0; round < 3; round++) await burst(t, { expectRefused: CLIENTS - LIMIT });
    });

    if (modes.transaction) it(`transaction mode: ${CLIENTS} clients at once on a limit of ${LIMIT} (a pool of ${LIMIT} server sessions)`, async () => {
      const t = await pgs.json<Created>(['create', 'txn', '--max-connections', String(LIMIT), '--autosuspend', 'off']);
      // Sessions kept from session mode are still there when the pool starts.
      await burst(t, { expectRefused: CLIENTS - LIMIT });
      await pgs.ok(['config', 'txn', '--pool', 'transaction', '--pool-size', String(LIMIT), '--max-client-conn', String(LIMIT)]);
      for (let round = 0; round < 2; round++) await burst(t, { expectRefused: CLIENTS - LIMIT });
    });

    it(`right after a wake: ${CLIENTS} clients at once wake a suspended tenant limited to ${LIMIT}`, async () => {
      const t = await pgs.json<Created>(['create', 'wake', '--max-connections', String(LIMIT), '--autosuspend', 'off']);
      await burst(t, { expectRefused: CLIENTS - LIMIT });
      for (let round = 0; round < 2; round++) {
        assert.equal((await pgs.api('POST', '/v1/tenants/wake/suspend')).status, 200);
        await waitFor('wake to be suspended', async () => (await state('wake')) === 'suspended', 30_000);
        await burst(t, { expectRefused: CLIENTS - LIMIT });
      }
    });
  });
}

suite('the connection limit is pgs\'s, with clients at once', {}, { transaction: true });
// No kept sessions: each client's start-up goes to the server as it is (a backend of its own).
suite('the connection limit is pgs\'s, with clients at once and no kept server sessions', { PGS_SERVER_SESSIONS: '0' }, { transaction: false });
