import type { Catalog, Settings } from '../catalog/schema.js';
import type { CatalogStore } from '../catalog/store.js';
import { PgsError } from '../core/errors.js';
import type { TenantRuntime } from '../runtime/runtime.js';

/** What setup and doctor need of a pgs home (Pgs is one): its catalog, its runtime, and the one way tenants change. */
export interface PgsContext {
  readonly home: string;
  readonly env: NodeJS.ProcessEnv;
  readonly store: CatalogStore;
  runtimeFor(settings: Pick<Settings, 'dataRoot' | 'serverUser' | 'runtime' | 'image' | 'pgBinPath'>): TenantRuntime;
  /** store.update for a change that may touch tenants (their metadata files follow). */
  change<T>(fn: (current: Catalog | undefined) => Promise<{ next?: Catalog; result: T; afterWrite?: () => Promise<void> }>): Promise<T>;
}

export function notSetUp(home: string): PgsError {
  return new PgsError('NOT_SET_UP', `pgs is not set up in ${home}: run "pgs setup" first`);
}
