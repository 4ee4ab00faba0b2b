import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Informer, KubeClient, RESOURCES, parseWatchLine, type KubeResource } from '../../src/runtime/kubernetes/client.js';
import { waitFor } from '../helpers/pgs.js';

const obj = (name: string, rv: string) => ({ metadata: { name, resourceVersion: rv } });
const line = (type: string, o: unknown) => `${JSON.stringify({ type, object: o })}\n`;

/**
 * An API server whose watches answer with the lines a test queues, one list
 * of lines per watch request in turn (and the objects it lists). The watch
 * stays open after its lines, as a real one does.
 */
class ScriptedWatches {
  readonly watches: string[][] = [];
  listed: unknown[] = [];
  watchRequests = 0;
  url = '';
  private server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    res.writeHead(200, { 'content-type': 'application/json' });
    if (url.searchParams.get('watch') !== 'true') return res.end(JSON.stringify({ metadata: { resourceVersion: '1' }, items: this.listed }));
    this.watchRequests += 1;
    for (const l of this.watches.shift() ?? []) res.write(l);
  });

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

describe('a watch line that is not an event', () => {
  let api: ScriptedWatches;
  let client: KubeClient;
  const warned: Record<string, unknown>[] = [];

  before(async () => {
    api = await new ScriptedWatches().start();
    client = new KubeClient({ server: api.url, namespace: 'pgs' }, { log: { info: () => undefined, warn: (message, fields) => warned.push({ message, ...fields }) } });
  });
  after(async () => {
    client.close();
    await api.stop();
  });

  it('ends the watch with an error, is logged, and does not throw out of the data handler', async () => {
    api.watches.push([line('ADDED', obj('a', '2')), 'this is not JSON\n', line('ADDED', obj('never', '3'))]);
    const events: string[] = [];
    const ended = await new Promise<Error | undefined>((resolve) => {
      client.watch(RESOURCES.clusters, '1', (e) => events.push(e.object.metadata.name), resolve);
    });
    assert.deepEqual(events, ['a'], 'the good line before it arrived; nothing after it');
    assert.match(String(ended?.message), /^watch clusters: a line that is not JSON .*; watching again$/);
    assert.equal(warned.at(-1)?.message, 'kubernetes watch dropped');
    assert.equal(warned.at(-1)?.resource, 'clusters');
  });

  it('an informer watches again after a bad line, and sees what comes next', async () => {
    api.listed = [obj('a', '2')];
    const before = api.watchRequests;
    api.watches.push([line('MODIFIED', { kind: 'no metadata' }), line('ADDED', obj('lost', '3'))], [line('ADDED', obj('b', '4'))]);
    const informer = new Informer<KubeResource>(client, RESOURCES.clusters, () => undefined, { retryMs: 20 });
    await informer.start();
    try {
      await waitFor('the informer to see b after the bad line', async () => informer.cache.has('b'), 5_000);
      assert.deepEqual([...informer.cache.keys()].sort(), ['a', 'b']);
      assert.ok(api.watchRequests >= before + 2, 'a second watch was opened');
      assert.match(String(warned.at(-1)?.reason), /a MODIFIED event without metadata\.name/);
    } finally {
      informer.stop();
    }
  });

  it('an onEvent that throws ends the watch instead of the process', async () => {
    api.watches.push([line('ADDED', obj('boom', '5'))]);
    const ended = await new Promise<Error | undefined>((resolve) => {
      client.watch(RESOURCES.clusters, '1', () => {
        throw new Error('handler bug');
      }, resolve);
    });
    assert.match(String(ended?.message), /handling a ADDED event failed: handler bug/);
  });

  it('parseWatchLine: events pass, anything else is an error', () => {
    assert.equal((parseWatchLine(line('ADDED', obj('x', '1')).trim()) as { type: string }).type, 'ADDED');
    assert.equal((parseWatchLine(line('BOOKMARK', { metadata: { resourceVersion: '9' } }).trim()) as { type: string }).type, 'BOOKMARK');
    assert.equal((parseWatchLine(line('ERROR', { code: 410 }).trim()) as { type: string }).type, 'ERROR');
    for (const bad of ['{', 'null', '[]', '"ADDED"', '{"type":"ADDED"}', '{"type":"EXPLODED","object":{}}', '{"type":"DELETED","object":{"metadata":{}}}']) {
      assert.ok(parseWatchLine(bad) instanceof Error, bad);
    }
  });
});
