import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { randomBytes } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import type { Readable } from 'node:stream';
import type http from 'node:http';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Static } from 'typebox';
import { PgsError, codeWord, isPgsError } from '../core/errors.js';
import { formatBytes } from '../core/size.js';
import { parsePointInTime } from '../core/time.js';
import { registerDashboard } from './dashboard.js';
import { sseFrame, type EventLog } from '../telemetry/events.js';
import * as S from './schemas.js';
import type { TokenStore } from './tokens.js';
import type { DaemonMetrics } from '../telemetry/metrics.js';

/**
 * What the API asks of the daemon. Every change goes through here: the
 * daemon is the only writer of the catalog and the only one that starts or
 * stops servers. Routes are data (method, url, schema, handler), as in fastify.
 */
export interface ControlPlane {
  listTenants(): Promise<S.TenantJson[]>;
  getTenant(id: string): Promise<{ tenant: S.TenantJson; etag: string }>;
  createTenant(request: S.CreateTenantRequest): Promise<Static<typeof S.CreatedTenant>>;
  /** `ifMatch`: the ETag the caller last saw; a different current one is PRECONDITION_FAILED. */
  patchTenant(id: string, patch: S.PatchTenantRequest, ifMatch: string | undefined): Promise<{ tenant: S.TenantJson; etag: string }>;
  removeTenant(id: string): Promise<void>;
  act(id: string, action: S.TenantActionName): Promise<S.TenantJson>;
  setPassword(id: string, password: string | undefined): Promise<{ id: string; password: string }>;
  connection(id: string): Promise<Static<typeof S.Connection>>;
  logs(id: string, lines: number): Promise<string[]>;
  /** The tenant's top statements (pg_stat_statements): from its running server, else its last sample, never waking it. */
  queries(id: string, order: 'total' | 'mean' | 'calls', limit: number): Promise<S.QueriesJson>;
  /** pg_stat_statements_reset() on the tenant's server (a stopped one's saved statistics are deleted); answers the empty list. */
  resetQueries(id: string): Promise<S.QueriesJson>;
  /** Each tenant's state, connections and TPS over the last hour or day (null: no point). */
  history(range: '1h' | '1d', ids: string[] | undefined, fields: S.HistoryField[] | undefined): S.HistoryJson;
  status(): Promise<S.StatusJson>;
  /** Servers running now (spares included) and how many may. */
  running(): { running: number; maxRunning: number };
  reload(): Promise<void>;
  startAll(): Promise<Static<typeof S.Bulk>>;
  doctor(): Promise<Static<typeof S.DoctorReport>>;
  /** Removes unfinished creates and adopts orphan folders back into the catalog. */
  doctorFix(): Promise<S.DoctorFixJson>;
  /** Answers, then stops every server (recorded as stopped when `stopTenants`) and the daemon. */
  /** Stops the daemon; `ship` false: without copying to the backup bucket first what is not there yet. */
  shutdown(stopTenants: boolean, ship?: boolean): void;
  backup(id: string, progress?: Progress): Promise<S.BackupJson>;
  listBackups(id: string): Promise<S.BackupListJson>;
  /** Deletes the backups of a removed tenant. */
  deleteBackups(id: string): Promise<void>;
  restore(id: string, request: S.RestoreRequest, progress?: Progress): Promise<S.TenantJson>;
  branch(id: string, request: S.BranchRequest, progress?: Progress): Promise<S.TenantJson>;
  exportTenant(id: string, progress?: Progress): Promise<S.ExportJson>;
  /** The file of a finished export (NOT_FOUND for a name that is not one). */
  exportFile(name: string): string;
  /** The largest upload to import it takes now. */
  importLimit(): Promise<ImportLimit>;
  /** Writes an upload to import to disk (at most `limit` bytes) and returns its file; nothing remains when it fails. */
  importUploadFile(body: Readable, limit: ImportLimit): Promise<string>;
  importFile(file: string, as: string | undefined, progress?: Progress): Promise<S.TenantJson>;
}

