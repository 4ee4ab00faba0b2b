/**
 * The few Kubernetes API calls the kubernetes runtime makes, over HTTPS (or
 * HTTP to a local test server), with no client library: get, list, create,
 * JSON merge patch (optimistic: a patch that names a resourceVersion fails
 * with a conflict when the object moved on), replace, delete, and watch.
 * Every call is checked against the permissions the runtime declares
 * (permissions.ts), so that the Role in deploy/kubernetes is exactly what
 * the code uses.
 *
 * Where to connect comes from inside a pod (the service account's token, CA
 * and namespace) or from a kubeconfig (KUBECONFIG, else ~/.kube/config: its
 * current context's server, CA, and a bearer token or a client certificate).
 */
import { promises as fs } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { PgsError } from '../../core/errors.js';
import { permitted } from './permissions.js';

/** A kind of object in the API: its group ('' for the core API), version and plural resource name. */
export interface ResourceRef {
  group: string;
  version: string;
  resource: string;
}

export const RESOURCES = {
  clusters: { group: 'postgresql.cnpg.io', version: 'v1', resource: 'clusters' },
  scheduledBackups: { group: 'postgresql.cnpg.io', version: 'v1', resource: 'scheduledbackups' },
  backups: { group: 'postgresql.cnpg.io', version: 'v1', resource: 'backups' },
  objectStores: { group: 'barmancloud.cnpg.io', version: 'v1', resource: 'objectstores' },
  secrets: { group: '', version: 'v1', resource: 'secrets' },
  persistentVolumeClaims: { group: '', version: 'v1', resource: 'persistentvolumeclaims' },
  leases: { group: 'coordination.k8s.io', version: 'v1', resource: 'leases' },
  endpointSlices: { group: 'discovery.k8s.io', version: 'v1', resource: 'endpointslices' },
} as const satisfies Record<string, ResourceRef>;

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  creationTimestamp?: string;
  deletionTimestamp?: string;
}

export interface KubeResource {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  [field: string]: unknown;
}

export interface WatchEvent<T extends KubeResource = KubeResource> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: T;
}

export interface KubeConnection {
  /** https://host:port (or http:// for a local test server). */
  server: string;
  namespace: string;
  token?: string;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  insecureSkipTlsVerify?: boolean;
}

/** A failed call: the API server's status code, its reason (NotFound, AlreadyExists, Conflict, Forbidden...) and message. */
export class KubeError extends Error {
  readonly statusCode: number;
  readonly reason: string;

  constructor(statusCode: number, reason: string, message: string) {
    super(message);
    this.statusCode = statusCode;
    this.reason = reason;
  }
}

const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/**
 * Where to connect: inside a pod, its service account; else the kubeconfig's
 * current context. `namespace` overrides both. Errors name what is missing.
 */
export async function loadConnection(options: { env?: NodeJS.ProcessEnv; namespace?: string; serviceAccountDir?: string } = {}): Promise<KubeConnection> {
  const env = options.env ?? process.env;
  const saDir = options.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  if (env.KUBERNETES_SERVICE_HOST) {
    const [token, ca, namespace] = await Promise.all([
      fs.readFile(path.join(saDir, 'token'), 'utf8'),
      fs.readFile(path.join(saDir, 'ca.crt')),
      fs.readFile(path.join(saDir, 'namespace'), 'utf8').catch(() => 'default'),
    ]).catch((e: NodeJS.ErrnoException) => {
      throw new PgsError('KUBE_CONFIG', `inside a pod (KUBERNETES_SERVICE_HOST is set) but the service account's files cannot be read: ${e.message}`);
    });
    const host = env.KUBERNETES_SERVICE_HOST.includes(':') ? `[${env.KUBERNETES_SERVICE_HOST}]` : env.KUBERNETES_SERVICE_HOST;
    return { server: `https://${host}:${env.KUBERNETES_SERVICE_PORT ?? '443'}`, token: token.trim(), ca, namespace: options.namespace ?? namespace.trim() };
  }
  const file = env.KUBECONFIG?.split(path.delimiter)[0] || path.join(env.HOME ?? os.homedir(), '.kube', 'config');
  const text = await fs.readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new PgsError('KUBE_CONFIG', `no Kubernetes API to talk to: not in a pod, and no kubeconfig at ${file} (${e.code ?? e.message}); set KUBECONFIG`);
  });
  return parseKubeconfig(text, file, options.namespace);
}

