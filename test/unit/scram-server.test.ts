import assert from 'node:assert/strict';
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { X509Certificate } from 'node:crypto';
import { describe, it } from 'node:test';
import { ScramClient } from '../../src/auth/scram-client.js';
import { ScramError, ScramServer, certificateHash, mockSalt } from '../../src/auth/scram-server.js';
import { parseVerifier, scramVerifier } from '../../src/auth/scram.js';
import { preparePassword } from '../../src/auth/saslprep.js';
import { generateSelfSigned } from '../../src/tls/certificate.js';

const server = (password: string | undefined, hash?: Buffer): ScramServer =>
  new ScramServer({ verifier: password === undefined ? undefined : parseVerifier(scramVerifier(password)), mockSalt: Buffer.alloc(16, 7), certificateHash: hash });

/** One full exchange with pgs's own client (no channel binding); returns the server-final message or undefined. */
function exchange(scram: ScramServer, password: string): string | undefined {
  const client = new ScramClient(password);
  const serverFirst = scram.start('SCRAM-SHA-256', client.clientFirst());
  const result = scram.finish(client.clientFinal(serverFirst));
  if (result !== undefined) client.verifyServerFinal(result);
  return result;
}

/** A client that binds the channel, written out from RFC 5802 (pgs has no such client). */
function plusExchange(scram: ScramServer, password: string, hash: Buffer, cbName = 'tls-server-end-point'): string | undefined {
  const nonce = randomBytes(18).toString('base64');
  const header = `p=${cbName},,`;
  const bare = `n=,r=${nonce}`;
  const serverFirst = scram.start('SCRAM-SHA-256-PLUS', header + bare);
  const attrs = Object.fromEntries(serverFirst.split(',').map((kv) => [kv[0], kv.slice(2)]));
  const salted = pbkdf2Sync(password, Buffer.from(attrs.s as string, 'base64'), Number(attrs.i), 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const withoutProof = `c=${Buffer.concat([Buffer.from(header), hash]).toString('base64')},r=${attrs.r}`;
  const signature = createHmac('sha256', storedKey).update(`${bare},${serverFirst},${withoutProof}`).digest();
  const proof = Buffer.from(clientKey.map((b, i) => b ^ (signature[i] as number)));
  return scram.finish(`${withoutProof},p=${proof.toString('base64')}`);
}

describe('ScramServer', () => {
  it('accepts the right password and signs as the server (the client checks it), refuses a wrong one', () => {
    assert.match(exchange(server('correct horse'), 'correct horse') ?? '', /^v=/);
    assert.equal(exchange(server('correct horse'), 'Correct horse'), undefined);
    assert.equal(exchange(server(''), 'x'), undefined);
  });

  it('runs a mock exchange for a role without a verifier: a stable salt, and it always fails', () => {
    const a = server(undefined).start('SCRAM-SHA-256', 'n,,n=,r=abc');
    const b = server(undefined).start('SCRAM-SHA-256', 'n,,n=,r=abc');
    assert.equal(a.split(',')[1], b.split(',')[1], 'the same salt each time');
    assert.match(a, /,i=4096$/);
    assert.equal(exchange(server(undefined), ''), undefined);
    const secret = randomBytes(32);
    assert.deepEqual(mockSalt(secret, 't', 'bob'), mockSalt(secret, 't', 'bob'));
    assert.notDeepEqual(mockSalt(secret, 't', 'bob'), mockSalt(secret, 't', 'alice'));
    assert.equal(mockSalt(secret, 't', 'bob').length, 16);
  });

  it('binds the channel with tls-server-end-point, and refuses another certificate\'s hash', () => {
    const hash = randomBytes(32);
    assert.match(plusExchange(server('pw', hash), 'pw', hash) ?? '', /^v=/);
    assert.equal(plusExchange(server('wrong', hash), 'pw', hash), undefined);
    assert.throws(() => plusExchange(server('pw', hash), 'pw', randomBytes(32)), (e: ScramError) => e.message === 'SCRAM channel binding check failed' && e.code === '08P01');
    assert.throws(() => plusExchange(server('pw', hash), 'pw', hash, 'tls-unique'), /unsupported SCRAM channel-binding type/);
  });

  it('offers PLUS only with a certificate hash, and refuses a downgrade', () => {
    assert.deepEqual(server('pw').mechanisms, ['SCRAM-SHA-256']);
    assert.deepEqual(server('pw', randomBytes(32)).mechanisms, ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256']);
    assert.throws(() => server('pw').start('SCRAM-SHA-256-PLUS', 'p=tls-server-end-point,,n=,r=abc'), /invalid SASL authentication mechanism/);
    // "y": the client could bind but believes the server cannot: someone took PLUS out of the list.
    assert.throws(() => server('pw', randomBytes(32)).start('SCRAM-SHA-256', 'y,,n=,r=abc'), /channel binding negotiation error/);
    assert.doesNotThrow(() => server('pw').start('SCRAM-SHA-256', 'y,,n=,r=abc'));
    assert.throws(() => server('pw', randomBytes(32)).start('SCRAM-SHA-256-PLUS', 'n,,n=,r=abc'), /does not include channel binding data/);
    assert.throws(() => server('pw', randomBytes(32)).start('SCRAM-SHA-256', 'p=tls-server-end-point,,n=,r=abc'), /mechanism is not SCRAM-SHA-256-PLUS/);
  });

  it('refuses malformed messages with 08P01, never with a pass', () => {
    const bad = ['', 'n', 'n,', 'x,,n=,r=abc', 'n,a=admin,n=,r=abc', 'n,,m=ext,n=,r=abc', 'n,,r=abc', 'n,,n=,', 'n,,n=,r=', 'n,,n=,r=a,b'];
    for (const first of bad) {
      assert.throws(() => server('pw').start('SCRAM-SHA-256', first), ScramError, JSON.stringify(first));
    }
    const scram = server('pw');
    const serverFirst = scram.start('SCRAM-SHA-256', 'n,,n=,r=abc');
    const nonce = serverFirst.split(',')[0]?.slice(2);
    assert.throws(() => scram.finish(`c=biws,r=${nonce}`), /malformed/); // no proof: and the exchange is over
    for (const final of [`c=eSws,r=${nonce},p=${Buffer.alloc(32).toString('base64')}`, `c=biws,r=abc,p=${Buffer.alloc(32).toString('base64')}`, `c=biws,r=${nonce},p=AAAA`]) {
      const again = server('pw');
      const first = again.start('SCRAM-SHA-256', 'n,,n=,r=abc');
      assert.throws(() => again.finish(final.replace(nonce ?? '', first.split(',')[0]?.slice(2) ?? '')), ScramError, final);
    }
    assert.throws(() => scram.finish('c=biws'), (e: ScramError) => /out of order/.test(e.detail ?? ''), 'one final message only');
  });
});

describe('certificateHash (tls-server-end-point)', () => {
  it('hashes pgs\'s own certificate with SHA-256, its signature\'s hash', async () => {
    const { certPem: cert } = await generateSelfSigned('example.test');
    const der = new X509Certificate(cert).raw;
    assert.deepEqual(certificateHash(der), createHash('sha256').update(der).digest());
  });

  it('is undefined for bytes that are not a certificate', () => {
    assert.equal(certificateHash(Buffer.from('not a certificate')), undefined);
    assert.equal(certificateHash(Buffer.alloc(0)), undefined);
  });
});

describe('preparePassword (SASLprep as PostgreSQL applies it)', () => {
  it('keeps ASCII as it is, maps non-ASCII spaces and soft hyphens, normalises (NFKC)', () => {
    assert.equal(preparePassword('pass word\t'), 'pass word\t');
    assert.equal(preparePassword('I\u00ADX'), 'IX'); // RFC 4013's own example: SOFT HYPHEN maps to nothing
    assert.equal(preparePassword('a\u00A0b'), 'a b'); // NO-BREAK SPACE is a space
    assert.equal(preparePassword('\u00AA'), 'a'); // NFKC
    assert.equal(preparePassword('\u2168'), 'IX'); // ROMAN NUMERAL NINE
  });

  it('uses the password as given where SASLprep refuses it (as PostgreSQL does)', () => {
    assert.equal(preparePassword('a\u0007b\u00e9'), 'a\u0007b\u00e9'); // a control character: prohibited
    assert.equal(preparePassword('\u0627\u0031'), '\u0627\u0031'); // RandAL then L: bad bidirectional text
  });

  it('gives the verifier PostgreSQL computes for the same password', () => {
    const salt = Buffer.from('0123456789abcdef');
    const verifier = parseVerifier(scramVerifier('\u2168 pa\u00ADss', salt));
    const salted = pbkdf2Sync('IX pass', salt, 4096, 32, 'sha256');
    const storedKey = createHash('sha256').update(createHmac('sha256', salted).update('Client Key').digest()).digest();
    assert.deepEqual(verifier?.storedKey, storedKey);
  });
});
