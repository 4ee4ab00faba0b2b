import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AuthFailures, sourceNetwork } from '../../src/api/auth-limit.js';

describe('wrong API tokens are limited per address, network and token prefix', () => {
  it('networks: /24, /64, loopback whole, IPv4-mapped as IPv4', () => {
    assert.equal(sourceNetwork('203.0.113.77'), '203.0.113.0/24');
    assert.equal(sourceNetwork('::ffff:203.0.113.77'), '203.0.113.0/24');
    assert.equal(sourceNetwork('127.9.8.7'), 'loopback');
    assert.equal(sourceNetwork('::1'), 'loopback');
    assert.equal(sourceNetwork('2001:db8:1:2:aaaa::5'), '2001:db8:1:2::/64');
    assert.equal(sourceNetwork('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(sourceNetwork('fe80::1%eth0'), 'fe80:0:0:0::/64');
  });

  it('ten different wrong tokens per key; the same one again counts once', () => {
    const f = new AuthFailures();
    for (let i = 0; i < 20; i++) assert.equal(f.fail('198.51.100.1', 'pgs_same'), undefined);
    for (let i = 0; i < 9; i++) assert.equal(f.fail('198.51.100.1', `pgs_a${i}`), undefined);
    assert.deepEqual(f.fail('198.51.100.1', 'pgs_b', 0 + Date.now()), { what: 'from 198.51.100.1', retryAfterSeconds: 60 });
  });

  it('one prefix guessed from many networks is limited too, and the window ends', () => {
    const f = new AuthFailures();
    const t0 = 1_000_000;
    for (let i = 0; i < 10; i++) assert.equal(f.fail(`10.0.${i}.1`, `pgs_abcdefgh${i}`, t0 + i), undefined);
    assert.deepEqual(f.fail('10.0.99.1', 'pgs_abcdefghZ', t0 + 30_000), { what: 'for tokens starting pgs_abcdefgh', retryAfterSeconds: 30 });
    assert.equal(f.fail('10.0.99.1', 'pgs_abcdefghZ', t0 + 60_001), undefined);
  });

  it('IPv6 addresses of one /64 share a limit', () => {
    const f = new AuthFailures();
    for (let i = 0; i < 10; i++) assert.equal(f.fail(`2001:db8:0:7::${i + 1}`, `pgs_v6guess${i}`), undefined);
    assert.equal(f.fail('2001:db8:0:7::ffff', 'pgs_v6guessX')?.what, 'from 2001:db8:0:7::/64');
    assert.equal(f.fail('2001:db8:0:8::1', 'pgs_v6other'), undefined);
  });

  it('memory stays bounded under a spray of sources', () => {
    const f = new AuthFailures({ maxKeys: 1_000 });
    for (let i = 0; i < 5_000; i++) f.fail(`10.${i >> 8}.${i & 255}.1`, `pgs_${i}`);
    assert.ok(f.size <= 1_000, String(f.size));
  });
});
