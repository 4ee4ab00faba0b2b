import { randomBytes, randomInt } from 'node:crypto';
import type { BackendAddress } from './server-sessions.js';

/** A backend's own key: where its server is, its pid and cancel secret. */
export interface CancelTarget {
  address: BackendAddress;
  pid: number;
  secret: Buffer;
}

/** Where a client's cancel request goes: one backend, or whichever runs its transaction now (none between transactions). */
export type CancelRoute = CancelTarget | (() => CancelTarget | undefined);

/**
 * The keys the router hands its clients in BackendKeyData instead of the
 * backends' own (so that a client never learns a server's pid or secret, and a
 * pooled client's key stays the same whichever backend serves it), and where
 * a cancel request with each goes.
 */
export class CancelKeys {
  private readonly routes = new Map<string, CancelRoute>();

  /** A new key of `secretLength` bytes for `route` (a pid and secret no other live key has). */
  register(route: CancelRoute, secretLength: number): { pid: number; secret: Buffer; key: string } {
    for (;;) {
      const pid = randomInt(1, 2 ** 31 - 1);
      const secret = randomBytes(secretLength);
      const key = cancelKey(pid, secret);
      if (this.routes.has(key)) continue;
      this.routes.set(key, route);
      return { pid, secret, key };
    }
  }

  unregister(key: string): void {
    this.routes.delete(key);
  }

  /**
   * Where a cancel request with (`pid`, `secret`) goes now: undefined when the key is
   * unknown (a forged or stale one) or its client runs no transaction.
   */
  find(pid: number, secret: Buffer): { known: boolean; target: CancelTarget | undefined } {
    const route = this.routes.get(cancelKey(pid, secret));
    if (!route) return { known: false, target: undefined };
    return { known: true, target: typeof route === 'function' ? route() : route };
  }

  get size(): number {
    return this.routes.size;
  }
}

function cancelKey(pid: number, secret: Buffer): string {
  return `${pid}:${secret.toString('hex')}`;
}
