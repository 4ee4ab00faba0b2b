/**
 * Restart attempts of one tenant's server: after each failed start the next
 * attempt waits twice as long, from 1 s up to 60 s; after CRASHED_AFTER
 * failures in a row the tenant shows as `crashed` (attempts go on, slowly).
 */

export interface Backoff {
  failures: number;
  restarts: number;
  nextAttemptAt: number;
  lastError?: string;
}

/** After this many failed starts in a row a tenant shows as `crashed`. */
export const CRASHED_AFTER = 3;
const FIRST_MS = 1_000;
const MAX_MS = 60_000;

export function freshBackoff(): Backoff {
  return { failures: 0, restarts: 0, nextAttemptAt: 0 };
}

/** A start failed with `error` at `now`: counts it and sets when to try again. */
export function startFailed(backoff: Backoff, error: string, now = Date.now()): void {
  backoff.failures++;
  backoff.lastError = error;
  backoff.nextAttemptAt = now + Math.min(MAX_MS, FIRST_MS * 2 ** (backoff.failures - 1));
}

/** A start succeeded: the failures are over. */
export function startSucceeded(backoff: Backoff): void {
  backoff.failures = 0;
  backoff.lastError = undefined;
}
