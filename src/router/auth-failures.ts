/**
 * Recent login failures per key (an address, a tenant), counted over a minute:
 * each failure waits `step` ms per failure so far, at most `max`, before the
 * client hears of it (as auth_delay does, but growing with the attempts).
 */
export class AuthFailures {
  private readonly step: number;
  private readonly max: number;
  private readonly recent = new Map<string, { count: number; since: number }>();

  constructor(step: number, max: number) {
    this.step = step;
    this.max = max;
  }

  /** Counts a failure against each key; returns how long to wait. */
  note(keys: string[]): number {
    const now = Date.now();
    if (this.recent.size > 100_000) this.prune(now);
    let worst = 0;
    for (const key of keys) {
      let entry = this.recent.get(key);
      if (!entry || now - entry.since > 60_000) {
        entry = { count: 0, since: now };
        this.recent.set(key, entry);
      }
      entry.count++;
      worst = Math.max(worst, entry.count);
    }
    return Math.min(this.max, this.step * worst);
  }

  private prune(now: number): void {
    for (const [key, entry] of this.recent) if (now - entry.since > 60_000) this.recent.delete(key);
    if (this.recent.size > 100_000) this.recent.clear();
  }
}
