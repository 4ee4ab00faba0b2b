import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PgsHome } from '../helpers/pgs.js';

interface Listed { id: string; hostname: string; state: string }

describe('two pgs create at once', () => {
  let pgs: PgsHome;

  before(async () => {
    pgs = await PgsHome.make();
    await pgs.setup();
  });
  after(async () => {
    await pgs.destroy();
  });

  it('with different ids: both succeed with distinct running tenants', async () => {
    const [a, b] = await Promise.all([pgs.run(['create', 'alpha', '--json']), pgs.run(['create', 'beta', '--json'])]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    const list = await pgs.json<Listed[]>(['list']);
    assert.deepEqual(list.map((t) => t.id).sort(), ['alpha', 'beta']);
    assert.ok(list.every((t) => t.state === 'running'));
    assert.notEqual(list[0]?.hostname, list[1]?.hostname);
  });

  it('with the same id: one succeeds, the other fails cleanly', async () => {
    const results = await Promise.all([pgs.run(['create', 'gamma']), pgs.run(['create', 'gamma'])]);
    const ok = results.filter((r) => r.code === 0);
    const failed = results.filter((r) => r.code !== 0);
    assert.equal(ok.length, 1);
    assert.equal(failed.length, 1);
    assert.match(failed[0]?.stderr ?? '', /^pgs create: tenant gamma already exists\n$/);
    const list = await pgs.json<Listed[]>(['list']);
    assert.equal(list.filter((t) => t.id === 'gamma').length, 1);
    assert.equal(list.find((t) => t.id === 'gamma')?.state, 'running');
  });
});