interface Kubeconfig {
  'current-context'?: string;
  contexts?: { name: string; context: { cluster: string; user: string; namespace?: string } }[];
  clusters?: { name: string; cluster: { server: string; 'certificate-authority-data'?: string; 'certificate-authority'?: string; 'insecure-skip-tls-verify'?: boolean } }[];
  users?: { name: string; user: { token?: string; 'token-file'?: string; 'client-certificate-data'?: string; 'client-key-data'?: string; 'client-certificate'?: string; 'client-key'?: string; exec?: unknown } }[];
}

type YamlParse = (text: string) => unknown;

/** The current context of a kubeconfig as a connection; files it names are read relative to it. */
export async function parseKubeconfig(text: string, file: string, namespace?: string): Promise<KubeConnection> {
  // In the bundled CLI the package is CommonJS behind a default export; unbundled, ES named exports.
  const yaml = await import('yaml') as { parse?: YamlParse; default?: { parse: YamlParse } };
  const parse = (yaml.parse ?? yaml.default?.parse) as YamlParse;
  const config = parse(text) as Kubeconfig | null;
  const bad = (why: string) => new PgsError('KUBE_CONFIG', `kubeconfig ${file}: ${why}`);
  const contextName = config?.['current-context'];
  if (!contextName) throw bad('no current-context');
  const context = config.contexts?.find((c) => c.name === contextName)?.context;
  if (!context) throw bad(`context ${contextName} is not defined`);
  const cluster = config.clusters?.find((c) => c.name === context.cluster)?.cluster;
  if (!cluster?.server) throw bad(`cluster ${context.cluster} has no server`);
  const user = config.users?.find((u) => u.name === context.user)?.user ?? {};
  if (user.exec) throw bad(`user ${context.user} gets its credentials from a program (exec), which pgs does not run: use a token or a client certificate`);
  const relative = (p: string) => (path.isAbsolute(p) ? p : path.join(path.dirname(file), p));
  const data = async (inline: string | undefined, name: string | undefined): Promise<Buffer | undefined> => {
    if (inline) return Buffer.from(inline, 'base64');
    return name ? fs.readFile(relative(name)) : undefined;
  };
  const token = user.token ?? (user['token-file'] ? (await fs.readFile(relative(user['token-file']), 'utf8')).trim() : undefined);
  const connection: KubeConnection = { server: cluster.server.replace(/\/+$/, ''), namespace: namespace ?? context.namespace ?? 'default' };
  if (token) connection.token = token;
  const ca = await data(cluster['certificate-authority-data'], cluster['certificate-authority']);
  if (ca) connection.ca = ca;
  const cert = await data(user['client-certificate-data'], user['client-certificate']);
  const key = await data(user['client-key-data'], user['client-key']);
  if (cert && key) {
    connection.cert = cert;
    connection.key = key;
  }
  if (cluster['insecure-skip-tls-verify']) connection.insecureSkipTlsVerify = true;
  return connection;
}

function collectionPath(ref: ResourceRef, namespace: string): string {
  const base = ref.group === '' ? `/api/${ref.version}` : `/apis/${ref.group}/${ref.version}`;
  return `${base}/namespaces/${encodeURIComponent(namespace)}/${ref.resource}`;
}

export class KubeClient {
  readonly connection: KubeConnection;
  private readonly agent: http.Agent;
  private readonly url: URL;

  constructor(connection: KubeConnection) {
    this.connection = connection;
    this.url = new URL(connection.server);
    this.agent = this.url.protocol === 'https:'
      ? new https.Agent({ keepAlive: true, ca: connection.ca, cert: connection.cert, key: connection.key, rejectUnauthorized: !connection.insecureSkipTlsVerify })
      : new http.Agent({ keepAlive: true });
  }

  get namespace(): string {
    return this.connection.namespace;
  }

