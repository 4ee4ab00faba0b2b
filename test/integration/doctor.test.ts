import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgsHome, psql } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string }
interface Listed { id: string; hostname: string; state: string; pid: number | null }

/**
 * Nothing orphaned: each tenant folder keeps its own catalog entry, so a
 * catalog restored from its backup (one change behind) loses no tenant for good.
 */
describe('pgs doctor: data the catalog does not know, and its adoption', () => {
  let pgs: PgsHome;
  let port: number;
  let first: Created;
  let second: Created;
  const conn = (t: Created) => `host=${t.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=${t.id} sslmode=require connect_timeout=10`;

  before(async () => {
    pgs = await PgsHome.make();
    port = await pgs.setup();
    first = await pgs.json<Created>(['create', 'first']);
    second = await pgs.json<Created>(['create', 'second', '--autosuspend', 'off']);
  });
  after(async () => {
    await pgs.destroy();
  });

  it('each tenant folder holds its catalog entry (0600)', async () => {
    const file = path.join(await pgs.dataRoot(), 'tenants', 'second', 'pgs-tenant.json');
    const meta = JSON.parse(await fs.readFile(file, 'utf8')) as { id: string; suffix: string; autosuspendSeconds: number | null };
    assert.equal(meta.id, 'second');
    assert.equal(second.hostname.startsWith(`second-${meta.suffix}.`), true);
    assert.equal(meta.autosuspendSeconds, null);
    assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
    assert.match(await pgs.ok(['doctor']), /All data folders and catalog entries match/);
  });

  it('the catalog restored from its backup (one change behind): doctor finds the lost tenant, running, with its host name', async () => {
    await fs.copyFile(path.join(pgs.home, 'catalog.json.bak'), path.join(pgs.home, 'catalog.json'));
    await pgs.ok(['reload']);
    assert.deepEqual((await pgs.json<Listed[]>(['list'])).map((t) => t.id), ['first']);
    const result = await pgs.run(['doctor']);
    assert.equal(result.code, 1, 'something needs attention');
    assert.match(result.stdout, new RegExp(`^orphan second: .*tenants/second \\(its server runs, pid \\d+\\); was ${second.hostname.replace(/\./g, '\\.')}$`, 'm'));
    const asJson = await pgs.run(['doctor', '--json']);
    assert.equal(asJson.code, 1);
    const report = JSON.parse(asJson.stdout) as { orphans: { id: string; running: boolean }[]; unfinished: string[]; missingData: string[] };
    assert.deepEqual(report.orphans.map((o) => [o.id, o.running]), [['second', true]]);
  });

  it('a create of the lost id refuses to touch its data and points to doctor', async () => {
    const catalog = await pgs.catalogText();
    const result = await pgs.run(['create', 'second']);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /^pgs create: a data folder for second exists that the catalog does not name \(.*tenants\/second\): "pgs doctor --fix" adopts it back/);
    assert.equal(await pgs.catalogText(), catalog);
    await fs.access(path.join(await pgs.dataRoot(), 'tenants', 'second', 'pgs-tenant.json'));
  });

  it('doctor --fix adopts it back: same host name, same settings, same password, its data intact', async () => {
    assert.equal((await psql(conn(first), 'SELECT 1', first.password)).stdout, '1');
    assert.match(await pgs.ok(['doctor', '--fix']), new RegExp(`^Adopted second as ${second.hostname.replace(/\./g, '\\.')}$`, 'm'));
    const listed = (await pgs.json<(Listed & { autosuspendSeconds: number | null })[]>(['list'])).find((t) => t.id === 'second');
    assert.equal(listed?.hostname, second.hostname);
    assert.equal(listed?.state, 'running');
    assert.equal(listed?.autosuspendSeconds, null);
    assert.equal((await psql(conn(second), 'SELECT current_database()', second.password)).stdout, 'second');
    assert.match(await pgs.ok(['doctor']), /All data folders and catalog entries match/);
  });

  it('a folder without a metadata file (made by an older pgs) is adopted with a new host name, and says so', async () => {
    const catalogFile = path.join(pgs.home, 'catalog.json');
    const catalog = JSON.parse(await fs.readFile(catalogFile, 'utf8')) as { tenants: { id: string }[] };
    await pgs.ok(['stop', 'first']);
    await fs.rm(path.join(await pgs.dataRoot(), 'tenants', 'first', 'pgs-tenant.json'));
    catalog.tenants = catalog.tenants.filter((t) => t.id !== 'first');
    await fs.writeFile(catalogFile, JSON.stringify(catalog, null, 2));
    await pgs.ok(['reload']);
    const fixed = await pgs.ok(['doctor', '--fix']);
    assert.match(fixed, /^Adopted first as first-[a-z0-9]{6}\.pgs\.localhost \(a new host name: its folder had no metadata\)$/m);
    const adopted = (await pgs.json<Created[]>(['list'])).find((t) => t.id === 'first');
    assert.ok(adopted);
    assert.equal((await psql(conn({ ...first, hostname: adopted.hostname }), 'SELECT current_database()', first.password)).stdout, 'first');
    await fs.access(path.join(await pgs.dataRoot(), 'tenants', 'first', 'pgs-tenant.json'));
  });

  it('a catalog entry whose folder is gone is reported, never deleted', async () => {
    await pgs.ok(['stop', 'first']);
    const folder = path.join(await pgs.dataRoot(), 'tenants', 'first');
    const aside = `${folder}-aside`;
    await fs.rename(folder, aside);
    try {
      const result = await pgs.run(['doctor', '--fix']);
      assert.equal(result.code, 0);
      assert.match(result.stdout, /^missing data first: the catalog names it, its data folder is gone$/m);
      assert.ok((await pgs.catalogText()).includes('"first"'), 'the entry stays');
    } finally {
      await fs.rename(aside, folder);
    }
  });
});

