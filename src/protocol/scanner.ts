/**
 * A stream of typed messages (1 type byte, Int32 length that counts itself,
 * payload) split as it comes, without holding what it passes on. At each
 * message's header the handler says what to do with it: pass its bytes on as
 * they are (streamed, however long), drop it, or have it whole (to read or
 * rewrite; it then pushes what goes on in its place). What goes on collects
 * in an `Output`, in stream order; passed bytes that follow each other in one
 * chunk stay one slice of it, so a chunk of passed messages costs no copy.
 */
import { typed } from './messages.js';

const EMPTY = Buffer.alloc(0);

export const PASS = 0;
export const DROP = 1;
export const WHOLE = 2;
export type Verdict = typeof PASS | typeof DROP | typeof WHOLE;

export interface ScanHandler {
  /** At a message's header: what becomes of it. */
  verdict(type: number, length: number): Verdict;
  /**
   * A WHOLE message: its payload (a view of the stream's bytes, valid during
   * the call). Returns true to have the message passed on as it came (without
   * a copy when it lay in one chunk), else it pushed what goes in its place.
   */
  whole(type: number, payload: Buffer, out: Output): boolean;
  /** After a message's last byte, whatever its verdict. */
  ended(type: number, out: Output): void;
  /**
   * A WHOLE message longer than the scanner's `maxWhole`: only its first
   * `headBytes` are read (`head`, of a payload of `length`). `pass`: the
   * message goes on as it came; `replaced`: the handler pushed a new header and
   * head (its length counting the rest) and the rest follows as it comes;
   * `drop`: nothing more of it goes on. Without this method such a message is
   * read whole, however long.
   */
  head?(type: number, length: number, head: Buffer, out: Output): 'pass' | 'replaced' | 'drop';
}

/** Bytes to send on: slices of the chunk being scanned and buffers pushed in between. */
export class Output {
  private parts: Buffer[] = [];
  private chunk: Buffer | undefined;
  private runStart = -1;
  /** Where in the chunk the scan stands: a push cuts the passed run here. */
  at = 0;

  begin(chunk: Buffer): void {
    this.chunk = chunk;
    this.runStart = -1;
    this.at = 0;
  }

  /** Passed bytes from `at` on belong to the output (until the next cut). */
  run(at: number): void {
    if (this.runStart < 0) this.runStart = at;
  }

  cut(at: number): void {
    if (this.runStart >= 0 && at > this.runStart) this.parts.push((this.chunk as Buffer).subarray(this.runStart, at));
    this.runStart = -1;
  }

  push(bytes: Buffer): void {
    this.cut(this.at);
    this.parts.push(bytes);
  }

  /** Ends the chunk; returns everything to send on (undefined: nothing). */
  take(): Buffer | undefined {
    this.cut(this.chunk?.length ?? 0);
    this.chunk = undefined;
    const parts = this.parts;
    if (parts.length === 0) return undefined;
    this.parts = [];
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }
}

export class MessageScanner {
  private readonly header = Buffer.alloc(5);
  private headerSeen = 0;
  private remaining = 0;
  private inMessage = false;
  private type = 0;
  private verdict: Verdict = PASS;
  private parts: Buffer[] = [];
  /** Where the current message began in the chunk being scanned (-1: in an earlier one). */
  private startInChunk = -1;
  /** The current WHOLE message is too long to hold: only its head is read. */
  private headOnly = false;
  private headSeen = 0;
  /** A length under 4 was read: the stream is not the protocol, and from then on it is passed on as it is. */
  broken = false;

  /** `maxWhole`: the longest payload read whole (with `handler.head`); `headBytes`: how much of a longer one is. */
  constructor(private readonly handler: ScanHandler, private readonly maxWhole = Infinity, private readonly headBytes = 65_536) {}

  get atBoundary(): boolean {
    return !this.inMessage && this.headerSeen === 0;
  }

  /** Scans `chunk` into `out` (begun on it by the caller). */
  scan(chunk: Buffer, out: Output): void {
    let at = 0;
    this.startInChunk = -1;
    const length = chunk.length;
    if (this.broken) {
      out.run(0);
      return;
    }
    while (at < length) {
      if (this.inMessage) {
        let take = Math.min(this.remaining, length - at);
        if (this.headOnly) take = Math.min(take, this.headBytes - this.headSeen);
        if (this.verdict === PASS) out.run(at);
        else if (this.verdict === WHOLE) this.parts.push(chunk.subarray(at, at + take));
        at += take;
        this.remaining -= take;
        if (this.headOnly) {
          this.headSeen += take;
          if (this.headSeen === this.headBytes) this.headRead(out, at);
        }
        if (this.remaining === 0) this.finish(out, at);
        continue;
      }
      const start = at;
      const take = Math.min(5 - this.headerSeen, length - at);
      const whole = this.headerSeen === 0 && take === 5;
      if (!whole) chunk.copy(this.header, this.headerSeen, at, at + take);
      this.headerSeen += take;
      at += take;
      if (this.headerSeen < 5) {
        out.cut(start);
        continue;
      }
      this.headerSeen = 0;
      const source = whole ? chunk : this.header;
      const offset = whole ? start : 0;
      const type = source[offset] as number;
      const size = source.readInt32BE(offset + 1);
      if (size < 4) {
        this.broken = true;
        out.cut(start);
        if (!whole) {
          out.at = start;
          out.push(Buffer.from(this.header.subarray(0, 5)));
        }
        out.run(whole ? start : at);
        return;
      }
      this.type = type;
      this.startInChunk = whole ? start : -1;
      this.verdict = this.handler.verdict(type, size);
      this.remaining = size - 4;
      this.inMessage = true;
      if (this.verdict === PASS) {
        if (whole) {
          out.run(start);
        } else {
          out.cut(start);
          out.at = start;
          out.push(Buffer.from(this.header));
        }
      } else {
        out.cut(start);
        this.parts = [];
        this.headOnly = this.verdict === WHOLE && this.remaining > this.maxWhole && this.handler.head !== undefined;
        this.headSeen = 0;
      }
      if (this.remaining === 0) this.finish(out, at);
    }
  }

  /** The head of a message too long to hold was read: the handler decides what becomes of it and the rest. */
  private headRead(out: Output, at: number): void {
    this.headOnly = false;
    const head = Buffer.concat(this.parts);
    this.parts = [];
    out.at = at;
    const length = head.length + this.remaining;
    const what = (this.handler.head as NonNullable<ScanHandler['head']>)(this.type, length, head, out);
    if (what === 'pass') {
      const header = Buffer.allocUnsafe(5);
      header[0] = this.type;
      header.writeInt32BE(length + 4, 1);
      out.push(Buffer.concat([header, head]));
    }
    this.verdict = what === 'drop' ? DROP : PASS;
  }

  private finish(out: Output, at: number): void {
    this.inMessage = false;
    out.at = at;
    if (this.verdict === WHOLE) {
      const payload = this.parts.length === 1 ? (this.parts[0] as Buffer) : this.parts.length === 0 ? EMPTY : Buffer.concat(this.parts);
      this.parts = [];
      if (this.handler.whole(this.type, payload, out)) {
        if (this.startInChunk >= 0) out.run(this.startInChunk);
        else out.push(typed(this.type, Buffer.from(payload)));
      }
    } else if (this.verdict === DROP) {
      out.cut(at);
    }
    this.handler.ended(this.type, out);
  }
}
