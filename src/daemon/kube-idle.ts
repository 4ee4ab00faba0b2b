import type { Log } from '../core/log.js';
import type { Router } from '../router/router.js';
import { lastActivity, type PodActivity } from '../runtime/kubernetes/activity.js';
import type { KubeClient } from '../runtime/kubernetes/client.js';
import type { KubeTenants } from '../runtime/kubernetes/tenants.js';
import { idleLongEnough } from '../service/tenant-rules.js';
import type { KubeBackups } from './kube-backups.js';

export interface KubeIdleDeps {
  client: KubeClient;
  tenants: KubeTenants;
  router: Router;
  activity: PodActivity;
  backups: KubeBackups | undefined;
  log: Log;
  isLeader: () => boolean;
  stopping: () => boolean;
}

/**
 * Idle suspension across pods. Every pod says, every few seconds, which
 * tenants it served (its activity Lease); the leader suspends a tenant that
 * no pod served for its autosuspend time at two looks in a row, with every
 * live pod having published since the first: a client that came to another
 * pod just before is seen first. With backups on, what changed since the
 * last backup is backed up before (hibernation has lost volumes in some
 * operator versions).
 */
export class KubeIdle {
  private readonly deps: KubeIdleDeps;
  /** Tenants the leader found idle, and when: suspended only if still idle at a later look. */
  private readonly idleSeen = new Map<string, number>();
  /** When the leader first saw each tenant serving (a tenant is not idle before it has served that long). */
  private readonly servingSince = new Map<string, number>();
  private ticking = false;

  constructor(deps: KubeIdleDeps) {
    this.deps = deps;
  }

  /** The tenant's autosuspend changed, or this pod begins to lead: its time counts from now. */
  forget(id?: string): void {
    if (id === undefined) this.servingSince.clear();
    else this.servingSince.delete(id);
  }

  /** One look: say which tenants this pod served; the leader suspends the idle ones. */
  async tick(): Promise<void> {
    const { tenants, router, activity, log } = this.deps;
    if (this.ticking || this.deps.stopping()) return;
    this.ticking = true;
    try {
      const now = Date.now();
      for (const view of tenants.list()) {
        if (router.connectionCount(view.id) > 0) activity.note(view.id, now);
        else {
          const last = router.lastUsed(view.id);
          if (last !== undefined) activity.note(view.id, last);
        }
      }
      await activity.publish(now);
      if (this.deps.isLeader()) await this.suspendIdle(now);
    } catch (err) {
      log.warn('could not publish activity or suspend idle tenants', { error: (err as Error).message });
    } finally {
      this.ticking = false;
    }
  }

  private async suspendIdle(now: number): Promise<void> {
    const { client, tenants, router, backups, log } = this.deps;
    const { active, oldestRenewal } = await lastActivity(client, now);
    for (const view of tenants.list()) {
      const t = view.tenant;
      if (!t || !view.healthy || view.suspended) {
        this.servingSince.delete(view.id);
        this.idleSeen.delete(view.id);
        continue;
      }
      const since = this.servingSince.get(view.id) ?? now;
      this.servingSince.set(view.id, since);
      const last = Math.max(since, active.get(view.id) ?? 0);
      if (!idleLongEnough(t, last, now, router.connectionCount(view.id))) {
        this.idleSeen.delete(view.id);
        continue;
      }
      const first = this.idleSeen.get(view.id);
      if (first === undefined || oldestRenewal < first) {
        if (first === undefined) this.idleSeen.set(view.id, now);
        continue;
      }
      try {
        if (backups && !(await backups.readyToHibernate(t, last, now))) continue;
        log.info('suspending an idle tenant', { tenant: view.id, idleSeconds: Math.round((now - last) / 1000) });
        await tenants.setSuspended(view.id, true);
        this.servingSince.delete(view.id);
        this.idleSeen.delete(view.id);
      } catch (err) {
        log.warn('could not suspend an idle tenant', { tenant: view.id, error: (err as Error).message });
      }
    }
  }
}