interface Entry { id: string; rev?: number; access: string; autosuspendSeconds?: number | null }
interface Disagreement { id: string; newer: string; catalogRev: number; folderRev: number | null; fields: { field: string; catalog: unknown; folder: unknown }[] }

/**
 * Every change to a tenant is counted in the catalog and in its folder's own
 * metadata, so a catalog restored from its backup (one change behind) is no
 * silent step back: doctor names what differs and which side is newer.
 */
describe('pgs doctor: each tenant folder\'s metadata against the catalog', () => {
  let pgs: PgsHome;
  let port: number;
  let meta: Created;
  const conn = (t: Created) => `host=${t.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=${t.id} sslmode=require connect_timeout=10`;
  const entries = async (): Promise<{ catalog: Entry; folder: Entry }> => {
    const catalog = (JSON.parse(await pgs.catalogText()) as { tenants: Entry[] }).tenants.find((t) => t.id === 'meta');
    const folder = JSON.parse(await fs.readFile(path.join(await pgs.dataRoot(), 'tenants', 'meta', 'pgs-tenant.json'), 'utf8')) as Entry;
    assert.ok(catalog);
    return { catalog, folder };
  };

  before(async () => {
    pgs = await PgsHome.make();
    port = await pgs.setup();
    meta = await pgs.json<Created>(['create', 'meta', '--autosuspend', 'off']);
  });
  after(async () => {
    await pgs.destroy();
  });

  it('every change counts once, in the catalog and in the folder alike', async () => {
    const made = await entries();
    assert.equal(made.catalog.rev, 1);
    assert.deepEqual(made.folder, made.catalog);
    await pgs.ok(['stop', 'meta']);
    await pgs.ok(['start', 'meta']);
    await pgs.ok(['config', 'meta', '--autosuspend', 'off']); // no change: not counted
    const changed = await entries();
    assert.equal(changed.catalog.rev, 3);
    assert.deepEqual(changed.folder, changed.catalog);
  });

  it('a catalog restored from its backup with the daemon stopped: doctor says access differs and the folder is newer', async () => {
    await pgs.ok(['disable-access', 'meta']);
    const { catalog: disabled } = await entries();
    await pgs.stopDaemonKeepingTenants();
    await fs.copyFile(path.join(pgs.home, 'catalog.json.bak'), path.join(pgs.home, 'catalog.json'));
    const restored = await entries();
    assert.equal(restored.catalog.access, 'enabled');
    assert.equal(restored.folder.rev, disabled.rev, 'the next daemon leaves the newer copy alone');

    const result = await pgs.run(['doctor']);
    assert.equal(result.code, 1, result.stdout);
    assert.match(result.stdout, new RegExp(`^disagreement meta access: catalog enabled, folder disabled; the folder's is newer \\(${disabled.rev} changes against ${(disabled.rev ?? 0) - 1}\\)$`, 'm'));
    assert.match(result.stdout, /"pgs doctor --fix" .*takes the newer side of each disagreement/);
    assert.equal((await entries()).folder.access, 'disabled', 'doctor changes nothing');
    const asJson = await pgs.run(['doctor', '--json']);
    assert.equal(asJson.code, 1);
    const report = JSON.parse(asJson.stdout) as { disagreements: Disagreement[] };
    assert.deepEqual(report.disagreements, [{ id: 'meta', newer: 'folder', catalogRev: (disabled.rev ?? 0) - 1, folderRev: disabled.rev, fields: [{ field: 'access', catalog: 'enabled', folder: 'disabled' }] }]);
    // The daemon runs what the catalog says until the fix.
    assert.equal((await pgs.json<{ id: string; access: string }[]>(['list'])).find((t) => t.id === 'meta')?.access, 'enabled');
    assert.equal((await psql(conn(meta), 'SELECT 1', meta.password)).stdout, '1');
  });

  it('doctor --fix takes the folder\'s: access is disabled again, and the tenant refuses connections', async () => {
    const fixed = await pgs.run(['doctor', '--fix']);
    assert.equal(fixed.code, 0, fixed.stderr);
    assert.match(fixed.stdout, /^Updated the catalog's meta from its folder's newer metadata: access$/m);
    assert.match(fixed.stdout, /All data folders and catalog entries match/);
    assert.equal((await pgs.json<{ id: string; access: string }[]>(['list'])).find((t) => t.id === 'meta')?.access, 'disabled');
    const refused = await psql(conn(meta), 'SELECT 1', meta.password);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /access to tenant meta is disabled/);
    const after = await entries();
    assert.deepEqual(after.folder, after.catalog);
    assert.match(await pgs.ok(['doctor']), /All data folders and catalog entries match/);
  });

  it('the catalog newer (the folder\'s copy lost a change): --fix rewrites the folder\'s copy from the catalog', async () => {
    const file = path.join(await pgs.dataRoot(), 'tenants', 'meta', 'pgs-tenant.json');
    const old = await fs.readFile(file, 'utf8');
    await pgs.ok(['config', 'meta', '--autosuspend', '10m']);
    await fs.writeFile(file, old); // the folder's file as it was before the change
    const { catalog } = await entries();
    const result = await pgs.run(['doctor', '--json']);
    assert.equal(result.code, 1);
    assert.deepEqual((JSON.parse(result.stdout) as { disagreements: Disagreement[] }).disagreements, [
      { id: 'meta', newer: 'catalog', catalogRev: catalog.rev, folderRev: (catalog.rev ?? 0) - 1, fields: [{ field: 'autosuspendSeconds', catalog: 600, folder: null }] },
    ]);
    assert.match((await pgs.run(['doctor'])).stdout, /^disagreement meta autosuspendSeconds: catalog 600, folder none; the catalog's is newer/m);
    const fixed = await pgs.ok(['doctor', '--fix']);
    assert.match(fixed, /^Rewrote meta's folder metadata from the catalog \(newer\): autosuspendSeconds$/m);
    const after = await entries();
    assert.deepEqual(after.folder, catalog);
    assert.deepEqual(after.catalog, catalog, 'the catalog is as it was');
    assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
    assert.match(await pgs.ok(['doctor']), /All data folders and catalog entries match/);
  });

  it('a broken catalog\'s error says to run pgs doctor after restoring the backup', async () => {
    const good = await pgs.catalogText();
    await fs.writeFile(path.join(pgs.home, 'catalog.json'), good.slice(0, 40));
    try {
      const result = await pgs.run(['list']);
      assert.notEqual(result.code, 0);
      assert.match(result.stderr, /catalog\.json\.bak: inspect it and copy it over the broken file to restore it, then run "pgs doctor"/);
    } finally {
      await fs.writeFile(path.join(pgs.home, 'catalog.json'), good);
    }
  });
});

describe('pgs doctor: leftovers of pgs\'s own work', () => {
  let pgs: PgsHome;
  before(async () => {
    pgs = await PgsHome.make();
    await pgs.setup();
    await pgs.ok(['create', 'lo']);
  });
  after(async () => {
    await pgs.destroy();
  });

  it('leftovers of pgs\'s own work are listed with what removes them, untouched; the next start removes them', async () => {
    const dataRoot = await pgs.dataRoot();
    const partial = path.join(dataRoot, 'tenants', '.tmp-lo-0000');
    await fs.mkdir(partial);
    await fs.writeFile(path.join(partial, 'PG_VERSION'), '18\n');
    const borrowed = path.join(dataRoot, 'backups', 'lo', '.pgwal-20260101-000000-abcd');
    await fs.mkdir(borrowed, { recursive: true });
    await fs.writeFile(path.join(borrowed, '000000010000000000000001'), Buffer.alloc(1000));
    const result = await pgs.run(['doctor']);
    assert.equal(result.code, 1, result.stdout);
    assert.match(result.stdout, new RegExp(`^leftover ${partial.replaceAll('.', '\\.')} \\(3 B\\): a create, branch or clone that did not finish copying: the daemon deletes it at its next start$`, 'm'));
    assert.match(result.stdout, /^leftover \S+\.pgwal-20260101-000000-abcd \(1000 B\): WAL a restore of lo borrowed/m);
    const report = JSON.parse((await pgs.run(['doctor', '--json'])).stdout) as { leftovers: { kind: string; bytes: number }[] };
    assert.deepEqual(report.leftovers.map((l) => [l.kind, l.bytes]), [['partial-copy', 3], ['borrowed-wal', 1000]]);
    // Doctor only looked, and --fix does not touch them either.
    await pgs.ok(['doctor', '--fix']);
    assert.ok(await fs.stat(partial).then(() => true, () => false));
    await pgs.ok(['stop']);
    await pgs.ok(['start']);
    assert.match(await pgs.ok(['doctor']), /All data folders and catalog entries match/);
    assert.equal(await fs.stat(partial).catch(() => undefined), undefined);
    assert.equal(await fs.stat(borrowed).catch(() => undefined), undefined);
  });
});
