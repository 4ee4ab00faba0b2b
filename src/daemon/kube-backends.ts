import { AllowList } from '../core/cidr.js';
/**
 * The router's view of tenants that are CloudNativePG clusters: host-name
 * label → tenant from each Cluster's record, the login checked against the
 * verifier in the tenant's Secret, and the way to its server: the cluster's
 * read-write service over TLS (verified with the cluster's own CA, from its
 * `<id>-ca` secret), logged in to as the database's owner. A connection to a
 * suspended (hibernated) tenant wakes it and waits until it serves.
 *
 * The router dials the address the service's EndpointSlice names (the
 * primary's pod), not the service's DNS name: a failover is seen as soon as
 * the operator moves the service, with no DNS or kube-proxy in between; TLS
 * still checks the service's name, which the operator's certificate carries.
 * Without a ready endpoint in the slice it dials the name.
 */
import { parseVerifier, type ScramVerifier } from '../auth/scram.js';
import type { Tenant } from '../catalog/schema.js';
import { effectivePoolSize } from '../service/tenant-rules.js';
import { BackendUnavailable, type RouterBackends, type TenantRoute } from '../router/router.js';
import type { RemoteAddress } from '../router/server-sessions.js';
import { Informer, RESOURCES, type KubeClient, type KubeResource } from '../runtime/kubernetes/client.js';
import { LABEL_MANAGED_BY, OWNER_ROLE, caSecretName, ownerSecretName } from '../runtime/kubernetes/objects.js';
import type { KubeTenants } from '../runtime/kubernetes/tenants.js';

/** The role a tenant's clients log in as, on every runtime. */
export const TENANT_LOGIN = 'postgres';
const POSTGRES_PORT = 5432;

type Secret = KubeResource & { data?: Record<string, string> };
type EndpointSlice = KubeResource & {
  endpoints?: { addresses?: string[]; conditions?: { ready?: boolean } }[];
  ports?: { name?: string; port?: number }[];
};
const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

/** A Secret's value, as the API server returns it (base64 in `data`). */
export function secretValue(secret: Secret | undefined, key: string): string | undefined {
  const encoded = secret?.data?.[key];
  return encoded === undefined ? undefined : Buffer.from(encoded, 'base64').toString('utf8');
}

export interface KubeBackendsOptions {
  /** How long a connection waits for a suspended tenant's cluster to serve. Default 60 s. */
  wakeTimeoutMs?: number;
  /** Called with the name of each of pgs's Secrets that changed (the daemon reloads its tokens). */
  onSecret?: (name: string) => void;
  /** Called with a tenant whose read-write service now points elsewhere (a failover): sessions kept for the old primary must go. */
  onMoved?: (id: string) => void;
}

export class KubeBackends implements RouterBackends {
  private readonly tenants: KubeTenants;
  private readonly client: KubeClient;
  private readonly secrets: Informer<Secret>;
  private readonly slices: Informer<EndpointSlice>;
  private readonly wakeTimeoutMs: number;
  private readonly waking = new Map<string, Promise<void>>();
  /** Host-name label → route, kept as the clusters change (a connection looks one up, never all). */
  private readonly routes = new Map<string, TenantRoute>();
  private readonly labels = new Map<string, string>();
  private unsubscribe: (() => void) | undefined;
  /** Each cluster's CA, read at most once a minute (it changes only when the operator renews it). */
  private readonly cas = new Map<string, { ca: string; at: number }>();
  /** Service → where it points now, kept as its slices change. */
  private readonly endpoints = new Map<string, { host: string; port: number }>();
  /** Slice → its service (a deleted slice's event may not say). */
  private readonly sliceServices = new Map<string, string>();
  private readonly onMoved: ((id: string) => void) | undefined;

  constructor(client: KubeClient, tenants: KubeTenants, options: KubeBackendsOptions = {}) {
    this.client = client;
    this.tenants = tenants;
    this.wakeTimeoutMs = options.wakeTimeoutMs ?? 60_000;
    const onSecret = options.onSecret;
    this.secrets = new Informer<Secret>(client, RESOURCES.secrets, (name) => onSecret?.(name), { labelSelector: `${LABEL_MANAGED_BY}=pgs` });
    this.onMoved = options.onMoved;
    this.slices = new Informer<EndpointSlice>(client, RESOURCES.endpointSlices, (name, slice) => this.sliceChanged(name, slice));
  }

  /**
   * A slice changed: its service's address is worked out once here, not at
   * every connection; a read-write service that now points elsewhere is a
   * failover (onMoved).
   */
  private sliceChanged(name: string, slice: EndpointSlice | undefined): void {
    const service = slice?.metadata.labels?.[SERVICE_NAME_LABEL] ?? this.sliceServices.get(name);
    if (slice && service) this.sliceServices.set(name, service);
    else this.sliceServices.delete(name);
    if (!service) return;
    const before = this.endpoints.get(service);
    const now = this.readyAddress(service);
    if (now) this.endpoints.set(service, now);
    else this.endpoints.delete(service);
    const key = (a: { host: string; port: number } | undefined) => (a ? `${a.host}:${a.port}` : '');
    if (service.endsWith('-rw') && before !== undefined && key(before) !== key(now)) this.onMoved?.(service.slice(0, -'-rw'.length));
  }

