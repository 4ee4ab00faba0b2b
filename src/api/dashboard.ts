import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { PgsError } from '../core/errors.js';
import { packageRoot } from '../core/version.js';

/**
 * The dashboard: a static page (dist/web, built by `npm run build` from web/)
 * served on the API's own listeners. The page itself is public, like any
 * login page; everything it shows comes from the API with the token the
 * person pastes. Nothing is fetched from anywhere else, and the
 * Content-Security-Policy says so to the browser.
 */
const CSP = [
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
  "font-src 'self'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
].join('; ');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8', '.svg': 'image/svg+xml',
};

interface Asset { body: Buffer; gzip: Buffer | undefined; type: string }

/** The built page's folder: dist/web of the pgs package, when it was built. */
export function dashboardDir(): string | null {
  const root = packageRoot();
  const dir = root === null ? null : path.join(root, 'dist', 'web');
  return dir !== null && existsSync(path.join(dir, 'index.html')) ? dir : null;
}

/** Every file of the built page, read once (about 100 KB), with its gzip twin when the build made one. */
function loadAssets(dir: string): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  const walk = (sub: string) => {
    for (const entry of readdirSync(path.join(dir, sub), { withFileTypes: true })) {
      const rel = sub === '' ? entry.name : `${sub}/${entry.name}`;
      if (entry.isDirectory()) walk(rel);
      else if (!rel.endsWith('.gz')) {
        const file = path.join(dir, rel);
        assets.set(`/${rel}`, {
          body: readFileSync(file),
          gzip: existsSync(`${file}.gz`) ? readFileSync(`${file}.gz`) : undefined,
          type: TYPES[path.extname(rel)] ?? 'application/octet-stream',
        });
      }
    }
  };
  walk('');
  return assets;
}

export function registerDashboard(app: FastifyInstance, dir = dashboardDir()): void {
  let assets: Map<string, Asset> | undefined;
  const send = (reply: FastifyReply, key: string, acceptsGzip: boolean) => {
    if (dir === null) throw new PgsError('NOT_FOUND', 'the dashboard is not built in this installation: run "npm run build"');
    assets ??= loadAssets(dir);
    const asset = assets.get(key);
    if (!asset) throw new PgsError('NOT_FOUND', `no dashboard file ${key}`);
    reply
      .header('content-security-policy', CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('x-frame-options', 'DENY')
      .header('cache-control', 'no-cache')
      .header('vary', 'accept-encoding')
      .type(asset.type);
    if (asset.gzip && acceptsGzip) return reply.header('content-encoding', 'gzip').send(asset.gzip);
    return reply.send(asset.body);
  };
  const gzipOk = (header: string | undefined) => /\bgzip\b/.test(header ?? '');
  const config = { scope: 'public' as const };
  app.get('/', { schema: { hide: true }, config }, async (request, reply) => send(reply, '/index.html', gzipOk(request.headers['accept-encoding'])));
  app.get('/assets/:name', { schema: { hide: true }, config }, async (request, reply) => {
    const { name } = request.params as { name: string };
    if (!/^[a-z0-9][a-z0-9._-]*$/i.test(name)) throw new PgsError('NOT_FOUND', `no dashboard file ${name}`);
    return send(reply, `/assets/${name}`, gzipOk(request.headers['accept-encoding']));
  });
}
