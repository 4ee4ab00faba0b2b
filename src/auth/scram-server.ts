import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ScramVerifier } from './scram.js';

/**
 * The server side of SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677,
 * channel binding `tls-server-end-point` from RFC 5929), checked against a
 * verifier in PostgreSQL's stored format: the password itself is never seen.
 * It behaves as PostgreSQL's auth-scram.c does towards a client: the same
 * mechanisms, the same refusals, and for a role without a verifier a mock
 * exchange with a salt derived from the role name, so that the answer to an
 * unknown role looks like the answer to a wrong password.
 * Pure: strings in, strings out; the router frames them.
 */
export const SCRAM_SHA_256 = 'SCRAM-SHA-256';
export const SCRAM_SHA_256_PLUS = 'SCRAM-SHA-256-PLUS';
export const TLS_SERVER_END_POINT = 'tls-server-end-point';
/** PostgreSQL's default iteration count, used for the mock exchange. */
const MOCK_ITERATIONS = 4096;
const NONCE_BYTES = 18;

/** A broken or refused SCRAM exchange: `code` is the SQLSTATE PostgreSQL sends for it. */
export class ScramError extends Error {
  readonly code: string;
  readonly detail: string | undefined;
  constructor(code: string, message: string, detail?: string) {
    super(message);
    this.name = 'ScramError';
    this.code = code;
    this.detail = detail;
  }
}

function malformed(detail: string): ScramError {
  return new ScramError('08P01', 'malformed SCRAM message', detail);
}

export interface ScramServerOptions {
  /** The role's verifier; undefined runs the mock exchange, which always fails. */
  verifier: ScramVerifier | undefined;
  /** The mock exchange's salt (stable per role, so that it cannot be told from a real one). */
  mockSalt: Buffer;
  /** The hash of the server certificate (tls-server-end-point); undefined: SCRAM-SHA-256-PLUS is not offered. */
  certificateHash: Buffer | undefined;
}

export class ScramServer {
  private readonly verifier: ScramVerifier | undefined;
  private readonly mockSalt: Buffer;
  private readonly certificateHash: Buffer | undefined;
  private state: 'initial' | 'continue' | 'done' = 'initial';
  private gs2Header = '';
  private plus = false;
  private clientFirstBare = '';
  private serverFirst = '';
  private nonce = '';

  constructor(options: ScramServerOptions) {
    this.verifier = options.verifier;
    this.mockSalt = options.mockSalt;
    this.certificateHash = options.certificateHash;
  }

  /** What AuthenticationSASL lists, preferred first. */
  get mechanisms(): string[] {
    return this.certificateHash ? [SCRAM_SHA_256_PLUS, SCRAM_SHA_256] : [SCRAM_SHA_256];
  }

  /** The SASLInitialResponse: the chosen mechanism and the client-first message. Returns the server-first message. */
  start(mechanism: string, clientFirst: string): string {
    if (this.state !== 'initial') throw malformed('a second client-first message');
    if (!this.mechanisms.includes(mechanism)) throw new ScramError('08P01', 'client selected an invalid SASL authentication mechanism');
    this.plus = mechanism === SCRAM_SHA_256_PLUS;
    const { header, bare } = this.readGs2(clientFirst);
    this.gs2Header = header;
    this.clientFirstBare = bare;
    const attrs = bare.split(',');
    if (attrs[0]?.startsWith('m=')) throw new ScramError('08P01', 'client requires an unsupported SCRAM extension');
    // n=: PostgreSQL ignores the user name here (the start-up packet names the role).
    if (!attrs[0]?.startsWith('n=')) throw malformed('expected attribute "n"');
    const clientNonce = attrs[1]?.startsWith('r=') ? attrs[1].slice(2) : undefined;
    if (clientNonce === undefined) throw malformed('expected attribute "r"');
    if (clientNonce.length === 0 || !/^[\x21-\x2b\x2d-\x7e]+$/.test(clientNonce)) throw malformed('the client nonce is not printable');
    if (attrs.slice(2).some((attr) => !/^[A-Za-z]=/.test(attr))) throw malformed('an attribute was expected');
    this.nonce = clientNonce + randomBytes(NONCE_BYTES).toString('base64');
    const salt = this.verifier?.salt ?? this.mockSalt;
    const iterations = this.verifier?.iterations ?? MOCK_ITERATIONS;
    this.serverFirst = `r=${this.nonce},s=${salt.toString('base64')},i=${iterations}`;
    this.state = 'continue';
    return this.serverFirst;
  }

