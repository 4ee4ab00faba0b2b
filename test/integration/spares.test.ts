import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgsHome, psql, waitFor } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string }
interface Tenant { id: string; state: string; serverStartedAt: string | null; pid: number | null; health: string; uptimeSeconds: number | null }

/**
 * The daemon keeps spare servers running; a create takes one: its folder is
 * renamed to the tenant's, its database named and its password set on an
 * admin session already open. No server starts during the request.
 */
describe('running spares: a create takes a server that is already up', () => {
  let pgs: PgsHome;
  let port: number;
  let spares: string;
  const warm = async () => (await fs.readdir(spares)).filter((n) => n.startsWith('.warm-'));
  const running = async () => {
    let count = 0;
    for (const name of await warm()) {
      const pidFile = await fs.readFile(path.join(spares, name, 'postmaster.pid'), 'utf8').catch(() => '');
      if (pidFile.split('\n')[7]?.trim() === 'ready') count++;
    }
    return count;
  };

  before(async () => {
    pgs = await PgsHome.make();
    port = await pgs.setup();
    spares = path.join(await pgs.dataRoot(), 'spares');
    await pgs.ok(['start']);
    await waitFor('two running spares', async () => (await running()) === 2);
  });
  after(async () => {
    await pgs.destroy();
  });

  it('the server of a new tenant was running before the request; it works through the router like any other', async () => {
    await new Promise((r) => setTimeout(r, 4_100)); // the spares are a few seconds old (start times have one-second resolution)
    const asked = Date.now();
    const created = await pgs.json<Created>(['create', 'quick']);
    const [tenant] = (await pgs.api<{ items: Tenant[] }>('GET', '/v1/tenants')).body.items;
    assert.equal(tenant?.state, 'running');
    assert.ok(Date.parse(tenant?.serverStartedAt ?? '') < asked - 1_000, `started ${tenant?.serverStartedAt}, asked ${new Date(asked).toISOString()}`);
    // Its uptime is the tenant's, counted from the create, not the spare's: less than the spare's age.
    const spareAge = (Date.now() - Date.parse(tenant?.serverStartedAt ?? '')) / 1000;
    assert.ok(tenant?.uptimeSeconds !== null && tenant?.uptimeSeconds !== undefined && tenant.uptimeSeconds < spareAge - 2, `uptime ${tenant?.uptimeSeconds} s, the spare ran ${spareAge.toFixed(1)} s`);
    assert.match(await pgs.ok(['list']), /^quick .* running +[01]s /m);
    // Checked right as it became the tenant's: its health is known at once.
    assert.equal(tenant?.health, 'ok', JSON.stringify(tenant));
    const result = await psql(`host=${created.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=quick sslmode=require`, 'SELECT current_database(), current_user', created.password);
    assert.equal(result.stdout, 'quick|postgres', result.stderr);
    assert.deepEqual(await fs.readdir(path.join(await pgs.dataRoot(), 'tenants')), ['quick']);
    // It archives into its own WAL archive, though it ran as a spare (renamed, settings reloaded) before.
    await pgs.ok(['backup', 'quick']); // a backup ends its segment
    const archive = path.join(await pgs.dataRoot(), 'backups', 'quick');
    const generation = (await fs.readdir(archive)).find((n) => /^\d{8}-/.test(n)) as string;
    await waitFor('a segment in its archive', async () => (await fs.readdir(path.join(archive, generation, 'wal'))).some((n) => /^[0-9A-F]{24}$/.test(n)), 10_000);
    // Its server was renamed while running: its checkpoints (the backup's) and reloads still find its files.
    assert.doesNotMatch(await pgs.ok(['logs', 'quick', '-n', '500']), /PANIC|could not open configuration file/);
  });

  it('the pool refills to two; a tenant made from a spare stops, starts and survives a kill -9 like any other', async () => {
    await waitFor('two running spares again', async () => (await running()) === 2);
    await pgs.ok(['stop', 'quick']);
    await pgs.ok(['start', 'quick']);
    const [tenant] = await pgs.json<Tenant[]>(['list']);
    assert.equal(tenant?.state, 'running');
    assert.equal(tenant?.health, 'ok', 'checked right after its start');
    process.kill(tenant?.pid ?? 0, 'SIGKILL');
    await waitFor('the restart', async () => {
      const [now] = await pgs.json<Tenant[]>(['list']);
      return now?.state === 'running' && now.pid !== tenant?.pid;
    });
  });

  it('a create with another max_connections starts its own server; the spares are left for the default', async () => {
    await waitFor('two running spares', async () => (await running()) === 2);
    const before = await warm();
    await pgs.ok(['create', 'big', '--max-connections', '40']);
    assert.deepEqual(await warm(), before, 'no running spare was taken');
    const url = (await pgs.ok(['url', 'big', '--local'])).trim();
    const { password } = await pgs.json<{ password: string }>(['passwd', 'big']);
    assert.equal((await psql(url, 'SHOW max_connections', password)).stdout, '45', 'its 40, pgs\'s own 3 and the superusers\' 2');
  });

  it('the daemon stops its spares with it; the next one (even after a kill -9) starts them again', async () => {
    const { pid } = (await pgs.api<{ pid: number }>('GET', '/v1/status')).body;
    process.kill(pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    await pgs.ok(['start']);
    await waitFor('two running spares after the restart', async () => (await running()) === 2);
    assert.equal((await warm()).length, 2, 'the killed daemon\'s spares were reused, not piled up');
    await pgs.ok(['stop']);
    assert.equal(await running(), 0);
  });
});
