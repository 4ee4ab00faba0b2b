import { promises as fs } from 'node:fs';
import path from 'node:path';
import { PgsError, errnoCode } from '../core/errors.js';
import { fsyncDir, writeAtomic } from '../core/files.js';
import type { HomePaths } from '../core/paths.js';
import { withFileLock, type LockOptions } from './lock.js';
import { catalogProblem, type Catalog } from './schema.js';

/**
 * The catalog file: validated on every read, written by temp file + fsync +
 * rename + directory fsync under an inter-process lock, with the previous good
 * version kept as `catalog.json.bak`. A broken file is an error that names both
 * files; it is never silently reset.
 */
export class CatalogStore {
  readonly paths: HomePaths;
  private readonly lockOptions: LockOptions;

  constructor(paths: HomePaths, lockOptions: LockOptions = {}) {
    this.paths = paths;
    this.lockOptions = lockOptions;
  }

  /** The catalog, or NOT_SET_UP when there is none yet. */
  async read(): Promise<Catalog> {
    const catalog = await this.readIfExists();
    if (catalog === undefined) {
      throw new PgsError('NOT_SET_UP', `pgs is not set up in ${this.paths.home}: run "pgs setup" first`);
    }
    return catalog;
  }

  async readIfExists(): Promise<Catalog | undefined> {
    let text: string;
    try {
      text = await fs.readFile(this.paths.catalog, 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    }
    return this.parse(text);
  }

  private parse(text: string): Catalog {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw this.corrupt(`it is not JSON (${(err as Error).message})`);
    }
    const checked = catalogProblem(json);
    if ('problem' in checked) throw this.corrupt(checked.problem);
    return checked.catalog;
  }

  private corrupt(detail: string): PgsError {
    const { catalog, catalogBackup } = this.paths;
    return new PgsError(
      'CATALOG_CORRUPT',
      `the catalog ${catalog} is not valid (${detail}); nothing was changed. ` +
        `The previous good version is ${catalogBackup}: inspect it and copy it over the broken file to restore it, ` +
        'then run "pgs doctor": the backup misses the last change, which the tenant\'s data folder keeps in its own metadata ("pgs doctor --fix" takes it back)',
    );
  }

  /**
   * Runs `fn` on the current catalog (undefined before setup) under the lock and
   * writes what it returns as `next`. Returning `next: undefined` writes nothing.
   * `afterWrite` runs once `next` is written, still under the lock.
   */
  async update<T>(fn: (current: Catalog | undefined) => Promise<{ next?: Catalog; result: T; afterWrite?: () => Promise<void> }>): Promise<T> {
    await fs.mkdir(this.paths.home, { recursive: true, mode: 0o700 });
    return withFileLock(this.paths.lock, async () => {
      const current = await this.readIfExists();
      const { next, result, afterWrite } = await fn(current);
      if (next !== undefined) await this.write(next, current !== undefined);
      if (afterWrite) await afterWrite();
      return result;
    }, this.lockOptions);
  }

  private async write(catalog: Catalog, hadPrevious: boolean): Promise<void> {
    const checked = catalogProblem(catalog);
    if ('problem' in checked) throw new Error(`refusing to write an invalid catalog: ${checked.problem}`);
    const { catalog: file, catalogBackup } = this.paths;
    const dir = path.dirname(file);
    if (hadPrevious) {
      // The current file is durable and was just validated: a hard link makes it the backup without copying.
      const tmp = `${catalogBackup}.tmp-${process.pid}`;
      await fs.rm(tmp, { force: true });
      await fs.link(file, tmp);
      await fs.rename(tmp, catalogBackup);
    }
    await writeAtomic(file, `${JSON.stringify(checked.catalog, null, 2)}\n`);
    await fsyncDir(dir);
  }
}
