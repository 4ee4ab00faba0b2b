import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { pidExists } from '../core/proc.js';
import { PgsError, errnoCode } from '../core/errors.js';

/**
 * An inter-process lock: a file created with O_EXCL that holds "<pid> <token>".
 * A lock whose pid is gone is stale and is taken over (see takeOver).
 */
const GUARD_STALE_MS = 5_000;

export interface LockOptions {
  /** Give up after this long. Default 30 s. */
  timeoutMs?: number;
  /** An empty lock file older than this is a crash between create and write. Default 2 s. */
  emptyStaleMs?: number;
}

export async function withFileLock<T>(lockPath: string, fn: () => Promise<T>, options: LockOptions = {}): Promise<T> {
  const release = await acquireFileLock(lockPath, options);
  try {
    return await fn();
  } finally {
    await release();
  }
}

export async function acquireFileLock(lockPath: string, options: LockOptions = {}): Promise<() => Promise<void>> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const emptyStaleMs = options.emptyStaleMs ?? 2_000;
  const mine = `${process.pid} ${randomBytes(8).toString('hex')}\n`;
  const deadline = Date.now() + timeoutMs;
  let holder = '';
  for (let attempt = 0; ; attempt++) {
    try {
      const handle = await fs.open(lockPath, 'wx', 0o600);
      try {
        await handle.writeFile(mine);
      } finally {
        await handle.close();
      }
      return async () => {
        const now = await readOrEmpty(lockPath);
        if (now === mine) await fs.rm(lockPath, { force: true });
      };
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
    holder = await readOrEmpty(lockPath);
    if (await isStale(lockPath, holder, emptyStaleMs)) {
      await takeOver(lockPath, holder);
      continue;
    }
    if (Date.now() >= deadline) {
      const pid = holder.split(' ')[0] || 'unknown';
      throw new PgsError('CATALOG_LOCKED', `the catalog is locked by process ${pid} (${lockPath}); try again, or remove that file if no pgs command is running`);
    }
    await sleep(Math.min(50, 2 + attempt * 2) + Math.random() * 5);
  }
}

async function readOrEmpty(file: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return '';
    throw err;
  }
}

async function isStale(lockPath: string, content: string, emptyStaleMs: number): Promise<boolean> {
  if (content === '') {
    try {
      const stat = await fs.stat(lockPath);
      return Date.now() - stat.mtimeMs > emptyStaleMs;
    } catch {
      return false; // gone already: the next attempt takes it
    }
  }
  const pid = Number.parseInt(content.split(' ')[0] ?? '', 10);
  if (!Number.isInteger(pid) || pid <= 0) return true;
  return !pidExists(pid);
}


/**
 * Removes a stale lock. Takeovers are serialised by a guard file and re-check,
 * under the guard, that the lock still holds the stale content: a waiter that
 * judged the lock stale a moment ago must not remove the fresh lock another
 * waiter has taken since.
 */
async function takeOver(lockPath: string, staleContent: string): Promise<void> {
  const guard = `${lockPath}.takeover`;
  let handle;
  try {
    handle = await fs.open(guard, 'wx', 0o600);
  } catch (err) {
    if (errnoCode(err) !== 'EEXIST') throw err;
    // Another waiter is taking over. A guard is held for a few system calls, so
    // an old one was left by a process that died in between.
    const stat = await fs.stat(guard).catch(() => undefined);
    if (stat && Date.now() - stat.mtimeMs > GUARD_STALE_MS) await fs.rm(guard, { force: true });
    return;
  }
  try {
    await handle.close();
    if ((await readOrEmpty(lockPath)) === staleContent) await fs.rm(lockPath, { force: true });
  } finally {
    await fs.rm(guard, { force: true });
  }
}
