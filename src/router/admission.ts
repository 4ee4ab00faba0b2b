import { addressNetwork, plainAddress } from '../core/address.js';

/**
 * Connections still starting up (TLS handshake, start-up packet, the router's
 * password check), counted per source address and per network (its /24 or
 * /64; loopback split like any other), so that no one source can keep the
 * others out:
 *
 * - at most `maxPerAddress` start-ups from one address run at once; the next
 *   ones wait, their bytes unread, and start in arrival order as those end
 *   (a burst from one application host is served, a few at a time; one that
 *   waits past its deadline is closed, `address_limit`);
 * - when `maxPending` connections are starting up or waiting, the network
 *   holding the most pays (`global_limit`): a newcomer from it is closed on
 *   arrival, before its TLS handshake costs anything; a newcomer from
 *   another network is let in and the busiest network's oldest connection
 *   is closed to make room.
 *
 * A logged-in client is no longer counted here and is never shed. What was
 * closed is told once per interval (`onInterval`), not per connection.
 */
export interface Starting {
  readonly address: string;
  readonly network: string;
}

export type ShedWhy = 'address_limit' | 'global_limit';

/**
 * What `admit` says of a new connection: start it now, queue it behind its
 * address's other start-ups (`wait`), or close it at once (`refuse`: all
 * slots are taken and its own network holds the most).
 */
export type Admission = 'start' | 'wait' | 'refuse';

export interface ShedInterval {
  seconds: number;
  /** Connections closed after waiting their deadline behind their address's other start-ups. */
  addressLimit: number;
  /** Start-ups closed to make room, all start-up slots taken. */
  globalLimit: number;
  /** The networks with the most of either, most first (at most 5). */
  networks: { network: string; count: number }[];
  /** Start-ups open at the end of the interval. */
  pending: number;
}

export class Startups<T extends Starting> {
  readonly maxPending: number;
  readonly maxPerAddress: number;
  /** Start-ups running, by address. */
  private readonly byAddress = new Map<string, number>();
  /** Connections waiting for their address's turn, by address, in arrival order. */
  private readonly queues = new Map<string, T[]>();
  private readonly waiting = new Set<T>();
  /** Each network's start-ups and waiting connections in arrival order: the first is its oldest. */
  private readonly byNetwork = new Map<string, Set<T>>();
  private count = 0;
  private readonly intervalMs: number;
  private readonly onShed: (why: ShedWhy) => void;
  private readonly onInterval: (summary: ShedInterval) => void;
  private readonly onTurn: (waiting: T) => void;
  private interval: { since: number; addressLimit: number; globalLimit: number; networks: Map<string, number> } | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(options: { maxPending: number; maxPerAddress: number; intervalMs?: number; onShed?: (why: ShedWhy) => void; onInterval?: (summary: ShedInterval) => void; onTurn?: (waiting: T) => void }) {
    this.maxPending = options.maxPending;
    this.maxPerAddress = options.maxPerAddress;
    this.intervalMs = options.intervalMs ?? 10_000;
    this.onShed = options.onShed ?? (() => undefined);
    this.onInterval = options.onInterval ?? (() => undefined);
    this.onTurn = options.onTurn ?? (() => undefined);
  }

  /** Connections starting up or waiting to, now. */
  get size(): number {
    return this.count;
  }

  /** Of them, those waiting for their address's turn. */
  get waitingCount(): number {
    return this.waiting.size;
  }

  /** Start-ups running from `address` (as `source` gives it). */
  fromAddress(address: string): number {
    return this.byAddress.get(address) ?? 0;
  }

  /** Where a connection from `remoteAddress` is counted. */
  static source(remoteAddress: string): { address: string; network: string } {
    return { address: plainAddress(remoteAddress), network: addressNetwork(remoteAddress) };
  }

