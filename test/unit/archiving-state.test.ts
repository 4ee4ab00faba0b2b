import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BEHIND_SEGMENTS, archivingState, pendingOf, sumPending, targetStatusOf, type ArchivingFacts } from '../../src/daemon/archiving-state.js';
import type { ArchiverStatus } from '../../src/runtime/runtime.js';

const t0 = Date.parse('2026-12-01T00:00:00Z');
const iso = (ms: number) => new Date(ms).toISOString();
const archiver = (over: Partial<ArchiverStatus> = {}): ArchiverStatus => ({
  archivedCount: 10, failedCount: 0, lastArchivedWal: '000000010000000000000009', lastArchivedAt: iso(t0), lastFailedWal: null, lastFailedAt: null, pending: 0, ...over,
});
const facts = (over: Partial<ArchivingFacts> = {}): ArchivingFacts => ({
  id: 'acme', generation: '20261201-000000-abcd', targetError: undefined, url: 's3://bucket/pgs', owner: undefined,
  pending: null, shipping: undefined, uncopied: 0, gap: undefined, failure: undefined, status: archiver(), ...over,
});

describe('what waits for the bucket', () => {
  it('adds the server\'s ready files and a backup being written to what the copier has not sent, keeping the oldest time', () => {
    const shipping = { files: 3, bytes: 300, oldestMs: t0 + 5_000 };
    assert.deepEqual(pendingOf(shipping, undefined, undefined), shipping);
    const status = archiver({ readyFiles: 2, readyBytes: 2048, oldestReadyAt: iso(t0 + 1_000) });
    assert.deepEqual(pendingOf(shipping, status, undefined), { files: 5, bytes: 2348, oldestMs: t0 + 1_000 });
    assert.deepEqual(pendingOf(shipping, status, { bytes: 10, startedMs: t0 }), { files: 6, bytes: 2358, oldestMs: t0 });
    assert.deepEqual(pendingOf({ files: 0, bytes: 0, oldestMs: null }, archiver({ readyFiles: 1, oldestReadyAt: null }), undefined), { files: 1, bytes: 0, oldestMs: null });
    assert.deepEqual(pendingOf({ files: 0, bytes: 0, oldestMs: null }, archiver({ readyFiles: 0, readyBytes: 99 }), undefined), { files: 0, bytes: 0, oldestMs: null }, 'no ready files: their bytes are not counted');
  });

  it('sums every tenant, leaving out those without a bucket', () => {
    assert.deepEqual(sumPending([]), { files: 0, bytes: 0, oldestMs: null });
    assert.deepEqual(sumPending([null, { files: 1, bytes: 5, oldestMs: t0 + 9 }, { files: 2, bytes: 7, oldestMs: null }, { files: 0, bytes: 0, oldestMs: t0 + 3 }]), { files: 3, bytes: 12, oldestMs: t0 + 3 });
  });

  it('the bucket\'s status: a target that cannot be used names its own error before the copier\'s', () => {
    const pending = { files: 2, bytes: 10, oldestMs: t0 };
    const failing = { since: iso(t0), error: 'connect ECONNREFUSED' };
    assert.deepEqual(targetStatusOf({ url: 's3://b', pending, lastCopiedAt: undefined, failing: undefined, targetError: undefined }), {
      url: 's3://b', pendingFiles: 2, pendingBytes: 10, oldestPendingAt: iso(t0), lastCopiedAt: null, failingSince: null,
    });
    const down = targetStatusOf({ url: 's3://b', pending: { files: 0, bytes: 0, oldestMs: null }, lastCopiedAt: iso(t0), failing, targetError: undefined });
    assert.equal(down.oldestPendingAt, null);
    assert.equal(down.lastCopiedAt, iso(t0));
    assert.equal(down.failingSince, iso(t0));
    assert.equal(down.error, 'connect ECONNREFUSED');
    assert.equal(targetStatusOf({ url: 's3://b', pending, lastCopiedAt: undefined, failing, targetError: 'no keys' }).error, 'no keys');
  });
});

