import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { CATALOG_VERSION, type Catalog, type Tenant } from '../../src/catalog/schema.js';
import { CatalogStore } from '../../src/catalog/store.js';
import { PgsError } from '../../src/core/errors.js';
import { homePaths, type HomePaths } from '../../src/core/paths.js';

function tenant(id: string, overrides: Partial<Tenant> = {}): Tenant {
  return {
    id,
    suffix: 'abc123',
    access: 'enabled',
    wanted: 'running',
    maxConnections: 100,
    createdAt: '2025-01-02T03:04:05.678Z',
    ...overrides,
  };
}

function catalog(tenants: Tenant[] = []): Catalog {
  return {
    version: CATALOG_VERSION,
    settings: {
      domain: 'pgs.localhost',
      port: 5432,
      certFile: '/tmp/pgs/certs/wildcard.crt',
      keyFile: '/tmp/pgs/certs/wildcard.key',
      certSelfSigned: true,
      dataRoot: '/tmp/pgs/data',
      serverUser: null,
      defaultMaxConnections: 100,
    },
    tenants,
  };
}

function isCode(code: PgsError['code']): (err: unknown) => boolean {
  return (err: unknown) => err instanceof PgsError && err.code === code;
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.access(file);
    return true;
  } catch {
    return false;
  }
}

