/**
 * When each tenant last had a client, across every pgs pod: each pod knows
 * only its own connections, so each keeps a small Lease of its own
 * (`pgs-activity-<pod>`) renewed every few seconds, whose annotation maps
 * the tenants it served since its last renewal (or serves now) to that time.
 * The leader reads them all to decide which tenants are idle; a pod that
 * stopped renewing (gone, or cut off) no longer counts, and its Lease is
 * deleted once it is long stale.
 */
import { KubeError, RESOURCES, type KubeClient, type KubeResource } from './client.js';
import { LABEL_MANAGED_BY } from './objects.js';

export const ACTIVITY_LABEL = 'pgs.sysnee.io/activity';
export const ACTIVITY_ANNOTATION = 'pgs.sysnee.io/last-active';

type Lease = KubeResource & { spec?: { holderIdentity?: string; renewTime?: string; leaseDurationSeconds?: number } };

const microTime = (ms: number): string => new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

export class PodActivity {
  private readonly client: KubeClient;
  private readonly pod: string;
  private readonly intervalMs: number;
  /** tenant → when it last had a client on this pod (ms). */
  private readonly seen = new Map<string, number>();

  constructor(client: KubeClient, pod: string, intervalMs: number) {
    this.client = client;
    this.pod = pod;
    this.intervalMs = intervalMs;
  }

  get leaseName(): string {
    return `pgs-activity-${this.pod}`.slice(0, 253);
  }

  /** A tenant had a client at `at` (ms). */
  note(id: string, at: number): void {
    if (at > (this.seen.get(id) ?? 0)) this.seen.set(id, at);
  }

  forget(id: string): void {
    this.seen.delete(id);
  }

  /** Writes this pod's Lease: its renewal time and the tenants it served. */
  async publish(now = Date.now()): Promise<void> {
    const active: Record<string, number> = {};
    for (const [id, at] of this.seen) active[id] = Math.floor(at / 1000);
    const spec = { holderIdentity: this.pod, renewTime: microTime(now), leaseDurationSeconds: Math.ceil((this.intervalMs * 3) / 1000) };
    const annotations = { [ACTIVITY_ANNOTATION]: JSON.stringify(active) };
    const held = await this.client.get<Lease>(RESOURCES.leases, this.leaseName);
    if (!held) {
      await this.client.create<Lease>(RESOURCES.leases, {
        apiVersion: 'coordination.k8s.io/v1', kind: 'Lease',
        metadata: { name: this.leaseName, labels: { [LABEL_MANAGED_BY]: 'pgs', [ACTIVITY_LABEL]: 'true' }, annotations },
        spec,
      });
      return;
    }
    await this.client.replace<Lease>(RESOURCES.leases, { ...held, metadata: { ...held.metadata, annotations: { ...held.metadata.annotations, ...annotations } }, spec: { ...held.spec, ...spec } });
  }

  /** Deletes this pod's Lease (a clean stop). */
  async withdraw(): Promise<void> {
    await this.client.delete(RESOURCES.leases, this.leaseName).catch(() => false);
  }
}

/**
 * The last time each tenant had a client on any pod (ms), from every pod's
 * activity Lease, and the oldest renewal among the live pods (those whose
 * Lease has not expired): a decision taken after it has heard from every
 * live pod. Leases not renewed for ten times their duration are deleted
 * (their pods are gone).
 */
export async function lastActivity(client: KubeClient, now = Date.now()): Promise<{ active: Map<string, number>; oldestRenewal: number }> {
  const out = new Map<string, number>();
  let oldestRenewal = now;
  const { items } = await client.list<Lease>(RESOURCES.leases, `${ACTIVITY_LABEL}=true`);
  for (const lease of items) {
    const renewed = lease.spec?.renewTime ? Date.parse(lease.spec.renewTime) : 0;
    const duration = (lease.spec?.leaseDurationSeconds ?? 30) * 1000;
    if (now - renewed > 10 * duration) {
      await client.delete(RESOURCES.leases, lease.metadata.name).catch((e: unknown) => {
        if (!(e instanceof KubeError)) throw e;
        return false;
      });
      continue;
    }
    if (now - renewed <= duration) oldestRenewal = Math.min(oldestRenewal, renewed);
    let active: Record<string, unknown> = {};
    try {
      active = JSON.parse(lease.metadata.annotations?.[ACTIVITY_ANNOTATION] ?? '{}') as Record<string, unknown>;
    } catch {
      continue;
    }
    for (const [id, seconds] of Object.entries(active)) {
      if (typeof seconds === 'number' && seconds * 1000 > (out.get(id) ?? 0)) out.set(id, seconds * 1000);
    }
  }
  return { active: out, oldestRenewal };
}
