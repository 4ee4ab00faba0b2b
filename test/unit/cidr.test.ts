import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as v from 'valibot';
import { AllowList, MAX_ALLOW_ENTRIES, isNormalCidr, normalizeAllowList, parseCidr, requestedAllow } from '../../src/core/cidr.js';
import { PgsError } from '../../src/core/errors.js';
import { AllowSchema, TenantSchema, schemaProblem } from '../../src/catalog/schema.js';

function normal(text: string): string {
  const cidr = parseCidr(text);
  assert.ok(!('problem' in cidr), `${text}: ${'problem' in cidr ? cidr.problem : ''}`);
  return cidr.text;
}

function problem(text: string): string {
  const cidr = parseCidr(text);
  assert.ok('problem' in cidr, `${text} should be refused, got ${'text' in cidr ? cidr.text : ''}`);
  return cidr.problem;
}

describe('parseCidr', () => {
  it('normalises IPv4 blocks and bare addresses', () => {
    assert.equal(normal('10.0.0.0/8'), '10.0.0.0/8');
    assert.equal(normal('127.0.0.2'), '127.0.0.2/32');
    assert.equal(normal('0.0.0.0/0'), '0.0.0.0/0');
    assert.equal(normal('192.168.1.128/25'), '192.168.1.128/25');
    assert.equal(normal(' 203.0.113.0/24'.trim()), '203.0.113.0/24');
  });

  it('normalises IPv6 as RFC 5952 writes it', () => {
    assert.equal(normal('2001:DB8:0:0:0:0:0:0/32'), '2001:db8::/32');
    assert.equal(normal('::1'), '::1/128');
    assert.equal(normal('::/0'), '::/0');
    assert.equal(normal('2001:db8:0:1:0:0:0:1'), '2001:db8:0:1::1/128');
    // The longest run of zeros is the one compressed; a single zero group is not.
    assert.equal(normal('2001:0:0:1:0:0:0:1'), '2001:0:0:1::1/128');
    assert.equal(normal('2001:db8:1:2:3:4:0:5'), '2001:db8:1:2:3:4:0:5/128');
    assert.equal(normal('fe80::/10'), 'fe80::/10');
  });

  it('writes IPv4-mapped IPv6 blocks of /96 or longer as IPv4', () => {
    assert.equal(normal('::ffff:127.0.0.1'), '127.0.0.1/32');
    assert.equal(normal('::ffff:10.0.0.0/104'), '10.0.0.0/8');
    assert.equal(normal('::ffff:7f00:1/128'), '127.0.0.1/32');
    assert.equal(normal('::ffff:0:0/96'), '0.0.0.0/0');
    // Shorter: more than the mapped range, kept as IPv6.
    assert.equal(normal('::/80'), '::/80');
  });

  it('refuses what is not a block, saying why', () => {
    for (const bad of ['', 'any', 'localhost', '10.0.0', '10.0.0.0.0', '256.0.0.1', '10.0.0.01', '1.2.3.4/33', '1.2.3.4/', '1.2.3.4/-1',
      '1.2.3.4/08', '1.2.3.4/ 8', '::1/129', '2001:db8:::1', '1:2:3:4:5:6:7:8:9', '1::2::3', 'fe80::1%eth0', '12345::', 'g::1', '::1.2.3', '1.2.3.4::',
      '10.0.0.0/8/8', `${'1'.repeat(70)}`]) {
      problem(bad);
    }
    assert.match(problem('300.1.1.1/8'), /"300\.1\.1\.1\/8" is not an IPv4 or IPv6 address or CIDR block/);
    assert.match(problem('1.2.3.4/33'), /prefix longer than 32 bits/);
  });

  it('refuses a block with bits set right of its prefix, naming its network', () => {
    assert.match(problem('10.1.2.3/8'), /bits set right of its \/8 prefix: its network is 10\.0\.0\.0\/8/);
    assert.match(problem('2001:db8::1/32'), /its network is 2001:db8::\/32/);
  });

  it('isNormalCidr: only the normal form', () => {
    assert.ok(isNormalCidr('10.0.0.0/8'));
    assert.ok(!isNormalCidr('10.0.0.1'));
    assert.ok(!isNormalCidr('2001:DB8::/32'));
  });
});

