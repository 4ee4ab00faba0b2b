import { assertTenantId } from '../catalog/ids.js';
import type { Settings, Tenant } from '../catalog/schema.js';
import { PgsError } from '../core/errors.js';
import type { KubeTenants, KubeTenantView } from '../runtime/kubernetes/tenants.js';
import { applyChanges, type TenantChanges } from '../service/tenant-rules.js';
import type { TenantRecords } from './parts.js';

/** A tenant's view whose record could be read. */
export type HeldView = KubeTenantView & { tenant: Tenant };

/**
 * The Kubernetes tenant records: pgs's record of each tenant is an
 * annotation of its Cluster, read through this pod's watch (every pod
 * watches, so any pod answers) and written against the version read (the
 * API server orders the writes of every pod).
 */
export class KubeRecords implements TenantRecords {
  private readonly tenants: KubeTenants;
  private readonly currentSettings: () => Settings;
  /** Views read from the API server for an answer, before the watch brings them (see observedView). */
  private readonly freshViews = new Map<string, HeldView>();

  constructor(tenants: KubeTenants, settings: () => Settings) {
    this.tenants = tenants;
    this.currentSettings = settings;
  }

  settings(): Settings {
    return this.currentSettings();
  }

  list(): Tenant[] {
    return this.tenants.list().flatMap((v) => (v.tenant ? [v.tenant] : []));
  }

  /** The tenant's view, or TENANT_NOT_FOUND (INVALID_STATE when its record cannot be read). */
  heldView(id: string): HeldView {
    assertTenantId(id);
    const view = this.tenants.view(id);
    if (!view) throw new PgsError('TENANT_NOT_FOUND', `no tenant ${id} (see "pgs list")`);
    if (!view.tenant) throw new PgsError('INVALID_STATE', view.problem ?? `tenant ${id} cannot be read`);
    return view as HeldView;
  }

  held(id: string): Tenant {
    return this.heldView(id).tenant;
  }

  /** As the API server holds it now: a write through this pod is seen before its watch event. */
  async fresh(id: string): Promise<Tenant> {
    const view = await this.tenants.read(id);
    if (!view?.tenant) return this.held(id);
    this.freshViews.set(id, view as HeldView);
    return view.tenant;
  }

  /** The view to show with `tenant`: the one fresh() read it from, else the watch's. */
  observedView(tenant: Tenant): KubeTenantView | undefined {
    const fresh = this.freshViews.get(tenant.id);
    this.freshViews.delete(tenant.id);
    if (fresh && fresh.tenant === tenant) return fresh;
    return this.tenants.view(tenant.id);
  }

  async patch(id: string, changes: TenantChanges, check: (current: Tenant) => void): Promise<{ before: Tenant; after: Tenant }> {
    let before: Tenant | undefined;
    const after = await this.tenants.update(id, (current) => {
      check(current);
      before = current;
      return applyChanges(current, changes);
    });
    return { before: before as Tenant, after };
  }
}
