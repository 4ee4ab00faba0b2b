import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import { preparePassword } from './saslprep.js';

/**
 * The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL runs
 * it: no channel binding (`n,,`), an empty user name (the server takes the
 * start-up packet's). Pure: strings in, strings out; the caller frames them
 * as SASLInitialResponse / SASLResponse.
 * https://www.postgresql.org/docs/current/sasl-authentication.html
 */
export const SCRAM_SHA_256 = 'SCRAM-SHA-256';
const GS2_HEADER = 'n,,';

export class ScramClient {
  private readonly password: string;
  private readonly clientNonce: string;
  private serverSignature: Buffer | undefined;

  private readonly user: string;

  /** `user`: PostgreSQL ignores it (the start-up packet names the role), so it is empty unless a test vector needs one. */
  constructor(password: string, clientNonce = randomBytes(18).toString('base64'), user = '') {
    this.password = password;
    this.clientNonce = clientNonce;
    this.user = user;
  }

  private get clientFirstBare(): string {
    return `n=${this.user},r=${this.clientNonce}`;
  }

  /** The SASLInitialResponse data. */
  clientFirst(): string {
    return GS2_HEADER + this.clientFirstBare;
  }

  /** From the server-first message (`r=...,s=...,i=...`) to the client-final message with the proof. */
  clientFinal(serverFirst: string): string {
    const attrs = parseAttributes(serverFirst);
    const nonce = attrs.get('r');
    const salt = attrs.get('s');
    const iterations = Number(attrs.get('i'));
    if (!nonce || !nonce.startsWith(this.clientNonce) || nonce.length === this.clientNonce.length) throw new Error('SCRAM: the server nonce does not extend ours');
    if (!salt || !Number.isInteger(iterations) || iterations < 1 || iterations > 10_000_000) throw new Error('SCRAM: a bad salt or iteration count from the server');
    const salted = pbkdf2Sync(preparePassword(this.password), Buffer.from(salt, 'base64'), iterations, 32, 'sha256');
    const clientKey = hmac(salted, 'Client Key');
    const storedKey = createHash('sha256').update(clientKey).digest();
    const withoutProof = `c=${Buffer.from(GS2_HEADER).toString('base64')},r=${nonce}`;
    const authMessage = `${this.clientFirstBare},${serverFirst},${withoutProof}`;
    const signature = hmac(storedKey, authMessage);
    const proof = Buffer.alloc(clientKey.length);
    for (let i = 0; i < proof.length; i++) proof[i] = (clientKey[i] as number) ^ (signature[i] as number);
    this.serverSignature = hmac(hmac(salted, 'Server Key'), authMessage);
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  /** Checks the server-final message (`v=...`): the server knew the verifier too. */
  verifyServerFinal(serverFinal: string): void {
    const attrs = parseAttributes(serverFinal);
    if (attrs.has('e')) throw new Error(`SCRAM: the server refused: ${attrs.get('e')}`);
    const v = attrs.get('v');
    if (!this.serverSignature || !v) throw new Error('SCRAM: no server signature');
    const got = Buffer.from(v, 'base64');
    if (got.length !== this.serverSignature.length || !timingSafeEqual(got, this.serverSignature)) throw new Error('SCRAM: the server signature does not match');
  }
}

function hmac(key: Buffer, text: string): Buffer {
  return createHmac('sha256', key).update(text).digest();
}

function parseAttributes(message: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of message.split(',')) {
    const eq = part.indexOf('=');
    if (eq === 1) out.set(part[0] as string, part.slice(2));
  }
  return out;
}
