import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { preparePassword } from './saslprep.js';

/**
 * A SCRAM-SHA-256 verifier in PostgreSQL's stored format (RFC 5802/7677):
 * `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
 * pgs sends the verifier, never the password, so no server log can hold it.
 * The password goes through SASLprep first, as PostgreSQL's does.
 */
export const SCRAM_ITERATIONS = 4096;

export function scramVerifier(password: string, salt: Buffer = randomBytes(16), iterations = SCRAM_ITERATIONS): string {
  const salted = pbkdf2Sync(preparePassword(password), salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

const PASSWORD_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
export const GENERATED_PASSWORD_LENGTH = 32;

/** 32 characters from a 62-letter alphabet: about 190 bits, and safe in a URL unescaped. */
export function generatePassword(length = GENERATED_PASSWORD_LENGTH): string {
  const out: string[] = [];
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      // 248 = 4 * 62: reject the tail so that every letter is equally likely.
      if (byte < 248 && out.length < length) out.push(PASSWORD_ALPHABET[byte % 62] as string);
    }
  }
  return out.join('');
}

export interface ScramVerifier {
  iterations: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

/** A verifier in PostgreSQL's stored format, or undefined for anything else (an MD5 hash, no password). */
export function parseVerifier(text: string | null | undefined): ScramVerifier | undefined {
  const match = /^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/.exec(text ?? '');
  if (!match) return undefined;
  const iterations = Number(match[1]);
  const storedKey = Buffer.from(match[3] as string, 'base64');
  const serverKey = Buffer.from(match[4] as string, 'base64');
  if (!Number.isSafeInteger(iterations) || iterations < 1 || storedKey.length !== 32 || serverKey.length !== 32) return undefined;
  return { iterations, salt: Buffer.from(match[2] as string, 'base64'), storedKey, serverKey };
}
