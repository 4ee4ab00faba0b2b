import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { acquireFileLock, withFileLock } from '../../src/catalog/lock.js';
import { pidExists as processAlive } from '../../src/core/proc.js';
import { PgsError } from '../../src/core/errors.js';

/** The compiled lock module, for child processes (this file runs from dist/test/unit/). */
const LOCK_MODULE = pathToFileURL(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/catalog/lock.js')).href;

function isLocked(err: unknown): boolean {
  return err instanceof PgsError && err.code === 'CATALOG_LOCKED';
}

/** The pid of a process that has already exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  const pid = child.pid;
  assert.ok(pid !== undefined);
  await once(child, 'exit');
  assert.equal(processAlive(pid), false);
  return pid;
}

interface Finished { code: number | null; stdout: string; stderr: string }

function runNode(args: string[]): { pid: number; done: Promise<Finished> } {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  const done = new Promise<Finished>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
  assert.ok(child.pid !== undefined);
  return { pid: child.pid, done };
}

describe('withFileLock', () => {
  let dir: string;
  let n = 0;
  const started: { pid: number; done: Promise<Finished> }[] = [];
  const lockPath = (): string => path.join(dir, `lock-${n++}`);

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgs-lock-'));
  });
  after(async () => {
    for (const child of started) {
      if (processAlive(child.pid)) process.kill(child.pid, 'SIGKILL');
      await child.done;
    }
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('serialises async holders in one process, and removes the lock file after', async () => {
    const lock = lockPath();
    const events: string[] = [];
    let inside = 0;
    const holder = (name: string) => withFileLock(lock, async () => {
      inside++;
      assert.equal(inside, 1, `${name} is alone inside`);
      events.push(`${name} in`);
      await sleep(20);
      events.push(`${name} out`);
      inside--;
      return name;
    });
    const results = await Promise.all([holder('a'), holder('b'), holder('c')]);
    assert.deepEqual(results, ['a', 'b', 'c']);
    assert.equal(events.length, 6);
    for (let i = 0; i < events.length; i += 2) {
      const name = events[i]?.split(' ')[0];
      assert.deepEqual([events[i], events[i + 1]], [`${name} in`, `${name} out`], events.join(', '));
    }
    await assert.rejects(fs.access(lock), 'the lock file is gone');
  });

  it('releases the lock when fn throws, and passes the error on', async () => {
    const lock = lockPath();
    const boom = new Error('boom');
    await assert.rejects(withFileLock(lock, async () => { throw boom; }), (err: unknown) => err === boom);
    await assert.rejects(fs.access(lock));
    assert.equal(await withFileLock(lock, async () => 'again', { timeoutMs: 100 }), 'again');
  });

  it('the lock file holds "<pid> <token>" while held, mode 0600', async () => {
    const lock = lockPath();
    await withFileLock(lock, async () => {
      assert.match(await fs.readFile(lock, 'utf8'), new RegExp(`^${process.pid} [0-9a-f]{16}\\n$`));
      assert.equal((await fs.stat(lock)).mode & 0o777, 0o600);
    });
  });

  it('takes over a stale lock whose pid is dead', async () => {
    const lock = lockPath();
    const pid = await deadPid();
    await fs.writeFile(lock, `${pid} 0123456789abcdef\n`);
    const result = await withFileLock(lock, async () => {
      assert.match(await fs.readFile(lock, 'utf8'), new RegExp(`^${process.pid} `));
      return 'taken';
    }, { timeoutMs: 1_000 });
    assert.equal(result, 'taken');
    await assert.rejects(fs.access(lock));
    assert.deepEqual((await fs.readdir(dir)).filter((f) => f.includes('.stale-')), [], 'no aside file left');
  });

  it('takes over a lock file whose content is not a pid', async () => {
    const lock = lockPath();
    await fs.writeFile(lock, 'garbage\n');
    assert.equal(await withFileLock(lock, async () => 'taken', { timeoutMs: 1_000 }), 'taken');
  });

  it('an empty lock file is waited on while fresh and taken over once older than emptyStaleMs', async () => {
    const fresh = lockPath();
    await fs.writeFile(fresh, '');
    await assert.rejects(withFileLock(fresh, async () => 'no', { timeoutMs: 100, emptyStaleMs: 60_000 }), isLocked);

    const old = lockPath();
    await fs.writeFile(old, '');
    const past = new Date(Date.now() - 10_000);
    await fs.utimes(old, past, past);
    assert.equal(await withFileLock(old, async () => 'taken', { timeoutMs: 1_000, emptyStaleMs: 2_000 }), 'taken');
  });

  it('times out with CATALOG_LOCKED while this process holds the lock', async () => {
    const lock = lockPath();
    const release = await acquireFileLock(lock);
    try {
      const t0 = Date.now();
      await assert.rejects(withFileLock(lock, async () => 'no', { timeoutMs: 150 }), (err: unknown) => {
        assert.ok(isLocked(err));
        assert.ok(err instanceof Error && err.message.includes(String(process.pid)) && err.message.includes(lock), String(err));
        return true;
      });
      const waited = Date.now() - t0;
      assert.ok(waited >= 140 && waited < 2_000, `waited ${waited} ms`);
    } finally {
      await release();
    }
    await assert.rejects(fs.access(lock));
  });

  it('times out with CATALOG_LOCKED while another live process holds it, and takes it once that process is gone', async () => {
    const lock = lockPath();
    const sleeper = runNode(['-e', 'setTimeout(() => {}, 60_000)']);
    started.push(sleeper);
    await fs.writeFile(lock, `${sleeper.pid} fedcba9876543210\n`);
    await assert.rejects(withFileLock(lock, async () => 'no', { timeoutMs: 100 }), (err: unknown) => {
      assert.ok(isLocked(err));
      assert.ok(err instanceof Error && err.message.includes(String(sleeper.pid)), String(err));
      return true;
    });
    assert.equal(await fs.readFile(lock, 'utf8'), `${sleeper.pid} fedcba9876543210\n`, 'a live lock is left alone');
    process.kill(sleeper.pid, 'SIGKILL');
    await sleeper.done;
    assert.equal(await withFileLock(lock, async () => 'taken', { timeoutMs: 1_000 }), 'taken');
  });

  it('four processes × 25 locked increments of one counter file give exactly 100', async () => {
    const lock = lockPath();
    const counter = path.join(dir, `counter-${n}`);
    const inside = path.join(dir, `inside-${n}`);
    await fs.writeFile(counter, '0');
    // Each child also creates an O_EXCL marker inside the critical section:
    // two holders at once fail with EEXIST instead of only losing an update.
    const script = `
      import { promises as fs } from 'node:fs';
      import { setTimeout as sleep } from 'node:timers/promises';
      import { withFileLock } from ${JSON.stringify(LOCK_MODULE)};
      const [lock, counter, inside] = process.argv.slice(1);
      for (let i = 0; i < 25; i++) {
        await withFileLock(lock, async () => {
          await (await fs.open(inside, 'wx')).close();
          const value = Number.parseInt(await fs.readFile(counter, 'utf8'), 10);
          await sleep(1);
          await fs.writeFile(counter, String(value + 1));
          await fs.rm(inside);
        }, { timeoutMs: 60_000 });
      }
    `;
    const children = Array.from({ length: 4 }, () => runNode(['--input-type=module', '-e', script, lock, counter, inside]));
    started.push(...children);
    const results = await Promise.all(children.map((c) => c.done));
    for (const result of results) assert.equal(result.code, 0, result.stderr);
    assert.equal(await fs.readFile(counter, 'utf8'), '100');
    await assert.rejects(fs.access(lock), 'the lock file is gone');
  });

  it('a stale-lock takeover racing a fresh holder never lets two processes hold the lock', async () => {
    // Replay: waiter C judges the lock stale, then stalls before its takeover;
    // meanwhile B takes the stale lock over and holds a fresh one. When C goes
    // on it must not remove B's lock, and neither C nor a third waiter D may
    // get the lock while B holds it.
    const lock = lockPath();
    const guard = `${lock}.takeover`;
    await fs.writeFile(lock, `${await deadPid()} 0000000000000000\n`);
    const realOpen = fs.open;
    let guardOpens = 0;
    let openGate = (): void => undefined;
    const gate = new Promise<void>((resolve) => { openGate = resolve; });
    let cReachedGuard = (): void => undefined;
    const cAtGuard = new Promise<void>((resolve) => { cReachedGuard = resolve; });
    fs.open = (async (...args: Parameters<typeof fs.open>) => {
      if (args[0] === guard && guardOpens++ === 0) {
        cReachedGuard();
        await gate; // C stalls here, having judged the lock stale
      }
      return realOpen(...args);
    }) as typeof fs.open;
    try {
      let cHeld = false;
      const c = withFileLock(lock, async () => { cHeld = true; }, { timeoutMs: 400 }).catch((err: unknown) => err);
      await cAtGuard;
      let bHolds = (): void => undefined;
      const bIn = new Promise<void>((resolve) => { bHolds = resolve; });
      let releaseB = (): void => undefined;
      const bOut = new Promise<void>((resolve) => { releaseB = resolve; });
      const b = withFileLock(lock, async () => { bHolds(); await bOut; }, { timeoutMs: 1_000 });
      await bIn;
      openGate();
      await sleep(50); // C's takeover runs now
      await assert.rejects(acquireFileLock(lock, { timeoutMs: 100 }), isLocked, 'D must wait while B holds the lock');
      assert.equal(cHeld, false, 'C must not hold the lock while B does');
      releaseB();
      await b;
      await c;
    } finally {
      fs.open = realOpen;
    }
  });

});