describe('CatalogStore', () => {
  let root: string;
  let paths: HomePaths;
  let store: CatalogStore;
  let n = 0;

  before(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'pgs-catalog-'));
  });
  after(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });
  beforeEach(() => {
    // A fresh, not-yet-created home per test: update() must create it.
    paths = homePaths(path.join(root, `home-${n++}`));
    store = new CatalogStore(paths, { timeoutMs: 2_000 });
  });

  async function leftovers(): Promise<string[]> {
    return (await fs.readdir(paths.home)).filter((name) => name.includes('.tmp-'));
  }

  it('read() before any write throws NOT_SET_UP; readIfExists() is undefined', async () => {
    await assert.rejects(store.read(), isCode('NOT_SET_UP'));
    assert.equal(await store.readIfExists(), undefined);
  });

  it('update() writes a catalog that read() returns equal, mode 0600, no temp files', async () => {
    const first = catalog([tenant('acme'), tenant('beta', { access: 'disabled', wanted: 'stopped' })]);
    const result = await store.update(async (current) => {
      assert.equal(current, undefined);
      return { next: first, result: 'written' };
    });
    assert.equal(result, 'written');
    assert.deepEqual(await store.read(), first);
    assert.deepEqual(await new CatalogStore(paths).read(), first, 'a second store on the same home reads it too');
    const stat = await fs.stat(paths.catalog);
    assert.equal(stat.mode & 0o777, 0o600);
    assert.equal(await exists(paths.catalogBackup), false, 'no backup before a second write');
    assert.equal(await exists(paths.lock), false, 'the lock is released');
    assert.deepEqual(await leftovers(), []);
  });

  it('a second update keeps the previous version byte-for-byte in catalog.json.bak', async () => {
    const first = catalog([tenant('acme')]);
    await store.update(async () => ({ next: first, result: undefined }));
    const firstBytes = await fs.readFile(paths.catalog);

    const second = catalog([tenant('acme'), tenant('beta')]);
    await store.update(async (current) => {
      assert.deepEqual(current, first);
      return { next: second, result: undefined };
    });
    assert.deepEqual(await store.read(), second);
    assert.deepEqual(await fs.readFile(paths.catalogBackup), firstBytes);
    assert.deepEqual(JSON.parse(await fs.readFile(paths.catalogBackup, 'utf8')), first);
    assert.equal((await fs.stat(paths.catalogBackup)).mode & 0o777, 0o600);

    const third = catalog([]);
    await store.update(async () => ({ next: third, result: undefined }));
    assert.deepEqual(JSON.parse(await fs.readFile(paths.catalogBackup, 'utf8')), second, 'the backup follows the last good version');
    assert.deepEqual(await leftovers(), []);
  });

  it('update() whose fn throws writes nothing and releases the lock', async () => {
    const boom = new Error('boom');
    await assert.rejects(store.update(async () => { throw boom; }), (err: unknown) => err === boom);
    assert.equal(await exists(paths.catalog), false);

    const first = catalog([tenant('acme')]);
    await store.update(async () => ({ next: first, result: undefined }));
    const before = await fs.readFile(paths.catalog);
    await assert.rejects(store.update(async () => { throw boom; }), (err: unknown) => err === boom);
    assert.deepEqual(await fs.readFile(paths.catalog), before);
    assert.equal(await exists(paths.catalogBackup), false);
    assert.equal(await exists(paths.lock), false);
    assert.deepEqual(await leftovers(), []);
  });

  it('update() returning no next writes nothing but returns the result', async () => {
    assert.equal(await store.update(async () => ({ result: 42 })), 42);
    assert.equal(await exists(paths.catalog), false);

    const first = catalog([tenant('acme')]);
    await store.update(async () => ({ next: first, result: undefined }));
    const before = await fs.readFile(paths.catalog);
    const beforeMtime = (await fs.stat(paths.catalog)).mtimeMs;
    assert.equal(await store.update(async () => ({ next: undefined, result: 'same' })), 'same');
    assert.deepEqual(await fs.readFile(paths.catalog), before);
    assert.equal((await fs.stat(paths.catalog)).mtimeMs, beforeMtime);
    assert.equal(await exists(paths.catalogBackup), false);
  });

  it('update() refuses to write a catalog that does not match the schema', async () => {
    const first = catalog([tenant('acme')]);
    await store.update(async () => ({ next: first, result: undefined }));
    const before = await fs.readFile(paths.catalog);
    const invalid = catalog([tenant('acme'), tenant('acme')]);
    await assert.rejects(store.update(async () => ({ next: invalid, result: undefined })));
    assert.deepEqual(await fs.readFile(paths.catalog), before);
    assert.equal(await exists(paths.lock), false);
  });

  describe('a broken catalog is CATALOG_CORRUPT, names both files, and is left as it is', () => {
    const good = JSON.stringify(catalog([tenant('acme')]), null, 2);
    const broken: readonly (readonly [name: string, text: string])[] = [
      ['not JSON', '{"version": 1, "settings": '],
      ['empty file', ''],
      ['JSON but not an object', '[1, 2, 3]\n'],
      ['wrong field type (port is a string)', good.replace('"port": 5432', '"port": "5432"')],
      ['wrong version', good.replace('"version": 1', '"version": 2')],
      ['unknown field', good.replace('"version": 1', '"version": 1, "extra": true')],
      ['bad tenant id', good.replace('"id": "acme"', '"id": "Acme"')],
      ['duplicate tenant id', JSON.stringify(catalog([tenant('acme'), tenant('acme', { suffix: 'zzz999' })]))],
    ];
    for (const [name, text] of broken) {
      it(name, async () => {
        await fs.mkdir(paths.home, { recursive: true });
        await fs.writeFile(paths.catalog, text);
        const bytes = await fs.readFile(paths.catalog);
        const corrupt = (err: unknown): boolean => {
          assert.ok(err instanceof PgsError);
          assert.equal(err.code, 'CATALOG_CORRUPT');
          assert.ok(err.message.includes(paths.catalog), `message names ${paths.catalog}: ${err.message}`);
          assert.ok(err.message.includes(paths.catalogBackup), `message names ${paths.catalogBackup}: ${err.message}`);
          assert.match(err.message, /then run "pgs doctor"/, 'the backup misses the last change: doctor compares it with the folders');
          return true;
        };
        await assert.rejects(store.read(), corrupt);
        await assert.rejects(store.readIfExists(), corrupt);
        let called = false;
        await assert.rejects(store.update(async () => {
          called = true;
          return { next: catalog(), result: undefined };
        }), corrupt);
        assert.equal(called, false, 'update() does not hand a broken catalog to fn');
        assert.deepEqual(await fs.readFile(paths.catalog), bytes, 'the broken file is unchanged');
        assert.equal(await exists(paths.catalogBackup), false, 'the broken file is not copied over the backup');
        assert.equal(await exists(paths.lock), false);
        assert.deepEqual(await leftovers(), []);
      });
    }

    it('entries with and without a change counter both load (catalogs written before it was kept)', async () => {
      await fs.mkdir(paths.home, { recursive: true });
      const counted = catalog([tenant('acme', { rev: 12 }), tenant('old')]);
      await fs.writeFile(paths.catalog, JSON.stringify(counted));
      assert.deepEqual(await store.read(), counted);
      await fs.writeFile(paths.catalog, good.replace('"id": "acme"', '"id": "acme", "rev": -1'));
      await assert.rejects(store.read(), isCode('CATALOG_CORRUPT'));
    });

    it('the good file itself parses (the cases above differ from it only in the broken part)', async () => {
      await fs.mkdir(paths.home, { recursive: true });
      await fs.writeFile(paths.catalog, good);
      assert.deepEqual(await store.read(), catalog([tenant('acme')]));
    });
  });

  it('concurrent updates in one process are serialised (no lost update)', async () => {
    await store.update(async () => ({ next: catalog(), result: undefined }));
    const ids = Array.from({ length: 12 }, (_, i) => `t${i}`);
    await Promise.all(ids.map((id) => store.update(async (current) => {
      assert.ok(current !== undefined);
      await new Promise((resolve) => setTimeout(resolve, 1));
      return { next: { ...current, tenants: [...current.tenants, tenant(id)] }, result: undefined };
    })));
    const final = await store.read();
    assert.deepEqual(final.tenants.map((t) => t.id).sort(), [...ids].sort());
    assert.deepEqual(await leftovers(), []);
  });
});