describe('normalizeAllowList', () => {
  it('normalises each entry and drops duplicates, keeping the order', () => {
    assert.deepEqual(normalizeAllowList(['127.0.0.2', '::1', '127.0.0.2/32', '::ffff:127.0.0.2']), { allow: ['127.0.0.2/32', '::1/128'] });
  });

  it('names the entry at fault by its place', () => {
    const result = normalizeAllowList(['10.0.0.0/8', 'nope']);
    assert.ok('problem' in result);
    assert.match(result.problem, /^allow\.1 "nope" is not/);
  });

  it('refuses an empty list and one of more than the maximum', () => {
    assert.ok('problem' in normalizeAllowList([]));
    const many = Array.from({ length: MAX_ALLOW_ENTRIES + 1 }, (_, i) => `10.0.${i}.0/24`);
    const result = normalizeAllowList(many);
    assert.ok('problem' in result);
    assert.match(result.problem, /at most 100/);
    assert.ok('allow' in normalizeAllowList(many.slice(0, MAX_ALLOW_ENTRIES)));
  });

  it('requestedAllow: INVALID_REQUEST naming the field; null and undefined pass', () => {
    assert.equal(requestedAllow(null), null);
    assert.equal(requestedAllow(undefined), undefined);
    assert.deepEqual(requestedAllow(['2001:db8::/32']), ['2001:db8::/32']);
    assert.throws(() => requestedAllow(['10.0.0.0/8', '1.2.3.4/40']), (err: unknown) => {
      assert.ok(err instanceof PgsError);
      assert.equal(err.code, 'INVALID_REQUEST');
      assert.equal(err.field, 'allow');
      assert.match(err.message, /allow\.1 "1\.2\.3\.4\/40"/);
      return true;
    });
  });
});

describe('AllowList', () => {
  it('matches IPv4 sources', () => {
    const list = new AllowList(['127.0.0.2/32', '10.0.0.0/8', '192.168.1.128/25']);
    assert.ok(list.allows('127.0.0.2'));
    assert.ok(!list.allows('127.0.0.1'));
    assert.ok(list.allows('10.255.255.255'));
    assert.ok(!list.allows('11.0.0.0'));
    assert.ok(list.allows('192.168.1.200'));
    assert.ok(!list.allows('192.168.1.127'));
    assert.ok(!list.allows('::1'));
    assert.ok(!list.allows('garbage'));
    assert.ok(!list.allows(''));
  });

  it('matches IPv4-mapped IPv6 sources as IPv4', () => {
    const list = new AllowList(['127.0.0.2/32']);
    assert.ok(list.allows('::ffff:127.0.0.2'));
    assert.ok(list.allows('::FFFF:7f00:2'));
    assert.ok(!list.allows('::ffff:127.0.0.1'));
    // Not mapped: an IPv6 address whose last bits happen to look the same.
    assert.ok(!list.allows('::127.0.0.2'));
  });

  it('matches IPv6 sources, with or without a zone', () => {
    const list = new AllowList(['2001:db8::/32', '::1/128', 'fe80::/10']);
    assert.ok(list.allows('2001:db8:ffff::1'));
    assert.ok(!list.allows('2001:db9::1'));
    assert.ok(list.allows('::1'));
    assert.ok(!list.allows('::2'));
    assert.ok(list.allows('fe80::1%eth0'));
    assert.ok(!list.allows('127.0.0.1'));
  });

  it('/0 lets in its whole family only', () => {
    assert.ok(new AllowList(['0.0.0.0/0']).allows('203.0.113.9'));
    assert.ok(new AllowList(['0.0.0.0/0']).allows('::ffff:203.0.113.9'));
    assert.ok(!new AllowList(['0.0.0.0/0']).allows('2001:db8::1'));
    assert.ok(new AllowList(['::/0']).allows('2001:db8::1'));
  });

  it('shows an address plainly', () => {
    assert.equal(AllowList.shown('::ffff:127.0.0.1'), '127.0.0.1');
    assert.equal(AllowList.shown('2001:DB8:0::1'), '2001:db8::1');
  });
});

describe('the catalog keeps allow-lists strictly', () => {
  const tenant = { id: 'acme', suffix: 'abc123', access: 'enabled', wanted: 'running', maxConnections: 20, createdAt: '2026-01-01T00:00:00.000Z' };

  it('takes normal blocks and leaving it out', () => {
    assert.ok(v.safeParse(TenantSchema, tenant).success);
    assert.ok(v.safeParse(TenantSchema, { ...tenant, allow: ['127.0.0.2/32', '2001:db8::/32'] }).success);
  });

  it('refuses the rest, naming the field', () => {
    assert.equal(schemaProblem(TenantSchema, { ...tenant, allow: ['127.0.0.2'] }, 'tenant'), 'tenant.allow.0 must be a CIDR block in normal form such as 203.0.113.0/24 or 2001:db8::/32');
    assert.match(schemaProblem(TenantSchema, { ...tenant, allow: [] }, 'tenant') ?? '', /^tenant\.allow must name at least one/);
    assert.match(schemaProblem(TenantSchema, { ...tenant, allow: ['10.0.0.0/8', '10.0.0.0/8'] }, 'tenant') ?? '', /^tenant\.allow must not name a CIDR block twice/);
    assert.match(schemaProblem(TenantSchema, { ...tenant, allow: null }, 'tenant') ?? '', /^tenant\.allow /);
    assert.match(schemaProblem(AllowSchema, Array.from({ length: 101 }, (_, i) => `10.0.${i}.0/24`), 'allow') ?? '', /at most 100/);
  });
});
