import { promises as fs } from 'node:fs';
import path from 'node:path';
import { errnoCode, isPgsError } from '../core/errors.js';
import { writeAtomic } from '../core/files.js';
import type { QueryStat, TenantRuntime } from '../runtime/runtime.js';

/** The most statements an answer has (GET /v1/tenants/{id}/queries?limit=N): a sample keeps this many of each order. */
export const QUERIES_LIMIT = 100;

export type QueryOrder = 'total' | 'mean' | 'calls';

/** What is kept of a tenant's statistics while its server is down. */
interface QuerySample {
  takenAt: string;
  items: QueryStat[];
}

export interface QueriesAnswer {
  /** false: read from the running server now; true: the last sample (the server is suspended or stopped). */
  sample: boolean;
  /** When these were read; null: never (no sample yet). */
  sampledAt: string | null;
  items: QueryStat[];
}

interface QueryStatsLog {
  warn(message: string, fields?: Record<string, unknown>): void;
}

/**
 * A tenant's top statements (pg_stat_statements), never waking it. While its
 * server runs they are read from it at each request, and that read is kept as
 * the tenant's last sample (`<dir>/<id>.json`, 0600 in a 0700 folder of the
 * daemon's user); another is taken just before the server stops (the runtime's
 * beforeStop), so that a suspended or stopped tenant is answered from it, with
 * the time it was taken. A sample holds the first QUERIES_LIMIT of each order,
 * so that any order and limit is answered from it as the server would.
 */
export class QuerySamples {
  private readonly dir: string;
  private readonly runtime: TenantRuntime;
  private readonly log: QueryStatsLog;
  private readonly cache = new Map<string, QuerySample | null>();

  constructor(dir: string, runtime: TenantRuntime, log: QueryStatsLog) {
    this.dir = dir;
    this.runtime = runtime;
    this.log = log;
  }

  async open(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await fs.chmod(this.dir, 0o700);
  }

  /**
   * From the running server when `running` (kept as the new sample); else, or when the
   * server does not answer (it is stopping), the last sample. A server without
   * pg_stat_statements is the runtime's error (QUERY_STATS_UNAVAILABLE).
   */
  async read(id: string, running: boolean, order: QueryOrder, limit: number): Promise<QueriesAnswer> {
    let answer: QueriesAnswer | undefined;
    if (running) {
      try {
        const taken = await this.take(id);
        answer = { sample: false, sampledAt: taken.takenAt, items: taken.items };
      } catch (err) {
        if (isPgsError(err, 'QUERY_STATS_UNAVAILABLE')) throw err;
        this.log.warn('could not read query statistics from the running server; answering from the last sample', { tenant: id, error: (err as Error).message });
      }
    }
    if (!answer) {
      const last = await this.load(id);
      answer = { sample: true, sampledAt: last?.takenAt ?? null, items: last?.items ?? [] };
    }
    return { ...answer, items: sortQueries(answer.items, order).slice(0, limit) };
  }

  /** A sample from the running server (just before it stops); errors are the caller's. */
  async snapshot(id: string): Promise<void> {
    await this.take(id);
  }

  /** After a reset: nothing counted since `now`. */
  async emptied(id: string): Promise<void> {
    await this.save(id, { takenAt: new Date().toISOString(), items: [] });
  }

  async forget(id: string): Promise<void> {
    this.cache.delete(id);
    await fs.rm(this.file(id), { force: true });
  }

  private async take(id: string): Promise<QuerySample> {
    // The time the read began: one that began before a reset is older than the reset's empty sample.
    const takenAt = new Date().toISOString();
    const items = await this.runtime.queryStats(id, QUERIES_LIMIT);
    const sample = { takenAt, items };
    await this.save(id, sample);
    return sample;
  }

  private async load(id: string): Promise<QuerySample | null> {
    const cached = this.cache.get(id);
    if (cached !== undefined) return cached;
    let sample: QuerySample | null = null;
    try {
      const parsed = JSON.parse(await fs.readFile(this.file(id), 'utf8')) as QuerySample;
      if (parsed && typeof parsed.takenAt === 'string' && Array.isArray(parsed.items)) sample = parsed;
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') this.log.warn('the last sample of query statistics is unreadable; none is shown until the next', { tenant: id, error: (err as Error).message });
    }
    this.cache.set(id, sample);
    return sample;
  }

  /** Writes of one tenant's file, one at a time (reads at the same moment share writeAtomic's temporary file). */
  private readonly writes = new Map<string, Promise<void>>();

  private save(id: string, sample: QuerySample): Promise<void> {
    const write = (this.writes.get(id) ?? Promise.resolve()).then(async () => {
      // A sample taken earlier never replaces a newer one that was written first.
      const current = this.cache.get(id);
      if (current && current.takenAt > sample.takenAt) return;
      await writeAtomic(this.file(id), `${JSON.stringify(sample)}\n`, 0o600);
      this.cache.set(id, sample);
    });
    const settled = write.catch(() => undefined);
    this.writes.set(id, settled);
    void settled.then(() => {
      if (this.writes.get(id) === settled) this.writes.delete(id);
    });
    return write;
  }

  private file(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }
}

/** Highest first: total time, mean time or calls; ties by total time, then the text. */
export function sortQueries(items: readonly QueryStat[], order: QueryOrder): QueryStat[] {
  const key = (q: QueryStat) => (order === 'calls' ? q.calls : order === 'mean' ? q.meanMs : q.totalMs);
  return [...items].sort((a, b) => key(b) - key(a) || b.totalMs - a.totalMs || a.query.localeCompare(b.query));
}
