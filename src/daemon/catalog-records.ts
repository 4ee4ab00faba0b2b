import type { Catalog, Settings, Tenant } from '../catalog/schema.js';
import type { Pgs } from '../service/pgs.js';
import { findTenant, type TenantChanges } from '../service/tenant-rules.js';
import type { TenantRecords } from './parts.js';

/** One host's tenant records: the file catalog, which the daemon alone writes (through Pgs), re-read after each change. */
export class CatalogRecords implements TenantRecords {
  private readonly pgs: Pgs;
  private readonly catalog: () => Catalog;
  private readonly refresh: () => Promise<void>;

  constructor(pgs: Pgs, catalog: () => Catalog, refresh: () => Promise<void>) {
    this.pgs = pgs;
    this.catalog = catalog;
    this.refresh = refresh;
  }

  settings(): Settings {
    return this.catalog().settings;
  }

  list(): Tenant[] {
    return this.catalog().tenants;
  }

  held(id: string): Tenant {
    return findTenant(this.catalog(), id);
  }

  async fresh(id: string): Promise<Tenant> {
    return this.held(id);
  }

  async patch(id: string, changes: TenantChanges, check: (current: Tenant) => void): Promise<{ before: Tenant; after: Tenant }> {
    const done = await this.pgs.patch(id, changes, check);
    await this.refresh();
    return done;
  }
}
