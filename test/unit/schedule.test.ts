import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { backupDue } from '../../src/daemon/backup-schedule.js';

describe('the backup schedule', () => {
  const t0 = Date.parse('2026-11-30T00:00:00Z');
  const tenant = (over: Record<string, unknown> = {}) => ({ id: 'acme', createdAt: new Date(t0).toISOString(), generation: '20261130-000000-abcd', ...over });
  const hour = 3_600_000;

  it('a new tenant gets its first backup after a few minutes, not at once', () => {
    assert.equal(backupDue(tenant(), undefined, undefined, t0 + 60_000), false);
    assert.equal(backupDue(tenant(), undefined, undefined, t0 + 10 * 60_000), true);
  });

  it('daily by default, hourly on request, never when off; the jitter stays within a tenth of the period', () => {
    const last = { finishedAt: new Date(t0).toISOString() };
    assert.equal(backupDue(tenant(), last, undefined, t0 + 23 * hour), false);
    assert.equal(backupDue(tenant(), last, undefined, t0 + 24 * hour + 2.5 * hour), true);
    assert.equal(backupDue(tenant({ backupSchedule: 'hourly' }), last, undefined, t0 + 0.9 * hour), false);
    assert.equal(backupDue(tenant({ backupSchedule: 'hourly' }), last, undefined, t0 + 1.11 * hour), true);
    assert.equal(backupDue(tenant({ backupSchedule: 'off' }), last, undefined, t0 + 100 * hour), false);
    assert.equal(backupDue(tenant({ generation: undefined }), last, undefined, t0 + 100 * hour), false, 'no archive yet');
    const dueAt = (id: string) => {
      for (let m = 0; m < 200; m++) if (backupDue(tenant({ id, backupSchedule: 'hourly' }), last, undefined, t0 + hour + m * 60_000)) return m;
      return -1;
    };
    const spread = new Set(['a1', 'b2', 'c3', 'd4', 'e5', 'f6', 'g7', 'h8'].map(dueAt));
    assert.ok(spread.size > 3, `tenants spread over several minutes: ${[...spread].join(',')}`);
    assert.ok([...spread].every((m) => m >= 0 && m <= 6));
  });

  it('a tenant found unchanged waits a whole period again', () => {
    const last = { finishedAt: new Date(t0).toISOString() };
    const checked = t0 + 25 * hour;
    assert.equal(backupDue(tenant(), last, checked, t0 + 26 * hour), false);
    assert.equal(backupDue(tenant(), last, checked, t0 + 25 * hour + 24 * hour + 2.5 * hour), true);
  });
});
