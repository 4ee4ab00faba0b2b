import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fsyncDir, writeAtomic } from '../core/files.js';

/**
 * An in-place restore swaps a tenant's data folder and then commits the new
 * generation to the catalog. A daemon killed in between leaves a folder the
 * catalog does not describe. The journal, written before the swap and
 * deleted after the commit, tells the next daemon which tenant was being
 * restored into which generation: if the catalog names that generation the
 * restore happened and only its leftovers go; otherwise it is undone whole
 * (the restored server stopped, the folder from before put back, the new
 * generation's archive deleted), so the tenant is exactly as it was.
 */
export interface RestoreJournal {
  format: 1;
  tenant: string;
  /** The generation the restored server archives into; committed once the catalog names it. */
  generation: string;
  /** The tenant had a data folder (it is kept aside until the commit); false: it was missing. */
  hadFolder: boolean;
  backup: string;
  target: string;
  startedAt: string;
}

export class RestoreJournals {
  readonly dir: string;

  constructor(dataRoot: string) {
    this.dir = path.join(dataRoot, 'restores');
  }

  private file(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }

  async write(journal: RestoreJournal): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeAtomic(this.file(journal.tenant), `${JSON.stringify(journal, null, 2)}\n`);
    await fsyncDir(this.dir);
  }

  async remove(id: string): Promise<void> {
    await fs.rm(this.file(id), { force: true });
    await fsyncDir(this.dir).catch(() => undefined);
  }

  /** Every journal left; one that does not parse is returned as `damaged` with its file name. */
  async list(): Promise<(RestoreJournal | { damaged: string })[]> {
    const out: (RestoreJournal | { damaged: string })[] = [];
    for (const name of await fs.readdir(this.dir).catch(() => [] as string[])) {
      if (!name.endsWith('.json')) continue;
      try {
        const journal = JSON.parse(await fs.readFile(path.join(this.dir, name), 'utf8')) as RestoreJournal;
        if (journal.format !== 1 || `${journal.tenant}.json` !== name || typeof journal.generation !== 'string' || typeof journal.hadFolder !== 'boolean') throw new Error('not a journal');
        out.push(journal);
      } catch {
        out.push({ damaged: path.join(this.dir, name) });
      }
    }
    return out;
  }
}
