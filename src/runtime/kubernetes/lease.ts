/**
 * One pgs pod at a time does what must not be done twice (suspending idle
 * tenants, keeping backup schedules in order): the one holding a
 * coordination.k8s.io Lease. Every pod routes and serves the API either way.
 *
 * The holder renews the lease every `renewMs`; another pod takes it once it
 * has not been renewed for `durationMs`. Every write names the version read,
 * so of two pods taking an expired lease at once only one succeeds. A pod
 * that stops cleanly releases the lease, so the next one need not wait.
 */
import { KubeError, RESOURCES, type KubeClient, type KubeResource } from './client.js';

type Lease = KubeResource & {
  spec?: { holderIdentity?: string; leaseDurationSeconds?: number; acquireTime?: string; renewTime?: string; leaseTransitions?: number };
};

/** A MicroTime as the API has it: RFC 3339 with microseconds. */
function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export interface LeaderLeaseOptions {
  name: string;
  /** This pod's name. */
  identity: string;
  durationMs?: number;
  renewMs?: number;
  /** Called when this pod becomes the leader (true) or stops being it (false). */
  onChange?: (leader: boolean) => void;
  now?: () => number;
}

export class LeaderLease {
  private readonly client: KubeClient;
  private readonly name: string;
  private readonly identity: string;
  private readonly durationMs: number;
  private readonly renewMs: number;
  private readonly onChange: ((leader: boolean) => void) | undefined;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private leading = false;
  private stopped = false;

  constructor(client: KubeClient, options: LeaderLeaseOptions) {
    this.client = client;
    this.name = options.name;
    this.identity = options.identity;
    this.durationMs = options.durationMs ?? 15_000;
    this.renewMs = options.renewMs ?? 5_000;
    this.onChange = options.onChange;
    this.now = options.now ?? Date.now;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** Tries at once, then every renewMs. */
  start(): Promise<void> {
    this.stopped = false;
    return this.tick();
  }

  private async tick(): Promise<void> {
    let leader = false;
    try {
      leader = await this.attempt();
    } catch {
      // The API server is away: a leader that cannot renew steps down rather than risk two leaders.
      leader = false;
    }
    this.set(leader);
    if (!this.stopped) {
      this.timer = setTimeout(() => void this.tick(), this.renewMs);
      this.timer.unref();
    }
  }

  private set(leader: boolean): void {
    if (leader === this.leading) return;
    this.leading = leader;
    this.onChange?.(leader);
  }

  /** One round: take, renew or leave the lease; whether this pod holds it afterwards. */
  async attempt(): Promise<boolean> {
    const now = this.now();
    const seconds = Math.ceil(this.durationMs / 1000);
    const held = await this.client.get<Lease>(RESOURCES.leases, this.name);
    if (!held) {
      try {
        await this.client.create<Lease>(RESOURCES.leases, {
          apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: this.name },
          spec: { holderIdentity: this.identity, leaseDurationSeconds: seconds, acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: 0 },
        });
        return true;
      } catch (e) {
        if (e instanceof KubeError && e.statusCode === 409) return false;
        throw e;
      }
    }
    const spec = held.spec ?? {};
    const mine = spec.holderIdentity === this.identity;
    const renewed = spec.renewTime ? Date.parse(spec.renewTime) : 0;
    const expired = !spec.holderIdentity || now - renewed > (spec.leaseDurationSeconds ?? seconds) * 1000;
    if (!mine && !expired) return false;
    const next: Lease = {
      ...held,
      spec: {
        ...spec,
        holderIdentity: this.identity,
        leaseDurationSeconds: seconds,
        renewTime: microTime(now),
        ...(mine ? {} : { acquireTime: microTime(now), leaseTransitions: (spec.leaseTransitions ?? 0) + 1 }),
      },
    };
    try {
      await this.client.replace(RESOURCES.leases, next);
      return true;
    } catch (e) {
      if (e instanceof KubeError && e.statusCode === 409) return false;
      throw e;
    }
  }

  /** Stops trying; a leader gives the lease up so that another pod takes it at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (!this.leading) return;
    this.set(false);
    const held = await this.client.get<Lease>(RESOURCES.leases, this.name).catch(() => undefined);
    if (held?.spec?.holderIdentity !== this.identity) return;
    await this.client.replace(RESOURCES.leases, { ...held, spec: { ...held.spec, holderIdentity: '', renewTime: microTime(0) } }).catch(() => undefined);
  }
}
