/**
 * What each tenant did lately, kept by the daemon so that a dashboard can draw
 * it without Prometheus: every sample interval (10 s) its state, its client
 * connections through the router, and its transactions per second through the
 * router (the router counts each ReadyForQuery that says idle: nothing is
 * asked of the server, nothing is woken, and a stopped or suspended stretch is
 * a gap, not zeros). PostgreSQL's own counters (pg_stat_database) are no good
 * here: a busy session publishes them only now and then. Two rings: the last
 * hour at the sample interval, the last day at six samples a point.
 *
 * Memory: per tenant a float per point for connections and one for TPS, two
 * bytes for wakes and one for the state; with the defaults (360 + 1,440
 * points) about 21 KiB a tenant, 21 MiB for 1,000 (bench/history.js).
 */
export const STATES = ['running', 'starting', 'stopping', 'stopped', 'suspended', 'crashed'] as const;
export type SampledState = (typeof STATES)[number];

export interface HistorySample {
  state: SampledState;
  connections: number;
  /** Transactions that have ended so far (a counter that only grows). */
  xacts?: number | undefined;
  /** Wakes so far (a counter that only grows). */
  wakes?: number | undefined;
}

export type Field = 'state' | 'connections' | 'tps' | 'wakes';
export const FIELDS: readonly Field[] = ['state', 'connections', 'tps', 'wakes'];

export interface TenantSeries {
  state?: (SampledState | null)[];
  connections?: (number | null)[];
  tps?: (number | null)[];
  /** Wakes within each point's interval. */
  wakes?: (number | null)[];
}

export interface Series {
  intervalSeconds: number;
  /** Sample times, ms since the epoch, oldest first. */
  times: number[];
  /** All tenants together: how many ran, their connections, TPS and wakes. */
  host: { running: number[]; connections: number[]; tps: number[]; wakes: number[] };
  tenants: Record<string, TenantSeries>;
}

const NO_STATE = 255;

class Ring {
  readonly times: Float64Array;
  private readonly tenants = new Map<string, Row>();
  /** Where the next point goes, and how many points there are. */
  private next = 0;
  count = 0;

  constructor(readonly size: number, readonly intervalMs: number) {
    this.times = new Float64Array(size);
  }

  push(at: number, points: Map<string, Point>): void {
    const slot = this.next;
    this.times[slot] = at;
    for (const [id, point] of points) {
      let row = this.tenants.get(id);
      if (!row) {
        row = {
          state: new Uint8Array(this.size).fill(NO_STATE),
          connections: new Float32Array(this.size).fill(Number.NaN),
          tps: new Float32Array(this.size).fill(Number.NaN),
          wakes: new Uint16Array(this.size),
        };
        this.tenants.set(id, row);
      }
      row.state[slot] = point.state;
      row.connections[slot] = point.connections;
      row.tps[slot] = point.tps;
      row.wakes[slot] = Math.min(65_535, point.wakes);
    }
    // Tenants not sampled this time (removed, or new since) have no point here.
    for (const [id, row] of this.tenants) {
      if (points.has(id)) continue;
      row.state[slot] = NO_STATE;
      row.connections[slot] = Number.NaN;
      row.tps[slot] = Number.NaN;
      row.wakes[slot] = 0;
    }
    this.next = (slot + 1) % this.size;
    this.count = Math.min(this.size, this.count + 1);
  }

  forget(id: string): void {
    this.tenants.delete(id);
  }

