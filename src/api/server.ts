import { promises as fs } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import { PgsError, codeWord, type PgsErrorCode } from '../core/errors.js';
import { isLoopback, parseListen } from '../core/listen.js';
import { AuthFailures } from './auth-limit.js';
import type { TokenScope } from './tokens.js';
import { registerRoutes, type ApiOptions } from './routes.js';

export type { ApiOptions } from './routes.js';

/**
 * The daemon's REST API (v1): one fastify app served on two listeners. The
 * unix socket ($PGS_HOME/daemon.sock, 0600) has full rights: only the owner
 * (and root) can open it, and the CLI uses it. TCP (default 127.0.0.1:5480)
 * takes bearer tokens; any address but loopback is served over TLS with the
 * router's certificate. Errors are application/problem+json with a stable code.
 */
export interface ListenedApi {
  /** `host:port` the TCP listener is bound to, or null when off. */
  tcpAddress: string | null;
  setCertificate(cert: Buffer, key: Buffer): void;
  close(): Promise<void>;
}

const VIA_UNIX = Symbol('pgs.viaUnix');
type Tagged = http.IncomingMessage & { [VIA_UNIX]?: true };

/** Different wrong tokens within a minute from one address, network or token prefix before further wrong ones get 429. */
const AUTH_FAILURES_PER_MINUTE = 10;
const AUTH_WINDOW_MS = 60_000;

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route over TCP: public (no token), read or admin. Default: read for GET, admin otherwise. */
    scope?: TokenScope | 'public';
  }
  interface FastifyRequest {
    principal: { kind: 'unix' } | { kind: 'token'; name: string; scope: TokenScope } | { kind: 'public' };
  }
}

