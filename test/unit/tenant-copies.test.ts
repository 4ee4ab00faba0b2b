import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Tenant } from '../../src/catalog/schema.js';
import { preRestoreNote } from '../../src/daemon/restores.js';
import { copyEntry } from '../../src/daemon/tenant-copies.js';

const source: Tenant = {
  id: 'acme', suffix: 'abc123', access: 'disabled', wanted: 'stopped', maxConnections: 40, createdAt: '2026-12-01T00:00:00.000Z',
  generation: '20261201-000000-aaaa', autosuspendSeconds: null, rpoSeconds: 30, backupSchedule: 'hourly', backupRetain: 3,
  memoryBytes: 2 ** 30, cpus: 1.5, diskBytes: 2 ** 33, pool: 'transaction', poolSize: 8, maxClientConnections: 500,
  diskState: 'read-only', database: 'old_name', allow: ['10.0.0.0/8'], rev: 12,
};

describe('a tenant made from another', () => {
  it('takes its settings, limits, pooling and allow-list, in a new generation, wanted running', () => {
    const entry = copyEntry('copy', source, '20261202-000000-bbbb');
    assert.deepEqual(entry, {
      id: 'copy', access: 'enabled', wanted: 'running', maxConnections: 40, generation: '20261202-000000-bbbb',
      autosuspendSeconds: null, rpoSeconds: 30, backupSchedule: 'hourly', backupRetain: 3, pool: 'transaction', poolSize: 8,
      maxClientConnections: 500, allow: ['10.0.0.0/8'], memoryBytes: 2 ** 30, cpus: 1.5, diskBytes: 2 ** 33,
    });
    assert.notEqual(entry.allow, source.allow, 'its own allow-list, not the source\'s array');
  });

  it('keeps its access only under its own id; leaves out what absent settings', () => {
    assert.equal(copyEntry('acme', source, '20261202-000000-bbbb').access, 'disabled');
    const bare = copyEntry('copy', { id: 'b', suffix: 'zzzzzz', access: 'enabled', wanted: 'running', maxConnections: 5, createdAt: source.createdAt }, '20261202-000000-cccc');
    assert.deepEqual(bare, { id: 'copy', access: 'enabled', wanted: 'running', maxConnections: 5, generation: '20261202-000000-cccc' });
  });

  it('a pre-restore backup notes the restore it precedes', () => {
    const time = new Date('2026-12-01T10:00:00Z');
    assert.equal(preRestoreNote({}), 'before restore to the latest point');
    assert.equal(preRestoreNote({ backup: '20261201-000000-aaaa' }), 'before restore to backup 20261201-000000-aaaa');
    assert.equal(preRestoreNote({ time }), 'before restore to 2026-12-01T10:00:00.000Z');
    assert.equal(preRestoreNote({ time, backup: 'B' }), 'before restore to 2026-12-01T10:00:00.000Z (from backup B)');
  });
});
