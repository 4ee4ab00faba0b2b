/**
 * How long recent wakes took: kept for the last hour (at most WAKE_TIMES_KEPT),
 * read as a count with the median and the 95th percentile.
 */

/** Wake durations kept for the last hour's percentiles. */
const WAKE_TIMES_KEPT = 10_000;
const HOUR_MS = 3_600_000;

export interface RecentWakes {
  count: number;
  p50Seconds: number | null;
  p95Seconds: number | null;
}

export class WakeTimes {
  /** Oldest first. */
  private readonly times: { at: number; seconds: number }[] = [];
  private readonly kept: number;

  constructor(kept = WAKE_TIMES_KEPT) {
    this.kept = kept;
  }

  record(seconds: number, at = Date.now()): void {
    this.times.push({ at, seconds });
    if (this.times.length > this.kept) this.times.splice(0, this.times.length - this.kept);
  }

  /** Wakes over the hour before `now`: how many, and the median and 95th percentile of how long they took (ms precision). */
  recent(now = Date.now()): RecentWakes {
    const cutoff = now - HOUR_MS;
    while (this.times.length > 0 && (this.times[0] as { at: number }).at < cutoff) this.times.shift();
    const sorted = this.times.map((w) => w.seconds).sort((a, b) => a - b);
    const at = (q: number) => (sorted.length === 0 ? null : Math.round((sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number) * 1000) / 1000);
    return { count: sorted.length, p50Seconds: at(0.5), p95Seconds: at(0.95) };
  }
}
