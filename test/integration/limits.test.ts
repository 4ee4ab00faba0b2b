import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { PgsHome, psql } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string }

describe('the router enforces a tenant\'s connection limit with its own error', () => {
  let pgs: PgsHome;
  let port: number;
  let lim: Created;
  const client = () => new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'lim', password: lim.password, ssl: { servername: lim.hostname, rejectUnauthorized: false } });

  before(async () => {
    pgs = await PgsHome.make();
    port = await pgs.setup();
    lim = await pgs.json<Created>(['create', 'lim', '--max-connections', '5']);
  });
  after(async () => {
    await pgs.destroy();
  });

  it('the tenant gets all of its 5 connections; the 6th is refused by pgs with 53300 and the limit, not by PostgreSQL', async () => {
    const open: pg.Client[] = [];
    try {
      for (let i = 0; i < 5; i++) {
        const c = client();
        await c.connect();
        open.push(c);
      }
      const extra = client();
      await assert.rejects(extra.connect(), (err: { code?: string; message?: string }) => {
        assert.equal(err.code, '53300');
        assert.equal(err.message, 'too many connections for tenant lim (limit 5)');
        return true;
      });
      const viaPsql = await psql(`host=${lim.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=lim sslmode=require`, 'SELECT 1', lim.password);
      assert.match(viaPsql.stderr, /FATAL: {2}too many connections for tenant lim \(limit 5\)/);
      assert.match(viaPsql.stderr, /HINT: {2}pgs config lim --max-connections N raises it/);
      // pgs's admin sessions have slots of their own, even with the tenant at its limit.
      const status = await pgs.api<{ tenants: { id: string }[] }>('GET', '/v1/status');
      assert.equal(status.status, 200);
      const { password } = await pgs.json<{ password: string }>(['passwd', 'lim']);
      lim.password = password;
    } finally {
      await Promise.all(open.map((c) => c.end()));
    }
    const url = (await pgs.ok(['url', 'lim', '--local'])).trim();
    assert.equal((await psql(url, 'SHOW max_connections', lim.password)).stdout, '10', 'the tenant\'s 5, pgs\'s own 3 and the superusers\' 2');
    const again = client();
    await again.connect();
    await again.end();
  });
});
