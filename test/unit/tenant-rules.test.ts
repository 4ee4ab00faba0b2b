import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Tenant } from '../../src/catalog/schema.js';
import { isPgsError } from '../../src/core/errors.js';
import {
  applyChanges, assertWantedRunning, checkPatch, choosePassword, effectivePoolSize, etagMatches, etagOf, idleLongEnough, newTenantEntry, notSupported, patchChanges,
} from '../../src/service/tenant-rules.js';

const acme: Tenant = { id: 'acme', suffix: 'k3j9x2', access: 'enabled', wanted: 'running', maxConnections: 20, createdAt: '2026-01-01T00:00:00.000Z' };

describe('tenant rules', () => {
  it('an ETag follows the settings, and If-Match takes a list, W/ and *', () => {
    const etag = etagOf(acme);
    assert.match(etag, /^"[A-Za-z0-9_-]{22}"$/);
    assert.equal(etagOf({ ...acme }), etag);
    assert.notEqual(etagOf({ ...acme, maxConnections: 21 }), etag);
    assert.ok(etagMatches(`"x", W/${etag}`, etag));
    assert.ok(etagMatches('*', etag));
    assert.ok(!etagMatches('"x"', etag));
  });

  it('a change is refused for a stale ETag or a pool larger than the connections', () => {
    assert.throws(() => checkPatch(acme, { access: 'disabled' }, '"stale"'), (e: unknown) => isPgsError(e, 'PRECONDITION_FAILED'));
    assert.throws(() => checkPatch(acme, { poolSize: 21 }, undefined), /a pool of 21 server sessions is more than tenant acme's max connections \(20\)/);
    checkPatch(acme, { poolSize: 30, maxConnections: 30 }, etagOf(acme));
  });

  it('null lifts a limit but means never for autosuspend', () => {
    const limited = applyChanges(acme, patchChanges({ memoryBytes: 2 ** 28, allow: ['10.0.0.0/8'] }));
    assert.equal(limited.memoryBytes, 2 ** 28);
    const lifted = applyChanges(limited, patchChanges({ memoryBytes: null, allow: null, autosuspend: null }));
    assert.ok(!('memoryBytes' in lifted) && !('allow' in lifted));
    assert.equal(lifted.autosuspendSeconds, null);
  });

  it('the pool is never larger than the connections; idle means no clients for the autosuspend time', () => {
    assert.equal(effectivePoolSize(acme), 10);
    assert.equal(effectivePoolSize({ ...acme, maxConnections: 4 }), 4);
    assert.ok(idleLongEnough(acme, 0, 300_000, 0));
    assert.ok(!idleLongEnough(acme, 0, 299_999, 0));
    assert.ok(!idleLongEnough(acme, 0, 300_000, 1));
    assert.ok(!idleLongEnough({ ...acme, autosuspendSeconds: null }, 0, 10 ** 9, 0));
    assert.ok(!idleLongEnough({ ...acme, wanted: 'stopped' }, 0, 10 ** 9, 0));
  });

  it('a new entry takes the request, a password is checked or made, a stopped tenant is refused what needs it running', () => {
    const made = newTenantEntry({ defaultMaxConnections: 20 }, { id: 'beta', autosuspend: null, cpus: null, diskBytes: 2 ** 30 });
    assert.equal(made.maxConnections, 20);
    assert.equal(made.autosuspendSeconds, null);
    assert.ok(!('cpus' in made));
    assert.equal(made.diskBytes, 2 ** 30);
    assert.equal(choosePassword(undefined).length, 32);
    assert.throws(() => choosePassword('short'), (e: unknown) => isPgsError(e, 'WEAK_PASSWORD'));
    assert.throws(() => assertWantedRunning({ ...acme, wanted: 'stopped' }, 'suspend'), /tenant acme is stopped: there is nothing to suspend/);
    assert.throws(() => assertWantedRunning({ ...acme, wanted: 'stopped' }, 'wake'), /"pgs start acme" starts it/);
    assert.equal(notSupported('kubernetes', 'pgs export', 'pg_dump').message, 'pgs export is not available on the kubernetes runtime yet: pg_dump');
  });
});