  /**
   * The client-final message. Returns the server-final message (`v=…`) when
   * the proof is right; undefined when it is not (a wrong password, or a role
   * without a verifier). Throws ScramError on a broken exchange.
   */
  finish(clientFinal: string): string | undefined {
    if (this.state !== 'continue') throw malformed('the client-final message came out of order');
    this.state = 'done';
    const proofAt = clientFinal.lastIndexOf(',p=');
    if (proofAt < 0) throw malformed('expected attribute "p"');
    const withoutProof = clientFinal.slice(0, proofAt);
    const attrs = withoutProof.split(',');
    if (!attrs[0]?.startsWith('c=')) throw malformed('expected attribute "c"');
    const binding = Buffer.from(attrs[0].slice(2), 'base64');
    const expected = Buffer.concat([Buffer.from(this.gs2Header, 'utf8'), this.plus ? (this.certificateHash as Buffer) : Buffer.alloc(0)]);
    if (!binding.equals(expected)) {
      if (this.plus) throw new ScramError('08P01', 'SCRAM channel binding check failed');
      throw malformed('unexpected SCRAM channel-binding attribute in client-final-message');
    }
    if (attrs[1] !== `r=${this.nonce}`) throw malformed('the nonce does not match');
    if (attrs.slice(2).some((attr) => !/^[A-Za-z]=/.test(attr))) throw malformed('an attribute was expected');
    const proofText = clientFinal.slice(proofAt + 3);
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(proofText)) throw malformed('the proof is not base64');
    const proof = Buffer.from(proofText, 'base64');
    if (proof.length !== 32) throw malformed('the proof has the wrong length');
    const verifier = this.verifier;
    if (!verifier) return undefined;
    const authMessage = `${this.clientFirstBare},${this.serverFirst},${withoutProof}`;
    const signature = hmac(verifier.storedKey, authMessage);
    const clientKey = Buffer.alloc(32);
    for (let i = 0; i < 32; i++) clientKey[i] = (proof[i] as number) ^ (signature[i] as number);
    const computed = createHash('sha256').update(clientKey).digest();
    if (!timingSafeEqual(computed, verifier.storedKey)) return undefined;
    return `v=${hmac(verifier.serverKey, authMessage).toString('base64')}`;
  }

  /** Splits `gs2-header client-first-bare`; checks the channel-binding flag against the mechanism. */
  private readGs2(message: string): { header: string; bare: string } {
    const first = message.indexOf(',');
    const second = first < 0 ? -1 : message.indexOf(',', first + 1);
    if (second < 0) throw malformed('the GS2 header is incomplete');
    const flag = message.slice(0, first);
    const authzid = message.slice(first + 1, second);
    if (flag === 'n') {
      if (this.plus) throw new ScramError('08P01', 'client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data');
    } else if (flag === 'y') {
      if (this.plus) throw new ScramError('08P01', 'client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data');
      // The client can bind but thinks we cannot: we offered it, so something in between removed it.
      if (this.certificateHash) throw new ScramError('08P01', 'SCRAM channel binding negotiation error', 'The client supports SCRAM channel binding but thinks the server does not. However, this server does support channel binding.');
    } else if (flag.startsWith('p=')) {
      if (!this.plus) throw new ScramError('08P01', 'client uses SCRAM channel binding, but the mechanism is not SCRAM-SHA-256-PLUS');
      if (flag.slice(2) !== TLS_SERVER_END_POINT) throw new ScramError('08P01', `unsupported SCRAM channel-binding type "${flag.slice(2)}"`);
    } else {
      throw malformed(`unexpected channel-binding flag "${flag}"`);
    }
    if (authzid !== '') throw new ScramError('0A000', 'client uses authorization identity, but it is not supported');
    return { header: message.slice(0, second + 1), bare: message.slice(second + 1) };
  }
}

function hmac(key: Buffer, text: string): Buffer {
  return createHmac('sha256', key).update(text).digest();
}

/** The mock salt for a role: the same every time for the same secret, tenant and role; no one can tell it from a real one. */
export function mockSalt(secret: Buffer, tenant: string, role: string): Buffer {
  return createHmac('sha256', secret).update(`${tenant}\0${role}`).digest().subarray(0, 16);
}

/**
 * The `tls-server-end-point` channel-binding data of a DER certificate (RFC
 * 5929 §4.1): its hash with the hash function of its signature algorithm,
 * SHA-256 in place of MD5 and SHA-1. Undefined for an algorithm with no such
 * hash (Ed25519): PostgreSQL offers no channel binding then either.
 */
export function certificateHash(der: Buffer): Buffer | undefined {
  const algorithm = signatureHash(der);
  return algorithm ? createHash(algorithm).update(der).digest() : undefined;
}

const SIGNATURE_HASH: Record<string, string> = {
  '1.2.840.113549.1.1.4': 'sha256', // md5WithRSAEncryption
  '1.2.840.113549.1.1.5': 'sha256', // sha1WithRSAEncryption
  '1.2.840.113549.1.1.14': 'sha224',
  '1.2.840.10045.4.3.1': 'sha224',
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.2.840.10045.4.1': 'sha256', // ecdsa-with-SHA1
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
};

/** The hash of the certificate's signatureAlgorithm (the second element of the outer SEQUENCE). */
function signatureHash(der: Buffer): string | undefined {
  try {
    const outer = readTlv(der, 0);
    const tbs = readTlv(der, outer.contentStart);
    const algorithm = readTlv(der, tbs.end);
    const oid = readTlv(der, algorithm.contentStart);
    if (oid.tag !== 0x06) return undefined;
    return SIGNATURE_HASH[decodeOid(der.subarray(oid.contentStart, oid.end))];
  } catch {
    return undefined;
  }
}

function readTlv(der: Buffer, at: number): { tag: number; contentStart: number; end: number } {
  const tag = der[at];
  let length = der[at + 1];
  if (tag === undefined || length === undefined) throw new Error('truncated DER');
  let contentStart = at + 2;
  if (length & 0x80) {
    const bytes = length & 0x7f;
    if (bytes < 1 || bytes > 4) throw new Error('bad DER length');
    length = 0;
    for (let i = 0; i < bytes; i++) length = length * 256 + (der[contentStart + i] as number);
    contentStart += bytes;
  }
  const end = contentStart + length;
  if (end > der.length) throw new Error('truncated DER');
  return { tag, contentStart, end };
}

function decodeOid(bytes: Buffer): string {
  const first = bytes[0] ?? 0;
  const parts = [Math.floor(first / 40), first % 40];
  let value = 0;
  for (const byte of bytes.subarray(1)) {
    value = value * 128 + (byte & 0x7f);
    if ((byte & 0x80) === 0) {
      parts.push(value);
      value = 0;
    }
  }
  return parts.join('.');
}
