/**
 * A kind's objects kept up to date: a list, then a watch from its version,
 * again after the watch ends (a list when the version has expired or the
 * watch failed). Calls `onChange` with each object that changed (or was
 * deleted), after the cache has it.
 */
import { debugLog } from '../../core/log.js';
import { KubeError, type KubeResource, type ResourceRef, type WatchEvent } from './resources.js';

const debug = debugLog('pgs:kube');

/** What an informer needs of the client (KubeClient is one). */
export interface ListAndWatch {
  list<T extends KubeResource>(ref: ResourceRef, labelSelector?: string): Promise<{ items: T[]; resourceVersion: string }>;
  watch<T extends KubeResource>(ref: ResourceRef, resourceVersion: string, onEvent: (e: WatchEvent<T>) => void, onEnd: (error?: Error) => void, labelSelector?: string): { stop(): void };
}

export class Informer<T extends KubeResource> {
  readonly cache = new Map<string, T>();
  private watcher: { stop(): void } | undefined;
  private resourceVersion = '';
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly client: ListAndWatch;
  private readonly ref: ResourceRef;
  private readonly onChange: (name: string, object: T | undefined) => void;
  private readonly labelSelector: string | undefined;
  private readonly retryMs: number;

  constructor(client: ListAndWatch, ref: ResourceRef, onChange: (name: string, object: T | undefined) => void, options: { labelSelector?: string; retryMs?: number } = {}) {
    this.client = client;
    this.ref = ref;
    this.onChange = onChange;
    this.labelSelector = options.labelSelector;
    this.retryMs = options.retryMs ?? 1_000;
  }

  /** Lists and starts watching; resolves once the cache holds the list. */
  async start(): Promise<void> {
    await this.relist();
    this.watch();
  }

  private async relist(): Promise<void> {
    const { items, resourceVersion } = await this.client.list<T>(this.ref, this.labelSelector);
    const seen = new Set<string>();
    for (const item of items) {
      seen.add(item.metadata.name);
      const held = this.cache.get(item.metadata.name);
      this.cache.set(item.metadata.name, item);
      if (held?.metadata.resourceVersion !== item.metadata.resourceVersion) this.onChange(item.metadata.name, item);
    }
    for (const name of [...this.cache.keys()]) {
      if (!seen.has(name)) {
        this.cache.delete(name);
        this.onChange(name, undefined);
      }
    }
    this.resourceVersion = resourceVersion;
  }

  private watch(): void {
    if (this.stopped) return;
    this.watcher = this.client.watch<T>(this.ref, this.resourceVersion, (e) => {
      if (e.object.metadata?.resourceVersion) this.resourceVersion = e.object.metadata.resourceVersion;
      if (e.type === 'BOOKMARK') return;
      const name = e.object.metadata.name;
      if (e.type === 'DELETED') {
        this.cache.delete(name);
        this.onChange(name, undefined);
      } else {
        this.cache.set(name, e.object);
        this.onChange(name, e.object);
      }
    }, (error) => {
      this.watcher = undefined;
      if (this.stopped) return;
      const expired = error instanceof KubeError && error.statusCode === 410;
      this.timer = setTimeout(() => {
        const next = expired || error ? this.relist() : Promise.resolve();
        next.then(() => this.watch(), (e: unknown) => {
          // The API server is away: try again after the same pause.
          debug(`listing ${this.ref.resource} again`, e);
          this.timer = setTimeout(() => this.watch(), this.retryMs);
          this.timer.unref();
        });
      }, error ? this.retryMs : 0);
      this.timer.unref();
    }, this.labelSelector);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.watcher?.stop();
  }
}
