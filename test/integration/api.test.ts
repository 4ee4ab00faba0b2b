import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { OpenApiChecker } from '../helpers/openapi.js';
import { PgsHome, freePort, processRunning, psql, waitFor, type ApiResult } from '../helpers/pgs.js';

interface Tenant { id: string; hostname: string; state: string; access: string; autosuspendSeconds: number | null; maxConnections: number; uptimeSeconds: number | null; healthCheckedAt: string | null; health: string; serverStartedAt: string | null }
interface Created { id: string; hostname: string; password: string; url: string }
interface Problem { type: string; title: string; status: number; code: string; detail: string; field?: string }
interface Status { pid: number; api: string | null; port: number }

/** A request to the API on TCP (loopback HTTP), with a bearer token if given. */
function tcpRequest<T>(address: string, method: string, urlPath: string, options: { token?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<ApiResult<T>> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...(payload === undefined ? {} : { 'content-type': 'application/json' }), ...(options.token ? { authorization: `Bearer ${options.token}` } : {}), ...options.headers };
    const req = http.request({ host, port, method, path: urlPath, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (s: string) => { text += s; });
      res.on('end', () => {
        let body: unknown = text;
        try { body = text === '' ? undefined : JSON.parse(text); } catch { /* text */ }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: body as T, text, buffer: Buffer.from(text) });
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

describe('the REST API: one control plane on the unix socket and on TCP with tokens', () => {
  let pgs: PgsHome;
  let port: number;
  let address: string;
  let checker: OpenApiChecker;
  let admin: string;
  let reader: string;
  let acme: Created;
  /** Calls the unix socket and checks the answer against the document. */
  const unix = async <T>(method: string, template: string, urlPath: string, options: { body?: unknown; headers?: Record<string, string> } = {}) =>
    checker.check(method, template, await pgs.api<T>(method, urlPath, options));
  const tcp = async <T>(method: string, template: string, urlPath: string, options: { token?: string; body?: unknown; headers?: Record<string, string> } = {}) =>
    checker.check(method, template, await tcpRequest<T>(address, method, urlPath, options));

  before(async () => {
    pgs = await PgsHome.make();
    port = await pgs.setup();
    acme = await pgs.json<Created>(['create', 'acme']);
    const status = await pgs.json<Status>(['status']);
    assert.ok(status.api, 'the API listens on TCP');
    address = status.api;
    const doc = await tcpRequest<unknown>(address, 'GET', '/openapi.json');
    assert.equal(doc.status, 200);
    checker = new OpenApiChecker(doc.body);
    checker.check('GET', '/openapi.json', doc);
    admin = (await pgs.json<{ token: string }>(['token', 'create', 'ops', '--scope', 'admin'])).token;
    reader = (await pgs.json<{ token: string }>(['token', 'create', 'dash', '--scope', 'read'])).token;
  });
  after(async () => {
    await pgs.destroy();
  });

  it('the document is OpenAPI 3.1 and lists the contract routes', () => {
    const routes = checker.routes();
    for (const route of [
      'GET /v1/tenants', 'POST /v1/tenants', 'GET /v1/tenants/{id}', 'PATCH /v1/tenants/{id}', 'DELETE /v1/tenants/{id}',
      'POST /v1/tenants/{id}/{action}', 'POST /v1/tenants/{id}/password', 'GET /v1/tenants/{id}/connection', 'GET /v1/tenants/{id}/logs', 'GET /v1/tenants/{id}/queries', 'POST /v1/tenants/{id}/queries/reset',
      'GET /v1/status', 'GET /v1/events', 'GET /healthz', 'GET /metrics', 'GET /openapi.json', 'GET /v1/operations/{id}',
    ]) assert.ok(routes.includes(route), `${route} is documented`);
    assert.equal((checker.doc as unknown as { openapi: string }).openapi, '3.1.0');
  });

  it('tokens: printed once with prefix pgs_, stored only as a hash, file 0600', async () => {
    assert.match(admin, /^pgs_[A-Za-z0-9_-]{43}$/);
    const file = path.join(pgs.home, 'tokens.json');
    const text = await fs.readFile(file, 'utf8');
    assert.ok(!text.includes(admin) && !text.includes(reader.slice(4)), 'no token in the file');
    assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
    const listed = await tcp<{ items: { name: string; scope: string }[] }>('GET', '/v1/tokens', '/v1/tokens', { token: admin });
    assert.deepEqual(listed.body.items.map((t) => [t.name, t.scope]), [['ops', 'admin'], ['dash', 'read']]);
    assert.match(await pgs.ok(['token', 'list']), /^dash\s+read\s+/m);
  });

  it('no token or an unknown one: 401 problem+json with WWW-Authenticate; a read token on a change: 403', async () => {
    const none = await tcp<Problem>('GET', '/v1/tenants', '/v1/tenants');
    assert.equal(none.status, 401);
    assert.equal(none.body.code, 'unauthorized');
    assert.match(String(none.headers['www-authenticate']), /^Bearer/);
    const wrong = await tcp<Problem>('GET', '/v1/tenants', '/v1/tenants', { token: `pgs_${'A'.repeat(43)}` });
    assert.equal(wrong.status, 401);
    const readOnly = await tcp<Problem>('POST', '/v1/tenants', '/v1/tenants', { token: reader, body: { id: 'nope' } });
    assert.equal(readOnly.status, 403);
    assert.equal(readOnly.body.code, 'forbidden');
    assert.ok(!(await pgs.catalogText()).includes('"nope"'), 'a refused request changes nothing');
    const readable = await tcp<{ items: Tenant[] }>('GET', '/v1/tenants', '/v1/tenants', { token: reader });
    assert.equal(readable.status, 200);
    const tokensForReader = await tcp<Problem>('GET', '/v1/tokens', '/v1/tokens', { token: reader });
    assert.equal(tokensForReader.status, 403, 'token management needs admin');
    assert.equal((await tcp('GET', '/healthz', '/healthz')).status, 200, 'liveness needs no token');
    // Who a token is (the dashboard shows it, and hides changes from a read token).
    const asReader = await tcp<{ kind: string; name: string | null; scope: string }>('GET', '/v1/whoami', '/v1/whoami', { token: reader });
    assert.deepEqual(asReader.body, { kind: 'token', name: 'dash', scope: 'read' });
    assert.equal((await tcp<{ scope: string }>('GET', '/v1/whoami', '/v1/whoami', { token: admin })).body.scope, 'admin');
    assert.equal((await tcp('GET', '/v1/whoami', '/v1/whoami')).status, 401);
    assert.deepEqual((await unix('GET', '/v1/whoami', '/v1/whoami')).body, { kind: 'unix', name: null, scope: 'admin' });
  });

  it('tenants: create (201, password once), get with ETag, patch with If-Match (412 on a lost update), list with a cursor', async () => {
    const created = await tcp<Created>('POST', '/v1/tenants', '/v1/tenants', { token: admin, body: { id: 'beta', autosuspend: 600, maxConnections: 10 } });
    assert.equal(created.status, 201);
    assert.equal(created.headers.location, '/v1/tenants/beta');
    assert.equal(created.body.password.length, 32);
    assert.equal((await psql(`host=${created.body.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=beta sslmode=require`, 'SELECT 1', created.body.password)).stdout, '1');

    const got = await tcp<Tenant>('GET', '/v1/tenants/{id}', '/v1/tenants/beta', { token: reader });
    assert.equal(got.body.autosuspendSeconds, 600);
    assert.equal(got.body.maxConnections, 10);
    const etag = String(got.headers.etag);
    assert.match(etag, /^"[A-Za-z0-9_-]+"$/);
    const patched = await tcp<Tenant>('PATCH', '/v1/tenants/{id}', '/v1/tenants/beta', { token: admin, body: { autosuspend: null }, headers: { 'if-match': etag } });
    assert.equal(patched.status, 200);
    assert.equal(patched.body.autosuspendSeconds, null);
    assert.notEqual(patched.headers.etag, etag);
    const stale = await tcp<Problem>('PATCH', '/v1/tenants/{id}', '/v1/tenants/beta', { token: admin, body: { access: 'disabled' }, headers: { 'if-match': etag } });
    assert.equal(stale.status, 412);
    assert.equal(stale.body.code, 'precondition_failed');
    assert.equal((await tcp<Tenant>('GET', '/v1/tenants/{id}', '/v1/tenants/beta', { token: reader })).body.access, 'enabled', 'the stale change was not made');

    const page1 = await tcp<{ items: Tenant[]; nextCursor: string | null }>('GET', '/v1/tenants', '/v1/tenants?limit=1', { token: reader });
    assert.deepEqual(page1.body.items.map((t) => t.id), ['acme']);
    assert.ok(page1.body.nextCursor);
    const page2 = await tcp<{ items: Tenant[]; nextCursor: string | null }>('GET', '/v1/tenants', `/v1/tenants?limit=1&cursor=${page1.body.nextCursor}`, { token: reader });
    assert.deepEqual(page2.body.items.map((t) => t.id), ['beta']);
    assert.equal(page2.body.nextCursor, null);
    const running = await tcp<{ items: Tenant[] }>('GET', '/v1/tenants', '/v1/tenants?state=running&access=enabled', { token: reader });
    assert.deepEqual(running.body.items.map((t) => t.id), ['acme', 'beta']);
  });

  it('errors are problem+json with a stable code, and the field at fault', async () => {
    const cases: [string, string, string, unknown, number, string][] = [
      ['POST', '/v1/tenants', '/v1/tenants', { id: 'Bad_Id' }, 400, 'invalid_id'],
      ['POST', '/v1/tenants', '/v1/tenants', { id: 'acme' }, 409, 'tenant_exists'],
      ['POST', '/v1/tenants', '/v1/tenants', { id: 'weak', password: 'short' }, 400, 'weak_password'],
      ['POST', '/v1/tenants', '/v1/tenants', { id: 'fine', autosuspend: 'soon' }, 400, 'invalid_request'],
      ['POST', '/v1/tenants', '/v1/tenants', { id: 'fine', color: 'red' }, 400, 'invalid_request'],
      ['POST', '/v1/tenants', '/v1/tenants', {}, 400, 'invalid_request'],
      ['GET', '/v1/tenants/{id}', '/v1/tenants/ghost', undefined, 404, 'tenant_not_found'],
      ['GET', '/v1/tenants/{id}', '/v1/tenants/Not-An-Id', undefined, 400, 'invalid_id'],
      ['PATCH', '/v1/tenants/{id}', '/v1/tenants/acme', { maxConnections: 3 }, 400, 'invalid_request'],
      ['PATCH', '/v1/tenants/{id}', '/v1/tenants/acme', {}, 400, 'invalid_request'],
      ['DELETE', '/v1/tenants/{id}', '/v1/tenants/ghost', undefined, 404, 'tenant_not_found'],
      ['POST', '/v1/tenants/{id}/{action}', '/v1/tenants/acme/explode', undefined, 400, 'invalid_request'],
      ['POST', '/v1/tenants/{id}/password', '/v1/tenants/ghost/password', {}, 404, 'tenant_not_found'],
      ['GET', '/v1/tenants/{id}/connection', '/v1/tenants/ghost/connection', undefined, 404, 'tenant_not_found'],
      ['GET', '/v1/tenants/{id}/logs', '/v1/tenants/acme/logs?lines=-1', undefined, 400, 'invalid_request'],
      ['GET', '/v1/tenants/{id}/queries', '/v1/tenants/acme/queries?order=slowest', undefined, 400, 'invalid_request'],
      ['GET', '/v1/tenants/{id}/queries', '/v1/tenants/acme/queries?limit=101', undefined, 400, 'invalid_request'],
      ['POST', '/v1/tenants/{id}/queries/reset', '/v1/tenants/ghost/queries/reset', undefined, 404, 'tenant_not_found'],
      ['GET', '/v1/operations/{id}', '/v1/operations/op_0000', undefined, 404, 'operation_not_found'],
      ['DELETE', '/v1/tokens/{name}', '/v1/tokens/ghost', undefined, 404, 'token_not_found'],
      ['POST', '/v1/tokens', '/v1/tokens', { name: 'ops', scope: 'admin' }, 409, 'token_exists'],
      ['POST', '/v1/tokens', '/v1/tokens', { name: 'x', scope: 'root' }, 400, 'invalid_request'],
    ];
    const before = await pgs.catalogText();
    for (const [method, template, url, body, status, code] of cases) {
      const result = await tcp<Problem>(method, template, url, { token: admin, body });
      assert.equal(result.status, status, `${method} ${url}: ${result.text}`);
      assert.equal(result.body.code, code, `${method} ${url}`);
      assert.equal(result.body.status, status);
      assert.equal(result.body.type, `urn:pgs:problem:${code}`);
      assert.ok(result.body.detail.length > 0);
    }
    const missing = await tcp<Problem>('POST', '/v1/tenants', '/v1/tenants', { token: admin, body: { password: 'long enough' } });
    assert.equal(missing.body.field, 'id');
    const wrongType = await tcp<Problem>('POST', '/v1/tenants', '/v1/tenants', { token: admin, body: { id: 'x', maxConnections: 'many' } });
    assert.equal(wrongType.body.field, 'maxConnections');
    const unknownRoute = await tcpRequest<Problem>(address, 'GET', '/v1/nothing', { token: admin });
    assert.equal(unknownRoute.status, 404);
    assert.equal(unknownRoute.body.code, 'not_found');
    assert.equal(await pgs.catalogText(), before, 'no refused request changed the catalog');
    assert.ok(!(await pgs.catalogText()).includes('"weak"'));
  });

  it('actions: stop, start, restart, suspend, wake; and as an operation with Prefer: respond-async', async () => {
    const act = async (action: string) => {
      const result = await tcp<Tenant>('POST', '/v1/tenants/{id}/{action}', `/v1/tenants/beta/${action}`, { token: admin });
      assert.equal(result.status, 200, result.text);
      return result.body;
    };
    assert.equal((await act('stop')).state, 'stopped');
    const wakeStopped = await tcp<Problem>('POST', '/v1/tenants/{id}/{action}', '/v1/tenants/beta/wake', { token: admin });
    assert.equal(wakeStopped.status, 409);
    assert.equal(wakeStopped.body.code, 'invalid_state');
    assert.equal((await act('start')).state, 'running');
    const before = (await tcp<Tenant>('GET', '/v1/tenants/{id}', '/v1/tenants/beta', { token: reader })).body;
    const restarted = await act('restart');
    assert.equal(restarted.state, 'running');
    assert.notEqual(restarted.serverStartedAt === before.serverStartedAt && (restarted as unknown as { pid: number }).pid === (before as unknown as { pid: number }).pid, true, 'a new server process');
    assert.equal((await act('suspend')).state, 'suspended');
    assert.equal((await act('wake')).state, 'running');

    const accepted = await tcp<{ id: string; status: string; kind: string }>('POST', '/v1/tenants/{id}/{action}', '/v1/tenants/beta/suspend', { token: admin, headers: { prefer: 'respond-async' } });
    assert.equal(accepted.status, 202);
    assert.equal(accepted.body.kind, 'tenant.suspend');
    let op = accepted.body;
    for (let i = 0; i < 100 && op.status === 'running'; i++) {
      await new Promise((r) => setTimeout(r, 50));
      op = (await tcp<typeof op>('GET', '/v1/operations/{id}', `/v1/operations/${accepted.body.id}`, { token: reader })).body;
    }
    assert.equal(op.status, 'succeeded');
    assert.equal((await tcp<Tenant>('GET', '/v1/tenants/{id}', '/v1/tenants/beta', { token: reader })).body.state, 'suspended');
  });

  it('password: a new one is returned once and works; connection strings and logs', async () => {
    const changed = await tcp<{ id: string; password: string }>('POST', '/v1/tenants/{id}/password', '/v1/tenants/acme/password', { token: admin, body: {} });
    assert.equal(changed.status, 200);
    assert.equal(changed.body.password.length, 32);
    const conn = await tcp<{ uri: string; psql: string; jdbc: string; local: string }>('GET', '/v1/tenants/{id}/connection', '/v1/tenants/acme/connection', { token: reader });
    assert.ok(!conn.text.includes(changed.body.password), 'no password in the connection strings');
    assert.equal(conn.body.uri, `postgresql://postgres@${acme.hostname}:${port}/acme?sslmode=require`);
    assert.match(conn.body.jdbc, /^jdbc:postgresql:\/\//);
    const viaPsql = await psql(`${conn.body.psql} hostaddr=127.0.0.1`, 'SELECT current_user', changed.body.password);
    assert.equal(viaPsql.stdout, 'postgres', viaPsql.stderr);
    acme.password = changed.body.password;
    // Query statistics: a read token reads them, only an admin token resets them (their figures are tested in queries.test.ts).
    const queries = await tcp<{ tenant: string; sample: boolean; items: { query: string }[] }>('GET', '/v1/tenants/{id}/queries', '/v1/tenants/acme/queries?order=calls&limit=5', { token: reader });
    assert.equal(queries.status, 200, queries.text);
    assert.equal(queries.body.tenant, 'acme');
    assert.equal((await tcp<Problem>('POST', '/v1/tenants/{id}/queries/reset', '/v1/tenants/acme/queries/reset', { token: reader })).status, 403);
    const reset = await tcp<{ items: unknown[] }>('POST', '/v1/tenants/{id}/queries/reset', '/v1/tenants/acme/queries/reset', { token: admin });
    assert.equal(reset.status, 200, reset.text);
    assert.deepEqual(reset.body.items, []);
    const logs = await tcp<{ lines: string[] }>('GET', '/v1/tenants/{id}/logs', '/v1/tenants/acme/logs?lines=5', { token: reader });
    assert.ok(logs.body.lines.length > 0 && logs.body.lines.length <= 5);
    assert.ok(!logs.text.includes(changed.body.password), 'no password in the log');
  });

  it('init scripts: run as the tenant role in its database; a failing one creates nothing and names its line', async () => {
    const file = path.join(pgs.home, 'init.sql');
    await fs.writeFile(file, 'CREATE TABLE plans(name text PRIMARY KEY);\nINSERT INTO plans VALUES (\'free\'), (\'pro\');\n');
    const made = await pgs.json<Created>(['create', 'seeded', '--init', file]);
    const url = (await pgs.ok(['url', 'seeded', '--local'])).trim();
    const rows = await psql(url, "SELECT string_agg(name, ',' ORDER BY name), (SELECT tableowner FROM pg_tables WHERE tablename = 'plans') FROM plans", made.password);
    assert.equal(rows.stdout, 'free,pro|postgres', rows.stderr);

    const catalog = await pgs.catalogText();
    await fs.writeFile(file, 'CREATE TABLE a(x int);\n\nSELECT * FROM missing_table;\n');
    const failed = await pgs.run(['create', 'broken', '--init', file]);
    assert.equal(failed.code, 1);
    assert.match(failed.stderr, /^pgs create: the init script failed at line 3: ERROR 42P01: relation "missing_table" does not exist; tenant broken was not created\n$/);
    assert.equal(await pgs.catalogText(), catalog);
    await assert.rejects(fs.access(path.join(await pgs.dataRoot(), 'tenants', 'broken')));

    const viaApi = await tcp<Problem>('POST', '/v1/tenants', '/v1/tenants', { token: admin, body: { id: 'broken', init: 'SELEC 1' } });
    assert.equal(viaApi.status, 400);
    assert.equal(viaApi.body.code, 'init_failed');
    assert.match(viaApi.body.detail, /at line 1: ERROR 42601: syntax error at or near "SELEC"/);
    const ok = await tcp<Created>('POST', '/v1/tenants', '/v1/tenants', { token: admin, body: { id: 'broken', init: 'CREATE TABLE fine(x int)' } });
    assert.equal(ok.status, 201, 'the id is free again');
    await tcp('DELETE', '/v1/tenants/{id}', '/v1/tenants/broken', { token: admin });
    await tcp('DELETE', '/v1/tenants/{id}', '/v1/tenants/seeded', { token: admin });
  });

  it('the CLI\'s --json is the API\'s representation', async () => {
    const fromCli = await pgs.json<Tenant[]>(['list']);
    const fromApi = (await unix<{ items: Tenant[] }>('GET', '/v1/tenants', '/v1/tenants')).body.items;
    // What is measured between the two reads (uptime, health, the data folder's size) may differ.
    const stable = (t: Tenant) => ({ ...t, uptimeSeconds: null, healthCheckedAt: null, health: null, diskUsedBytes: null });
    assert.deepEqual(fromCli.map(stable), fromApi.map(stable));
    assert.deepEqual(Object.keys(fromCli[0] ?? {}).sort(), Object.keys(fromApi[0] ?? {}).sort());
    const created = await pgs.json<Created>(['create', 'gamma']);
    assert.deepEqual(Object.keys(created).sort(), ['database', 'hostname', 'id', 'password', 'url', 'user']);
    const status = await pgs.json<Record<string, unknown>>(['status']);
    const apiStatus = (await unix<Record<string, unknown>>('GET', '/v1/status', '/v1/status')).body;
    assert.deepEqual(Object.keys(status).sort(), Object.keys(apiStatus).sort());
    await unix('DELETE', '/v1/tenants/{id}', '/v1/tenants/gamma');
  });

  it('events: created, state, access and removed in order, with ids; a reconnect with Last-Event-ID misses nothing', async () => {
    assert.equal((await tcp('GET', '/v1/events', '/v1/events')).status, 401, 'events need a token too');
    const base = `http://${address}/v1/events`;
    const collect = (lastEventId: string | undefined, until: (events: { id: number; type: string; tenant: string }[]) => boolean) =>
      new Promise<{ id: number; type: string; tenant: string; state?: string; access?: string }[]>((resolve, reject) => {
        const events: { id: number; type: string; tenant: string }[] = [];
        const req = http.get(base, { headers: { authorization: `Bearer ${reader}`, ...(lastEventId ? { 'last-event-id': lastEventId } : {}) } }, (res) => {
          assert.equal(res.statusCode, 200);
          assert.match(String(res.headers['content-type']), /^text\/event-stream/);
          let buffer = '';
          res.setEncoding('utf8').on('data', (chunk: string) => {
            buffer += chunk;
            let end: number;
            while ((end = buffer.indexOf('\n\n')) >= 0) {
              const frame = buffer.slice(0, end);
              buffer = buffer.slice(end + 2);
              const data = frame.split('\n').find((l) => l.startsWith('data: '));
              const id = frame.split('\n').find((l) => l.startsWith('id: '));
              if (!data || !id) continue;
              const event = JSON.parse(data.slice(6)) as { id: number; type: string; tenant: string };
              assert.equal(String(event.id), id.slice(4));
              events.push(event);
              if (until(events)) {
                req.destroy();
                resolve(events);
              }
            }
          });
        });
        req.on('error', (err) => { if (!(err as NodeJS.ErrnoException).code?.includes('ECONNRESET')) reject(err); });
        setTimeout(() => reject(new Error(`timed out; got ${JSON.stringify(events)}`)), 20_000).unref();
      });
    const first = collect(undefined, (events) => events.some((e) => e.type === 'created' && e.tenant === 'delta'));
    await new Promise((r) => setTimeout(r, 200));
    await tcp('POST', '/v1/tenants', '/v1/tenants', { token: admin, body: { id: 'delta' } });
    const seen = await first;
    const lastId = seen[seen.length - 1]!.id;
    // While nobody listens:
    await tcp('PATCH', '/v1/tenants/{id}', '/v1/tenants/delta', { token: admin, body: { access: 'disabled' } });
    await tcp('DELETE', '/v1/tenants/{id}', '/v1/tenants/delta', { token: admin });
    const resumed = await collect(String(lastId), (events) => events.some((e) => e.type === 'removed' && e.tenant === 'delta'));
    const ofDelta = resumed.filter((e) => e.tenant === 'delta');
    const label = (e: { type: string; state?: string; access?: string }) => (e.type === 'access' ? `access:${e.access}` : e.type === 'state' ? `state:${e.state}` : e.type);
    assert.deepEqual(ofDelta.map(label), ['state:running', 'access:disabled', 'removed']);
    assert.ok(resumed.every((e) => e.id > lastId), 'only what came after the last id seen');
    const ids = resumed.map((e) => e.id);
    assert.deepEqual(ids, [...ids].sort((a, b) => a - b), 'in order');
  });

  it('20 parallel creates through the API: 20 tenants, each reachable through the router', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `par${i}`);
    const results = await Promise.all(ids.map((id) => tcp<Created>('POST', '/v1/tenants', '/v1/tenants', { token: admin, body: { id } })));
    for (const r of results) assert.equal(r.status, 201, r.text);
    await Promise.all(results.map(async ({ body: t }) => {
      const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: t.id, password: t.password, ssl: { servername: t.hostname, rejectUnauthorized: false } });
      await client.connect();
      try {
        assert.equal((await client.query<{ db: string }>('SELECT current_database() AS db')).rows[0]?.db, t.id);
      } finally {
        await client.end();
      }
    }));
    const listed = (await tcp<{ items: Tenant[] }>('GET', '/v1/tenants', '/v1/tenants?limit=1000', { token: reader })).body.items.map((t) => t.id);
    for (const id of ids) assert.ok(listed.includes(id));
    await Promise.all(ids.map((id) => tcp('DELETE', '/v1/tenants/{id}', `/v1/tenants/${id}`, { token: admin })));
  });

  it('metrics: a live scrape passes promtool check metrics and has the contract series', async () => {
    // Some traffic first, so that the histograms have observations.
    assert.equal((await psql(`host=${acme.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=acme sslmode=require`, 'SELECT 1', acme.password)).stdout, '1');
    const scrape = await tcp<string>('GET', '/metrics', '/metrics', { token: reader });
    assert.equal(scrape.status, 200);
    assert.match(String(scrape.headers['content-type']), /^text\/plain/);
    for (const name of [
      'pgs_router_connections', 'pgs_router_connections_accepted_total', 'pgs_router_tls_handshake_seconds_bucket', 'pgs_router_backend_connect_seconds_bucket',
      'pgs_router_bytes_total', 'pgs_router_cancel_requests_total', 'pgs_tenants', 'pgs_wakes_total', 'pgs_wake_duration_seconds_bucket', 'pgs_suspends_total',
      'pgs_server_restarts_total', 'pgs_api_requests_total', 'pgs_build_info', 'pgs_tenant_up', 'pgs_tenant_connections', 'pgs_tenant_wakes_total',
    ]) assert.match(scrape.text, new RegExp(`^${name}[{ ]`, 'm'), `${name} is exported`);
    assert.match(scrape.text, /^pgs_tenant_up\{tenant="acme"\} 1$/m);
    assert.match(scrape.text, /^pgs_router_connections_accepted_total\{result="ok"\} [1-9]/m);
    assert.match(scrape.text, /^pgs_api_requests_total\{route="GET \/v1\/tenants",code="401"\} [1-9]/m, 'routes are templates: bounded labels');
    const output = await new Promise<{ code: number | null; text: string; missing?: boolean }>((resolve) => {
      const child = execFile('promtool', ['check', 'metrics'], { encoding: 'utf8' });
      let text = '';
      child.stdout?.on('data', (s: string) => { text += s; });
      child.stderr?.on('data', (s: string) => { text += s; });
      child.on('error', (err: NodeJS.ErrnoException) => resolve({ code: null, text: err.message, missing: err.code === 'ENOENT' }));
      child.on('close', (code) => resolve({ code, text }));
      child.stdin?.on('error', () => undefined);
      child.stdin?.end(scrape.text);
    });
    if (output.missing) {
      assert.ok(!process.env.CI, 'promtool (Debian package prometheus) is installed by .ci/run');
      return;
    }
    assert.equal(output.code, 0, output.text);
    assert.equal(output.text.trim(), '', `promtool is silent on a clean scrape: ${output.text}`);
  });

  it('backups, restores, branches, exports and imports: synchronous and as operations', async () => {
    interface Backup { id: string; kind: string; generation: string }
    interface Operation { id: string; status: string; phase?: string; result?: unknown; error?: { code: string } }
    const made = await tcp<Backup>('POST', '/v1/tenants/{id}/backups', '/v1/tenants/acme/backups', { token: admin });
    assert.equal(made.status, 201, made.text);
    assert.equal(made.body.kind, 'online');
    const async = await unix<Operation>('POST', '/v1/tenants/{id}/backups', '/v1/tenants/acme/backups', { headers: { prefer: 'respond-async' } });
    assert.equal(async.status, 202);
    let op = async.body;
    await waitFor('the backup operation to end', async () => {
      op = (await unix<Operation>('GET', '/v1/operations/{id}', `/v1/operations/${async.body.id}`)).body;
      return op.status !== 'running';
    });
    assert.equal(op.status, 'succeeded', JSON.stringify(op));
    assert.equal((op.result as Backup).kind, 'online');
    const listed = await tcp<{ backups: Backup[]; window: { earliest: string; latest: string } }>('GET', '/v1/tenants/{id}/backups', '/v1/tenants/acme/backups', { token: admin });
    assert.equal(listed.body.backups.length, 2);
    assert.ok(listed.body.window.earliest <= listed.body.window.latest);
    const missing = await unix<Problem>('GET', '/v1/tenants/{id}/backups', '/v1/tenants/nobody/backups');
    assert.equal(missing.body.code, 'tenant_not_found');
    const early = await unix<Problem>('POST', '/v1/tenants/{id}/restore', '/v1/tenants/acme/restore', { body: { time: '2020-01-01T00:00:00Z' } });
    assert.equal(early.status, 422);
    assert.equal(early.body.code, 'out_of_window');
    // Times as psql prints them are read too, and made UTC before the restore sees them.
    const psqlForm = await unix<Problem>('POST', '/v1/tenants/{id}/restore', '/v1/tenants/acme/restore', { body: { time: '2020-01-01 05:30:00.000001+05:30' } });
    assert.equal(psqlForm.status, 422, psqlForm.text);
    assert.match(psqlForm.body.detail, /^2020-01-01T00:00:00\.000Z is outside/);
    // An impossible time is a 400 naming the field, before any operation starts.
    const impossible = await unix<Problem>('POST', '/v1/tenants/{id}/restore', '/v1/tenants/acme/restore', { body: { time: '2026-02-30 10:00:00+00' }, headers: { prefer: 'respond-async' } });
    assert.equal(impossible.status, 400, impossible.text);
    assert.equal(impossible.body.code, 'invalid_request');
    assert.equal(impossible.body.field, 'time');
    assert.match(impossible.body.detail, /February 2026 has no day 30/);
    const badAt = await unix<Problem>('POST', '/v1/tenants/{id}/branch', '/v1/tenants/acme/branch', { body: { id: 'acme-then', at: '2026-11-30 25:00' } });
    assert.equal(badAt.status, 400, badAt.text);
    assert.equal(badAt.body.field, 'at');
    const unknown = await unix<Problem>('POST', '/v1/tenants/{id}/restore', '/v1/tenants/acme/restore', { body: { backup: '20200101-000000-abcd' } });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.code, 'backup_not_found');
    const badField = await unix<Problem>('POST', '/v1/tenants/{id}/restore', '/v1/tenants/acme/restore', { body: { when: 'now' } });
    assert.equal(badField.body.code, 'invalid_request');
    const copy = await unix<{ id: string; state: string }>('POST', '/v1/tenants/{id}/restore', '/v1/tenants/acme/restore', { body: { backup: made.body.id, as: 'acme-copy' } });
    assert.equal(copy.status, 200, copy.text);
    assert.equal(copy.body.id, 'acme-copy');
    const branched = await tcp<{ id: string }>('POST', '/v1/tenants/{id}/branch', '/v1/tenants/acme/branch', { token: admin, body: { id: 'acme-dev' } });
    assert.equal(branched.status, 201, branched.text);
    const exported = await unix<{ name: string; bytes: number; download: string }>('POST', '/v1/tenants/{id}/export', '/v1/tenants/acme/export');
    assert.equal(exported.status, 201, exported.text);
    // The file is the tenant's data: a read token may not fetch it.
    const dash = (await pgs.json<{ token: string }>(['token', 'create', 'dash2', '--scope', 'read'])).token;
    assert.equal((await tcp<Problem>('GET', '/v1/exports/{name}', exported.body.download, { token: dash })).status, 403);
    const file = await unix('GET', '/v1/exports/{name}', exported.body.download);
    assert.equal(file.status, 200);
    assert.equal(file.buffer.length, exported.body.bytes);
    assert.equal((await unix('DELETE', '/v1/exports/{name}', exported.body.download)).status, 204);
    assert.equal((await unix<Problem>('GET', '/v1/exports/{name}', exported.body.download)).status, 404);
    const imported = await unix<{ id: string }>('POST', '/v1/import', '/v1/import?as=acme-moved', { body: file.buffer });
    assert.equal(imported.status, 201, imported.text);
    assert.equal(imported.body.id, 'acme-moved');
    const junk = await unix<Problem>('POST', '/v1/import', '/v1/import?as=junk', { body: Buffer.from('not an export') });
    assert.equal(junk.body.code, 'backup_damaged');
    assert.equal((await unix('POST', '/v1/tenants/{id}/backups', '/v1/tenants/acme-dev/backups')).status, 201);
    // A tenant a restore made gets its first backup at once, in the background.
    await waitFor('acme-copy\'s first backup', async () => ((await unix<{ backups: unknown[] }>('GET', '/v1/tenants/{id}/backups', '/v1/tenants/acme-copy/backups')).body.backups?.length ?? 0) > 0);
    for (const id of ['acme-copy', 'acme-dev', 'acme-moved']) assert.equal((await unix('DELETE', '/v1/tenants/{id}', `/v1/tenants/${id}`)).status, 204);
    // Its backups stay when it is removed, until deleted; then nothing of it is left.
    assert.equal((await unix('DELETE', '/v1/tenants/{id}/backups', '/v1/tenants/acme-copy/backups')).status, 204);
    assert.equal((await unix<Problem>('GET', '/v1/tenants/{id}/backups', '/v1/tenants/acme-copy/backups')).body.code, 'tenant_not_found');
    // A removed tenant's backups stay until deleted; an existing tenant's cannot be deleted this way.
    assert.equal((await unix<Problem>('DELETE', '/v1/tenants/{id}/backups', '/v1/tenants/acme/backups')).body.code, 'invalid_state');
    assert.equal((await unix('GET', '/v1/tenants/{id}/backups', '/v1/tenants/acme-dev/backups')).status, 200);
    assert.equal((await unix('DELETE', '/v1/tenants/{id}/backups', '/v1/tenants/acme-dev/backups')).status, 204);
    assert.equal((await unix<Problem>('GET', '/v1/tenants/{id}/backups', '/v1/tenants/acme-dev/backups')).body.code, 'tenant_not_found');
  });

  it('a read token sees /metrics; revoking a token stops it at once', async () => {
    const temp = (await tcp<{ token: string }>('POST', '/v1/tokens', '/v1/tokens', { token: admin, body: { name: 'temp', scope: 'read' } })).body.token;
    assert.equal((await tcp('GET', '/v1/status', '/v1/status', { token: temp })).status, 200);
    assert.equal((await tcp('DELETE', '/v1/tokens/{name}', '/v1/tokens/temp', { token: admin })).status, 204);
    assert.equal((await tcp('GET', '/v1/status', '/v1/status', { token: temp })).status, 401);
    assert.match(await pgs.ok(['token', 'revoke', 'dash']), /Revoked token dash/);
    assert.equal((await tcp('GET', '/v1/status', '/v1/status', { token: reader })).status, 401);
  });

  it('ten different wrong tokens in a minute from one address: further wrong ones get 429 with Retry-After, a good token is still served', async () => {
    // One wrong (say, revoked) token sent many times is not guessing: it counts once.
    for (let i = 0; i < 15; i++) assert.equal((await tcp('GET', '/v1/status', '/v1/status', { token: 'pgs_revoked' })).status, 401);
    assert.equal((await tcp('GET', '/v1/status', '/v1/status', { token: admin })).status, 200);
    // Earlier tests sent some wrong (revoked) tokens too: at most ten more reach the limit.
    let limited = await tcp<Problem>('GET', '/v1/status', '/v1/status', { token: 'pgs_wrong0' });
    for (let i = 1; i <= 10 && limited.status === 401; i++) limited = await tcp<Problem>('GET', '/v1/status', '/v1/status', { token: `pgs_wrong${i}` });
    assert.equal(limited.status, 429);
    assert.equal(limited.body.code, 'rate_limited');
    assert.ok(Number(limited.headers['retry-after']) >= 1);
    assert.equal((await tcp('GET', '/v1/status', '/v1/status', { token: admin })).status, 200);
    // The unix socket is not limited (it has no address to blame, and only the owner can open it).
    assert.equal((await unix('GET', '/v1/status', '/v1/status')).status, 200);
  });

  it('reload, start every tenant, and stop the daemon with every server', async () => {
    // The history answers as documented (its figures are tested in history.test.ts).
    const history = await unix<{ range: string; times: number[] }>('GET', '/v1/history', '/v1/history?range=1d&tenant=acme');
    assert.equal(history.body.range, '1d');
    assert.deepEqual((await unix('POST', '/v1/reload', '/v1/reload')).body, { ok: true });
    const report = await unix<{ orphans: unknown[]; missingData: unknown[] }>('GET', '/v1/doctor', '/v1/doctor');
    assert.deepEqual([report.body.orphans, report.body.missingData], [[], []]);
    const fixed = await unix<{ adopted: unknown[]; removed: unknown[] }>('POST', '/v1/doctor/fix', '/v1/doctor/fix');
    assert.deepEqual([fixed.body.adopted, fixed.body.removed], [[], []]);
    await unix('POST', '/v1/tenants/{id}/{action}', '/v1/tenants/acme/stop');
    const started = await unix<{ done: string[]; failed: unknown[] }>('POST', '/v1/start', '/v1/start');
    assert.ok(started.body.done.includes('acme'));
    assert.deepEqual(started.body.failed, []);
    const { pid } = (await unix<{ pid: number }>('GET', '/v1/status', '/v1/status')).body;
    assert.equal((await unix('POST', '/v1/stop', '/v1/stop')).status, 202);
    await waitFor('the daemon to exit', async () => !(await processRunning(pid)));
    const catalog = JSON.parse(await pgs.catalogText()) as { tenants: { wanted: string }[] };
    assert.ok(catalog.tenants.every((t) => t.wanted === 'stopped'), 'POST /v1/stop records every tenant as stopped');
  });

  it('every documented route was called and answered as documented', () => {
    const missing = checker.routes().filter((r) => !checker.seen.has(r));
    assert.deepEqual(missing, [], 'routes no test called');
  });
});

