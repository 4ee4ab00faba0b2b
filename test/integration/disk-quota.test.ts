import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgsHome, psql, waitFor } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string }
interface Config { diskBytes: number | null; diskUsedBytes: number | null; disk?: string }

const MiB = 2 ** 20;
const isRoot = process.getuid?.() === 0;

/** Disk quotas: real servers, real writes; the daemon measures each tenant with a quota every 10 s. */
describe('per-tenant disk quota', () => {
  let pgs: PgsHome;
  let port: number;
  let q: Created;
  const conn = () => `host=${q.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=q sslmode=require`;
  const config = () => pgs.json<Config>(['config', 'q']);
  const sql = (text: string) => psql(conn(), text, q.password);
  /** ~10 MiB of rows (and as much WAL), written by a session that lifted read-only for itself. */
  const chunk = () => sql("BEGIN READ WRITE; INSERT INTO big SELECT g, repeat('x', 1000) FROM generate_series(1, 10000) g; COMMIT");

  before(async () => {
    pgs = await PgsHome.make({ PGS_RUNNING_SPARES: '0' });
    port = await pgs.setup();
    q = await pgs.json<Created>(['create', 'q', '--autosuspend', 'off']);
    assert.equal((await sql("CREATE TABLE big (n int, pad text); INSERT INTO big SELECT g, repeat('x', 1000) FROM generate_series(1, 100000) g")).code, 0);
  });
  after(async () => {
    await pgs.destroy();
  });

  it('a quota is measured and shown; at the quota the tenant is read-only with a warning naming it; TRUNCATE makes it writable again', async () => {
    await pgs.ok(['config', 'q', '--disk', '10G']);
    await waitFor('the first measurement', async () => ((await config()).diskUsedBytes ?? 0) > 0);
    const used = (await config()).diskUsedBytes as number;
    assert.ok(used > 140 * MiB, `the folder holds the 100 MB table and its WAL: ${used}`);
    assert.match(await pgs.ok(['config', 'q']), /disk\s+10 GiB \(using [\d.]+ MiB\)/);
    // A quota just under what it uses (nothing writes meanwhile): over it, not past the hard limit (110 %).
    let quota = used - MiB;
    assert.ok(used < quota * 1.1, 'the test needs the tenant between the quota and the hard limit');
    await pgs.ok(['config', 'q', '--disk', String(quota)]);
    await waitFor('q to be read-only', async () => {
      const now = await config();
      if (now.disk === 'read-only') return true;
      // A checkpoint may still remove WAL the load left behind: keep the quota just under what it uses now.
      if (now.diskUsedBytes !== undefined && now.diskUsedBytes !== null && now.diskUsedBytes < quota) {
        quota = now.diskUsedBytes - MiB;
        await pgs.ok(['config', 'q', '--disk', String(quota)]);
      }
      return false;
    }, 60_000);
    const refused = await sql("INSERT INTO big VALUES (1, 'more')");
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /WARNING: {2}tenant q is over its disk quota of [\d.]+ MiB: it is read-only/);
    assert.match(refused.stderr, /ERROR: {2}cannot execute INSERT in a read-only transaction/);
    assert.equal((await sql('SELECT count(*) FROM big')).stdout, '100000', 'reads work');
    // The owner cleans up in a transaction that says it writes (or after SET default_transaction_read_only = off).
    const cleaned = await sql('BEGIN READ WRITE; TRUNCATE big; COMMIT');
    assert.equal(cleaned.code, 0, cleaned.stderr);
    await waitFor('q to be writable again', async () => (await config()).disk === 'ok', 30_000);
    assert.equal((await sql("INSERT INTO big VALUES (1, 'after')")).code, 0);
    assert.equal((await sql('SELECT count(*) FROM big')).stdout, '1');
  });

  it('past the hard limit (quota + 10 %) the server runs as a standby: reads work, nothing can be written, until the quota is raised', async () => {
    await pgs.ok(['config', 'q', '--disk', '128M']);
    const deadline = Date.now() + 120_000;
    while ((await config()).disk !== 'standby' && Date.now() < deadline) await chunk();
    assert.equal((await config()).disk, 'standby');
    const rows = Number((await sql('SELECT count(*) FROM big')).stdout);
    assert.ok(rows > 1, 'reads work');
    const refused = await chunk();
    assert.match(refused.stderr, /WARNING: {2}tenant q is past its hard disk limit/);
    assert.match(refused.stderr, /cannot set transaction read-write mode during recovery|read-only transaction/);
    assert.equal((await sql('SELECT pg_is_in_recovery()')).stdout, 't');
    // A larger quota: the server starts as a primary again, on the same data.
    await pgs.ok(['config', 'q', '--disk', '10G']);
    await waitFor('q to be writable again', async () => (await config()).disk === 'ok', 60_000);
    await waitFor('q to answer', async () => (await sql('SELECT pg_is_in_recovery()')).stdout === 'f', 30_000);
    assert.equal(Number((await sql('SELECT count(*) FROM big')).stdout), rows);
    assert.equal((await sql("INSERT INTO big VALUES (2, 'again')")).code, 0);
    assert.equal(Number((await sql('SELECT count(*) FROM big')).stdout), rows + 1);
    await pgs.ok(['config', 'q', '--disk', 'off']);
    assert.equal((await config()).diskBytes, null);
  });

  it('a bad quota changes nothing', async () => {
    const before = await pgs.catalogText();
    const bad = await pgs.run(['config', 'q', '--disk', '100M']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /invalid --disk "100M": a size such as 10G or 500M \(at least 128M\), or off/);
    assert.equal(await pgs.catalogText(), before);
  });
});

