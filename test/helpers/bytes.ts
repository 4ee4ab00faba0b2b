/**
 * An independent byte builder for expected values in protocol tests: written
 * from the protocol docs, sharing no code with src/protocol/.
 * https://www.postgresql.org/docs/current/protocol-message-formats.html
 */
export class Bytes {
  private readonly bytes: number[] = [];

  byte(value: number): this {
    this.bytes.push(value & 0xff);
    return this;
  }

  int16(value: number): this {
    return this.byte(value >> 8).byte(value);
  }

  int32(value: number): this {
    return this.byte(value >>> 24).byte(value >>> 16).byte(value >>> 8).byte(value);
  }

  ascii(text: string): this {
    for (const ch of text) this.byte(ch.charCodeAt(0));
    return this;
  }

  raw(data: Uint8Array): this {
    for (const b of data) this.byte(b);
    return this;
  }

  cstring(text: string): this {
    return this.raw(Buffer.from(text, 'utf8')).byte(0);
  }

  get length(): number {
    return this.bytes.length;
  }

  buffer(): Buffer {
    return Buffer.from(this.bytes);
  }

  /** A typed message: type byte, Int32 length counting itself, payload. */
  static typed(type: string, payload: Bytes): Buffer {
    return new Bytes().ascii(type).int32(4 + payload.length).raw(payload.buffer()).buffer();
  }

  /** An untyped start-up packet: Int32 length (counting itself), Int32 code, body. */
  static packet(code: number, body: Bytes = new Bytes()): Buffer {
    return new Bytes().int32(8 + body.length).int32(code).raw(body.buffer()).buffer();
  }
}