/** `why`: where the figure comes from (the setting, or what auto measured), for a refusal. */
export interface ImportLimit { bytes: number; auto: boolean; why: string }

/** Tells an operation what it does now. */
export type Progress = (phase: string) => void;

type App = FastifyInstance<http.Server, http.IncomingMessage, http.ServerResponse, FastifyBaseLogger, TypeBoxTypeProvider>;

const problems = { '4xx': S.Problem, '5xx': S.Problem };
const tags = (tag: string) => [tag];

/** Long work as an operation: `Prefer: respond-async` gets 202 and its id; GET /v1/operations/{id} polls it. */
class Operations {
  private readonly byId = new Map<string, S.OperationJson>();

  start(kind: string, tenant: string | null, work: (progress: Progress) => Promise<unknown>): S.OperationJson {
    const op: S.OperationJson = { id: `op_${randomBytes(10).toString('hex')}`, kind, tenant, status: 'running', createdAt: new Date().toISOString(), finishedAt: null };
    this.byId.set(op.id, op);
    if (this.byId.size > 1_000) this.byId.delete(this.byId.keys().next().value as string);
    work((phase) => { op.phase = phase; }).then(
      (result) => Object.assign(op, { status: 'succeeded', finishedAt: new Date().toISOString(), ...(result !== undefined ? { result } : {}) }),
      (err: unknown) => Object.assign(op, {
        status: 'failed',
        finishedAt: new Date().toISOString(),
        error: { code: isPgsError(err) ? codeWord(err.code) : 'internal', detail: err instanceof Error ? err.message : String(err) },
      }),
    );
    return op;
  }

  get(id: string): S.OperationJson {
    const op = this.byId.get(id);
    if (!op) throw new PgsError('OPERATION_NOT_FOUND', `no operation ${id} (operations are kept while the daemon runs)`);
    return op;
  }
}

function wantsAsync(request: FastifyRequest): boolean {
  return /\brespond-async\b/i.test(String(request.headers.prefer ?? ''));
}

/** What the API is built from: the control plane it serves, its tokens, events and metrics. */
export interface ApiOptions {
  plane: ControlPlane;
  tokens: TokenStore;
  events: EventLog;
  metrics: DaemonMetrics;
  version: string;
  log: { warn(message: string, fields?: Record<string, unknown>): void };
}

