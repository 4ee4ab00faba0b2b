import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Tenant } from '../../src/catalog/schema.js';
import { compareTenantMeta, sameEntry } from '../../src/catalog/tenant-meta.js';

const DOMAIN = 'db.example.com';

function tenant(overrides: Partial<Tenant> = {}): Tenant {
  return { id: 'acme', suffix: 'x7k2q9', access: 'enabled', wanted: 'running', maxConnections: 20, createdAt: '2026-11-30T02:00:00.000Z', generation: '20261130-020000-3f1a', ...overrides };
}

/** A catalog entry against its folder's copy: what differs, and which side is newer by the change counter. */
describe('compareTenantMeta', () => {
  it('the same entry, or one that differs only in what is not compared, agrees', () => {
    assert.equal(compareTenantMeta(tenant({ rev: 4 }), tenant({ rev: 4 }), DOMAIN), undefined);
    // createdAt, diskState (derived from the disk) and the counter alone are no disagreement.
    assert.equal(compareTenantMeta(tenant({ rev: 4 }), tenant({ rev: 6, createdAt: '2020-01-01T00:00:00.000Z', diskState: 'read-only' }), DOMAIN), undefined);
  });

  it('an absent setting is its default: absent and the default agree', () => {
    const explicit = tenant({ autosuspendSeconds: 300, rpoSeconds: 60, backupSchedule: 'daily', backupRetain: 7, pool: 'session', poolSize: 10, database: 'acme' });
    assert.equal(compareTenantMeta(tenant(), explicit, DOMAIN), undefined);
    assert.equal(compareTenantMeta(explicit, tenant(), DOMAIN), undefined);
  });

  const cases: { name: string; catalog: Partial<Tenant>; folder: Partial<Tenant>; newer: string; fields: [string, unknown, unknown][] }[] = [
    {
      name: 'access disabled in the folder, one change later (a catalog restored from its backup)',
      catalog: { rev: 4 }, folder: { rev: 5, access: 'disabled' }, newer: 'folder',
      fields: [['access', 'enabled', 'disabled']],
    },
    {
      name: 'the catalog newer (a lost write of the folder\'s copy)',
      catalog: { rev: 7, autosuspendSeconds: null }, folder: { rev: 6 }, newer: 'catalog',
      fields: [['autosuspendSeconds', null, 300]],
    },
    {
      name: 'as many changes on both (a hand edit of the catalog)',
      catalog: { rev: 3, maxConnections: 50 }, folder: { rev: 3 }, newer: 'same',
      fields: [['maxConnections', 50, 20]],
    },
    {
      name: 'entries from before the counter: 0 against a counted copy',
      catalog: {}, folder: { rev: 2, wanted: 'stopped' }, newer: 'folder',
      fields: [['wanted', 'running', 'stopped']],
    },
    {
      name: 'a new host name, a new generation (restored in place), limits and backups, in the order listed',
      catalog: { rev: 1, memoryBytes: 2 ** 30 },
      folder: { rev: 9, suffix: 'abcdef', generation: '20261201-101010-beef', cpus: 0.5, diskBytes: 2 ** 31, pool: 'transaction', poolSize: 4, maxClientConnections: 200, backupSchedule: 'hourly', backupRetain: 48, rpoSeconds: 10 },
      newer: 'folder',
      fields: [
        ['hostname', 'acme-x7k2q9.db.example.com', 'acme-abcdef.db.example.com'],
        ['generation', '20261130-020000-3f1a', '20261201-101010-beef'],
        ['memoryBytes', 2 ** 30, null],
        ['cpus', null, 0.5],
        ['diskBytes', null, 2 ** 31],
        ['pool', 'session', 'transaction'],
        ['poolSize', 10, 4],
        ['maxClientConnections', null, 200],
        ['backupSchedule', 'daily', 'hourly'],
        ['backupRetain', 7, 48],
        ['rpoSeconds', 60, 10],
      ],
    },
    {
      name: 'a generation only one side has',
      catalog: { rev: 2, generation: undefined }, folder: { rev: 1 }, newer: 'catalog',
      fields: [['generation', null, '20261130-020000-3f1a']],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const found = compareTenantMeta(tenant(c.catalog), tenant(c.folder), DOMAIN);
      assert.ok(found);
      assert.equal(found.id, 'acme');
      assert.equal(found.newer, c.newer);
      assert.equal(found.catalogRev, c.catalog.rev ?? 0);
      assert.equal(found.folderRev, c.folder.rev ?? 0);
      assert.deepEqual(found.fields.map((f) => [f.field, f.catalog, f.folder]), c.fields);
    });
  }

  it('a folder without a usable metadata file: the catalog is newer, with no fields', () => {
    assert.deepEqual(compareTenantMeta(tenant({ rev: 3 }), undefined, DOMAIN), { id: 'acme', newer: 'catalog', catalogRev: 3, folderRev: null, fields: [] });
  });
});

describe('sameEntry', () => {
  it('ignores the counter and key order, not a value', () => {
    const a = tenant({ rev: 1, memoryBytes: 2 ** 30 });
    const reordered = Object.fromEntries(Object.entries(a).reverse()) as Tenant;
    assert.equal(sameEntry(a, { ...reordered, rev: 9 }), true);
    assert.equal(sameEntry(a, { ...a, access: 'disabled' }), false);
    assert.equal(sameEntry(a, { ...a, diskState: 'standby' }), false, 'every field counts as a change, compared or not');
  });
});
