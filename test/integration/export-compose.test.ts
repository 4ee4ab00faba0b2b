import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { PgsHome } from '../helpers/pgs.js';

interface Exported { dir: string; files: string[]; routed: string[]; unrouted: string[]; passwordVariables: { tenant: string; variable: string }[] }

/** `pgs export-compose` on a real catalog: the files, .env kept across runs, access honoured. */
describe('pgs export-compose', () => {
  let pgs: PgsHome;
  let out: string;

  before(async () => {
    pgs = await PgsHome.make();
    await pgs.setup();
    await pgs.ok(['create', 'shop', '--autosuspend', '1m']);
    await pgs.ok(['create', 'intranet', '--autosuspend', '1m']);
    await pgs.ok(['disable-access', 'intranet']);
    out = path.join(pgs.home, 'deploy');
  });
  after(async () => {
    await pgs.destroy();
  });

  it('writes compose, Traefik and .env files; passwords are variables left to fill', async () => {
    const result = await pgs.json<Exported>(['export-compose', '-o', out]);
    assert.equal(result.dir, out);
    assert.deepEqual(result.routed, ['shop']);
    assert.deepEqual(result.unrouted, ['intranet']);
    const compose = parse(await fs.readFile(path.join(out, 'docker-compose.yml'), 'utf8')) as { services: Record<string, { environment?: Record<string, string> }> };
    assert.deepEqual(Object.keys(compose.services).sort(), ['pgs-intranet', 'pgs-shop', 'traefik']);
    const dynamic = parse(await fs.readFile(path.join(out, 'traefik', 'dynamic.yml'), 'utf8')) as { tcp: { routers: Record<string, { rule: string }> } };
    const hostname = (await pgs.json<{ id: string; hostname: string }[]>(['list'])).find((t) => t.id === 'shop')?.hostname;
    assert.equal(dynamic.tcp.routers['pgs-shop']?.rule, `HostSNI(\`${hostname}\`)`);
    assert.equal(dynamic.tcp.routers['pgs-intranet'], undefined, 'a disabled tenant gets no route');
    const env = path.join(out, '.env');
    assert.equal((await fs.stat(env)).mode & 0o777, 0o600);
    assert.match(await fs.readFile(env, 'utf8'), /^PGS_SHOP_PASSWORD=$/m);
  });

  it('a second run keeps what was filled in .env and adds lines for new tenants', async () => {
    const env = path.join(out, '.env');
    await fs.writeFile(env, (await fs.readFile(env, 'utf8')).replace('PGS_SHOP_PASSWORD=', 'PGS_SHOP_PASSWORD=filled-by-hand'));
    await pgs.ok(['create', 'new-one', '--autosuspend', '1m']);
    const text = await pgs.ok(['export-compose', '-o', out]);
    assert.match(text, /1 new line/);
    const after = await fs.readFile(env, 'utf8');
    assert.match(after, /^PGS_SHOP_PASSWORD=filled-by-hand$/m);
    assert.match(after, /^PGS_NEW_ONE_PASSWORD=$/m);
    assert.equal(after.match(/PGS_SHOP_PASSWORD/g)?.length, 1);
  });

  it('a file in the way is one clear error', async () => {
    const file = path.join(pgs.home, 'a-file');
    await fs.writeFile(file, 'x');
    const result = await pgs.run(['export-compose', '-o', file]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /is a file, not a folder/);
    assert.equal(result.stderr.trim().split('\n').length, 1);
  });
});
