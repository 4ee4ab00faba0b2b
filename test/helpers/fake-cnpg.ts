/**
 * The part of CloudNativePG the tests need, played on a FakeKube: a new
 * Cluster goes "Setting up primary" then healthy (a volume per instance, a
 * primary, its read-write service and that service's EndpointSlice),
 * hibernation on takes every instance down (the slice loses its ready
 * endpoint) and says so in the cnpg.io/hibernation condition, off brings them
 * back, and `failover` moves the primary. Each step comes `delayMs` after
 * the write that asked for it, through the API server as the real
 * operator's would.
 *
 * With `provision`, each new Cluster gets a real server (a TLS PostgreSQL
 * whose owner `app` has the password from the Cluster's owner Secret, as the
 * operator sets it), its CA as the `<name>-ca` Secret, and the read-write
 * slice pointing at it; a deleted Cluster's server is stopped and its
 * volumes go with it (the operator's owner references).
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { FakeKube as FakeKubeClass, type FakeKube } from './fake-kube.js';
import { PgsHome } from './pgs.js';
import { startTlsPostgres } from './tls-postgres.js';

type Cluster = {
  metadata: { name: string; namespace?: string; annotations?: Record<string, string> };
  spec?: {
    instances?: number;
    bootstrap?: { initdb?: { database?: string; secret?: { name?: string } }; recovery?: { secret?: { name?: string } } };
    externalClusters?: { plugin?: { parameters?: Record<string, string> } }[];
    plugins?: { parameters?: Record<string, string> }[];
  };
  status?: Record<string, unknown>;
};
const GROUP = 'postgresql.cnpg.io';

export interface ProvisionedServer {
  host: string;
  port: number;
  ca: Buffer;
  stop(): Promise<void>;
}

/** Starts a real server for a cluster: its read-write service's name, its database, its owner's password. */
export type Provision = (cluster: { namespace: string; name: string; servername: string; database: string; ownerPassword: string }) => Promise<ProvisionedServer>;

export class FakeCnpg {
  private readonly kube: FakeKube;
  private readonly delayMs: number;
  private readonly provision: Provision | undefined;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly servers = new Map<string, Promise<ProvisionedServer>>();
  /** Each archived server's database (by its name in the object store), for the clusters recovered from it. */
  private readonly databases = new Map<string, string>();
  /** Clusters that never get healthy (a failing bootstrap). */
  readonly stuck = new Set<string>();
  /** Every backup fails (the object store refuses). */
  failBackups = false;

  constructor(kube: FakeKube, options: { delayMs?: number; provision?: Provision } | number = {}) {
    const opts = typeof options === 'number' ? { delayMs: options } : options;
    this.kube = kube;
    this.delayMs = opts.delayMs ?? 30;
    this.provision = opts.provision;
    kube.onWrite = (collection, type, object) => {
      if (collection.startsWith(`${GROUP}/v1/backups/`) && type === 'ADDED') {
        this.later(() => this.backUp(collection.split('/')[3] as string, object.metadata.name));
        return;
      }
      if (!collection.startsWith(`${GROUP}/v1/clusters/`)) return;
      const namespace = collection.split('/')[3] as string;
      if (type === 'DELETED') this.later(() => void this.removed(namespace, object.metadata.name));
      else this.later(() => void this.reconcile(namespace, object.metadata.name));
    };
  }

