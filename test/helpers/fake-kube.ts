/**
 * A small Kubernetes API server for the tests (no real one can run here): it
 * stores objects by group, version, resource, namespace and name, gives each
 * write a new resourceVersion, refuses a create of an existing name
 * (AlreadyExists) and a patch or replace against an old version (Conflict),
 * serves lists with equality label selectors and watches from a version
 * (410 Expired once that version has left its event log), and checks the
 * bearer token. Tests play the operator through `mutate` (status changes),
 * and the network through `dropWatches` and `expire`.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';

type Obj = { metadata: { name: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string>; [k: string]: unknown }; [k: string]: unknown };
interface Event { rv: number; collection: string; type: 'ADDED' | 'MODIFIED' | 'DELETED'; object: Obj }
interface Watcher { collection: string; selector: Record<string, string>; res: http.ServerResponse }

/** RFC 7386: null deletes, objects merge, anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> = target && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function parseSelector(text: string | null): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (text ?? '').split(',').filter(Boolean)) {
    const [k, v] = part.split('=');
    out[k as string] = v ?? '';
  }
  return out;
}

const matches = (o: Obj, selector: Record<string, string>) => Object.entries(selector).every(([k, v]) => o.metadata.labels?.[k] === v);

export class FakeKube {
  readonly objects = new Map<string, Obj>();
  /** Every request, as "METHOD path" (no query), for tests that check what was called. */
  readonly requests: string[] = [];
  /** Watches answered 410 Expired (their version had left the log). */
  expiredWatches = 0;
  token: string | undefined;
  /** Called after every write (the fake operator reacts to it). */
  onWrite: ((collection: string, type: 'ADDED' | 'MODIFIED' | 'DELETED', object: Obj) => void) | undefined;
  /** API groups not installed (their resources answer 404, as for a missing CRD). */
  readonly uninstalled = new Set<string>();
  /** A test's admission control: a failure to answer a request with, or undefined to let it through. */
  refuse: ((method: string, collection: string, body: Obj | undefined) => { code: number; reason: string; message: string } | undefined) | undefined;
  private rv = 100;
  private log: Event[] = [];
  private oldest = 0;
  private watchers = new Set<Watcher>();
  private server: http.Server | undefined;
  url = '';

  constructor(options: { token?: string } = {}) {
    this.token = options.token;
  }

  async start(tls?: { cert: string | Buffer; key: string | Buffer }): Promise<this> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => this.handle(req, res);
    this.server = tls ? https.createServer(tls, handler) : http.createServer(handler);
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', resolve));
    this.url = `${tls ? 'https' : 'http'}://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    this.dropWatches();
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  /** Ends every open watch, as an API server does every few minutes. */
  dropWatches(): void {
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
  }

  /** Forgets the event log: a watch from any version before now gets 410 Expired. */
  expire(): void {
    this.log = [];
    this.oldest = this.rv;
  }

  static key(collection: string, name: string): string {
    return `${collection}/${name}`;
  }

  static collection(group: string, version: string, resource: string, namespace: string): string {
    return `${group || 'core'}/${version}/${resource}/${namespace}`;
  }

  get(group: string, version: string, resource: string, namespace: string, name: string): Obj | undefined {
    return this.objects.get(FakeKube.key(FakeKube.collection(group, version, resource, namespace), name));
  }

  /** Stores an object as another party would (the operator making a volume). */
  put(group: string, version: string, resource: string, namespace: string, object: Obj): Obj {
    const collection = FakeKube.collection(group, version, resource, namespace);
    const held = this.objects.has(FakeKube.key(collection, object.metadata.name));
    return this.write(collection, { ...object, metadata: { ...object.metadata, namespace } }, held ? 'MODIFIED' : 'ADDED');
  }

  /** Deletes an object as another party would (the operator's garbage collection); false when there was none. */
  remove(group: string, version: string, resource: string, namespace: string, name: string): boolean {
    const collection = FakeKube.collection(group, version, resource, namespace);
    const held = this.objects.get(FakeKube.key(collection, name));
    if (held) this.write(collection, held, 'DELETED');
    return held !== undefined;
  }

  /** Changes a stored object as another party would (the operator setting status), with a new version and an event. */
  mutate(group: string, version: string, resource: string, namespace: string, name: string, change: (o: Obj) => Obj): Obj {
    const collection = FakeKube.collection(group, version, resource, namespace);
    const held = this.objects.get(FakeKube.key(collection, name));
    if (!held) throw new Error(`no ${collection}/${name}`);
    return this.write(collection, change(structuredClone(held)), 'MODIFIED');
  }

  private write(collection: string, written: Obj, type: Event['type']): Obj {
    this.rv += 1;
    let object = written;
    if (collection.startsWith('core/v1/secrets/') && object.stringData && type !== 'DELETED') {
      // As the API server does: stringData is write-only, merged into data as base64.
      const data = { ...(object.data as Record<string, string> | undefined) };
      for (const [k, v] of Object.entries(object.stringData as Record<string, string>)) data[k] = Buffer.from(v).toString('base64');
      object = { ...object, data };
      delete object.stringData;
    }
    const stored = type === 'DELETED' ? object : { ...object, metadata: { ...object.metadata, resourceVersion: String(this.rv) } };
    const key = FakeKube.key(collection, stored.metadata.name);
    if (type === 'DELETED') this.objects.delete(key);
    else this.objects.set(key, stored);
    const event: Event = { rv: this.rv, collection, type, object: type === 'DELETED' ? { ...stored, metadata: { ...stored.metadata, resourceVersion: String(this.rv) } } : stored };
    this.log.push(event);
    for (const w of this.watchers) {
      if (w.collection === collection && matches(event.object, w.selector)) w.res.write(`${JSON.stringify({ type, object: event.object })}\n`);
    }
    this.onWrite?.(collection, type, event.object);
    return stored;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    this.requests.push(`${req.method} ${url.pathname}`);
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const status = (code: number, reason: string, message: string) => send(code, { kind: 'Status', apiVersion: 'v1', status: 'Failure', code, reason, message });
    if (this.token && req.headers.authorization !== `Bearer ${this.token}`) return status(401, 'Unauthorized', 'Unauthorized');
    const m = /^\/(?:api\/(v1)|apis\/([^/]+)\/([^/]+))\/namespaces\/([^/]+)\/([^/]+)(?:\/([^/]+))?$/.exec(url.pathname);
    if (!m) return status(404, 'NotFound', `no route ${url.pathname}`);
    const [, coreVersion, group = '', groupVersion, namespace = '', resource = '', name] = m;
    if (this.uninstalled.has(group)) return status(404, 'NotFound', 'the server could not find the requested resource');
    const collection = FakeKube.collection(group, (coreVersion ?? groupVersion) as string, resource, namespace);
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => { text += c; });
    req.on('end', () => {
      const body = text ? JSON.parse(text) as Obj : undefined;
      const refused = req.method !== 'GET' ? this.refuse?.(req.method ?? '', collection, body) : undefined;
      if (refused) return status(refused.code, refused.reason, refused.message);
      const key = name ? FakeKube.key(collection, decodeURIComponent(name)) : '';
      const held = name ? this.objects.get(key) : undefined;
      switch (req.method) {
        case 'GET': {
          if (name) return held ? send(200, held) : status(404, 'NotFound', `${resource} "${name}" not found`);
          const selector = parseSelector(url.searchParams.get('labelSelector'));
          if (url.searchParams.get('watch') === 'true') {
            const from = Number(url.searchParams.get('resourceVersion') ?? '0');
            res.writeHead(200, { 'content-type': 'application/json' });
            if (from < this.oldest) {
              this.expiredWatches += 1;
              res.end(`${JSON.stringify({ type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired', message: `too old resource version: ${from} (${this.oldest})` } })}\n`);
              return;
            }
            for (const e of this.log) {
              if (e.rv > from && e.collection === collection && matches(e.object, selector)) res.write(`${JSON.stringify({ type: e.type, object: e.object })}\n`);
            }
            const watcher = { collection, selector, res };
            this.watchers.add(watcher);
            res.on('close', () => this.watchers.delete(watcher));
            return;
          }
          const items = [...this.objects.entries()].filter(([k, o]) => k.startsWith(`${collection}/`) && matches(o, selector)).map(([, o]) => o);
          return send(200, { kind: 'List', metadata: { resourceVersion: String(this.rv) }, items });
        }
        case 'POST': {
          if (!body?.metadata?.name) return status(422, 'Invalid', 'metadata.name is required');
          const k = FakeKube.key(collection, body.metadata.name);
          if (this.objects.has(k)) return status(409, 'AlreadyExists', `${resource} "${body.metadata.name}" already exists`);
          return send(201, this.write(collection, { ...body, metadata: { ...body.metadata, namespace, uid: randomUUID(), creationTimestamp: new Date().toISOString() } }, 'ADDED'));
        }
        case 'PATCH': {
          if (!held) return status(404, 'NotFound', `${resource} "${name}" not found`);
          if (req.headers['content-type'] !== 'application/merge-patch+json') return status(415, 'UnsupportedMediaType', 'merge patches only');
          const wanted = body?.metadata?.resourceVersion;
          if (wanted !== undefined && wanted !== held.metadata.resourceVersion) {
            return status(409, 'Conflict', `Operation cannot be fulfilled on ${resource} "${name}": the object has been modified; please apply your changes to the latest version and try again`);
          }
          const merged = mergePatch(held, body) as Obj;
          return send(200, this.write(collection, { ...merged, metadata: { ...merged.metadata, name: held.metadata.name } }, 'MODIFIED'));
        }
        case 'PUT': {
          if (!held) return status(404, 'NotFound', `${resource} "${name}" not found`);
          if (body?.metadata?.resourceVersion !== held.metadata.resourceVersion) return status(409, 'Conflict', `Operation cannot be fulfilled on ${resource} "${name}": the object has been modified`);
          return send(200, this.write(collection, body as Obj, 'MODIFIED'));
        }
        case 'DELETE': {
          if (!held) return status(404, 'NotFound', `${resource} "${name}" not found`);
          this.write(collection, held, 'DELETED');
          return send(200, { kind: 'Status', status: 'Success' });
        }
        default:
          return status(405, 'MethodNotAllowed', String(req.method));
      }
    });
  }
}
