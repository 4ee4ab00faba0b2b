import { createHash } from 'node:crypto';
import { addressNetwork } from '../core/address.js';
import { TOKEN_PREFIX } from './tokens.js';

/**
 * Wrong API tokens, counted per source address, per source network and per
 * token prefix; a key with `limit` different wrong tokens within the window
 * refuses further wrong tokens until the oldest of them ages out. Only wrong
 * tokens are ever looked at: a valid token is served before this is asked.
 */
export class AuthFailures {
  private readonly limit: number;
  private readonly windowMs: number;
  private readonly maxKeys: number;
  /** Insertion order is last use: the first key is the one to drop when full. */
  private readonly failures = new Map<string, { at: number; token: string }[]>();

  constructor(options: { limit?: number; windowMs?: number; maxKeys?: number } = {}) {
    this.limit = options.limit ?? 10;
    this.windowMs = options.windowMs ?? 60_000;
    this.maxKeys = options.maxKeys ?? 10_000;
  }

  /** How many keys are kept (for tests: bounded however many sources guess). */
  get size(): number {
    return this.failures.size;
  }

  /**
   * A wrong `token` from `address`: undefined when it may be answered 401 (it is
   * then counted, once per key however often it is sent), else which key is
   * over its limit and for how many seconds more.
   */
  fail(address: string, token: string, now = Date.now()): { what: string; retryAfterSeconds: number } | undefined {
    const keys = failureKeys(address, token);
    const digest = createHash('sha256').update(token).digest('base64url').slice(0, 16);
    const lists = keys.map((k) => (this.failures.get(k.key) ?? []).filter((f) => now - f.at < this.windowMs));
    let refused: { what: string; retryAfterSeconds: number } | undefined;
    keys.forEach((k, i) => {
      const recent = lists[i] as { at: number; token: string }[];
      if (recent.length < this.limit) return;
      const seconds = Math.max(1, Math.ceil((recent[0]!.at + this.windowMs - now) / 1000));
      if (!refused || seconds > refused.retryAfterSeconds) refused = { what: k.what, retryAfterSeconds: seconds };
    });
    keys.forEach((k, i) => {
      const recent = lists[i] as { at: number; token: string }[];
      if (!refused && !recent.some((f) => f.token === digest)) recent.push({ at: now, token: digest });
      this.failures.delete(k.key);
      if (recent.length > 0) this.failures.set(k.key, recent);
    });
    for (const key of this.failures.keys()) {
      if (this.failures.size <= this.maxKeys) break;
      this.failures.delete(key);
    }
    return refused;
  }
}

function failureKeys(address: string, token: string): { key: string; what: string }[] {
  const network = sourceNetwork(address);
  const prefix = (token.startsWith(TOKEN_PREFIX) ? token.slice(TOKEN_PREFIX.length) : token).slice(0, 8);
  return [
    { key: `address ${address}`, what: `from ${address}` },
    ...(network === address ? [] : [{ key: `network ${network}`, what: `from ${network}` }]),
    { key: `prefix ${prefix}`, what: `for tokens starting ${TOKEN_PREFIX}${prefix}` },
  ];
}

/**
 * The network an address is counted in: its /24 (IPv4) or /64 (IPv6), and
 * loopback whole (127.0.0.0/8 and ::1 are all this host's: any local user may
 * bind any of them).
 */
export function sourceNetwork(address: string): string {
  return addressNetwork(address, { loopbackWhole: true });
}
