import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgsHome, processRunning, psql, realPid, waitFor } from '../helpers/pgs.js';

/**
 * The daemon makes every change, one at a time: the races that came from the
 * CLI changing servers and the catalog beside a running supervisor are gone.
 */
interface Status { pid: number; tenants: { id: string; state: string; restarts: number }[] }
interface Catalog { tenants: { id: string; wanted: string }[] }

describe('no races between commands and the supervisor', () => {
  let pgs: PgsHome;

  before(async () => {
    pgs = await PgsHome.make();
    await pgs.setup();
  });
  after(async () => {
    await pgs.destroy();
  });

  it('stop, passwd, start three times: the last password works, and the supervisor never "restarted" anything', async () => {
    await pgs.ok(['create', 'loop', '--password', 'loop-password-0']);
    const url = (await pgs.ok(['url', 'loop', '--local'])).trim();
    for (let i = 1; i <= 3; i++) {
      await pgs.ok(['stop', 'loop']);
      await pgs.ok(['passwd', 'loop', '--password', `loop-password-${i}`]);
      const listed = (await pgs.json<{ id: string; state: string }[]>(['list'])).find((t) => t.id === 'loop');
      assert.equal(listed?.state, 'stopped', 'passwd on a stopped tenant leaves it stopped');
      assert.match(await pgs.ok(['start', 'loop']), /Started loop/);
      assert.equal((await psql(url, 'SELECT 1', `loop-password-${i}`)).stdout, '1');
    }
    const status = await pgs.json<Status>(['status']);
    assert.equal(status.tenants.find((t) => t.id === 'loop')?.restarts, 0);
  });

  it('create and remove of one id at the same moment: a whole tenant or none, five times over', async () => {
    for (let i = 0; i < 5; i++) {
      const [created, removed] = await Promise.all([pgs.run(['create', 'flip', '--json']), pgs.run(['remove', 'flip', '--yes'])]);
      assert.equal(created.code, 0, created.stderr);
      const catalog = JSON.parse(await pgs.catalogText()) as Catalog;
      const inCatalog = catalog.tenants.some((t) => t.id === 'flip');
      const folder = path.join(await pgs.dataRoot(), 'tenants', 'flip');
      const onDisk = await fs.access(folder).then(() => true, () => false);
      assert.equal(onDisk, inCatalog, 'the folder exists exactly when the catalog names the tenant');
      if (removed.code === 0) {
        assert.equal(inCatalog, false);
      } else {
        assert.match(removed.stderr, /no tenant flip/);
        assert.equal(inCatalog, true);
        const password = (JSON.parse(created.stdout) as { password: string }).password;
        const url = (await pgs.ok(['url', 'flip', '--local'])).trim();
        assert.equal((await psql(url, 'SELECT current_database()', password)).stdout, 'flip');
        await pgs.ok(['remove', 'flip', '--yes']);
      }
    }
  });

  it('kill -9 of the daemon in the middle of creates: after a restart each tenant is whole or absent, never half', async () => {
    for (const delay of [5, 25, 60, 120]) {
      const id = `half${delay}`;
      const { pid } = await pgs.json<Status>(['status']);
      const daemon = realPid(pid, 'the daemon');
      const creating = pgs.run(['create', id, '--json']);
      await new Promise((r) => setTimeout(r, delay));
      process.kill(daemon, 'SIGKILL');
      const result = await creating;
      await waitFor('the daemon to be gone', async () => !(await processRunning(daemon)));
      await pgs.ok(['start']);
      const catalog = JSON.parse(await pgs.catalogText()) as Catalog;
      const inCatalog = catalog.tenants.some((t) => t.id === id);
      const folder = path.join(await pgs.dataRoot(), 'tenants', id);
      const onDisk = await fs.access(folder).then(() => true, () => false);
      assert.equal(onDisk, inCatalog, `delay ${delay} ms: the folder exists exactly when the catalog names ${id} (create exited ${result.code})`);
      if (inCatalog) {
        // Whole: it runs and takes a new password (the create's answer may have been lost).
        const { password } = await pgs.json<{ password: string }>(['passwd', id]);
        const url = (await pgs.ok(['url', id, '--local'])).trim();
        assert.equal((await psql(url, 'SELECT current_database()', password)).stdout, id);
        await fs.access(path.join(folder, 'PGS_TEMPLATE')).then(() => assert.fail('the finished tenant still carries the unfinished mark'), () => undefined);
      }
    }
  });
});