describe('the archiving state', () => {
  it('a tenant without a generation does not archive; otherwise ok', () => {
    assert.deepEqual(archivingState(facts({ generation: undefined, targetError: 'x' })), { state: 'off' });
    assert.deepEqual(archivingState(facts()), { state: 'ok' });
  });

  it('the worst cause wins: the target, another host, copying, a gap, then the server\'s archiver', () => {
    const all = facts({
      targetError: 'no keys', owner: { host: 'h2', at: iso(t0) }, pending: { files: 1, bytes: 1, oldestMs: t0 },
      shipping: { since: iso(t0), error: 'timeout' }, uncopied: BEHIND_SEGMENTS + 1, gap: '000000010000000000000004',
      status: archiver({ lastFailedAt: iso(t0 + 1), lastFailedWal: '00000001000000000000000A', pending: 3 }),
    });
    const seen: string[] = [];
    let f = all;
    for (const drop of ['targetError', 'owner', 'shipping', 'uncopied', 'gap', 'status'] as const) {
      const got = archivingState(f);
      seen.push(`${got.state}: ${got.error ?? ''}`);
      f = { ...f, [drop]: drop === 'uncopied' ? 0 : drop === 'status' ? archiver() : undefined };
    }
    assert.match(seen[0] ?? '', /^failing: the backup target cannot be used: no keys$/);
    assert.match(seen[1] ?? '', /^failing: host h2 writes this tenant's archive in s3:\/\/bucket\/pgs since .*"pgs restore acme --as <new-id>"/);
    assert.match(seen[2] ?? '', /^failing: copying to s3:\/\/bucket\/pgs fails since .*: timeout; 1 files wait/);
    assert.equal(seen[3], `behind: ${BEHIND_SEGMENTS + 1} files wait to be copied to s3://bucket/pgs`);
    assert.match(seen[4] ?? '', /^gap: the WAL archive misses segment 000000010000000000000004/);
    assert.match(seen[5] ?? '', /^failing: archiving WAL segment 00000001000000000000000A fails since .* \(see pgs logs acme\); 3 segments wait$/);
    assert.deepEqual(archivingState(f), { state: 'ok' });
  });

  it('a bucket that is down hurts only a tenant with something to copy', () => {
    const shipping = { since: iso(t0), error: 'timeout' };
    assert.deepEqual(archivingState(facts({ shipping, pending: { files: 0, bytes: 0, oldestMs: null } })), { state: 'ok' });
    assert.deepEqual(archivingState(facts({ shipping, pending: null })), { state: 'ok' });
  });

  it('the server\'s archiver: a failure older than the last success is over; too many waiting segments is behind', () => {
    assert.deepEqual(archivingState(facts({ status: archiver({ lastFailedAt: iso(t0 - 1), lastArchivedAt: iso(t0) }) })), { state: 'ok' });
    assert.equal(archivingState(facts({ status: archiver({ lastFailedAt: iso(t0), lastArchivedAt: null }) })).state, 'failing');
    assert.equal(archivingState(facts({ status: archiver({ lastFailedAt: iso(t0), lastArchivedAt: null }) })).error?.includes('segment ?'), true);
    assert.deepEqual(archivingState(facts({ status: archiver({ pending: BEHIND_SEGMENTS + 1 }) })), { state: 'behind', error: `${BEHIND_SEGMENTS + 1} WAL segments wait to be archived` });
    assert.deepEqual(archivingState(facts({ status: archiver({ pending: BEHIND_SEGMENTS }) })), { state: 'ok' });
  });

  it('a failed backup: unknown without the archiver\'s status, ok with a note otherwise', () => {
    const failure = { at: iso(t0), error: 'disk full' };
    assert.deepEqual(archivingState(facts({ status: undefined })), { state: 'unknown' });
    assert.deepEqual(archivingState(facts({ status: undefined, failure })), { state: 'unknown', error: `last backup failed at ${iso(t0)}: disk full` });
    assert.deepEqual(archivingState(facts({ failure })), { state: 'ok', error: `last backup failed at ${iso(t0)}: disk full` });
  });
});