  private later(step: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      step();
    }, this.delayMs);
    this.timers.add(timer);
  }

  /** The real server behind a cluster, when provisioned. */
  server(namespace: string, name: string): Promise<ProvisionedServer> | undefined {
    return this.servers.get(`${namespace}/${name}`);
  }

  private async reconcile(namespace: string, name: string): Promise<void> {
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
      if (this.provision && !this.servers.has(`${namespace}/${name}`)) {
        const secretName = held.spec?.bootstrap?.initdb?.secret?.name ?? held.spec?.bootstrap?.recovery?.secret?.name ?? `${name}-app`;
        const secret = this.kube.get('', 'v1', 'secrets', namespace, secretName) as { data?: Record<string, string> } | undefined;
        const ownerPassword = Buffer.from(secret?.data?.password ?? '', 'base64').toString('utf8');
        // A recovered cluster holds its source's database, as restored data does.
        const source = held.spec?.externalClusters?.[0]?.plugin?.parameters?.serverName;
        const database = source !== undefined ? this.databases.get(source) : held.spec?.bootstrap?.initdb?.database ?? 'app';
        if (database === undefined) throw new Error(`no backups of server ${source} in the fake object store`);
        this.databases.set(held.spec?.plugins?.[0]?.parameters?.serverName ?? name, database);
        const starting = this.provision({ namespace, name, servername: `${name}-rw.${namespace}.svc`, database, ownerPassword });
        this.servers.set(`${namespace}/${name}`, starting);
        const server = await starting;
        if (!this.kube.get(GROUP, 'v1', 'clusters', namespace, name)) return; // deleted meanwhile (removed() stops it)
        this.kube.put('', 'v1', 'secrets', namespace, { metadata: { name: `${name}-ca`, labels: { 'cnpg.io/cluster': name } }, data: { 'ca.crt': server.ca.toString('base64') } });
        this.publish(namespace, name, server, true);
      }
      for (let i = 1; i <= instances; i++) {
        this.kube.put('', 'v1', 'persistentvolumeclaims', namespace, { metadata: { name: `${name}-${i}`, labels: { 'cnpg.io/cluster': name } }, spec: {} });
      }
      this.set(namespace, name, {
        phase: 'Cluster in healthy state', instances, readyInstances: hibernate ? 0 : instances, currentPrimary: `${name}-1`, writeService: `${name}-rw`,
        // With the plugin archiving, the operator says whether WAL reaches the object store.
        ...(held.spec?.plugins?.length ? { conditions: [{ type: 'ContinuousArchiving', status: 'True', reason: 'ContinuousArchivingSuccess', message: 'Continuous archiving is working', lastTransitionTime: new Date().toISOString() }] } : {}),
      });
      if (!hibernate) return;
    }
    const server = await this.servers.get(`${namespace}/${name}`);
    if (hibernate && !hibernated) {
      if (server) this.publish(namespace, name, server, false);
      this.set(namespace, name, { ...this.statusOf(namespace, name), readyInstances: 0, conditions: [{ type: 'cnpg.io/hibernation', status: 'True', reason: 'Hibernated', message: 'Cluster has been hibernated', lastTransitionTime: new Date().toISOString() }] });
    } else if (!hibernate && hibernated) {
      if (server) this.publish(namespace, name, server, true);
      this.set(namespace, name, { ...this.statusOf(namespace, name), readyInstances: instances, conditions: [{ type: 'cnpg.io/hibernation', status: 'False', reason: 'Resumed', message: 'Cluster has been resumed', lastTransitionTime: new Date().toISOString() }] });
    }
  }

  private statusOf(namespace: string, name: string): Record<string, unknown> {
    return ((this.kube.get(GROUP, 'v1', 'clusters', namespace, name) as Cluster | undefined)?.status ?? {});
  }

  /** The read-write service's EndpointSlice: the server's address, ready or not. */
  private publish(namespace: string, name: string, server: { host: string; port: number }, ready: boolean): void {
    this.kube.put('discovery.k8s.io', 'v1', 'endpointslices', namespace, {
      metadata: { name: `${name}-rw-abcde`, labels: { 'kubernetes.io/service-name': `${name}-rw`, 'cnpg.io/cluster': name } },
      addressType: 'IPv4',
      endpoints: ready ? [{ addresses: [server.host], conditions: { ready: true } }] : [],
      ports: [{ name: 'postgres', port: server.port, protocol: 'TCP' }],
    });
  }

  private async removed(namespace: string, name: string): Promise<void> {
    const key = `${namespace}/${name}`;
    const server = this.servers.get(key);
    this.servers.delete(key);
    for (const [group, resource, object] of [['discovery.k8s.io', 'endpointslices', `${name}-rw-abcde`], ['', 'secrets', `${name}-ca`]] as const) this.kube.remove(group, 'v1', resource, namespace, object);
    await (await server)?.stop();
  }

  /**
   * A Backup through the plugin, as the operator and the plugin report it:
   * running, then completed (or failed, for a cluster that does not serve),
   * and the cluster's server in its ObjectStore's recovery window.
   */
  private backUp(namespace: string, name: string): void {
    const backup = this.kube.get(GROUP, 'v1', 'backups', namespace, name) as { spec?: { cluster?: { name?: string } } } | undefined;
    const clusterName = backup?.spec?.cluster?.name ?? '';
    const cluster = this.kube.get(GROUP, 'v1', 'clusters', namespace, clusterName) as Cluster | undefined;
    const startedAt = new Date().toISOString();
    const serving = cluster?.status?.phase === 'Cluster in healthy state' && (cluster.status.readyInstances as number) > 0;
    if (!cluster || !serving || this.failBackups) {
      this.kube.mutate(GROUP, 'v1', 'backups', namespace, name, (b) => ({ ...b, status: { phase: 'failed', startedAt, stoppedAt: startedAt, error: cluster ? 'cannot back up a cluster with no ready instance' : `cluster ${clusterName} not found` } }));
      return;
    }
    const parameters = cluster.spec?.plugins?.[0]?.parameters ?? {};
    const serverName = parameters.serverName ?? clusterName;
    this.kube.mutate(GROUP, 'v1', 'backups', namespace, name, (b) => ({ ...b, status: { phase: 'running', startedAt, serverName } }));
    this.later(() => {
      const stoppedAt = new Date().toISOString();
      const backupId = stoppedAt.replace(/[-:]/g, '').slice(0, 15);
      this.kube.mutate(GROUP, 'v1', 'backups', namespace, name, (b) => ({ ...b, status: { phase: 'completed', startedAt, stoppedAt, serverName, backupId, beginLSN: '0/2000028', endLSN: '0/2000138', method: 'plugin' } }));
      const store = parameters.barmanObjectName;
      if (store && this.kube.get('barmancloud.cnpg.io', 'v1', 'objectstores', namespace, store)) {
        this.kube.mutate('barmancloud.cnpg.io', 'v1', 'objectstores', namespace, store, (o) => {
          const windows = ((o.status as { serverRecoveryWindow?: Record<string, Record<string, string>> } | undefined)?.serverRecoveryWindow) ?? {};
          const first = windows[serverName]?.firstRecoverabilityPoint ?? startedAt;
          return { ...o, status: { serverRecoveryWindow: { ...windows, [serverName]: { firstRecoverabilityPoint: first, lastSuccessfulBackupTime: stoppedAt } } } };
        });
      }
    });
  }

  private set(namespace: string, name: string, status: Record<string, unknown>): void {
    if (!this.kube.get(GROUP, 'v1', 'clusters', namespace, name)) return;
    this.kube.mutate(GROUP, 'v1', 'clusters', namespace, name, (c) => ({ ...c, status }));
  }

  /** The primary moves to instance 2; the read-write service (and its slice, to `to` when given) follows it. */
  failover(namespace: string, name: string, to?: { host: string; port: number }): void {
    this.kube.mutate(GROUP, 'v1', 'clusters', namespace, name, (c) => ({ ...c, status: { ...(c.status as object), currentPrimary: `${name}-2` } }));
    if (to) this.publish(namespace, name, to, true);
  }

  /** Stops every timer and every server it started. */
  async stop(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.kube.onWrite = undefined;
    const servers = [...this.servers.values()];
    this.servers.clear();
    await Promise.all(servers.map(async (s) => (await s.catch(() => undefined))?.stop()));
  }
}

