import os from 'node:os';

/** What one mostly idle server is given of the host's memory when pgs derives the budget. */
export const MEMORY_PER_SERVER = 64 * 2 ** 20;

/**
 * How many servers (tenants' and spares) may run at once: the setting, or the
 * host's memory / 64 MiB. An idle server uses ~10 MiB, a busy one far more;
 * the rest is headroom for the busy ones and the page cache.
 */
export function runningBudget(setting: number | undefined, totalMemory = os.totalmem()): number {
  return setting ?? Math.max(1, Math.floor(totalMemory / MEMORY_PER_SERVER));
}