export function registerRoutes(app: App, options: ApiOptions): void {
  const { plane, tokens, events, metrics } = options;
  const operations = new Operations();

  app.get('/healthz', { schema: { tags: tags('system'), summary: 'liveness: the daemon answers', security: [], response: { 200: S.Health200, ...problems } }, config: { scope: 'public' } },
    async () => ({ status: 'ok' as const }));

  app.get('/openapi.json', { schema: { tags: tags('system'), summary: 'this document (OpenAPI 3.1)', security: [], response: { 200: { type: 'object', additionalProperties: true }, ...problems } }, config: { scope: 'public' } },
    async () => app.swagger() as unknown as Record<string, unknown>);

  app.get('/metrics', { schema: { tags: tags('system'), summary: 'Prometheus metrics (text format 0.0.4); read scope', response: { 200: { description: 'Prometheus text format', content: { 'text/plain': { schema: { type: 'string' } } } }, ...problems } } },
    async (_request, reply) => reply.type(metrics.contentType).send(await metrics.text()));

  app.get('/v1/status', { schema: { tags: tags('system'), summary: 'the daemon: pid, port, connections, certificate, tenants by state', response: { 200: S.Status, ...problems } } },
    async () => plane.status());

  app.get('/v1/whoami', { schema: { tags: tags('system'), summary: 'who is asking: the token\'s name and scope (read or admin)', response: { 200: S.WhoAmI, ...problems } } },
    async (request) => {
      const who = request.principal;
      return who.kind === 'token' ? { kind: 'token' as const, name: who.name, scope: who.scope } : { kind: 'unix' as const, name: null, scope: 'admin' as const };
    });

  app.post('/v1/reload', { schema: { tags: tags('system'), summary: 're-read the catalog and the certificate files', response: { 200: S.Ok, ...problems } } },
    async () => {
      await plane.reload();
      return { ok: true };
    });

  app.post('/v1/start', { schema: { tags: tags('system'), summary: 'start every tenant', response: { 200: S.Bulk, ...problems } } },
    async () => plane.startAll());

  app.post('/v1/stop', {
    schema: {
      tags: tags('system'), summary: 'stop every server and the daemon',
      querystring: { type: 'object', properties: { tenants: { type: 'string', enum: ['keep', 'stop'], default: 'stop' }, ship: { type: 'string', enum: ['yes', 'no'], default: 'yes' } }, additionalProperties: false },
      response: { 202: S.Ok, ...problems },
    },
  }, async (request, reply) => {
    const { tenants: keep, ship } = request.query as { tenants?: 'keep' | 'stop'; ship?: 'yes' | 'no' };
    reply.code(202);
    plane.shutdown(keep !== 'keep', ship !== 'no');
    return { ok: true };
  });

  app.get('/v1/history', { schema: { tags: tags('system'), summary: 'each tenant\'s state, connections and transactions per second over the last hour (10 s points) or day (1 min points), kept by the daemon', querystring: S.HistoryQuery, response: { 200: S.History, ...problems } } },
    async (request) => plane.history(request.query.range ?? '1h', request.query.tenants === 'none' ? [] : request.query.tenant, request.query.field));

  app.get('/v1/doctor', { schema: { tags: tags('system'), summary: 'data folders the catalog does not name, unfinished creates, entries without data', response: { 200: S.DoctorReport, ...problems } } },
    async () => plane.doctor());

  app.post('/v1/doctor/fix', { schema: { tags: tags('system'), summary: 'adopt orphan folders (host names from their metadata) and remove unfinished creates', response: { 200: S.DoctorFix, ...problems } } },
    async () => plane.doctorFix());

  app.get('/v1/tenants', { schema: { tags: tags('tenants'), summary: 'list tenants, by id, in pages', querystring: S.TenantListQuery, response: { 200: S.TenantList, ...problems } } },
    async (request) => {
      const { state, access, limit = 100, cursor } = request.query;
      let after: string | undefined;
      if (cursor !== undefined) {
        after = Buffer.from(cursor, 'base64url').toString('utf8');
        if (!/^[a-z][a-z0-9-]*$/.test(after)) throw new PgsError('INVALID_REQUEST', 'invalid cursor: pass the nextCursor of the previous page');
      }
      const all = (await plane.listTenants()).filter((t) => (state === undefined || t.state === state) && (access === undefined || t.access === access) && (after === undefined || t.id > after));
      const items = all.slice(0, limit);
      const last = items[items.length - 1];
      return { items, nextCursor: all.length > limit && last ? Buffer.from(last.id).toString('base64url') : null, ...plane.running() };
    });

  app.post('/v1/tenants', { schema: { tags: tags('tenants'), summary: 'create a tenant; the password is in this answer only', body: S.CreateTenantBody, response: { 201: S.CreatedTenant, ...problems } } },
    async (request, reply) => {
      const created = await plane.createTenant(request.body);
      reply.code(201).header('location', `/v1/tenants/${created.id}`);
      return created;
    });

  app.get('/v1/tenants/:id', { schema: { tags: tags('tenants'), summary: 'one tenant, with an ETag of its settings', params: S.TenantParams, response: { 200: S.Tenant, ...problems } } },
    async (request, reply) => {
      const { tenant, etag } = await plane.getTenant(request.params.id);
      reply.header('etag', etag);
      return tenant;
    });

  app.patch('/v1/tenants/:id', {
    schema: { tags: tags('tenants'), summary: 'change access, autosuspend or maxConnections; If-Match guards against lost updates', params: S.TenantParams, body: S.PatchTenantBody, response: { 200: S.Tenant, ...problems } },
  }, async (request, reply) => {
    const ifMatch = request.headers['if-match'];
    const { tenant, etag } = await plane.patchTenant(request.params.id, request.body, typeof ifMatch === 'string' ? ifMatch : undefined);
    reply.header('etag', etag);
    return tenant;
  });

  app.delete('/v1/tenants/:id', { schema: { tags: tags('tenants'), summary: 'remove a tenant and all its data', params: S.TenantParams, response: { 202: S.Operation, 204: { type: 'null' }, ...problems } } },
    async (request, reply) => {
      const { id } = request.params;
      if (wantsAsync(request)) return reply.code(202).send(operations.start('tenant.remove', id, () => plane.removeTenant(id)));
      await plane.removeTenant(id);
      return reply.code(204).send(null);
    });

  app.post('/v1/tenants/:id/:action', {
    schema: { tags: tags('tenants'), summary: 'start, stop, restart, suspend or wake the tenant\'s server', params: S.ActionParams, response: { 200: S.Tenant, 202: S.Operation, ...problems } },
  }, async (request, reply) => {
    const { id, action } = request.params as { id: string; action: S.TenantActionName };
    if (wantsAsync(request)) return reply.code(202).send(operations.start(`tenant.${action}`, id, () => plane.act(id, action)));
    return plane.act(id, action);
  });

  app.post('/v1/tenants/:id/password', {
    schema: { tags: tags('tenants'), summary: 'set a new password for the tenant role; this answer is the only place it is shown', params: S.TenantParams, body: S.PasswordBody, response: { 200: S.PasswordResult, ...problems } },
  }, async (request) => plane.setPassword(request.params.id, request.body?.password));

  app.get('/v1/tenants/:id/connection', { schema: { tags: tags('tenants'), summary: 'connection strings without the password', params: S.TenantParams, response: { 200: S.Connection, ...problems } } },
    async (request) => plane.connection(request.params.id));

  app.get('/v1/tenants/:id/logs', { schema: { tags: tags('tenants'), summary: 'the last lines of the server\'s log', params: S.TenantParams, querystring: S.LogsQuery, response: { 200: S.Logs, ...problems } } },
    async (request) => ({ lines: await plane.logs(request.params.id, request.query.lines ?? 50) }));

  app.get('/v1/tenants/:id/queries', {
    schema: { tags: tags('tenants'), summary: 'the tenant\'s top statements (pg_stat_statements) by total time, mean time or calls; a suspended tenant from its last sample, without waking it', params: S.TenantParams, querystring: S.QueriesQuery, response: { 200: S.Queries, ...problems } },
  }, async (request) => plane.queries(request.params.id, request.query.order ?? 'total', request.query.limit ?? 20));

  app.post('/v1/tenants/:id/queries/reset', {
    schema: { tags: tags('tenants'), summary: 'empty the tenant\'s statement statistics (pg_stat_statements_reset())', params: S.TenantParams, response: { 200: S.Queries, ...problems } },
  }, async (request) => plane.resetQueries(request.params.id));

  app.get('/v1/operations/:id', { schema: { tags: tags('operations'), summary: 'a long-running operation', params: S.OperationParams, response: { 200: S.Operation, ...problems } } },
    async (request) => operations.get(request.params.id));

  app.get('/v1/events', {
    schema: {
      tags: tags('system'), summary: 'Server-Sent Events (created, removed, state, access), each with an id; resumable with Last-Event-ID',
      response: { 200: { description: 'text/event-stream', content: { 'text/event-stream': { schema: { type: 'string' } } } }, ...problems },
    },
  }, async (request, reply) => streamEvents(request, reply, events));

  registerBackupRoutes(app, plane, operations);
  registerTokenRoutes(app, tokens);
  registerDashboard(app);
}