  /**
   * Whether a new connection from `source` may start up now (`start`: then
   * `add` it) or must wait for its address's turn (`wait`: then `wait` it).
   * When all slots are taken, the network with the most loses its oldest,
   * closed by `shed` (which must call `remove` on it).
   */
  admit(source: { address: string; network: string }, shed: (victim: T, network: string) => void): Admission {
    for (let tries = 0; this.count >= this.maxPending && tries < 16; tries++) {
      const largest = this.largest();
      if (!largest) break;
      if ((this.byNetwork.get(source.network)?.size ?? 0) >= largest.size) {
        // The newcomer's own network holds the most: it is the one closed, before it costs a TLS handshake.
        this.note('global_limit', source.network);
        return 'refuse';
      }
      const victim = largest.values().next().value;
      if (!victim) break;
      this.note('global_limit', victim.network);
      shed(victim, victim.network);
      this.remove(victim); // in case `shed` did not
    }
    const atLimit = this.maxPerAddress > 0 && this.fromAddress(source.address) >= this.maxPerAddress;
    return atLimit || this.queues.has(source.address) ? 'wait' : 'start';
  }

  /** A start-up begins. */
  add(connection: T): void {
    if (!this.join(connection)) return;
    this.byAddress.set(connection.address, (this.byAddress.get(connection.address) ?? 0) + 1);
  }

  /** A connection waits for its address's turn: `onTurn` is called with it when it comes. */
  wait(connection: T): void {
    if (!this.join(connection)) return;
    this.waiting.add(connection);
    const queue = this.queues.get(connection.address);
    if (queue) queue.push(connection);
    else this.queues.set(connection.address, [connection]);
  }

  /** A waiting connection waited too long: it is no longer counted, and told in the interval's `address_limit`. */
  timedOut(connection: T): void {
    if (!this.waiting.has(connection)) return;
    this.note('address_limit', connection.network);
    this.remove(connection);
  }

  /** It logged in, or closed, or its wait ended. Does nothing for one not counted. */
  remove(connection: T): void {
    const set = this.byNetwork.get(connection.network);
    if (!set?.delete(connection)) return;
    if (set.size === 0) this.byNetwork.delete(connection.network);
    this.count--;
    if (this.waiting.delete(connection)) {
      const queue = this.queues.get(connection.address) ?? [];
      queue.splice(queue.indexOf(connection), 1);
      if (queue.length === 0) this.queues.delete(connection.address);
      return;
    }
    const left = (this.byAddress.get(connection.address) ?? 1) - 1;
    if (left > 0) this.byAddress.set(connection.address, left);
    else this.byAddress.delete(connection.address);
    this.next(connection.address);
  }

  /** Stops the interval's timer (the router closes). */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Counts a connection in its network; false if it already was. */
  private join(connection: T): boolean {
    let set = this.byNetwork.get(connection.network);
    if (!set) {
      set = new Set();
      this.byNetwork.set(connection.network, set);
    }
    if (set.has(connection)) return false;
    set.add(connection);
    this.count++;
    return true;
  }

  /** The first waiting connection of `address` starts, if its address has room. */
  private next(address: string): void {
    const queue = this.queues.get(address);
    const first = queue?.[0];
    if (!first || (this.maxPerAddress > 0 && this.fromAddress(address) >= this.maxPerAddress)) return;
    this.remove(first);
    this.onTurn(first); // it calls `add` when it starts
  }

  private largest(): Set<T> | undefined {
    let largest: Set<T> | undefined;
    for (const set of this.byNetwork.values()) if (!largest || set.size > largest.size) largest = set;
    return largest;
  }

  private note(why: ShedWhy, network: string): void {
    this.onShed(why);
    this.interval ??= { since: Date.now(), addressLimit: 0, globalLimit: 0, networks: new Map() };
    if (why === 'address_limit') this.interval.addressLimit++;
    else this.interval.globalLimit++;
    this.interval.networks.set(network, (this.interval.networks.get(network) ?? 0) + 1);
    if (this.timer === undefined) this.schedule();
  }

  private schedule(): void {
    this.timer = setTimeout(() => this.flush(), this.intervalMs);
    this.timer.unref();
  }

  /** Tells the interval's sheds; after one with some, an empty one follows (so that a gauge of the last interval goes back to nothing). */
  private flush(): void {
    const interval = this.interval;
    this.interval = undefined;
    this.timer = undefined;
    const networks = interval ? [...interval.networks].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([network, count]) => ({ network, count })) : [];
    this.onInterval({
      seconds: interval ? Math.round((Date.now() - interval.since) / 1000) : this.intervalMs / 1000,
      addressLimit: interval?.addressLimit ?? 0,
      globalLimit: interval?.globalLimit ?? 0,
      networks,
      pending: this.count,
    });
    if (interval) this.schedule();
  }
}