  private check(ref: ResourceRef, verb: string): void {
    if (!permitted(ref.group, ref.resource, verb)) {
      throw new PgsError('INTERNAL', `pgs does not declare "${verb}" on ${ref.group || 'core'}/${ref.resource} (src/runtime/kubernetes/permissions.ts): the call was not made`);
    }
  }

  private request(method: string, pathAndQuery: string, body?: unknown, contentType = 'application/json'): Promise<{ status: number; body: unknown }> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const headers: Record<string, string> = { accept: 'application/json' };
      if (this.connection.token) headers.authorization = `Bearer ${this.connection.token}`;
      if (payload) {
        headers['content-type'] = contentType;
        headers['content-length'] = String(payload.length);
      }
      const transport = this.url.protocol === 'https:' ? https : http;
      const req = transport.request({
        protocol: this.url.protocol, hostname: this.url.hostname, port: this.url.port, method, path: pathAndQuery, headers, agent: this.agent, timeout: 30_000,
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch { /* not JSON: keep the text */ }
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) return resolve({ status, body: parsed });
          const s = (parsed && typeof parsed === 'object' ? parsed : {}) as { reason?: string; message?: string };
          reject(new KubeError(status, s.reason ?? String(status), `${method} ${pathAndQuery}: ${s.message ?? (typeof parsed === 'string' ? parsed : `status ${status}`)}`));
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${pathAndQuery}: no answer from ${this.connection.server} in 30 s`)));
      req.on('error', (e) => reject(e instanceof KubeError ? e : new PgsError('KUBE_UNAVAILABLE', `the Kubernetes API at ${this.connection.server} is not reachable: ${e.message}`)));
      req.end(payload);
    });
  }

  /** The object, or undefined when there is none. */
  async get<T extends KubeResource>(ref: ResourceRef, name: string): Promise<T | undefined> {
    this.check(ref, 'get');
    try {
      return (await this.request('GET', `${collectionPath(ref, this.namespace)}/${encodeURIComponent(name)}`)).body as T;
    } catch (e) {
      if (e instanceof KubeError && e.statusCode === 404) return undefined;
      throw e;
    }
  }

  /** Every object of the kind in the namespace (optionally `key=value,...` labels), and the list's resourceVersion to watch from. */
  async list<T extends KubeResource>(ref: ResourceRef, labelSelector?: string): Promise<{ items: T[]; resourceVersion: string }> {
    this.check(ref, 'list');
    const query = labelSelector ? `?labelSelector=${encodeURIComponent(labelSelector)}` : '';
    const body = (await this.request('GET', `${collectionPath(ref, this.namespace)}${query}`)).body as { items?: T[]; metadata?: { resourceVersion?: string } };
    return { items: body.items ?? [], resourceVersion: body.metadata?.resourceVersion ?? '' };
  }

  /** Makes the object; KubeError reason AlreadyExists (409) when one by that name exists. */
  async create<T extends KubeResource>(ref: ResourceRef, object: T): Promise<T> {
    this.check(ref, 'create');
    return (await this.request('POST', collectionPath(ref, this.namespace), { ...object, metadata: { ...object.metadata, namespace: this.namespace } })).body as T;
  }

  /**
   * A JSON merge patch (null deletes a field). With `resourceVersion` the
   * patch applies only to that version of the object: KubeError reason
   * Conflict (409) when someone changed it since.
   */
  async patch<T extends KubeResource>(ref: ResourceRef, name: string, patch: Record<string, unknown>, resourceVersion?: string): Promise<T> {
    this.check(ref, 'patch');
    const body = resourceVersion ? { ...patch, metadata: { ...(patch.metadata as object | undefined), resourceVersion } } : patch;
    return (await this.request('PATCH', `${collectionPath(ref, this.namespace)}/${encodeURIComponent(name)}`, body, 'application/merge-patch+json')).body as T;
  }

  /** Replaces the object; its metadata.resourceVersion must be the current one (else Conflict). */
  async replace<T extends KubeResource>(ref: ResourceRef, object: T): Promise<T> {
    this.check(ref, 'update');
    return (await this.request('PUT', `${collectionPath(ref, this.namespace)}/${encodeURIComponent(object.metadata.name)}`, object)).body as T;
  }

  /** Deletes the object; false when there was none. */
  async delete(ref: ResourceRef, name: string): Promise<boolean> {
    this.check(ref, 'delete');
    try {
      await this.request('DELETE', `${collectionPath(ref, this.namespace)}/${encodeURIComponent(name)}`);
      return true;
    } catch (e) {
      if (e instanceof KubeError && e.statusCode === 404) return false;
      throw e;
    }
  }

  /**
   * Changes to the kind's objects after `resourceVersion`, one event at a
   * time, until stop() or the stream ends (the API server ends watches every
   * few minutes): `onEnd` gets the error, or undefined. A 410 Gone (the
   * version is too old) arrives as onEnd with a KubeError: list again.
   */
  watch<T extends KubeResource>(ref: ResourceRef, resourceVersion: string, onEvent: (e: WatchEvent<T>) => void, onEnd: (error?: Error) => void, labelSelector?: string): { stop(): void } {
    this.check(ref, 'watch');
    const query = new URLSearchParams({ watch: 'true', resourceVersion, allowWatchBookmarks: 'true' });
    if (labelSelector) query.set('labelSelector', labelSelector);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.connection.token) headers.authorization = `Bearer ${this.connection.token}`;
    const transport = this.url.protocol === 'https:' ? https : http;
    let ended = false;
    const end = (error?: Error) => {
      if (ended) return;
      ended = true;
      onEnd(error);
    };
    const req = transport.request({
      protocol: this.url.protocol, hostname: this.url.hostname, port: this.url.port, method: 'GET',
      path: `${collectionPath(ref, this.namespace)}?${query.toString()}`, headers, agent: false,
      ca: this.connection.ca, cert: this.connection.cert, key: this.connection.key, rejectUnauthorized: !this.connection.insecureSkipTlsVerify,
    }, (res) => {
      if (res.statusCode !== 200) {
        let text = '';
        res.on('data', (c: Buffer) => { text += c.toString('utf8'); });
        res.on('end', () => end(new KubeError(res.statusCode ?? 0, res.statusCode === 410 ? 'Expired' : String(res.statusCode), `watch ${ref.resource}: ${text.slice(0, 200)}`)));
        return;
      }
      let pending = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        pending += chunk;
        let newline;
        while ((newline = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, newline).trim();
          pending = pending.slice(newline + 1);
          if (!line) continue;
          const event = JSON.parse(line) as WatchEvent<T>;
          if (event.type === 'ERROR') {
            const status = event.object as unknown as { code?: number; reason?: string; message?: string };
            req.destroy();
            end(new KubeError(status.code ?? 500, status.code === 410 ? 'Expired' : (status.reason ?? 'Error'), `watch ${ref.resource}: ${status.message ?? 'error'}`));
            return;
          }
          onEvent(event);
        }
      });
      res.on('end', () => end());
      res.on('error', (e) => end(e));
    });
    req.on('error', (e) => end(e));
    req.end();
    return {
      stop: () => {
        ended = true;
        req.destroy();
      },
    };
  }

  close(): void {
    this.agent.destroy();
  }
}

/**
 * A kind's objects kept up to date: a list, then a watch from its version,
 * again after the watch ends (a list when the version has expired). Calls
 * `onChange` with each object that changed (or was deleted), after the cache
 * has it.
 */
export class Informer<T extends KubeResource> {
  readonly cache = new Map<string, T>();
  private watcher: { stop(): void } | undefined;
  private resourceVersion = '';
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly client: KubeClient;
  private readonly ref: ResourceRef;
  private readonly onChange: (name: string, object: T | undefined) => void;
  private readonly labelSelector: string | undefined;
  private readonly retryMs: number;

  constructor(client: KubeClient, ref: ResourceRef, onChange: (name: string, object: T | undefined) => void, options: { labelSelector?: string; retryMs?: number } = {}) {
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
        next.then(() => this.watch(), () => {
          // The API server is away: try again after the same pause.
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
