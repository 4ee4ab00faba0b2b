import type net from 'node:net';
import type { Log } from '../core/log.js';
import { Startups, type Starting } from './admission.js';
import type { RouterObserver } from './contract.js';

/** A connection still starting up, which admission may close to make room ("shed"). */
export interface Sheddable extends Starting {
  shed(network: string): void;
}

export interface StartupGateOptions {
  maxPending: number;
  maxPerAddress: number;
  intervalMs?: number;
  /** How long a connection may wait for its address's turn. */
  waitMs: number;
  log: Log;
  observer: RouterObserver | undefined;
  /** Counts a connection shed (the router's refusals by reason). */
  onShed: () => void;
  /** A connection's start-up begins (now, or when its turn came). */
  start: (socket: net.Socket, source: { address: string; network: string }) => void;
}

/**
 * Admission hooked up to the listener (the rules are admission.ts's): each new
 * socket starts at once, waits for its address's turn, or is refused; sheds
 * are counted, and logged and told to the observer once per interval.
 */
export class StartupGate {
  /** Connections still starting up, by address and network. */
  readonly startups: Startups<Sheddable>;
  /** Connections waiting for their address's turn to start up. */
  private readonly waiting = new Set<WaitingSocket>();

  constructor(private readonly options: StartupGateOptions) {
    const { log, observer } = options;
    this.startups = new Startups<Sheddable>({
      maxPending: options.maxPending,
      maxPerAddress: options.maxPerAddress,
      ...(options.intervalMs !== undefined ? { intervalMs: options.intervalMs } : {}),
      onShed: (why) => {
        options.onShed();
        observer?.startupShed?.(why);
      },
      onInterval: (summary) => {
        if (summary.addressLimit + summary.globalLimit > 0) {
          log.warn('start-ups shed', {
            seconds: summary.seconds,
            atAddressLimit: summary.addressLimit,
            atGlobalLimit: summary.globalLimit,
            networks: Object.fromEntries(summary.networks.map((n) => [n.network, n.count])),
            pending: summary.pending,
          });
        }
        observer?.startupsShedInterval?.(summary);
      },
      onTurn: (waiting) => {
        if (waiting instanceof WaitingSocket) waiting.start();
      },
    });
  }

  /** A new socket from `remote`: started, queued behind its address's start-ups, or closed unread. */
  admit(socket: net.Socket, remote: string): void {
    const source = Startups.source(remote);
    const admission = this.startups.admit(source, (victim, network) => victim.shed(network));
    if (admission === 'refuse') socket.destroy(); // nothing was said yet: no TLS to say it in
    else if (admission === 'wait') {
      const waiting = new WaitingSocket(this, socket, source, this.options.waitMs);
      this.waiting.add(waiting);
      this.startups.wait(waiting);
    } else this.options.start(socket, source);
  }

  /** A connection began its start-up: it counts until `done`. */
  started(connection: Sheddable): void {
    this.startups.add(connection);
  }

  /** A connection logged in or closed: its start-up slot is free. */
  done(connection: Sheddable): void {
    this.startups.remove(connection);
  }

  /** No more start-ups: those waiting are closed. */
  close(): void {
    this.startups.close();
    for (const waiting of [...this.waiting]) waiting.shed();
  }

  /** Its turn came (`WaitingSocket.start`). */
  turn(waiting: WaitingSocket, socket: net.Socket): void {
    this.waiting.delete(waiting);
    this.options.start(socket, waiting);
  }

  /** Its deadline passed (counted as such; `gone` follows). */
  expired(waiting: WaitingSocket): void {
    this.startups.timedOut(waiting);
  }

  /** Closed unstarted. */
  gone(waiting: WaitingSocket): void {
    this.waiting.delete(waiting);
    this.startups.remove(waiting);
  }
}

/**
 * A connection whose address already has its limit of start-ups running: its
 * bytes stay unread (the kernel and the socket's buffer keep them) until one of
 * those ends (then `start`), it closes, or its deadline passes (closed, nothing said).
 */
class WaitingSocket implements Sheddable {
  readonly address: string;
  readonly network: string;
  private readonly timer: NodeJS.Timeout;
  private readonly onGone = (): void => this.shed();

  constructor(private readonly gate: StartupGate, private readonly socket: net.Socket, source: { address: string; network: string }, deadlineMs: number) {
    this.address = source.address;
    this.network = source.network;
    socket.pause();
    socket.on('error', this.onGone);
    socket.on('close', this.onGone);
    this.timer = setTimeout(() => {
      this.gate.expired(this);
      this.shed();
    }, deadlineMs);
  }

  /** Its turn: the start-up begins where nothing was read yet. */
  start(): void {
    clearTimeout(this.timer);
    this.socket.off('error', this.onGone);
    this.socket.off('close', this.onGone);
    this.gate.turn(this, this.socket);
    this.socket.resume(); // after the client's reader is on: nothing buffered is lost
  }

  /** Closed, nothing said (no TLS yet to say it in). */
  shed(): void {
    clearTimeout(this.timer);
    this.gate.gone(this);
    this.socket.destroy();
  }
}
