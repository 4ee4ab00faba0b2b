/**
 * The few Kubernetes API calls the kubernetes runtime makes, over HTTPS (or
 * HTTP to a local test server), with no client library: get, list, create,
 * JSON merge patch (optimistic: a patch that names a resourceVersion fails
 * with a conflict when the object moved on), replace, delete, and watch.
 * Every call is checked against the permissions the runtime declares
 * (permissions.ts), so that the Role in deploy/kubernetes is exactly what
 * the code uses. Where to connect is kubeconfig.ts's; the bearer token,
 * kept fresh, credentials.ts's.
 */
import http from 'node:http';
import https from 'node:https';
import { PgsError } from '../../core/errors.js';
import { QUIET_LOG, debugLog, type Log } from '../../core/log.js';
import { BearerToken, type CredentialOptions } from './credentials.js';
import type { KubeConnection } from './kubeconfig.js';
import { permitted } from './permissions.js';
import { KubeError, collectionPath, type KubeResource, type ResourceRef, type WatchEvent } from './resources.js';

export { Informer, type ListAndWatch } from './informer.js';
export { loadConnection, parseKubeconfig, type KubeConnection } from './kubeconfig.js';
export { KubeError, RESOURCES, type KubeResource, type ObjectMeta, type ResourceRef, type WatchEvent } from './resources.js';

const debug = debugLog('pgs:kube');

/** A watch line longer than this is not an event pgs can hold (the API server keeps objects under 1.5 MiB). */
const MAX_WATCH_LINE = 16 * 1024 * 1024;
const WATCH_TYPES = new Set(['ADDED', 'MODIFIED', 'DELETED', 'BOOKMARK', 'ERROR']);

/** One line of a watch as an event, or why it is not one. */
export function parseWatchLine<T extends KubeResource>(line: string): WatchEvent<T> | Error {
  let event: unknown;
  try {
    event = JSON.parse(line);
  } catch (e) {
    return new Error(`a line that is not JSON (${(e as Error).message.slice(0, 100)})`);
  }
  const e = event as { type?: unknown; object?: { metadata?: { name?: unknown } } } | null;
  if (!e || typeof e !== 'object' || !WATCH_TYPES.has(e.type as string) || !e.object || typeof e.object !== 'object') return new Error('a line that is not a watch event');
  if (e.type !== 'ERROR' && e.type !== 'BOOKMARK' && typeof e.object.metadata?.name !== 'string') return new Error(`a ${String(e.type)} event without metadata.name`);
  return event as WatchEvent<T>;
}

export interface KubeClientOptions {
  /** How the bearer token is kept fresh (credentials.ts). */
  credentials?: CredentialOptions;
  /** Where a watch that had to be dropped (a line that is not an event) is told. */
  log?: Log;
}

export class KubeClient {
  readonly connection: KubeConnection;
  private readonly agent: http.Agent;
  private readonly url: URL;
  private readonly credentials: BearerToken;
  private readonly log: Log;

  constructor(connection: KubeConnection, options: KubeClientOptions = {}) {
    this.connection = connection;
    this.url = new URL(connection.server);
    this.agent = this.url.protocol === 'https:'
      ? new https.Agent({ keepAlive: true, ca: connection.ca, cert: connection.cert, key: connection.key, rejectUnauthorized: !connection.insecureSkipTlsVerify })
      : new http.Agent({ keepAlive: true });
    this.credentials = new BearerToken(connection, options.credentials);
    this.log = options.log ?? QUIET_LOG;
  }

  get namespace(): string {
    return this.connection.namespace;
  }

  private check(ref: ResourceRef, verb: string): void {
    if (!permitted(ref.group, ref.resource, verb)) {
      throw new PgsError('INTERNAL', `pgs does not declare "${verb}" on ${ref.group || 'core'}/${ref.resource} (src/runtime/kubernetes/permissions.ts): the call was not made`);
    }
  }

  /** One call; a 401 with a token that can be renewed (a file, a program) is tried once more with the new one. */
  private async request(method: string, pathAndQuery: string, body?: unknown, contentType = 'application/json'): Promise<{ status: number; body: unknown }> {
    const token = await this.credentials.get();
    try {
      return await this.send(method, pathAndQuery, token, body, contentType);
    } catch (e) {
      if (!(e instanceof KubeError && e.statusCode === 401) || !this.credentials.renewable) throw e;
      this.credentials.refused(token);
      const fresh = await this.credentials.get();
      if (fresh === token) throw e;
      debug(`${method} ${pathAndQuery}: 401 with the old token, trying the renewed one`);
      return this.send(method, pathAndQuery, fresh, body, contentType);
    }
  }

