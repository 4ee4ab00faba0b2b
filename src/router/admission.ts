import { addressNetwork, plainAddress } from '../core/address.js';

/**
 * Connections still starting up (TLS handshake, start-up packet, the router's
 * password check), counted per source address and per network (its /24 or
 * /64; loopback split like any other), so that no one source can keep the
 * others out:
 *
 * - an address with `maxPerAddress` start-ups already gets its next
 *   connection closed on arrival;
 * - when `maxPending` start-ups are open, the network holding the most loses
 *   its oldest one to make room for the new one, which is never refused for it.
 *
 * A logged-in client is no longer counted here and is never shed. What was
 * refused and shed is told once per interval (`onInterval`), not per connection.
 */
export interface Starting {
  readonly address: string;
  readonly network: string;
}

export type ShedWhy = 'address_limit' | 'global_limit';

export interface ShedInterval {
  seconds: number;
  /** New connections closed on arrival, their address at its limit. */
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
  private readonly byAddress = new Map<string, number>();
  /** Each network's start-ups in arrival order: the first is its oldest. */
  private readonly byNetwork = new Map<string, Set<T>>();
  private count = 0;
  private readonly intervalMs: number;
  private readonly onShed: (why: ShedWhy) => void;
  private readonly onInterval: (summary: ShedInterval) => void;
  private interval: { since: number; addressLimit: number; globalLimit: number; networks: Map<string, number> } | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(options: { maxPending: number; maxPerAddress: number; intervalMs?: number; onShed?: (why: ShedWhy) => void; onInterval?: (summary: ShedInterval) => void }) {
    this.maxPending = options.maxPending;
    this.maxPerAddress = options.maxPerAddress;
    this.intervalMs = options.intervalMs ?? 10_000;
    this.onShed = options.onShed ?? (() => undefined);
    this.onInterval = options.onInterval ?? (() => undefined);
  }

  /** Start-ups open now. */
  get size(): number {
    return this.count;
  }

  /** Open start-ups from `address` (as `source` gives it). */
  fromAddress(address: string): number {
    return this.byAddress.get(address) ?? 0;
  }

  /** Where a connection from `remoteAddress` is counted. */
  static source(remoteAddress: string): { address: string; network: string } {
    return { address: plainAddress(remoteAddress), network: addressNetwork(remoteAddress) };
  }

  /**
   * Whether a new connection from `source` may start up: false when its
   * address is at its limit (close it). When all slots are taken, the
   * network with the most start-ups loses its oldest, closed by `shed`
   * (which must call `remove` on it).
   */
  admit(source: { address: string; network: string }, shed: (victim: T, network: string) => void): boolean {
    if (this.maxPerAddress > 0 && this.fromAddress(source.address) >= this.maxPerAddress) {
      this.note('address_limit', source.network);
      return false;
    }
    for (let tries = 0; this.count >= this.maxPending && tries < 16; tries++) {
      const victim = this.oldestOfLargest();
      if (!victim) break;
      this.note('global_limit', victim.network);
      shed(victim, victim.network);
      this.remove(victim); // in case `shed` did not
    }
    return true;
  }

  add(connection: T): void {
    let set = this.byNetwork.get(connection.network);
    if (!set) {
      set = new Set();
      this.byNetwork.set(connection.network, set);
    }
    if (set.has(connection)) return;
    set.add(connection);
    this.byAddress.set(connection.address, (this.byAddress.get(connection.address) ?? 0) + 1);
    this.count++;
  }

  /** It logged in, or closed. Does nothing for one not counted. */
  remove(connection: T): void {
    const set = this.byNetwork.get(connection.network);
    if (!set?.delete(connection)) return;
    if (set.size === 0) this.byNetwork.delete(connection.network);
    const left = (this.byAddress.get(connection.address) ?? 1) - 1;
    if (left > 0) this.byAddress.set(connection.address, left);
    else this.byAddress.delete(connection.address);
    this.count--;
  }

  /** Stops the interval's timer (the router closes). */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private oldestOfLargest(): T | undefined {
    let largest: Set<T> | undefined;
    for (const set of this.byNetwork.values()) if (!largest || set.size > largest.size) largest = set;
    return largest?.values().next().value;
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