export async function buildApi(options: ApiOptions): Promise<FastifyInstance> {
  const app = Fastify({
    logger: false,
    bodyLimit: 2 * 1024 * 1024,
    return503OnClosing: false,
    forceCloseConnections: false,
    // An unknown field is an error naming it, not silently dropped (fastify's default removes it).
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false } },
  })
    .withTypeProvider<TypeBoxTypeProvider>();
  app.decorateRequest('principal', null as never);
  // Export files (POST /v1/import) are streamed to disk by the route, never buffered.
  app.addContentTypeParser('application/octet-stream', (_request, payload, done) => done(null, payload));
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'pgs daemon API', version: options.version, description: 'One PostgreSQL server per tenant behind one TLS port. Errors are application/problem+json with a stable `code`.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'a token from "pgs token create"' } } },
      security: [{ bearer: [] }],
    },
  });

  // A valid token is served whatever else is guessed: only wrong tokens are counted and refused.
  const failures = new AuthFailures({ limit: AUTH_FAILURES_PER_MINUTE, windowMs: AUTH_WINDOW_MS });
  app.addHook('onRequest', async (request, reply) => {
    if ((request.raw as Tagged)[VIA_UNIX]) {
      request.principal = { kind: 'unix' };
      return;
    }
    const scope = request.routeOptions.config.scope ?? (request.method === 'GET' || request.method === 'HEAD' ? 'read' : 'admin');
    if (scope === 'public') {
      request.principal = { kind: 'public' };
      return;
    }
    const header = request.headers.authorization ?? '';
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    const found = match?.[1] ? options.tokens.verify(match[1]) : undefined;
    if (!found) {
      if (header !== '') {
        const refused = failures.fail(request.ip, match?.[1] ?? header);
        if (refused) {
          reply.header('retry-after', String(refused.retryAfterSeconds));
          throw new PgsError('RATE_LIMITED', `too many failed authentications ${refused.what}: try again in ${refused.retryAfterSeconds} s`);
        }
      }
      reply.header('www-authenticate', 'Bearer realm="pgs"');
      throw new PgsError('UNAUTHORIZED', header === '' ? 'an API token is required: Authorization: Bearer pgs_...' : 'the API token is not valid (revoked or mistyped)');
    }
    if (scope === 'admin' && found.scope !== 'admin') {
      throw new PgsError('FORBIDDEN', `the token ${found.name} has scope read; this needs an admin token`);
    }
    request.principal = { kind: 'token', ...found };
  });

  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    options.metrics.apiRequests.inc({ route: `${request.method} ${route}`, code: String(reply.statusCode) });
  });

  app.setNotFoundHandler(async (request, reply) => sendProblem(reply, new PgsError('NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`)));
  app.setErrorHandler(async (error: FastifyError | PgsError | Error, request, reply) => {
    if (error instanceof PgsError) return sendProblem(reply, error, error.field);
    const fastifyError = error as FastifyError;
    if (fastifyError.validation) {
      const first = fastifyError.validation[0];
      const where = fastifyError.validationContext ?? 'body';
      const missing = (first?.params as { missingProperty?: string; additionalProperty?: string } | undefined);
      const pathPart = (first?.instancePath ?? '').replace(/^\//, '').replace(/\//g, '.');
      const field = [where === 'body' ? '' : where, pathPart, missing?.missingProperty ?? missing?.additionalProperty ?? ''].filter((p) => p !== '').join('.') || where;
      const what = missing?.additionalProperty ? `unknown field ${missing.additionalProperty}` : `${field} ${first?.message ?? 'is not valid'}`;
      return sendProblem(reply, new PgsError('INVALID_REQUEST', `invalid ${where}: ${what}`), field);
    }
    const status = fastifyError.statusCode ?? 500;
    if (status >= 400 && status < 500) return sendProblem(reply, new PgsError('INVALID_REQUEST', error.message), undefined, status);
    options.log.warn('api error', { route: request.routeOptions.url, error: error.message });
    return sendProblem(reply, new PgsError('INTERNAL', `internal error: ${error.message}`));
  });

  registerRoutes(app, options);
  await app.ready();
  return app;
}

const STATUS: Partial<Record<PgsErrorCode, number>> = {
  USAGE: 400, INVALID_ID: 400, WEAK_PASSWORD: 400, INVALID_SETTING: 400, INVALID_REQUEST: 400, INIT_FAILED: 400,
  UNAUTHORIZED: 401, FORBIDDEN: 403,
  TENANT_NOT_FOUND: 404, TOKEN_NOT_FOUND: 404, OPERATION_NOT_FOUND: 404, NOT_FOUND: 404, BACKUP_NOT_FOUND: 404,
  TENANT_EXISTS: 409, TOKEN_EXISTS: 409, INVALID_STATE: 409, QUERY_STATS_UNAVAILABLE: 409, NOT_SET_UP: 409, ORPHAN_DATA: 409, OUT_OF_WINDOW: 422, BACKUP_DAMAGED: 422, ARCHIVE_GAP: 422,
  PRECONDITION_FAILED: 412, UPLOAD_TOO_LARGE: 413, UNSUPPORTED_MEDIA_TYPE: 415, RATE_LIMITED: 429,
  CATALOG_LOCKED: 503, DAEMON_STOPPING: 503, KUBE_UNAVAILABLE: 503, DISK_FULL: 507, NOT_SUPPORTED: 501,
};

export function problemStatus(code: PgsErrorCode): number {
  return STATUS[code] ?? 500;
}

function sendProblem(reply: FastifyReply, error: PgsError, field?: string, statusOverride?: number): FastifyReply {
  const status = statusOverride ?? problemStatus(error.code);
  if (!reply.request.raw.complete) drainThenClose(reply.request.raw);
  const word = codeWord(error.code);
  return reply
    .code(status)
    .type('application/problem+json')
    .send({ type: `urn:pgs:problem:${word}`, title: http.STATUS_CODES[status] ?? 'Error', status, code: word, detail: error.message, ...(field ? { field } : {}) });
}

/** What is read and dropped of a request answered before its body was read whole. */
const DRAIN_MS = 2_000;
const DRAIN_BYTES = 64 * 2 ** 20;

/**
 * A request answered before its body was read whole (a refused upload): the
 * rest is read and dropped for a moment, so that a client still writing reads
 * the answer instead of a broken pipe, then the connection closes. Closing at
 * once loses the answer; reading on could mean gigabytes.
 */
function drainThenClose(req: http.IncomingMessage): void {
  const socket = req.socket;
  if (socket.destroyed) return;
  let dropped = 0;
  const close = () => socket.destroy();
  const timer = setTimeout(close, DRAIN_MS);
  timer.unref();
  req.on('data', (chunk: Buffer) => {
    dropped += chunk.length;
    if (dropped > DRAIN_BYTES) close();
  });
  req.once('end', () => clearTimeout(timer)); // all read: the connection may serve another request
  socket.once('close', () => clearTimeout(timer));
  req.resume();
}

/** Serves the app on the unix socket (0600) and, unless `tcp` is null, on TCP. */
export async function listenApi(app: FastifyInstance, socketPath: string, tcp: string | null, tls: { cert: Buffer; key: Buffer }): Promise<ListenedApi> {
  const handler = (tagUnix: boolean) => (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (tagUnix) (req as Tagged)[VIA_UNIX] = true;
    app.routing(req, res);
  };
  await fs.rm(socketPath, { force: true });
  const unix = http.createServer(handler(true));
  const previous = process.umask(0o177); // the socket is created 0600: only this user (and root) may drive the daemon
  try {
    await listen(unix, { path: socketPath });
  } finally {
    process.umask(previous);
  }
  let tcpServer: http.Server | https.Server | undefined;
  let tcpAddress: string | null = null;
  if (tcp !== null) {
    const { host, port } = parseListen(tcp);
    const loopback = isLoopback(host);
    tcpServer = loopback ? http.createServer(handler(false)) : https.createServer({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' }, handler(false));
    try {
      await listen(tcpServer, { host, port });
    } catch (err) {
      unix.close();
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE') throw new PgsError('ADDRESS_IN_USE', `the API address ${tcp} is already in use: choose another with "pgs setup --api-listen ADDR:PORT" (or off)`);
      if (code === 'EADDRNOTAVAIL') throw new PgsError('INVALID_SETTING', `the API address ${tcp} is not an address of this host: "pgs setup --api-listen ADDR:PORT" (or off)`);
      throw err;
    }
    const bound = tcpServer.address() as net.AddressInfo;
    tcpAddress = `${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}`;
  }
  const servers = [unix, ...(tcpServer ? [tcpServer] : [])];
  return {
    tcpAddress,
    setCertificate(cert, key) {
      if (tcpServer instanceof https.Server) tcpServer.setSecureContext({ cert, key, minVersion: 'TLSv1.2' });
    },
    async close() {
      await Promise.all(servers.map((s) => new Promise<void>((resolve) => {
        s.close(() => resolve());
        s.closeAllConnections();
      })));
      await fs.rm(socketPath, { force: true });
    },
  };
}

function listen(server: net.Server, where: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(where, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

