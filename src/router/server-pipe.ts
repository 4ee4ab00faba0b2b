import type net from 'node:net';
import { BackendMessage } from '../protocol/constants.js';
import { MessageBoundaries } from '../protocol/boundary.js';
import { noticeBytes } from './client-messages.js';

/**
 * The server's bytes to a client whose session has a backend of its own (or a
 * kept one): passed as they come, with the boundaries between messages kept
 * track of, so that pgs's own messages (a WARNING, the FATAL of closeWith) can
 * go in between two of the server's, never inside one. Back-pressure: a slow
 * client pauses the server.
 */
export class ServerPipe {
  private readonly boundaries: MessageBoundaries;
  private pendingNotice: string | undefined;
  private closing: (() => void) | undefined;
  private counting = true;

  /** `onReadyForQuery`: at each ReadyForQuery passed. */
  constructor(private readonly client: net.Socket, onReadyForQuery: () => void) {
    this.boundaries = new MessageBoundaries((type) => {
      if (type === BackendMessage.ReadyForQuery && this.counting) onReadyForQuery();
    });
  }

  /** Bytes of the server's the client was sent already (what followed the start-up's ReadyForQuery): followed, not counted. */
  passed(bytes: Buffer): void {
    this.counting = false;
    this.boundaries.consume(bytes);
    this.counting = true;
  }

  /** The server's bytes, to the client: all of them, or, once closing, those up to the end of the message in flight. */
  fromServer(backend: net.Socket, chunk: Buffer): void {
    if (this.closing) {
      const taken = this.boundaries.consume(chunk, true);
      if (taken > 0) this.client.write(chunk.subarray(0, taken));
      if (this.boundaries.atBoundary || this.boundaries.broken) this.closing();
      return;
    }
    this.boundaries.consume(chunk);
    const flowing = this.client.write(chunk);
    if (this.pendingNotice !== undefined && this.boundaries.atBoundary) this.flushNotice();
    if (!flowing) {
      backend.pause();
      this.client.once('drain', () => backend.resume());
    }
  }

  /** A WARNING: now if the stream stands between messages, else right after the one in flight (a newer one replaces one not yet sent). */
  notify(message: string): void {
    this.pendingNotice = message;
    if (this.boundaries.atBoundary) this.flushNotice();
  }

  /** From now on the server's bytes go only up to the next boundary; `then` is called there (now, if the stream stands at one). */
  betweenMessages(then: () => void): void {
    this.closing = then;
    if (this.boundaries.atBoundary) then();
  }

  private flushNotice(): void {
    const message = this.pendingNotice;
    this.pendingNotice = undefined;
    if (message !== undefined && this.client.writable) this.client.write(noticeBytes(message));
  }
}