/**
 * A fake API server (with a bearer token when given), the fake operator
 * giving each cluster a real TLS PostgreSQL, and a pgs home whose kubeconfig
 * points at them (its context's namespace: `namespace`, else none).
 */
export async function fakeClusterHome(options: { token?: string; namespace?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ fake: FakeKube; operator: FakeCnpg; home: PgsHome; stop(): Promise<void> }> {
  const fake = await new FakeKubeClass(options.token !== undefined ? { token: options.token } : {}).start();
  const operator = new FakeCnpg(fake, { provision: (c) => startTlsPostgres({ servername: c.servername, database: c.database, ownerPassword: c.ownerPassword }) });
  const home = await PgsHome.make({ PGS_READY_TIMEOUT: '20', ...options.env });
  const kubeconfig = path.join(home.home, 'kubeconfig');
  writeFileSync(kubeconfig, JSON.stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'test',
    clusters: [{ name: 'fake', cluster: { server: fake.url } }],
    users: [{ name: 'pgs', user: options.token !== undefined ? { token: options.token } : {} }],
    contexts: [{ name: 'test', context: { cluster: 'fake', user: 'pgs', ...(options.namespace ? { namespace: options.namespace } : {}) } }],
  }), { mode: 0o600 });
  home.env.KUBECONFIG = kubeconfig;
  return {
    fake, operator, home,
    stop: async () => {
      await home.run(['stop']);
      await operator.stop();
      await fake.stop();
      await home.destroy();
    },
  };
}