describe('the API on a non-loopback address is served over TLS only', () => {
  let pgs: PgsHome;

  before(async () => {
    pgs = await PgsHome.make();
    await pgs.setup();
  });
  after(async () => {
    await pgs.destroy();
  });

  it('0.0.0.0: HTTPS with the configured certificate; plain HTTP gets no answer', async () => {
    const apiPort = await freePort();
    await pgs.ok(['setup', '--api-listen', `0.0.0.0:${apiPort}`]);
    await pgs.ok(['start']);
    const catalog = JSON.parse(await pgs.catalogText()) as { settings: { certFile: string; domain: string } };
    const ca = await fs.readFile(catalog.settings.certFile);
    const status = await new Promise<number>((resolve, reject) => {
      https.get({ host: '127.0.0.1', port: apiPort, path: '/healthz', ca, servername: `api.${catalog.settings.domain}` }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      }).on('error', reject);
    });
    assert.equal(status, 200, 'TLS verified against the certificate pgs made');
    const plain = await new Promise<string>((resolve) => {
      http.get({ host: '127.0.0.1', port: apiPort, path: '/healthz' }, (res) => resolve(`answered ${res.statusCode}`)).on('error', (err) => resolve(err.message));
    });
    assert.doesNotMatch(plain, /answered 200/);
  });

  it('an address in use: the daemon refuses to start and says why', async () => {
    await pgs.ok(['stop']);
    const blocker = http.createServer();
    const busy = await new Promise<number>((resolve) => blocker.listen(0, '127.0.0.1', () => resolve((blocker.address() as { port: number }).port)));
    try {
      await pgs.ok(['setup', '--api-listen', `127.0.0.1:${busy}`]);
      const result = await pgs.run(['start']);
      assert.equal(result.code, 1);
      assert.match(result.stderr, new RegExp(`the API address 127\\.0\\.0\\.1:${busy} is already in use`));
      assert.equal((await pgs.run(['status'])).code, 3, 'no daemon left behind');
    } finally {
      blocker.close();
      await pgs.ok(['setup', '--api-listen', 'off']);
    }
    await pgs.ok(['start']);
    assert.match(await pgs.ok(['status']), /api\s+unix socket only/);
  });
});