/** The host's disk nearly full (a small tmpfs as the data root): creates and wakes are refused before PostgreSQL meets ENOSPC. */
describe('the host disk watermark', { skip: isRoot ? false : 'mounting a tmpfs needs root' }, () => {
  let pgs: PgsHome;
  let port: number;
  let mount: string;
  let t: Created;

  before(async () => {
    mount = mkdtempSync(path.join(tmpdir(), 'pgs-small-disk-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=700m', 'tmpfs', mount]);
    pgs = await PgsHome.make({ PGS_RUNNING_SPARES: '0', PGS_DATA: path.join(mount, 'data') });
    port = await pgs.setup();
    t = await pgs.json<Created>(['create', 'w', '--autosuspend', '1s']);
    await waitFor('w to be suspended', async () => (await pgs.json<{ tenants: { state: string }[] }>(['status'])).tenants[0]?.state === 'suspended');
  });
  after(async () => {
    await pgs?.destroy();
    try {
      execFileSync('umount', [mount]);
      rmSync(mount, { recursive: true, force: true });
    } catch {
      // not mounted
    }
  });

  it('under 5 % free: create fails with disk_full and a wake with 53100; freed space lets both in', async () => {
    const stats = await fs.statfs(mount);
    const filler = path.join(mount, 'filler');
    // Leave about 2 % free.
    await fs.writeFile(filler, Buffer.alloc(Math.max(0, stats.bavail * stats.bsize - Math.floor(stats.blocks * stats.bsize * 0.02))));
    try {
      await new Promise((r) => setTimeout(r, 5_500)); // the daemon reads free space at most every 5 s
      const refused = await pgs.run(['create', 'nope']);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /is nearly full \([\d.]+ [KMG]iB free of [\d.]+ MiB, under 5 %\): new tenants and wakes are refused/);
      assert.ok(!(await pgs.catalogText()).includes('"nope"'));
      const wake = await psql(`host=${t.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=w sslmode=require`, 'SELECT 1', t.password);
      assert.match(wake.stderr, /FATAL: {2}tenant w cannot be woken: the disk of .* is nearly full/);
    } finally {
      await fs.rm(filler, { force: true });
    }
    await new Promise((r) => setTimeout(r, 5_500));
    assert.equal((await psql(`host=${t.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=w sslmode=require`, 'SELECT 1', t.password)).stdout, '1');
  });
});
