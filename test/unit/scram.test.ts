import assert from 'node:assert/strict';
import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';
import { describe, it } from 'node:test';
import { GENERATED_PASSWORD_LENGTH, SCRAM_ITERATIONS, generatePassword, scramVerifier } from '../../src/auth/scram.js';

const VERIFIER = /^SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/;

/**
 * RFC 5802 §3 with SHA-256 (RFC 7677), written out again from the RFC:
 *   SaltedPassword = Hi(password, salt, i)  (Hi is PBKDF2 with HMAC)
 *   ClientKey = HMAC(SaltedPassword, "Client Key"); StoredKey = H(ClientKey)
 *   ServerKey = HMAC(SaltedPassword, "Server Key")
 */
function expectedKeys(password: string, salt: Buffer, iterations: number): { storedKey: string; serverKey: string } {
  const salted = pbkdf2Sync(Buffer.from(password, 'utf8'), salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update(Buffer.from('Client Key', 'ascii')).digest();
  return {
    storedKey: createHash('sha256').update(clientKey).digest('base64'),
    serverKey: createHmac('sha256', salted).update(Buffer.from('Server Key', 'ascii')).digest('base64'),
  };
}

function parseVerifier(verifier: string): { iterations: number; salt: Buffer; storedKey: string; serverKey: string } {
  const match = /^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$/.exec(verifier);
  assert.ok(match, `verifier format: ${verifier}`);
  const [, iterations = '', salt = '', storedKey = '', serverKey = ''] = match;
  return { iterations: Number(iterations), salt: Buffer.from(salt, 'base64'), storedKey, serverKey };
}

describe('scramVerifier', () => {
  const salt = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');

  it('has PostgreSQL\'s stored format with 4096 iterations', () => {
    assert.equal(SCRAM_ITERATIONS, 4096);
    for (const password of ['secret', '', 'p@ss:w$rd/+=', 'ünïcødé ✓']) {
      assert.match(scramVerifier(password), VERIFIER);
      assert.match(scramVerifier(password, salt), VERIFIER);
    }
  });

  it('uses a fresh 16-byte salt by default', () => {
    const a = parseVerifier(scramVerifier('secret'));
    const b = parseVerifier(scramVerifier('secret'));
    assert.equal(a.salt.length, 16);
    assert.notDeepEqual(a.salt, b.salt);
    assert.notEqual(a.storedKey, b.storedKey);
  });

  it('is deterministic for a fixed salt', () => {
    assert.equal(scramVerifier('secret', salt), scramVerifier('secret', salt));
    assert.notEqual(scramVerifier('secret', salt), scramVerifier('secret2', salt));
    assert.ok(scramVerifier('secret', salt).startsWith(`SCRAM-SHA-256$4096:${salt.toString('base64')}$`));
  });

  const cases: readonly (readonly [password: string, iterations: number])[] = [
    ['secret', 4096],
    ['', 4096],
    ['a much longer password with spaces and symbols !@#$%^&*()', 4096],
    ['ünïcødé ✓', 4096],
    ['pencil', 1],
    ['pencil', 4],
  ];
  for (const [password, iterations] of cases) {
    it(`StoredKey and ServerKey match RFC 5802 for ${JSON.stringify(password)} × ${iterations}`, () => {
      const verifier = scramVerifier(password, salt, iterations);
      const parsed = parseVerifier(verifier);
      assert.equal(parsed.iterations, iterations);
      assert.deepEqual(parsed.salt, salt);
      const expected = expectedKeys(password, salt, iterations);
      assert.equal(parsed.storedKey, expected.storedKey);
      assert.equal(parsed.serverKey, expected.serverKey);
      assert.equal(Buffer.from(parsed.storedKey, 'base64').length, 32);
      assert.equal(Buffer.from(parsed.serverKey, 'base64').length, 32);
    });
  }

  it('normalises the password with NFKC, as SASLprep does', () => {
    // U+00C5 (Å precomposed) vs A + U+030A (combining ring): the same after NFKC.
    assert.equal(scramVerifier('\u00c5ngstr\u00f6m', salt), scramVerifier('A\u030angstro\u0308m', salt));
    // U+FB01 (ﬁ ligature) maps to "fi" under NFKC.
    assert.equal(scramVerifier('\ufb01sh', salt), scramVerifier('fish', salt));
  });
});

describe('generatePassword', () => {
  it(`is ${GENERATED_PASSWORD_LENGTH} characters of [A-Za-z0-9] by default`, () => {
    assert.equal(GENERATED_PASSWORD_LENGTH, 32);
    for (let i = 0; i < 200; i++) assert.match(generatePassword(), /^[A-Za-z0-9]{32}$/);
  });

  it('is distinct across calls', () => {
    const seen = new Set(Array.from({ length: 1000 }, () => generatePassword()));
    assert.equal(seen.size, 1000);
  });

  for (const length of [0, 1, 8, 24, 33, 64, 200]) {
    it(`respects length ${length}`, () => {
      assert.match(generatePassword(length), new RegExp(`^[A-Za-z0-9]{${length}}$`));
    });
  }

  it('uses the whole alphabet', () => {
    const used = new Set(Array.from({ length: 200 }, () => generatePassword()).join(''));
    assert.equal(used.size, 62);
  });
});
