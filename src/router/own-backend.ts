import net from 'node:net';
import type { Log } from '../core/log.js';
import { BackendMessage } from '../protocol/constants.js';
import { MessageReader, parseErrorFields, typed } from '../protocol/messages.js';
import type { ClientSide, ServerSide } from './client-side.js';
import { noticeBytes } from './client-messages.js';
import type { TenantRoute } from './contract.js';
import type { ServerAccess } from './server-access.js';
import { ServerPipe } from './server-pipe.js';
import { closeServerSocket } from './server-sessions.js';
import { ServerFull, serverHasNoSlot } from './server-slots.js';

/**
 * A backend of the client's own on a server on this host (session mode without
 * reuse, or a start-up a kept session cannot reproduce): the client's start-up
 * packet is relayed as it came (the router authenticated the client already:
 * the server trusts its socket), the server's start-up is passed back with its
 * BackendKeyData replaced by the router's, and from ReadyForQuery on the two
 * are piped (server-pipe.ts).
 */
export class OwnBackend implements ServerSide {
  /** The connection now (a new one for each try when the server had no slot). */
  private backend: net.Socket | undefined;
  private pipe: ServerPipe | undefined;
  /** The server's first answer came: the client's bytes go to it from then on. */
  private forwarded = false;

  constructor(
    private readonly client: ClientSide,
    private readonly tenant: TenantRoute,
    private readonly socketPath: string,
    private readonly servers: ServerAccess,
    private readonly log: Log,
    private readonly countTransaction: () => void,
  ) {}

  /**
   * Connects into a slot of the server's (server-slots.ts) and relays `first` (the start-up packet and
   * what followed it). Should the server still refuse for want of a slot before it said anything else,
   * it is asked again until the slot wait's end; then pgs refuses (53300 naming the limit).
   */
  async start(first: Buffer): Promise<void> {
    const { client, tenant } = this;
    client.serve(this);
    const deadline = Date.now() + this.servers.slotTimeoutMs;
    for (;;) {
      let release: () => void;
      try {
        release = await this.servers.serverSlot(tenant, deadline);
      } catch (err) {
        if (err instanceof ServerFull) client.refuse({ reason: 'too_many_connections', message: err.message, hint: err.hint });
        else client.destroy();
        return;
      }
      if (client.gone) {
        release();
        return;
      }
      const noSlot = await new Promise<boolean>((resolve) => this.connect(first, release, resolve));
      if (!noSlot || client.gone) return;
      if (Date.now() >= deadline) {
        const full = new ServerFull(tenant.id, tenant.maxConnections ?? 0);
        client.refuse({ reason: 'too_many_connections', message: full.message, hint: full.hint });
        return;
      }
      this.log.info('the server has no free slot yet; trying again', { tenant: tenant.id });
      await new Promise((r) => setTimeout(r, 20));
      if (client.gone) return;
    }
  }

  notify(message: string): void {
    this.pipe?.notify(message);
  }

  betweenMessages(then: () => void): void {
    this.pipe?.betweenMessages(then);
  }

  stop(): void {
    this.backend?.pause();
  }

  /** The server's slot is free again only once its backend exited: let go when the server does. */
  release(): void {
    if (this.backend) closeServerSocket(this.backend);
  }

  /**
   * Connects, relays the start-up, then pipes. `started(true)`: the server's first answer was a
   * refusal for want of a slot (nothing of it reached the client; the connection is being
   * closed), `started(false)`: anything else.
   */
  private connect(first: Buffer, release: () => void, started: (noSlot: boolean) => void): void {
    const { client, tenant } = this;
    const socket = client.socket;
    const backend = net.connect(this.socketPath);
    this.servers.slots.bind(backend, release);
    this.backend = backend;
    const reader = new MessageReader();
    let answered = false;
    const answer = (noSlot: boolean): void => {
      if (answered) return;
      answered = true;
      started(noSlot);
    };
    backend.once('connect', () => {
      client.backendReached();
      backend.write(first);
    });
    backend.on('error', (err) => {
      answer(false);
      if (this.backend !== backend) return; // one given up (the server had no slot), being closed
      if (!client.established) {
        this.log.warn('backend connection failed', { tenant: tenant.id, error: err.message });
        client.refuse({ reason: 'tenant_unavailable', message: `the server of tenant ${tenant.id} is not available` });
      } else {
        client.destroy();
      }
    });
    backend.on('close', () => {
      answer(false);
      if (client.established || client.gone || this.backend !== backend) return;
      if (!this.forwarded) {
        client.refuse({ reason: 'tenant_unavailable', message: `the server of tenant ${tenant.id} closed the connection during start-up` });
        return;
      }
      // What the server said (an authentication error, say) was forwarded: end, and make sure we let go.
      socket.end();
      setTimeout(() => client.destroy(), 1_000).unref();
    });
    const onBackendData = (chunk: Buffer): void => {
      reader.push(chunk);
      try {
        for (let message = reader.next(); message; message = reader.next()) {
          if (!this.forwarded) {
            if (message.type === BackendMessage.ErrorResponse && serverHasNoSlot(parseErrorFields(message.payload))) {
              // Not the client's to see: pgs asks again (or refuses with its own limit).
              backend.off('data', onBackendData);
              this.backend = undefined;
              closeServerSocket(backend);
              answer(true);
              return;
            }
            // The client's bytes go to the server from its first answer on (the router did the authentication: the server's start-up needs none of them).
            this.forwarded = true;
            answer(false);
            socket.on('data', this.onClientData);
            socket.resume();
          }
          if (message.type === BackendMessage.BackendKeyData) {
            // The client gets the router's own key; the real one stays here for cancel requests.
            const secret = Buffer.from(message.payload.subarray(4));
            socket.write(client.ownKey({ address: this.socketPath, pid: message.payload.readInt32BE(0), secret }, secret.length));
          } else if (message.type === BackendMessage.ReadyForQuery && client.loginNotice !== undefined) {
            socket.write(noticeBytes(client.loginNotice));
            socket.write(typed(message.type, message.payload));
          } else {
            socket.write(typed(message.type, message.payload));
          }
          if (message.type === BackendMessage.ReadyForQuery) {
            backend.off('data', onBackendData);
            const pipe = new ServerPipe(socket, this.countTransaction);
            this.pipe = pipe;
            const leftover = reader.drain();
            if (leftover.length > 0) {
              pipe.passed(leftover);
              socket.write(leftover);
            }
            this.startPipe(backend, pipe);
            return;
          }
        }
      } catch (err) {
        answer(false);
        this.log.warn('backend protocol error', { tenant: tenant.id, error: (err as Error).message });
        client.destroy();
      }
    };
    backend.on('data', onBackendData);
  }

  /** The client's bytes during the server's start-up (an authentication relay the server needs none of, normally). */
  private readonly onClientData = (chunk: Buffer): void => {
    const backend = this.backend;
    if (backend && !backend.write(chunk)) {
      // Back-pressure before authentication too: a client cannot make the router buffer without bound.
      this.client.socket.pause();
      backend.once('drain', () => this.client.socket.resume());
    }
  };

  private startPipe(backend: net.Socket, pipe: ServerPipe): void {
    const socket = this.client.socket;
    this.client.establish(this);
    socket.off('data', this.onClientData);
    socket.pipe(backend);
    // Server to client by hand rather than pipe(): the router keeps track of where the
    // server's messages end, so that a FATAL of its own can go in between (closeWith).
    backend.on('data', (chunk: Buffer) => pipe.fromServer(backend, chunk));
    backend.on('end', () => socket.end());
  }
}