  series(ids: string[] | undefined, fields: readonly Field[]): Series {
    const order: number[] = [];
    for (let i = this.count; i > 0; i--) order.push((this.next - i + this.size) % this.size);
    const host = { running: order.map(() => 0), connections: order.map(() => 0), tps: order.map(() => 0), wakes: order.map(() => 0) };
    const running = STATES.indexOf('running');
    for (const row of this.tenants.values()) {
      order.forEach((i, k) => {
        if (row.state[i] === running) host.running[k] = (host.running[k] as number) + 1;
        const c = row.connections[i] as number;
        if (!Number.isNaN(c)) host.connections[k] = (host.connections[k] as number) + c;
        const t = row.tps[i] as number;
        if (!Number.isNaN(t)) host.tps[k] = (host.tps[k] as number) + t;
        host.wakes[k] = (host.wakes[k] as number) + (row.wakes[i] as number);
      });
    }
    host.connections = host.connections.map((v) => Math.round(v * 100) / 100);
    host.tps = host.tps.map((v) => Math.round(v * 100) / 100);
    const tenants: Series['tenants'] = {};
    for (const id of ids ?? [...this.tenants.keys()].sort()) {
      const row = this.tenants.get(id);
      if (!row) continue;
      const out: TenantSeries = {};
      if (fields.includes('state')) out.state = order.map((i) => (row.state[i] === NO_STATE ? null : (STATES[row.state[i] as number] ?? null)));
      if (fields.includes('connections')) out.connections = order.map((i) => value(row.connections[i] as number, 100));
      if (fields.includes('tps')) out.tps = order.map((i) => value(row.tps[i] as number, 100));
      if (fields.includes('wakes')) out.wakes = order.map((i) => (row.state[i] === NO_STATE ? null : (row.wakes[i] as number)));
      tenants[id] = out;
    }
    return { intervalSeconds: this.intervalMs / 1000, times: order.map((i) => this.times[i] as number), host, tenants };
  }
}

interface Point {
  state: number;
  connections: number;
  tps: number;
  wakes: number;
}

interface Row {
  state: Uint8Array;
  connections: Float32Array;
  tps: Float32Array;
  wakes: Uint16Array;
}

function value(v: number, scale = 1): number | null {
  return Number.isNaN(v) ? null : Math.round(v * scale) / scale;
}

export class History {
  private readonly hour: Ring;
  private readonly day: Ring;
  /** Each tenant's previous sample: the counters the next one's rates are taken from. */
  private readonly last = new Map<string, { at: number; running: boolean; xacts: number | undefined; wakes: number | undefined }>();
  /** Fine points not yet folded into a coarse one: sums per tenant. */
  private fold = new Map<string, { state: number; connections: number; n: number; tps: number; tpsN: number; wakes: number }>();
  private folded = 0;

  constructor(readonly intervalMs = 10_000, hourPoints = 360, private readonly perCoarse = 6, dayPoints = 1440) {
    this.hour = new Ring(hourPoints, intervalMs);
    this.day = new Ring(dayPoints, intervalMs * perCoarse);
  }

  /** One sample of every tenant, taken at `at`. */
  record(at: number, samples: Map<string, HistorySample>): void {
    const points = new Map<string, Point>();
    for (const [id, sample] of samples) {
      const before = this.last.get(id);
      const running = sample.state === 'running';
      // A rate only between two samples of a running server; anything else is a gap.
      const tps = running && before?.running && sample.xacts !== undefined && before.xacts !== undefined && sample.xacts >= before.xacts && at > before.at
        ? (sample.xacts - before.xacts) / ((at - before.at) / 1000)
        : Number.NaN;
      const wakes = sample.wakes !== undefined && before?.wakes !== undefined && sample.wakes >= before.wakes ? sample.wakes - before.wakes : 0;
      this.last.set(id, { at, running, xacts: sample.xacts, wakes: sample.wakes });
      const state = STATES.indexOf(sample.state);
      points.set(id, { state, connections: sample.connections, tps, wakes });
      const f = this.fold.get(id) ?? { state, connections: 0, n: 0, tps: 0, tpsN: 0, wakes: 0 };
      f.state = state;
      f.connections += sample.connections;
      f.wakes += wakes;
      f.n++;
      if (!Number.isNaN(tps)) {
        f.tps += tps;
        f.tpsN++;
      }
      this.fold.set(id, f);
    }
    for (const id of this.last.keys()) if (!samples.has(id)) this.last.delete(id);
    this.hour.push(at, points);
    if (++this.folded >= this.perCoarse) {
      const coarse = new Map<string, Point>();
      for (const [id, f] of this.fold) coarse.set(id, { state: f.state, connections: f.connections / f.n, tps: f.tpsN > 0 ? f.tps / f.tpsN : Number.NaN, wakes: f.wakes });
      this.day.push(at, coarse);
      this.fold = new Map();
      this.folded = 0;
    }
  }

  forget(id: string): void {
    this.hour.forget(id);
    this.day.forget(id);
    this.last.delete(id);
    this.fold.delete(id);
  }

  series(range: '1h' | '1d', ids?: string[], fields: readonly Field[] = FIELDS): Series {
    return (range === '1h' ? this.hour : this.day).series(ids, fields);
  }
}
