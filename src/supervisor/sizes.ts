/**
 * The sizes of the tenants' data folders, from disk (never a query: a
 * suspended tenant stays asleep). A folder is measured once, then again only
 * after its server ran; running ones every SIZE_INTERVAL_MS. One at a time,
 * in the background: the first sweep soon after start, then each minute.
 */
import type { Catalog } from '../catalog/schema.js';
import { dirBytes } from '../core/files.js';
import type { TenantRuntime } from '../runtime/runtime.js';

const SIZE_FIRST_MS = 5_000;
const SIZE_SWEEP_MS = 60_000;
const SIZE_INTERVAL_MS = 10 * 60_000;

export interface SizeDeps {
  runtime: TenantRuntime;
  catalog: () => Catalog;
  stopping: () => boolean;
}

export class DataSizes {
  private readonly deps: SizeDeps;
  private readonly measured = new Map<string, { bytes: number; at: number }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(deps: SizeDeps) {
    this.deps = deps;
  }

  /** The folder's size at its last measurement, or undefined before the first. */
  bytes(id: string): number | undefined {
    return this.measured.get(id)?.bytes;
  }

  /** The server ran: measure its folder again at the next sweep. */
  ran(id: string): void {
    this.measured.delete(id);
  }

  /** Forgets tenants that are not in `ids` (removed). */
  keepOnly(ids: Set<string>): void {
    for (const id of this.measured.keys()) if (!ids.has(id)) this.measured.delete(id);
  }

  start(): void {
    this.timer = setTimeout(() => void this.sweep(), SIZE_FIRST_MS);
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  /** One sweep over the tenants; the next is set when it ends. */
  async sweep(): Promise<void> {
    const { runtime, stopping } = this.deps;
    if (stopping()) return;
    try {
      for (const t of this.deps.catalog().tenants) {
        if (stopping()) return;
        const known = this.measured.get(t.id);
        const running = (await runtime.status(t.id)).state === 'running';
        if (known && (!running || Date.now() - known.at < SIZE_INTERVAL_MS)) continue;
        this.measured.set(t.id, { bytes: await dirBytes(runtime.dataDir(t.id)), at: Date.now() });
      }
    } finally {
      if (!stopping()) this.timer = setTimeout(() => void this.sweep(), SIZE_SWEEP_MS);
    }
  }
}