  /** Reads the tenants' Secrets and keeps watching them; follows the tenants' records. */
  start(): Promise<void> {
    this.unsubscribe = this.tenants.onChange((id, view) => this.route(id, view?.tenant));
    for (const view of this.tenants.list()) this.route(view.id, view.tenant);
    return Promise.all([this.secrets.start(), this.slices.start()]).then(() => undefined);
  }

  stop(): void {
    this.unsubscribe?.();
    this.secrets.stop();
    this.slices.stop();
  }

  /** Where the service points now: the first ready address of its EndpointSlices, with its postgres port. */
  endpoint(service: string): { host: string; port: number } | undefined {
    return this.endpoints.get(service);
  }

  private readyAddress(service: string): { host: string; port: number } | undefined {
    for (const slice of this.slices.cache.values()) {
      if (slice.metadata.labels?.[SERVICE_NAME_LABEL] !== service) continue;
      const port = slice.ports?.find((p) => p.name === 'postgres')?.port ?? slice.ports?.[0]?.port ?? POSTGRES_PORT;
      for (const endpoint of slice.endpoints ?? []) {
        const host = endpoint.addresses?.[0];
        if (host && endpoint.conditions?.ready !== false) return { host, port };
      }
    }
    return undefined;
  }

  private route(id: string, t: Tenant | undefined): void {
    const old = this.labels.get(id);
    if (old !== undefined) this.routes.delete(old);
    this.labels.delete(id);
    if (!t) {
      // A cluster made again under this id (a restore) has a CA of its own.
      this.cas.delete(id);
      return;
    }
    const label = `${t.id}-${t.suffix}`;
    this.labels.set(id, label);
    this.routes.set(label, {
      id: t.id,
      access: t.access,
      maxConnections: t.maxConnections,
      ...(t.pool === 'transaction' ? { pool: 'transaction' as const, poolSize: effectivePoolSize(t) } : {}),
      ...(t.maxClientConnections !== undefined ? { maxClientConnections: t.maxClientConnections } : {}),
      ...(t.allow !== undefined ? { allow: new AllowList(t.allow) } : {}),
    });
  }

  lookup(label: string): TenantRoute | undefined {
    return this.routes.get(label);
  }

  /**
   * Only the tenant's login role can log in: on the server every session is
   * the owner's, so no other role may be checked here and stand for it.
   */
  async verifier(id: string, role: string): Promise<{ verifier: ScramVerifier | undefined; live: boolean }> {
    if (role !== TENANT_LOGIN) return { verifier: undefined, live: true };
    const secret = this.secrets.cache.get(ownerSecretName(id));
    return { verifier: parseVerifier(secretValue(secret, 'client-verifier')), live: true };
  }

  async backend(id: string): Promise<{ address: RemoteAddress; woke: boolean }> {
    let view = this.tenants.view(id);
    if (!view?.tenant) throw new BackendUnavailable(view?.problem ?? `tenant ${id} does not exist`);
    if (view.tenant.wanted === 'stopped') throw new BackendUnavailable(`tenant ${id} is stopped (pgs start ${id})`);
    let woke = false;
    if (!view.healthy) {
      if (view.suspended) {
        woke = true;
        await this.wake(id);
      }
      try {
        view = await this.tenants.awaitHealthy(id, woke ? this.wakeTimeoutMs : 5_000);
      } catch (e) {
        throw new BackendUnavailable((e as Error).message);
      }
    }
    const owner = this.secrets.cache.get(ownerSecretName(id));
    const password = secretValue(owner, 'password');
    const ca = await this.clusterCa(id);
    if (!password || !ca) throw new BackendUnavailable(`tenant ${id} cannot be reached: ${!password ? `its secret ${ownerSecretName(id)} has no password` : `the cluster's CA (secret ${caSecretName(id)}) is missing`}`);
    const { host, port } = this.endpoint(view.writeHost.split('.')[0] as string) ?? { host: view.writeHost, port: POSTGRES_PORT };
    const database = view.tenant?.database;
    return { address: { kind: 'remote', host, port, servername: view.writeHost, ca: Buffer.from(ca), user: OWNER_ROLE, password, ...(database && database !== id ? { database } : {}) }, woke };
  }

  /** The cluster's CA certificate: the operator's Secret (not pgs's), so read by name, not watched. */
  private async clusterCa(id: string): Promise<string | undefined> {
    const held = this.cas.get(id);
    if (held && Date.now() - held.at < 60_000) return held.ca;
    const ca = secretValue(await this.client.get<Secret>(RESOURCES.secrets, caSecretName(id)), 'ca.crt');
    if (ca) this.cas.set(id, { ca, at: Date.now() });
    else this.cas.delete(id);
    return ca;
  }

  /** One wake per tenant however many clients wait for it. */
  private wake(id: string): Promise<void> {
    let pending = this.waking.get(id);
    if (!pending) {
      pending = this.tenants.setSuspended(id, false).finally(() => this.waking.delete(id));
      this.waking.set(id, pending);
    }
    return pending;
  }
}