/** A body's time in any form the CLI takes, made RFC 3339 in UTC before the handler (a bad one is a 400, never an operation). */
function normaliseTime(field: 'time' | 'at') {
  return async (request: FastifyRequest) => {
    const body = request.body as Record<string, unknown> | undefined;
    const text = body?.[field];
    if (body && typeof text === 'string') body[field] = parsePointInTime(text, field, 'INVALID_REQUEST', field).iso;
  };
}

/** Backups, restores, branches, exports and imports; each may run as an operation (Prefer: respond-async). */
function registerBackupRoutes(app: App, plane: ControlPlane, operations: Operations): void {
  const run = async <T>(request: FastifyRequest, reply: FastifyReply, kind: string, tenant: string | null, code: number, work: (progress?: Progress) => Promise<T>) => {
    if (wantsAsync(request)) return reply.code(202).send(operations.start(kind, tenant, work));
    return reply.code(code).send(await work());
  };
  const async202 = { 202: S.Operation };

  app.post('/v1/tenants/:id/backups', {
    schema: { tags: tags('backups'), summary: 'take a base backup now (online; a suspended or stopped tenant from its files, without waking it)', params: S.TenantParams, response: { 201: S.Backup, ...async202, ...problems } },
  }, async (request, reply) => run(request, reply, 'tenant.backup', request.params.id, 201, (progress) => plane.backup(request.params.id, progress)));

  app.get('/v1/tenants/:id/backups', {
    schema: { tags: tags('backups'), summary: 'the tenant\'s backups and the restorable window (also of a removed tenant whose backups remain)', params: S.TenantParams, response: { 200: S.BackupList, ...problems } },
  }, async (request) => plane.listBackups(request.params.id));

  app.delete('/v1/tenants/:id/backups', {
    schema: { tags: tags('backups'), summary: 'delete every backup and the WAL archive of a removed tenant (refused while it exists)', params: S.TenantParams, response: { 204: { type: 'null' }, ...problems } },
  }, async (request, reply) => {
    await plane.deleteBackups(request.params.id);
    return reply.code(204).send(null);
  });

  app.post('/v1/tenants/:id/restore', {
    schema: {
      tags: tags('backups'), summary: 'restore to a backup or a point in time; in place (keeping a backup of the current state first) or `as` a new tenant',
      params: S.TenantParams, body: S.RestoreBody, response: { 200: S.Tenant, ...async202, ...problems },
    },
    preHandler: normaliseTime('time'),
  }, async (request, reply) => run(request, reply, 'tenant.restore', request.params.id, 200, (progress) => plane.restore(request.params.id, request.body ?? {}, progress)));

  app.post('/v1/tenants/:id/branch', {
    schema: { tags: tags('backups'), summary: 'a new, independent tenant with this one\'s data now (online) or `at` a time', params: S.TenantParams, body: S.BranchBody, response: { 201: S.Tenant, ...async202, ...problems } },
    preHandler: normaliseTime('at'),
  }, async (request, reply) => run(request, reply, 'tenant.branch', request.params.id, 201, (progress) => plane.branch(request.params.id, request.body, progress)));

  app.post('/v1/tenants/:id/export', {
    schema: { tags: tags('backups'), summary: 'a fresh backup as one self-contained, checksummed file, to download from /v1/exports/{name}', params: S.TenantParams, response: { 201: S.ExportResult, ...async202, ...problems } },
  }, async (request, reply) => run(request, reply, 'tenant.export', request.params.id, 201, (progress) => plane.exportTenant(request.params.id, progress)));

  app.get('/v1/exports/:name', {
    config: { scope: 'admin' }, // the tenant's whole data: not for read tokens
    schema: { tags: tags('backups'), summary: 'download an export file', params: S.ExportParams, response: { 200: { description: 'the export file', content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } }, ...problems } },
  }, async (request, reply) => {
    const file = plane.exportFile(request.params.name);
    const stat = await fs.stat(file).catch(() => undefined);
    if (!stat) throw new PgsError('NOT_FOUND', `no export ${request.params.name} (exports are kept 24 hours)`);
    return reply.type('application/octet-stream').header('content-length', stat.size).send(createReadStream(file) as never);
  });

  app.delete('/v1/exports/:name', {
    schema: { tags: tags('backups'), summary: 'delete an export file', params: S.ExportParams, response: { 204: { type: 'null' }, ...problems } },
  }, async (request, reply) => {
    await fs.rm(plane.exportFile(request.params.name), { force: true });
    return reply.code(204).send(null);
  });

  // The body is checked here before fastify reads a byte of it, then streamed to disk by the handler: only
  // application/octet-stream has a parser that leaves it unread (JSON and text would be buffered whole).
  const limits = new WeakMap<FastifyRequest, ImportLimit>();
  app.post('/v1/import', {
    schema: {
      tags: tags('backups'), summary: 'make a tenant from an export file (the request body, application/octet-stream, at most the import limit of GET /v1/status), checked whole before the tenant exists',
      querystring: S.ImportQuery, response: { 201: S.Tenant, ...async202, ...problems },
    },
    onRequest: async (request) => {
      const type = String(request.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
      if (type !== 'application/octet-stream') {
        throw new PgsError('UNSUPPORTED_MEDIA_TYPE', `an import is the export file as the body, with Content-Type: application/octet-stream${type === '' ? '' : `, not ${type}`}`);
      }
      const limit = await plane.importLimit();
      const declared = Number(request.headers['content-length']);
      if (declared > limit.bytes) throw new PgsError('UPLOAD_TOO_LARGE', `the upload is ${formatBytes(declared)}; imports take at most ${formatBytes(limit.bytes)} (${limit.why})`);
      limits.set(request, limit);
    },
  }, async (request, reply) => {
    const limit = limits.get(request);
    if (!limit) throw new PgsError('INTERNAL', 'the import limit was not checked');
    const file = await plane.importUploadFile(request.body as Readable, limit);
    const { as } = request.query as { as?: string };
    return run(request, reply, 'tenant.import', as ?? null, 201, (progress) => plane.importFile(file, as, progress));
  });
}