  private send(method: string, pathAndQuery: string, token: string | undefined, body: unknown, contentType: string): Promise<{ status: number; body: unknown }> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const headers: Record<string, string> = { accept: 'application/json' };
      if (token) headers.authorization = `Bearer ${token}`;
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
          } catch { /* not JSON (a proxy's page, a plain-text error): the text itself is the message */ }
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
   * version is too old) arrives as onEnd with a KubeError: list again. A
   * line that is not an event ends the watch with an error (and a warning
   * in the log): the caller watches again, as after any failed watch.
   */
  watch<T extends KubeResource>(ref: ResourceRef, resourceVersion: string, onEvent: (e: WatchEvent<T>) => void, onEnd: (error?: Error) => void, labelSelector?: string): { stop(): void } {
    this.check(ref, 'watch');
    const query = new URLSearchParams({ watch: 'true', resourceVersion, allowWatchBookmarks: 'true' });
    if (labelSelector) query.set('labelSelector', labelSelector);
    let ended = false;
    let req: http.ClientRequest | undefined;
    const end = (error?: Error) => {
      if (ended) return;
      ended = true;
      req?.destroy();
      onEnd(error);
    };
    const drop = (why: string) => {
      debug(`watch ${ref.resource}: ${why}`);
      this.log.warn('kubernetes watch dropped', { resource: ref.resource, reason: why });
      end(new Error(`watch ${ref.resource}: ${why}; watching again`));
    };
    const open = (token: string | undefined) => {
      if (ended) return;
      const headers: Record<string, string> = { accept: 'application/json' };
      if (token) headers.authorization = `Bearer ${token}`;
      const transport = this.url.protocol === 'https:' ? https : http;
      req = transport.request({
        protocol: this.url.protocol, hostname: this.url.hostname, port: this.url.port, method: 'GET',
        path: `${collectionPath(ref, this.namespace)}?${query.toString()}`, headers, agent: false,
        ca: this.connection.ca, cert: this.connection.cert, key: this.connection.key, rejectUnauthorized: !this.connection.insecureSkipTlsVerify,
      }, (res) => {
        if (res.statusCode !== 200) {
          if (res.statusCode === 401) this.credentials.refused(token);
          let text = '';
          res.on('data', (c: Buffer) => { if (text.length < 4096) text += c.toString('utf8'); });
          res.on('end', () => end(new KubeError(res.statusCode ?? 0, res.statusCode === 410 ? 'Expired' : String(res.statusCode), `watch ${ref.resource}: ${text.slice(0, 200)}`)));
          return;
        }
        let pending = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          if (ended) return;
          pending += chunk;
          let newline;
          while ((newline = pending.indexOf('\n')) >= 0) {
            const line = pending.slice(0, newline).trim();
            pending = pending.slice(newline + 1);
            if (!line) continue;
            const event = parseWatchLine<T>(line);
            if (event instanceof Error) return drop(event.message);
            if (event.type === 'ERROR') {
              const status = event.object as unknown as { code?: number; reason?: string; message?: string };
              return end(new KubeError(status.code ?? 500, status.code === 410 ? 'Expired' : (status.reason ?? 'Error'), `watch ${ref.resource}: ${status.message ?? 'error'}`));
            }
            try {
              onEvent(event);
            } catch (e) {
              return drop(`handling a ${event.type} event failed: ${(e as Error).message}`);
            }
          }
          if (pending.length > MAX_WATCH_LINE) drop(`a line longer than ${MAX_WATCH_LINE / 1024 / 1024} MiB`);
        });
        res.on('end', () => end());
        res.on('error', (e) => end(e));
      });
      req.on('error', (e) => end(e));
      req.end();
    };
    this.credentials.get().then(open, (e: unknown) => end(e as Error));
    return {
      stop: () => {
        ended = true;
        req?.destroy();
      },
    };
  }

  close(): void {
    this.agent.destroy();
  }
}
