import {
  CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, MAX_STARTUP_PACKET, MIN_STARTUP_PACKET, SSL_REQUEST_CODE,
} from './constants.js';

/**
 * The first packet of a connection, before any TLS, or the first packet inside
 * TLS. Untyped: Int32 length (counting itself), Int32 code, body.
 * https://www.postgresql.org/docs/current/protocol-message-formats.html
 */
export type FirstPacket =
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  /** A TLS record (ClientHello) straight away: libpq 17+ `sslnegotiation=direct`. Nothing is consumed. */
  | { kind: 'tls' }
  | { kind: 'cancel'; pid: number; secret: Buffer }
  | { kind: 'startup'; version: number; params: Map<string, string> }
  | { kind: 'invalid'; reason: string };

/** First byte of a TLS handshake record. */
export const TLS_HANDSHAKE_BYTE = 0x16;
/** Protocol 3.2 cancel secrets are 4 to 256 bytes (3.0: exactly 4). */
export const MAX_CANCEL_SECRET = 256;

/**
 * Decodes the first packet at the start of `buffer`. Returns undefined while
 * more bytes are needed, else the packet and how many bytes it took.
 */
export function decodeFirstPacket(buffer: Buffer): { packet: FirstPacket; length: number } | undefined {
  if (buffer.length === 0) return undefined;
  if (buffer[0] === TLS_HANDSHAKE_BYTE) return { packet: { kind: 'tls' }, length: 0 };
  if (buffer.length < 4) return undefined;
  const length = buffer.readInt32BE(0);
  if (length < MIN_STARTUP_PACKET || length > MAX_STARTUP_PACKET) {
    return { packet: { kind: 'invalid', reason: `start-up packet length ${length} outside ${MIN_STARTUP_PACKET}..${MAX_STARTUP_PACKET}` }, length: 0 };
  }
  if (buffer.length < length) return undefined;
  const packet = buffer.subarray(0, length);
  return { packet: decodeWhole(packet), length };
}

function decodeWhole(packet: Buffer): FirstPacket {
  const code = packet.readInt32BE(4);
  switch (code) {
    case SSL_REQUEST_CODE:
      return packet.length === 8 ? { kind: 'ssl' } : { kind: 'invalid', reason: 'SSLRequest with a body' };
    case GSSENC_REQUEST_CODE:
      return packet.length === 8 ? { kind: 'gssenc' } : { kind: 'invalid', reason: 'GSSENCRequest with a body' };
    case CANCEL_REQUEST_CODE: {
      const secretLength = packet.length - 12;
      if (secretLength < 4 || secretLength > MAX_CANCEL_SECRET) return { kind: 'invalid', reason: `CancelRequest secret of ${secretLength} bytes` };
      return { kind: 'cancel', pid: packet.readInt32BE(8), secret: Buffer.from(packet.subarray(12)) };
    }
    default:
      break;
  }
  const major = code >>> 16;
  if (major !== 3) return { kind: 'invalid', reason: `unsupported frontend protocol ${major}.${code & 0xffff}` };
  const params = new Map<string, string>();
  let offset = 8;
  for (;;) {
    if (offset >= packet.length) return { kind: 'invalid', reason: 'start-up parameters not terminated' };
    if (packet[offset] === 0) {
      if (offset !== packet.length - 1) return { kind: 'invalid', reason: 'bytes after the start-up parameters' };
      break;
    }
    const keyEnd = packet.indexOf(0, offset);
    if (keyEnd < 0) return { kind: 'invalid', reason: 'start-up parameter name not terminated' };
    const valueEnd = packet.indexOf(0, keyEnd + 1);
    if (valueEnd < 0) return { kind: 'invalid', reason: 'start-up parameter value not terminated' };
    params.set(packet.toString('utf8', offset, keyEnd), packet.toString('utf8', keyEnd + 1, valueEnd));
    offset = valueEnd + 1;
  }
  if (!params.get('user')) return { kind: 'invalid', reason: 'no user name in the start-up packet' };
  return { kind: 'startup', version: code, params };
}

/** Re-encodes a StartupMessage (after the router changed its parameters). */
export function encodeStartup(version: number, params: Map<string, string>): Buffer {
  const parts: Buffer[] = [];
  for (const [key, value] of params) parts.push(Buffer.from(`${key}\0${value}\0`, 'utf8'));
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  const out = Buffer.allocUnsafe(8 + body.length);
  out.writeInt32BE(out.length, 0);
  out.writeInt32BE(version, 4);
  body.copy(out, 8);
  return out;
}

/**
 * `options=endpoint=<name>` (Neon's convention) names the tenant for clients
 * that send no SNI. Returns the name and the options without that token, so
 * that the server never sees it (it would refuse an unknown option).
 * Tokens are split as PostgreSQL's pg_split_opts does: on white space, with a
 * backslash taking the next character literally.
 */
export function takeEndpointOption(options: string | undefined): { endpoint?: string; rest: string | undefined } {
  if (options === undefined) return { rest: undefined };
  let endpoint: string | undefined;
  const kept: string[] = [];
  for (const token of splitOptions(options)) {
    const match = /^(?:--)?endpoint=(.*)$/s.exec(token);
    if (match) endpoint = match[1];
    else kept.push(token.replace(/[\\\s]/g, (c) => `\\${c}`));
  }
  return { endpoint, rest: kept.length > 0 ? kept.join(' ') : undefined };
}

export function splitOptions(options: string): string[] {
  const tokens: string[] = [];
  let current = '';
  let inToken = false;
  for (let i = 0; i < options.length; i++) {
    const c = options[i] as string;
    if (/\s/.test(c)) {
      if (inToken) tokens.push(current);
      current = '';
      inToken = false;
    } else if (c === '\\' && i + 1 < options.length) {
      current += options[++i];
      inToken = true;
    } else {
      current += c;
      inToken = true;
    }
  }
  if (inToken) tokens.push(current);
  return tokens;
}
