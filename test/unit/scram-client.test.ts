import assert from 'node:assert/strict';
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { describe, it } from 'node:test';
import { ScramClient } from '../../src/auth/scram-client.js';
import { scramVerifier } from '../../src/auth/scram.js';

describe('ScramClient', () => {
  it('matches the RFC 7677 SCRAM-SHA-256 example exchange', () => {
    const client = new ScramClient('pencil', 'rOprNGfwEbeRWgbNEkqO', 'user');
    assert.equal(client.clientFirst(), 'n,,n=user,r=rOprNGfwEbeRWgbNEkqO');
    const serverFirst = 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096';
    assert.equal(client.clientFinal(serverFirst), 'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=');
    client.verifyServerFinal('v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=');
  });

  it('a server signature that does not match is refused, and so is an error from the server', () => {
    const client = new ScramClient('pencil', 'rOprNGfwEbeRWgbNEkqO', 'user');
    client.clientFinal('r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096');
    assert.throws(() => client.verifyServerFinal('v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4='), /does not match/);
    assert.throws(() => client.verifyServerFinal('e=invalid-proof'), /refused: invalid-proof/);
  });

  it('refuses a server nonce that does not extend its own, and silly iteration counts', () => {
    assert.throws(() => new ScramClient('pw', 'abc').clientFinal('r=xyz123,s=AAAA,i=4096'), /nonce/);
    assert.throws(() => new ScramClient('pw', 'abc').clientFinal('r=abc,s=AAAA,i=4096'), /nonce/);
    assert.throws(() => new ScramClient('pw', 'abc').clientFinal('r=abcdef,s=AAAA,i=0'), /iteration/);
  });

  it('its proof verifies against the verifier pgs stores (as PostgreSQL checks it)', () => {
    const verifier = scramVerifier('correct horse battery', Buffer.from('0123456789abcdef'));
    const [, iterations, salt, storedKey, serverKey] = /^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$/.exec(verifier) ?? [];
    const client = new ScramClient('correct horse battery', 'clientnonce');
    const serverFirst = `r=clientnonceSERVER,s=${salt},i=${iterations}`;
    const final = client.clientFinal(serverFirst);
    const proof = Buffer.from(/,p=(.+)$/.exec(final)?.[1] ?? '', 'base64');
    const authMessage = `n=,r=clientnonce,${serverFirst},${final.replace(/,p=.+$/, '')}`;
    const signature = createHmac('sha256', Buffer.from(storedKey ?? '', 'base64')).update(authMessage).digest();
    const clientKey = Buffer.from(proof.map((b, i) => b ^ (signature[i] ?? 0)));
    assert.ok(timingSafeEqual(createHash('sha256').update(clientKey).digest(), Buffer.from(storedKey ?? '', 'base64')));
    client.verifyServerFinal(`v=${createHmac('sha256', Buffer.from(serverKey ?? '', 'base64')).update(authMessage).digest('base64')}`);
  });
});
