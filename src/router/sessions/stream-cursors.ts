import { TxStatus } from '../../protocol/codes.js';
import { BackendMessage } from '../../protocol/constants.js';
import { DROP, MessageScanner, Output, WHOLE } from '../../protocol/scanner.js';
import { keepParameterStatus } from './parameter-status.js';

/** A message header (type byte, Int32 length) gathered across chunks. */
class Header {
  private readonly bytes = Buffer.alloc(5);
  seen = 0;

  /** Takes what it still needs from `chunk` at `at`; returns how many bytes it took. */
  take(chunk: Buffer, at: number): number {
    const n = Math.min(5 - this.seen, chunk.length - at);
    chunk.copy(this.bytes, this.seen, at, at + n);
    this.seen += n;
    return n;
  }

  get complete(): boolean {
    return this.seen === 5;
  }

  /** The type and the length (which counts itself), and the header starts over. */
  finish(): { type: number; length: number } {
    this.seen = 0;
    return { type: this.bytes[0] as number, length: this.bytes.readInt32BE(1) };
  }
}

/** Message boundaries of the client's stream, with each message's type; the part of a Query or Parse in the same chunk goes to `onSql`. */
export class ClientCursor {
  private remaining = 0;
  private readonly header = new Header();
  broken = false;

  constructor(private readonly onSql: (sql: Buffer) => void) {}

  get atBoundary(): boolean {
    return this.remaining === 0 && this.header.seen === 0;
  }

  /** Returns the offset where `onMessage` said stop (false) at a message's start, else the chunk's length. */
  walk(chunk: Buffer, onMessage: (type: number) => boolean): number {
    let at = 0;
    while (at < chunk.length) {
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, chunk.length - at);
        this.remaining -= take;
        at += take;
        continue;
      }
      const start = at;
      const whole = this.header.seen === 0; // the header starts in this chunk
      at += this.header.take(chunk, at);
      if (!this.header.complete) continue;
      const { type, length } = this.header.finish();
      if (length < 4) {
        this.broken = true;
        return chunk.length;
      }
      this.remaining = length - 4;
      if ((type === 0x51 || type === 0x50) && this.remaining > 0) this.onSql(chunk.subarray(at, Math.min(chunk.length, at + this.remaining)));
      if (!onMessage(type)) {
        // Part of this message went on with the previous chunk: the stream is no longer whole.
        if (!whole) this.broken = true;
        return whole ? start : 0;
      }
    }
    return at;
  }
}

/**
 * Message boundaries of the server's stream, framed by the protocol's scanner:
 * ParameterStatus messages are read into `params`, ReadyForQuery's status
 * reported; every other message is skipped unread (the bytes themselves go to
 * the client by another path).
 */
export class ServerCursor {
  private readonly scanner: MessageScanner;
  /** The scanner's output, never used: nothing is passed on from here. */
  private readonly out = new Output();

  constructor(params: Map<string, string>, onReady: (status: number) => void) {
    this.scanner = new MessageScanner({
      verdict: (type) => (type === BackendMessage.ReadyForQuery || type === BackendMessage.ParameterStatus ? WHOLE : DROP),
      whole: (type, payload) => {
        if (type === BackendMessage.ReadyForQuery) onReady(payload[0] ?? TxStatus.Idle);
        else keepParameterStatus(params, payload);
        return false;
      },
      ended: () => undefined,
    });
  }

  get atBoundary(): boolean {
    return this.scanner.atBoundary;
  }

  /** A length under 4 was read: the stream is not the protocol (and is not read any further). */
  get broken(): boolean {
    return this.scanner.broken;
  }

  walk(chunk: Buffer): void {
    this.out.begin(chunk);
    this.scanner.scan(chunk, this.out);
    this.out.take();
  }
}
