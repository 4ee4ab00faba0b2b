import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { redactSecrets } from '../../src/runtime/redact.js';

describe('redactSecrets', () => {
  it('takes every constant out of a statement that names a password', () => {
    assert.equal(redactSecrets("ALTER ROLE postgres PASSWORD 'secretxyz123'"), "ALTER ROLE postgres PASSWORD '***'");
    assert.equal(redactSecrets("create user app with password 'it''s' valid until '2030-01-01'"), "create user app with password '***' valid until '***'");
    assert.equal(redactSecrets("ALTER ROLE a PASSWORD E'x\\'y'"), "ALTER ROLE a PASSWORD '***'");
    assert.equal(redactSecrets('ALTER ROLE a PASSWORD $q$secret$q$'), "ALTER ROLE a PASSWORD '***'");
    assert.equal(redactSecrets("ALTER ROLE a PASSWORD 'SCRAM-SHA-256$4096:abc$def:ghi'"), "ALTER ROLE a PASSWORD '***'");
    assert.equal(redactSecrets("ALTER ROLE a PASSWORD 'unterminated"), "ALTER ROLE a PASSWORD '***'");
  });

  it('leaves other statements as they are', () => {
    for (const q of ["SELECT 'x' AS a", 'insert into t values ($1),($2)', 'SELECT $1::int + $2']) assert.equal(redactSecrets(q), q);
  });
});
