import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PgsError } from '../../src/core/errors.js';
import {
  SUFFIX_LENGTH, assertTenantId, domainProblem, newSuffix, tenantHostname, tenantIdProblem,
} from '../../src/catalog/ids.js';

const VALID_IDS: readonly string[] = [
  'a',
  'acme',
  'a-b-9',
  'a1',
  'a--b',
  'a'.repeat(40),
  `z${'0'.repeat(38)}9`,
];

/** Each invalid id with a fragment of the problem it must report. */
const INVALID_IDS: readonly (readonly [id: string, problem: RegExp])[] = [
  ['', /empty/],
  ['Acme', /lower-case letter/],
  ['acMe', /only lower-case/],
  ['9abc', /lower-case letter/],
  ['-a', /lower-case letter/],
  ['a-', /end with "-"/],
  ['a_b', /only lower-case/],
  ['a.b', /only lower-case/],
  ['a b', /only lower-case/],
  ['a'.repeat(41), /41 characters/],
  ['a'.repeat(100), /100 characters/],
  ['é', /lower-case letter/],
  ['aé', /only lower-case/],
  ['a😀', /only lower-case/],
  ['a\n', /only lower-case/],
];

describe('tenantIdProblem / assertTenantId', () => {
  for (const id of VALID_IDS) {
    it(`accepts ${JSON.stringify(id)}`, () => {
      assert.equal(tenantIdProblem(id), undefined);
      assert.doesNotThrow(() => assertTenantId(id));
    });
  }

  for (const [id, problem] of INVALID_IDS) {
    it(`rejects ${JSON.stringify(id)}`, () => {
      const found = tenantIdProblem(id);
      assert.ok(found !== undefined, 'a problem is reported');
      assert.match(found, problem);
      assert.throws(
        () => assertTenantId(id),
        (err: unknown) => err instanceof PgsError && err.code === 'INVALID_ID' && err.message.includes(found),
      );
    });
  }
});

describe('newSuffix', () => {
  it(`is ${SUFFIX_LENGTH} characters of [a-z0-9]`, () => {
    for (let i = 0; i < 200; i++) assert.match(newSuffix(), /^[a-z0-9]{6}$/);
  });

  it('is almost always distinct over 1000 draws', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) seen.add(newSuffix());
    // 36^6 ≈ 2.2e9 values: the expected number of collisions in 1000 draws is about 0.0002.
    assert.ok(seen.size >= 998, `only ${seen.size} distinct suffixes`);
  });

  it('uses both letters and digits across many draws', () => {
    const all = Array.from({ length: 500 }, () => newSuffix()).join('');
    assert.match(all, /[a-z]/);
    assert.match(all, /[0-9]/);
  });
});

describe('tenantHostname', () => {
  const cases: readonly (readonly [id: string, suffix: string, domain: string, expected: string])[] = [
    ['acme', 'x1y2z3', 'pgs.localhost', 'acme-x1y2z3.pgs.localhost'],
    ['a-b-9', '000000', 'example.com', 'a-b-9-000000.example.com'],
    ['a', 'zzzzzz', 'localhost', 'a-zzzzzz.localhost'],
  ];
  for (const [id, suffix, domain, expected] of cases) {
    it(`${id} + ${suffix} + ${domain} → ${expected}`, () => {
      assert.equal(tenantHostname(id, suffix, domain), expected);
    });
  }

  it('the longest id with a suffix is still one DNS label (at most 63 characters)', () => {
    const host = tenantHostname('a'.repeat(40), newSuffix(), 'example.com');
    const label = host.split('.')[0] ?? '';
    assert.ok(label.length <= 63, `label is ${label.length} characters`);
    assert.equal(domainProblem(host), undefined);
  });
});

describe('domainProblem', () => {
  const valid: readonly string[] = [
    'localhost',
    'example.com',
    'pgs.localhost',
    'a.b.c.d',
    'x1-2y.example.com',
    '0.example',
    `${'a'.repeat(63)}.com`,
    Array.from({ length: 50 }, () => 'abc').join('.').slice(0, 199),
  ];
  const invalid: readonly string[] = [
    '',
    'Example.com',
    'example..com',
    '.example.com',
    'example.com.',
    '-a.com',
    'a-.com',
    'a_b.com',
    'exa mple.com',
    'exämple.com',
    `${'a'.repeat(64)}.com`,
    `${'a.'.repeat(100)}a`, // 201 characters
  ];
  for (const domain of valid) {
    it(`accepts ${JSON.stringify(domain.length > 40 ? `${domain.slice(0, 40)}…` : domain)}`, () => {
      assert.equal(domainProblem(domain), undefined);
    });
  }
  for (const domain of invalid) {
    it(`rejects ${JSON.stringify(domain.length > 40 ? `${domain.slice(0, 40)}…` : domain)}`, () => {
      assert.equal(typeof domainProblem(domain), 'string');
    });
  }
});
