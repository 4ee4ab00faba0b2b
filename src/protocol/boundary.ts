/**
 * Where typed messages end in a byte stream (1 type byte, Int32 length that
 * counts itself, payload), without keeping them: the router forwards the
 * server's bytes as they come and needs to know only whether it stands between
 * two messages, so that a FATAL ErrorResponse of its own never lands inside
 * one of the server's. Pure: chunks in, offsets out.
 */
const HEADER = 5;

export class MessageBoundaries {
  /** Payload bytes of the current message not yet seen. */
  private remaining = 0;
  /** Header bytes of the next message seen so far (0 to 4). */
  private headerSeen = 0;
  private readonly header = Buffer.alloc(HEADER);
  /** Set when a length field is impossible (under 4): the stream is not the protocol. */
  broken = false;

  /** `onType`: told each message's type as its header is read. */
  constructor(private readonly onType?: (type: number) => void) {}

  get atBoundary(): boolean {
    return this.remaining === 0 && this.headerSeen === 0;
  }

  /**
   * Takes in `chunk` and returns how many of its bytes were taken: all of
   * them, or with `stopAtBoundary` only up to the first point between two
   * messages (0 when the stream is between two messages already).
   */
  consume(chunk: Buffer, stopAtBoundary = false): number {
    let at = 0;
    while (at < chunk.length) {
      if (stopAtBoundary && this.atBoundary) return at;
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, chunk.length - at);
        this.remaining -= take;
        at += take;
        continue;
      }
      const take = Math.min(HEADER - this.headerSeen, chunk.length - at);
      chunk.copy(this.header, this.headerSeen, at, at + take);
      this.headerSeen += take;
      at += take;
      if (this.headerSeen === HEADER) {
        const length = this.header.readInt32BE(1);
        if (length < 4) {
          this.broken = true;
          return chunk.length;
        }
        this.remaining = length - 4;
        this.headerSeen = 0;
        this.onType?.(this.header[0] as number);
      }
    }
    return at;
  }
}
