import type { Coordination } from './parts.js';

/**
 * One host's coordination: its one daemon always leads, and every change,
 * reload, reconcile and stop runs one at a time, in order: an older reload
 * can never finish after a newer one (and bring back access that was
 * disabled), no supervisor decision interleaves with a person's request, and
 * nothing starts a server once stop has begun.
 */
export class SerialQueue implements Coordination {
  readonly isLeader = true;
  private queue: Promise<unknown> = Promise.resolve();

  serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task);
    this.queue = run.catch(() => undefined);
    return run;
  }
}

/**
 * Kubernetes coordination: every pod takes changes at once (the API server
 * orders the writes: each is made against the version read, and retried on a
 * conflict), and the holder of the leader Lease suspends idle tenants.
 */
export class ApiServerOrder implements Coordination {
  private readonly leads: () => boolean;

  constructor(leads: () => boolean) {
    this.leads = leads;
  }

  serial<T>(task: () => Promise<T>): Promise<T> {
    return task();
  }

  get isLeader(): boolean {
    return this.leads();
  }
}