function registerTokenRoutes(app: App, tokens: TokenStore): void {
  const admin = { scope: 'admin' as const };
  app.get('/v1/tokens', { schema: { tags: tags('tokens'), summary: 'API tokens (names and scopes; the tokens themselves are never kept)', response: { 200: S.TokenList, ...problems } }, config: admin },
    async () => ({ items: tokens.list() }));
  app.post('/v1/tokens', { schema: { tags: tags('tokens'), summary: 'make a token; this answer is the only place it is shown', body: S.TokenBody, response: { 201: S.CreatedToken, ...problems } }, config: admin },
    async (request, reply) => {
      const { name, scope, createdAt, token } = await tokens.create(request.body.name, request.body.scope);
      reply.code(201);
      return { name, scope, createdAt, token };
    });
  app.delete('/v1/tokens/:name', { schema: { tags: tags('tokens'), summary: 'revoke a token at once', params: S.TokenParams, response: { 204: { type: 'null' }, ...problems } }, config: admin },
    async (request, reply) => {
      await tokens.revoke(request.params.name);
      return reply.code(204).send(null);
    });
}

function streamEvents(request: FastifyRequest, reply: FastifyReply, events: EventLog): void {
  const header = request.headers['last-event-id'];
  const fromQuery = (request.query as { lastEventId?: string } | undefined)?.lastEventId;
  const raw = typeof header === 'string' ? header : fromQuery;
  const lastId = raw !== undefined && /^\d+$/.test(raw) ? Number(raw) : undefined;
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
  res.write(`retry: 2000\n: pgs events, last id ${events.lastId}\n\n`);
  for (const event of events.since(lastId)) res.write(sseFrame(event));
  const unsubscribe = events.subscribe((event) => res.write(sseFrame(event)));
  const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
  const end = () => {
    clearInterval(heartbeat);
    unsubscribe();
  };
  request.raw.on('close', end);
  res.on('close', end);
}
