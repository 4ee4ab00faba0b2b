/**
 * The part of CloudNativePG the tests need, played on a FakeKube: a new
 * Cluster goes "Setting up primary" then healthy (a volume per instance, a
 * primary, its read-write service), hibernation on takes every instance down
 * and says so in the cnpg.io/hibernation condition, off brings them back, and
 * `failover` moves the primary. Each step comes `delayMs` after the write
 * that asked for it, through the API server as the real operator's would.
 */
import type { FakeKube } from './fake-kube.js';

type Cluster = { metadata: { name: string; namespace?: string; annotations?: Record<string, string> }; spec?: { instances?: number }; status?: Record<string, unknown> };
const GROUP = 'postgresql.cnpg.io';

export class FakeCnpg {
  private readonly kube: FakeKube;
  private readonly delayMs: number;
  private readonly timers = new Set<NodeJS.Timeout>();
  /** Clusters that never get healthy (a failing bootstrap). */
  readonly stuck = new Set<string>();

  constructor(kube: FakeKube, delayMs = 30) {
    this.kube = kube;
    this.delayMs = delayMs;
    kube.onWrite = (collection, type, object) => {
      if (!collection.startsWith(`${GROUP}/v1/clusters/`) || type === 'DELETED') return;
      this.later(() => this.reconcile(collection.split('/')[3] as string, object.metadata.name));
    };
  }

  private later(step: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      step();
    }, this.delayMs);
    this.timers.add(timer);
  }

  private reconcile(namespace: string, name: string): void {
    const held = this.kube.get(GROUP, 'v1', 'clusters', namespace, name) as Cluster | undefined;
    if (!held) return;
    const status = held.status ?? {};
    const instances = held.spec?.instances ?? 1;
    const hibernate = held.metadata.annotations?.['cnpg.io/hibernation'] === 'on';
    const hibernated = (status.conditions as { type: string; status: string }[] | undefined)?.some((c) => c.type === 'cnpg.io/hibernation' && c.status === 'True') ?? false;
    if (!status.phase) {
      this.set(namespace, name, { phase: 'Setting up primary', instances, readyInstances: 0 });
      return;
    }
    if (status.phase === 'Setting up primary') {
      if (this.stuck.has(name)) return;
      for (let i = 1; i <= instances; i++) {
        this.kube.put('', 'v1', 'persistentvolumeclaims', namespace, { metadata: { name: `${name}-${i}`, labels: { 'cnpg.io/cluster': name } }, spec: {} });
      }
      this.set(namespace, name, { phase: 'Cluster in healthy state', instances, readyInstances: instances, currentPrimary: `${name}-1`, writeService: `${name}-rw` });
      return;
    }
    if (hibernate && !hibernated) {
      this.set(namespace, name, { ...status, readyInstances: 0, conditions: [{ type: 'cnpg.io/hibernation', status: 'True', reason: 'Hibernated', message: 'Cluster has been hibernated' }] });
    } else if (!hibernate && hibernated) {
      this.set(namespace, name, { ...status, readyInstances: instances, conditions: [{ type: 'cnpg.io/hibernation', status: 'False', reason: 'Resumed', message: 'Cluster has been resumed' }] });
    }
  }

  private set(namespace: string, name: string, status: Record<string, unknown>): void {
    this.kube.mutate(GROUP, 'v1', 'clusters', namespace, name, (c) => ({ ...c, status }));
  }

  /** The primary moves to instance 2; the read-write service follows it. */
  failover(namespace: string, name: string): void {
    this.kube.mutate(GROUP, 'v1', 'clusters', namespace, name, (c) => ({ ...c, status: { ...(c.status as object), currentPrimary: `${name}-2` } }));
  }

  stop(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.kube.onWrite = undefined;
  }
}
