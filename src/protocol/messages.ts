import { Backend, Frontend } from './codes.js';
import { CANCEL_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE } from './constants.js';
import { encodeStartup } from './startup.js';

/**
 * Pure codecs: values in, Buffers out, and Buffers in, tagged values out.
 * Nothing here touches a socket.
 */

export function serializeStartup(params: Record<string, string>, version = PROTOCOL_3_0): Buffer {
  return encodeStartup(version, new Map(Object.entries(params)));
}

export function serializeSSLRequest(): Buffer {
  const out = Buffer.allocUnsafe(8);
  out.writeInt32BE(8, 0);
  out.writeInt32BE(SSL_REQUEST_CODE, 4);
  return out;
}

export function serializeCancelRequest(pid: number, secret: Buffer): Buffer {
  const out = Buffer.allocUnsafe(12 + secret.length);
  out.writeInt32BE(out.length, 0);
  out.writeInt32BE(CANCEL_REQUEST_CODE, 4);
  out.writeInt32BE(pid, 8);
  secret.copy(out, 12);
  return out;
}

export function serializeQuery(sql: string): Buffer {
  return typed(Frontend.Query, Buffer.from(`${sql}\0`, 'utf8'));
}

/** SASLInitialResponse ('p'): mechanism name, Int32 length of the data, the data. */
export function serializeSASLInitialResponse(mechanism: string, data: string): Buffer {
  const name = Buffer.from(`${mechanism}\0`, 'utf8');
  const body = Buffer.from(data, 'utf8');
  const length = Buffer.allocUnsafe(4);
  length.writeInt32BE(body.length, 0);
  return typed(Frontend.SASLResponse, Buffer.concat([name, length, body]));
}

/** SASLResponse ('p'): the data alone. */
export function serializeSASLResponse(data: string): Buffer {
  return typed(Frontend.SASLResponse, Buffer.from(data, 'utf8'));
}

export function serializeTerminate(): Buffer {
  return typed(Frontend.Terminate, Buffer.alloc(0));
}

/** A typed message: 1 type byte, Int32 length (counting itself), payload. */
export function typed(type: number, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + payload.length);
  out[0] = type;
  out.writeInt32BE(4 + payload.length, 1);
  payload.copy(out, 5);
  return out;
}

/**
 * ErrorResponse / NoticeResponse fields: a list of (code byte, C string), ended
 * by a zero byte. Codes: S severity, V severity (not localized), C SQLSTATE, M message, D detail, H hint.
 */
export type ErrorFields = Partial<Record<string, string>>;

export function parseErrorFields(payload: Buffer): ErrorFields {
  const fields: ErrorFields = {};
  let offset = 0;
  while (offset < payload.length) {
    const code = payload[offset];
    if (code === 0 || code === undefined) break;
    const end = payload.indexOf(0, offset + 1);
    if (end < 0) break;
    fields[String.fromCharCode(code)] = payload.toString('utf8', offset + 1, end);
    offset = end + 1;
  }
  return fields;
}

export function serializeErrorResponse(fields: ErrorFields): Buffer {
  return serializeFields(Backend.ErrorResponse, fields);
}

/** NoticeResponse ('N'): a warning a client shows (psql prints it) without ending anything. */
export function serializeNoticeResponse(fields: ErrorFields): Buffer {
  return serializeFields(Backend.NoticeResponse, fields);
}

function serializeFields(type: number, fields: ErrorFields): Buffer {
  const parts: Buffer[] = [];
  for (const [code, value] of Object.entries(fields)) {
    if (value !== undefined) parts.push(Buffer.from(`${code}${value}\0`, 'utf8'));
  }
  parts.push(Buffer.from([0]));
  return typed(type, Buffer.concat(parts));
}

/** DataRow: Int16 column count, then per column Int32 length (-1 = NULL) and bytes. */
export function parseDataRow(payload: Buffer): (string | null)[] {
  if (payload.length < 2) throw new RangeError('DataRow shorter than its column count');
  const count = payload.readInt16BE(0);
  const values: (string | null)[] = [];
  let offset = 2;
  for (let i = 0; i < count; i++) {
    if (offset + 4 > payload.length) throw new RangeError(`DataRow ends before column ${i}`);
    const length = payload.readInt32BE(offset);
    offset += 4;
    if (length < 0) {
      values.push(null);
    } else {
      if (offset + length > payload.length) throw new RangeError(`DataRow column ${i} runs past the message`);
      values.push(payload.toString('utf8', offset, offset + length));
      offset += length;
    }
  }
  return values;
}

export interface Message {
  type: number;
  payload: Buffer;
}

/**
 * Splits a byte stream into typed messages. Chunks may cut a message anywhere;
 * a length outside 4..maxLength is a protocol violation.
 */
export class MessageReader {
  private buffer: Buffer = Buffer.alloc(0);
  private readonly maxLength: number;

  constructor(maxLength = 64 * 1024 * 1024) {
    this.maxLength = maxLength;
  }

  push(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
  }

  next(): Message | undefined {
    if (this.buffer.length < 5) return undefined;
    const length = this.buffer.readInt32BE(1);
    if (length < 4 || length > this.maxLength) {
      throw new RangeError(`message length ${length} out of range 4..${this.maxLength}`);
    }
    if (this.buffer.length < 1 + length) return undefined;
    const message = { type: this.buffer[0] as number, payload: this.buffer.subarray(5, 1 + length) };
    this.buffer = this.buffer.subarray(1 + length);
    return message;
  }

  /** The bytes received but not yet returned as messages; the reader is empty afterwards. */
  drain(): Buffer {
    const rest = this.buffer;
    this.buffer = Buffer.alloc(0);
    return rest;
  }
}
