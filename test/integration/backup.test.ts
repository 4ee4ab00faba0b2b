import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgsHome, psql, runCommand, waitFor } from '../helpers/pgs.js';

/**
 * Backups, point-in-time restore, branches, export/import: real servers, real
 * WAL archives, real psql. The source tenant is never harmed by a failure.
 */
interface Created { id: string; hostname: string; password: string }
interface Backup { id: string; kind: string; reason: string; generation: string; finishedAt: string; startLsn: string; endLsn: string; timeline: number; bytes: number; note?: string }
interface BackupList { backups: Backup[]; window: { earliest: string; latest: string } | null; ranges: { generation: string; from: string; to: string; gap?: string }[]; lastFailure: { error: string } | null }
interface TenantJson { id: string; state: string; hostname: string; lastBackupAt: string | null; archiving: string; wakes: number }

async function sql(pgs: PgsHome, id: string, password: string, text: string): Promise<string> {
  const url = (await pgs.ok(['url', id, '--local'])).trim();
  for (let attempt = 1; ; attempt++) {
    await pgs.ok(['start', id]); // wakes it if it was suspended (the local socket does not)
    const result = await psql(url, text, password);
    if (result.code === 0) return result.stdout.trim();
    // A tenant with a short autosuspend may be suspended again between the start and
    // the query: the local socket does not wake it, so start it once more.
    const suspendedMeanwhile = /shutting down|No such file or directory/.test(result.stderr);
    if (!suspendedMeanwhile || attempt === 3) throw new Error(`psql on ${id}: ${result.stderr}`);
  }
}

async function fails(pgs: PgsHome, args: string[]): Promise<string> {
  const result = await pgs.run(args);
  assert.notEqual(result.code, 0, `pgs ${args.join(' ')} should fail; it printed ${result.stdout}`);
  // A slow operation shows its phases first ("unpacking and checking backup X ...", after a second): not errors.
  const errors = result.stderr.trim().split('\n').filter((line) => !/ \.\.\.$/.test(line));
  assert.equal(errors.length, 1, `one line: ${result.stderr}`);
  return result.stderr;
}

describe('point-in-time restore, in place and as a new tenant', () => {
  let pgs: PgsHome;
  let shop: Created;

  before(async () => {
    pgs = await PgsHome.make();
    await pgs.setup();
    shop = await pgs.json<Created>(['create', 'shop']);
  });
  after(async () => {
    await pgs.destroy();
  });

  it('a dropped table comes back: restore to the time noted before the DROP', async () => {
    await sql(pgs, 'shop', shop.password, 'CREATE TABLE orders (id int primary key, item text); INSERT INTO orders SELECT g, \'item \' || g FROM generate_series(1, 500) g');
    const first = await pgs.json<Backup>(['backup', 'shop']);
    assert.equal(first.kind, 'online');
    await sql(pgs, 'shop', shop.password, 'INSERT INTO orders SELECT g, \'late \' || g FROM generate_series(501, 600) g');
    await sleep(1_100);
    const noted = new Date().toISOString();
    await sleep(1_100);
    await sql(pgs, 'shop', shop.password, 'DROP TABLE orders');

    const restored = await pgs.json<TenantJson>(['restore', 'shop', '--time', noted]);
    assert.equal(restored.state, 'running');
    // The rows written after the backup came back too: the archive was replayed up to the noted time.
    assert.equal(await sql(pgs, 'shop', shop.password, 'SELECT count(*) FROM orders'), '600');
    // The logins kept working (the same password), and the state before the restore was kept as a backup.
    const list = await pgs.json<BackupList>(['backups', 'shop']);
    assert.ok(list.backups.some((b) => b.reason === 'pre-restore'), JSON.stringify(list.backups));
    assert.ok(list.window && list.window.earliest <= first.finishedAt);
    // The table tells them apart: the pre-restore backup is of the generation before the restore, on its timeline.
    const table = await pgs.ok(['backups', 'shop']);
    assert.match(table, /^ID +KIND +REASON +FINISHED +SIZE +GENERATION +TL +WAL +NOTE$/m);
    const pre = / pre-restore .* (\d{8}-\d{6}-[0-9a-f]{4}) +(\d+) +([0-9A-F]{24})-([0-9A-F]{24}) +(.+)$/m.exec(table);
    assert.ok(pre, table);
    const preBackup = list.backups.find((b) => b.reason === 'pre-restore');
    assert.equal(pre[1], preBackup?.generation);
    assert.equal(pre[2], '1', 'taken on the timeline before the restore');
    assert.equal(pre[3]?.slice(0, 8), '00000001', 'its WAL segments name its timeline');
    // It says what it was taken before, in the table, in --json and in the API.
    assert.equal(pre[5], `before restore to ${noted}`);
    assert.equal(preBackup?.note, `before restore to ${noted}`);
    const viaApi = await pgs.api<{ backups: Backup[] }>('GET', '/v1/tenants/shop/backups');
    assert.equal(viaApi.body.backups.find((b) => b.id === preBackup?.id)?.note, `before restore to ${noted}`);
    assert.equal(viaApi.body.backups.find((b) => b.id === first.id)?.note, undefined, 'a manual backup has no note');
  });

  it('the state before a restore is itself restorable: the DROP comes back with its pre-restore backup', async () => {
    const list = await pgs.json<BackupList>(['backups', 'shop']);
    const pre = list.backups.find((b) => b.reason === 'pre-restore');
    assert.ok(pre);
    await pgs.ok(['restore', 'shop', '--backup', pre.id]);
    // Each generation's first backup is taken soon after its restore; wait for the one this restore made.
    let after: BackupList | undefined;
    const pres = () => after?.backups.filter((b) => b.reason === 'pre-restore') ?? [];
    const firstAfter = (b: Backup | undefined) => after?.backups.find((x) => x.reason === 'first' && b !== undefined && x.finishedAt > b.finishedAt);
    await waitFor('the restored generation\'s first backup', async () => {
      after = await pgs.json<BackupList>(['backups', 'shop']);
      return firstAfter(pres().pop()) !== undefined;
    }, 30_000);
    const [pre1, pre2] = pres();
    assert.equal(pre2?.note, `before restore to backup ${pre.id}`);
    // The first restore went back in the WAL: its generation's first backup may start at the very LSN the
    // pre-restore backup did, but on the next timeline; the WAL column (segment names hold the timeline) tells them apart.
    const first1 = firstAfter(pre1);
    assert.ok(pre1 && first1, JSON.stringify(after));
    assert.equal(first1.timeline, pre1.timeline + 1);
    const table = await pgs.ok(['backups', 'shop']);
    const walOf = (b: Backup) => new RegExp(`^${b.id} .* ([0-9A-F]{24}-[0-9A-F]{24})`, 'm').exec(table)?.[1];
    assert.notEqual(walOf(first1), walOf(pre1), table);
    assert.equal(walOf(first1)?.slice(0, 8), first1.timeline.toString(16).toUpperCase().padStart(8, '0'), table);
    // Within a generation no two backups share WAL: each row's generation and WAL are its own.
    const rows = (after?.backups ?? []).map((b) => `${b.generation} ${walOf(b) ?? ''}`);
    assert.equal(new Set(rows).size, rows.length, table);
    const gone = await runCommand('psql', [(await pgs.ok(['url', 'shop', '--local'])).trim(), '-Atc', 'SELECT count(*) FROM orders'], { ...process.env, PGPASSWORD: shop.password });
    assert.match(gone.stderr, /relation "orders" does not exist/);
  });

  it('a time outside the window is refused with the window, and nothing changes', async () => {
    const list = await pgs.json<BackupList>(['backups', 'shop']);
    assert.ok(list.window);
    const before = new Date(Date.parse(list.window.earliest) - 60_000).toISOString();
    const tooEarly = await fails(pgs, ['restore', 'shop', '--time', before]);
    assert.match(tooEarly, /outside what the backups of shop can restore: .*to/);
    const future = new Date(Date.now() + 3_600_000).toISOString();
    const tooLate = await fails(pgs, ['restore', 'shop', '--time', future]);
    assert.match(tooLate, /outside what the backups of shop can restore/);
    assert.equal((await pgs.json<BackupList>(['backups', 'shop'])).backups.length, list.backups.length, 'no backup was taken for a refused restore');
    assert.match(await fails(pgs, ['restore', 'shop', '--time', 'yesterday']), /invalid --time "yesterday"/);
    assert.match(await fails(pgs, ['restore', 'shop', '--backup', '20200101-000000-abcd']), /has no backup 20200101-000000-abcd/);
  });

  it('--as makes a new tenant at that time and leaves the source untouched', async () => {
    await sql(pgs, 'shop', shop.password, 'CREATE TABLE ledger (n int); INSERT INTO ledger VALUES (1), (2)');
    await sleep(1_100);
    // Noted as psql prints it (2026-12-06 21:00:58.429273+00), which --time takes as it is.
    const noted = await sql(pgs, 'shop', shop.password, 'SELECT now()');
    assert.match(noted, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)?[+-]\d{2}(:\d{2})?$/);
    await sleep(1_100);
    await sql(pgs, 'shop', shop.password, 'INSERT INTO ledger VALUES (3)');
    const copy = await pgs.json<TenantJson>(['restore', 'shop', '--time', noted, '--as', 'shop-copy']);
    assert.equal(copy.id, 'shop-copy');
    assert.notEqual(copy.hostname, shop.hostname);
    // Its roles and passwords are the source's at that time; its database is named after it.
    assert.equal(await sql(pgs, 'shop-copy', shop.password, 'SELECT string_agg(n::text, \',\' ORDER BY n) FROM ledger'), '1,2');
    assert.equal(await sql(pgs, 'shop-copy', shop.password, 'SELECT current_database()'), 'shop-copy');
    assert.equal(await sql(pgs, 'shop', shop.password, 'SELECT count(*) FROM ledger'), '3');
    assert.match(await fails(pgs, ['restore', 'shop', '--as', 'shop-copy']), /tenant shop-copy already exists/);
  });

  it('a removed tenant\'s backups stay: restore brings it back as it was when removed; --delete deletes them', async () => {
    await pgs.ok(['backup', 'shop-copy']);
    await sql(pgs, 'shop-copy', shop.password, 'INSERT INTO ledger VALUES (42)');
    const hostname = (await pgs.json<TenantJson[]>(['list'])).find((t) => t.id === 'shop-copy')?.hostname;
    assert.match(await pgs.ok(['remove', 'shop-copy', '--yes']), /^Removed tenant shop-copy; its (backup|\d+ backups) and its WAL archive stay \("pgs restore shop-copy" brings it back/m);
    const restored = await pgs.json<TenantJson>(['restore', 'shop-copy']);
    assert.equal(restored.hostname, hostname, 'back under its id, it keeps its host name');
    assert.equal(await sql(pgs, 'shop-copy', shop.password, 'SELECT string_agg(n::text, \',\' ORDER BY n) FROM ledger'), '1,2,42');
    // Its new generation gets a backup of its own at once: the restorable window starts at the restore.
    await waitFor('the restored tenant\'s first backup', async () => {
      const list = await pgs.json<BackupList>(['backups', 'shop-copy']);
      const current = list.ranges[list.ranges.length - 1]?.generation;
      return list.backups.some((b) => b.generation === current && b.reason === 'first');
    }, 30_000);
    assert.match(await fails(pgs, ['backups', 'shop-copy', '--delete', '--yes']), /tenant shop-copy exists/);
    await pgs.ok(['remove', 'shop-copy', '--yes']);
    assert.match(await fails(pgs, ['backups', 'shop-copy', '--delete']), /stdin is not a terminal, pass --yes/);
    assert.match(await pgs.ok(['backups', 'shop-copy', '--delete', '--yes']), /Deleted the backups of shop-copy/);
    assert.match(await fails(pgs, ['restore', 'shop-copy']), /no backup|no tenant/);
  });

  it('a tenant removed before its first backup: remove says nothing is kept, and restore names no command that would fail', async () => {
    await pgs.json<Created>(['create', 't3']);
    assert.match(await pgs.ok(['remove', 't3', '--yes']), /^Removed tenant t3; it had no backup, so nothing of it is kept$/m);
    for (const args of [['restore', 't3'], ['restore', 't3', '--as', 't4'], ['restore', 't3', '--time', '2026-11-30 14:02:00+00']]) {
      const refused = await fails(pgs, args);
      assert.match(refused, /no tenant t3, and no backup of one to restore it from: "pgs list" shows the tenants there are/, refused);
      assert.doesNotMatch(refused, /pgs backup t3/);
    }
    assert.match(await fails(pgs, ['backups', 't3']), /no tenant t3, and no backups of one/);
  });

  it('a new tenant\'s server log stays free of warnings through create (from a running spare), backup, restore in place and a new RPO', async () => {
    const spares = path.join(await pgs.dataRoot(), 'spares');
    const readySpare = async () => {
      for (const name of (await fs.readdir(spares)).filter((n) => n.startsWith('.warm-'))) {
        const pidFile = await fs.readFile(path.join(spares, name, 'postmaster.pid'), 'utf8').catch(() => '');
        if (pidFile.split('\n')[7]?.trim() === 'ready') return true;
      }
      return false;
    };
    await waitFor('a running spare', readySpare, 60_000);
    const calm = await pgs.json<Created>(['create', 'calm']);
    await sql(pgs, 'calm', calm.password, 'CREATE TABLE notes (n int); INSERT INTO notes VALUES (1)');
    const backup = await pgs.json<Backup>(['backup', 'calm']);
    await pgs.ok(['restore', 'calm', '--backup', backup.id]);
    assert.equal(await sql(pgs, 'calm', calm.password, 'SELECT count(*) FROM notes'), '1');
    await pgs.ok(['config', 'calm', '--rpo', '10s']);
    // The reload that the new RPO asks for has been read when the server says so.
    await waitFor('the new archive_timeout to be read', async () => /parameter "archive_timeout" changed to "10"/.test(await pgs.ok(['logs', 'calm', '-n', '2000'])), 10_000);
    const log = await pgs.ok(['logs', 'calm', '-n', '2000']);
    assert.match(log, /database system is ready to accept connections/, 'the log is the server\'s');
    // Nothing here is the client's doing (its statements all succeeded): every such line would be pgs's own.
    const alarming = log.split('\n').filter((line) => /\b(WARNING|ERROR|FATAL|PANIC):/.test(line));
    assert.deepEqual(alarming, [], log);
    assert.doesNotMatch(log, /contains errors|cannot be changed without restarting/, log);
  });
});

describe('branches', () => {
  let pgs: PgsHome;
  let main: Created;

  before(async () => {
    pgs = await PgsHome.make();
    await pgs.setup();
    main = await pgs.json<Created>(['create', 'main']);
    await sql(pgs, 'main', main.password, 'CREATE TABLE t (v text); INSERT INTO t VALUES (\'before\')');
  });
  after(async () => {
    await pgs.destroy();
  });

  it('a branch has the source\'s data now and is independent both ways', async () => {
    const branch = await pgs.json<TenantJson>(['branch', 'main', 'dev']);
    assert.equal(branch.state, 'running');
    assert.equal(await sql(pgs, 'dev', main.password, 'SELECT v FROM t'), 'before');
    await sql(pgs, 'dev', main.password, 'INSERT INTO t VALUES (\'dev only\')');
    await sql(pgs, 'main', main.password, 'INSERT INTO t VALUES (\'main only\')');
    assert.equal(await sql(pgs, 'dev', main.password, 'SELECT string_agg(v, \',\' ORDER BY v) FROM t'), 'before,dev only');
    assert.equal(await sql(pgs, 'main', main.password, 'SELECT string_agg(v, \',\' ORDER BY v) FROM t'), 'before,main only');
    // Each archives into its own folder: the branch's WAL never lands in the source's archive.
    const [mainList, devList] = await Promise.all([pgs.json<BackupList>(['backups', 'main']), pgs.json<BackupList>(['backups', 'dev'])]);
    assert.ok(mainList.backups.every((b) => !devList.backups.some((d) => d.generation === b.generation)));
  });

  it('--at gives the source as it was then', async () => {
    // A branch "now" copies without a backup; one at a time in the past starts from a backup.
    assert.match(await fails(pgs, ['branch', 'main', 'then', '--at', new Date().toISOString()]), /tenant main has no backup yet/);
    await pgs.ok(['backup', 'main']);
    await sleep(1_100);
    const noted = new Date().toISOString();
    await sleep(1_100);
    await sql(pgs, 'main', main.password, 'INSERT INTO t VALUES (\'later\')');
    await pgs.ok(['branch', 'main', 'then', '--at', noted]);
    assert.equal(await sql(pgs, 'then', main.password, 'SELECT string_agg(v, \',\' ORDER BY v) FROM t'), 'before,main only');
  });

  it('a suspended tenant is branched from its files and stays suspended', async () => {
    const sleepy = await pgs.json<Created>(['create', 'sleepy', '--autosuspend', '1s']);
    await sql(pgs, 'sleepy', sleepy.password, 'CREATE TABLE z (v text); INSERT INTO z VALUES (\'zzz\')');
    const state = async () => (await pgs.json<TenantJson[]>(['list'])).find((t) => t.id === 'sleepy');
    await waitFor('sleepy to be suspended', async () => (await state())?.state === 'suspended', 30_000);
    const wakes = (await state())?.wakes;
    await pgs.ok(['branch', 'sleepy', 'awake']);
    assert.equal((await state())?.state, 'suspended');
    assert.equal((await state())?.wakes, wakes, 'not woken');
    assert.equal(await sql(pgs, 'awake', sleepy.password, 'SELECT v FROM z'), 'zzz');
    assert.equal(await sql(pgs, 'awake', sleepy.password, 'SELECT current_database()'), 'awake');
    await pgs.ok(['remove', 'awake', '--yes']);
    await pgs.ok(['remove', 'sleepy', '--yes']);
  });

  it('bad branches are refused and make nothing', async () => {
    assert.match(await fails(pgs, ['branch', 'main', 'main']), /tenant main already exists/);
    assert.match(await fails(pgs, ['branch', 'nope', 'x1']), /no tenant nope/);
    assert.match(await fails(pgs, ['branch', 'main', 'Bad_Id']), /invalid|id/i);
    const list = await pgs.json<{ id: string }[]>(['list']);
    assert.deepEqual(list.map((t) => t.id).sort(), ['dev', 'main', 'then']);
  });
});

describe('backups of suspended tenants, damaged backups, retention and gaps', () => {
  let pgs: PgsHome;
  let quiet: Created;
  let dataRoot: string;

  before(async () => {
    pgs = await PgsHome.make();
    await pgs.setup();
    dataRoot = await pgs.dataRoot();
    quiet = await pgs.json<Created>(['create', 'quiet', '--autosuspend', '1s']);
    await sql(pgs, 'quiet', quiet.password, 'CREATE TABLE k (n int); INSERT INTO k SELECT generate_series(1, 1000)');
  });
  after(async () => {
    await pgs.destroy();
  });

  it('a suspended tenant is backed up from its files and stays suspended', async () => {
    await waitFor('quiet to be suspended', async () => ((await pgs.json<TenantJson[]>(['list']))[0]?.state === 'suspended'), 30_000);
    const before = (await pgs.json<TenantJson[]>(['list']))[0];
    const made = await pgs.json<Backup>(['backup', 'quiet']);
    assert.equal(made.kind, 'offline');
    const after = (await pgs.json<TenantJson[]>(['list']))[0];
    assert.equal(after?.state, 'suspended');
    assert.equal(after?.wakes, before?.wakes, 'not woken');
    assert.equal(after?.lastBackupAt, made.finishedAt);
  });

  it('a backup with one flipped byte is refused by restore, naming the file; the tenant is unharmed', async () => {
    await pgs.ok(['config', 'quiet', '--autosuspend', 'off']); // from here on it is queried over its socket
    const list = await pgs.json<BackupList>(['backups', 'quiet']);
    const last = list.backups[list.backups.length - 1];
    assert.ok(last);
    const tar = path.join(dataRoot, 'backups', 'quiet', last.generation, 'base', last.id, 'base.tar');
    // Flip a byte inside a data file's contents: find the table's file in the manifest and its offset in the tar.
    const manifest = JSON.parse(await fs.readFile(path.join(path.dirname(tar), 'backup_manifest'), 'utf8')) as { Files: { Path: string; Size: number }[] };
    const big = manifest.Files.filter((f) => f.Path.startsWith('base/') && f.Size >= 8192).sort((a, b) => b.Size - a.Size)[0];
    assert.ok(big);
    const bytes = await fs.readFile(tar);
    const at = bytes.indexOf(Buffer.from(`./${big.Path}\0`)) >= 0 ? bytes.indexOf(Buffer.from(`./${big.Path}\0`)) : bytes.indexOf(Buffer.from(`${big.Path}\0`));
    assert.ok(at >= 0, `found ${big.Path} in the tar`);
    const handle = await fs.open(tar, 'r+');
    const offset = at - (at % 512) + 512 + 4000;
    const one = Buffer.alloc(1);
    await handle.read(one, 0, 1, offset);
    one[0] = (one[0] ?? 0) ^ 0xff;
    await handle.write(one, 0, 1, offset);
    await handle.close();
    const refused = await fails(pgs, ['restore', 'quiet', '--backup', last.id]);
    assert.match(refused, new RegExp(`backup ${last.id} is damaged: ${big.Path.replaceAll('/', '\\/')} does not match its checksum`));
    assert.equal(await sql(pgs, 'quiet', quiet.password, 'SELECT count(*) FROM k'), '1000');
    await fs.rm(path.dirname(tar), { recursive: true }); // the damaged backup goes
  });

  it('retention keeps the newest N backups and deletes the WAL only older ones needed', async () => {
    await pgs.ok(['config', 'quiet', '--retain', '2', '--backup-schedule', 'hourly', '--rpo', '30s']);
    const shown = await pgs.json<{ backupRetain: number; backupSchedule: string; rpoSeconds: number }>(['config', 'quiet']);
    assert.deepEqual([shown.backupRetain, shown.backupSchedule, shown.rpoSeconds], [2, 'hourly', 30]);
    for (let i = 0; i < 3; i++) {
      await sql(pgs, 'quiet', quiet.password, `INSERT INTO k VALUES (${i})`);
      await pgs.ok(['backup', 'quiet']);
    }
    const list = await pgs.json<BackupList>(['backups', 'quiet']);
    assert.equal(list.backups.length, 2);
    const oldest = list.backups[0] as Backup;
    const wal = await fs.readdir(path.join(dataRoot, 'backups', 'quiet', oldest.generation, 'wal'));
    const [hi, lo] = oldest.startLsn.split('/').map((x) => Number.parseInt(x, 16)) as [number, number];
    const firstNeeded = (hi * 2 ** 32 + lo) / 2 ** 20;
    for (const name of wal.filter((n) => /^[0-9A-F]{24}$/.test(n))) {
      assert.ok(Number.parseInt(name.slice(8, 16), 16) * 4096 + Number.parseInt(name.slice(16), 16) >= Math.floor(firstNeeded), `${name} is older than the oldest backup`);
    }
    assert.match(await fails(pgs, ['config', 'quiet', '--retain', '0']), /invalid --retain "0"/);
    assert.match(await fails(pgs, ['config', 'quiet', '--backup-schedule', 'weekly']), /invalid --backup-schedule "weekly"/);
    assert.match(await fails(pgs, ['config', 'quiet', '--rpo', '2h']), /invalid --rpo "2h"/);
  });

  it('a gap in the WAL archive is reported by backups and list, and a restore past it is refused', async () => {
    const tenant = (await pgs.json<TenantJson[]>(['list']))[0];
    const list = await pgs.json<BackupList>(['backups', 'quiet']);
    const generation = list.backups[list.backups.length - 1]?.generation as string;
    // Writes in several segments, all archived: with an RPO of 1 s each second's writes end a segment.
    const walFolder = path.join(dataRoot, 'backups', 'quiet', generation, 'wal');
    const segmentsNow = async () => (await fs.readdir(walFolder)).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
    const before = new Set(await segmentsNow());
    await pgs.ok(['config', 'quiet', '--rpo', '1s']);
    for (let i = 0; i < 3; i++) {
      await sql(pgs, 'quiet', quiet.password, 'INSERT INTO k SELECT generate_series(1, 2000)');
      await sleep(1_500);
    }
    await waitFor('three more segments archived', async () => (await segmentsNow()).filter((n) => !before.has(n)).length >= 3);
    const added = (await segmentsNow()).filter((n) => !before.has(n));
    const lost = added[1] as string; // one in the middle: older and newer segments stay
    await fs.rm(path.join(walFolder, lost));
    await pgs.ok(['backup', 'quiet']); // a backup looks at the archive
    const withGap = await pgs.json<BackupList>(['backups', 'quiet']);
    const range = withGap.ranges.find((r) => r.generation === generation);
    assert.equal(range?.gap, lost, JSON.stringify(withGap.ranges));
    // A restore past the gap is refused before anything is done; one before it still works.
    assert.match(await fails(pgs, ['restore', 'quiet', '--as', 'past-gap']), /misses segment/);
    const shown = (await pgs.json<TenantJson[]>(['list'])).find((t) => t.id === 'quiet');
    assert.equal(shown?.archiving, 'gap');
    assert.ok(tenant);
  });
});

describe('export and import between two data roots', () => {
  let one: PgsHome;
  let two: PgsHome;

  before(async () => {
    one = await PgsHome.make();
    two = await PgsHome.make();
    await one.setup();
    await two.setup();
  });
  after(async () => {
    await one.destroy();
    await two.destroy();
  });

  it('export on one host, import on another: same rows, logins work', async () => {
    const app = await one.json<Created>(['create', 'app']);
    await sql(one, 'app', app.password, 'CREATE TABLE users (name text); INSERT INTO users VALUES (\'ada\'), (\'grace\')');
    const file = path.join(one.home, 'app.pgs');
    const exported = await one.json<{ file: string; bytes: number; sha256: string }>(['export', 'app', '-o', file]);
    assert.equal(exported.file, file);
    assert.equal((await fs.stat(file)).size, exported.bytes);
    const imported = await two.json<TenantJson>(['import', file]);
    assert.equal(imported.id, 'app');
    assert.equal(await sql(two, 'app', app.password, 'SELECT string_agg(name, \',\' ORDER BY name) FROM users'), 'ada,grace');
    const again = await two.json<TenantJson>(['import', file, '--as', 'app2']);
    assert.equal(await sql(two, 'app2', app.password, 'SELECT current_database()'), 'app2');
    assert.match(await fails(two, ['import', file]), /tenant app already exists/);
    assert.ok(again);
  });

  it('a damaged or cut export file is refused and makes nothing', async () => {
    const file = path.join(one.home, 'app.pgs');
    const bytes = await fs.readFile(file);
    const cut = path.join(one.home, 'cut.pgs');
    await fs.writeFile(cut, bytes.subarray(0, Math.floor(bytes.length / 2)));
    assert.match(await fails(two, ['import', cut, '--as', 'cut']), /not a usable pgs export/);
    const flipped = Buffer.from(bytes);
    flipped[Math.floor(bytes.length / 3)] = (flipped[Math.floor(bytes.length / 3)] ?? 0) ^ 1;
    const bad = path.join(one.home, 'bad.pgs');
    await fs.writeFile(bad, flipped);
    assert.match(await fails(two, ['import', bad, '--as', 'bad']), /does not match its checksum|not a usable pgs export/);
    assert.match(await fails(two, ['import', path.join(one.home, 'missing.pgs')]), /cannot read .*no such file/);
    const ids = (await two.json<{ id: string }[]>(['list'])).map((t) => t.id).sort();
    assert.deepEqual(ids, ['app', 'app2']);
  });
});

describe('faults during a backup', () => {
  let pgs: PgsHome;
  let big: Created;
  let dataRoot: string;

  before(async () => {
    pgs = await PgsHome.make();
    await pgs.setup();
    dataRoot = await pgs.dataRoot();
    big = await pgs.json<Created>(['create', 'big']);
    // About 120 MB: its backup takes long enough to be caught in the middle.
    await sql(pgs, 'big', big.password, 'CREATE TABLE wide (n int, pad text); INSERT INTO wide SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, 100000) g');
  });
  after(async () => {
    await pgs.destroy();
  });

  it('kill -9 of the daemon mid-backup: no half backup is ever listed, and the next start cleans up', async () => {
    const tenant = await pgs.api<{ generation?: string }>('GET', '/v1/tenants/big');
    assert.equal(tenant.status, 200);
    const status = await pgs.api<{ pid: number }>('GET', '/v1/status');
    const list = await pgs.json<BackupList>(['backups', 'big']);
    const generation = (await fs.readdir(path.join(dataRoot, 'backups', 'big'))).find((n) => /^\d{8}-/.test(n)) as string;
    const base = path.join(dataRoot, 'backups', 'big', generation, 'base');
    const started = await pgs.api<{ id: string }>('POST', '/v1/tenants/big/backups', { headers: { prefer: 'respond-async' } });
    assert.equal(started.status, 202);
    await waitFor('the backup to be under way', async () => (await fs.readdir(base).catch(() => [] as string[])).some((n) => n.startsWith('.tmp-')), 10_000);
    process.kill(status.body.pid, 'SIGKILL');
    await waitFor('the daemon to be gone', async () => (await pgs.api('GET', '/healthz').catch(() => undefined)) === undefined, 10_000);
    // Read from the files (no daemon): the cut backup is not there.
    const without = await pgs.json<BackupList>(['backups', 'big']);
    assert.equal(without.backups.length, list.backups.length);
    await pgs.ok(['start']);
    await waitFor('the leftovers to be deleted', async () => !(await fs.readdir(base)).some((n) => n.startsWith('.tmp-')), 20_000);
    // And backups work again.
    const made = await pgs.json<Backup>(['backup', 'big']);
    assert.equal(made.kind, 'online');
  });

  it('a full disk fails the backup, which is removed; the tenant keeps running', { skip: process.getuid?.() !== 0 ? 'mounts a small tmpfs: root only' : false }, async () => {
    const generation = (await fs.readdir(path.join(dataRoot, 'backups', 'big'))).find((n) => /^\d{8}-/.test(n)) as string;
    const base = path.join(dataRoot, 'backups', 'big', generation, 'base');
    const owner = await fs.stat(path.dirname(base));
    await fs.mkdir(base, { recursive: true, mode: 0o700 });
    await fs.chown(base, owner.uid, owner.gid);
    const before = await pgs.json<BackupList>(['backups', 'big']);
    const mounted = await runCommand('mount', ['-t', 'tmpfs', '-o', `size=24m,uid=${owner.uid},gid=${owner.gid},mode=0700`, 'pgs-test-full', base], process.env);
    assert.equal(mounted.code, 0, mounted.stderr);
    try {
      const failed = await fails(pgs, ['backup', 'big']);
      assert.match(failed, /is full/);
      assert.deepEqual(await fs.readdir(base), [], 'the partial backup was removed');
      const after = await pgs.json<BackupList>(['backups', 'big']);
      assert.equal(after.backups.length, 0, 'what was on the small disk is out of sight, nothing new was listed');
      assert.match(after.lastFailure?.error ?? '', /space|full/i);
      assert.equal(await sql(pgs, 'big', big.password, 'SELECT count(*) FROM wide'), '100000');
    } finally {
      await runCommand('umount', [base], process.env);
    }
    assert.equal((await pgs.json<BackupList>(['backups', 'big'])).backups.length, before.backups.length);
  });
});

describe('a tenant whose data folder is lost', () => {
  it('is restored into its place from its backups; its host name and password stay', async () => {
    const pgs = await PgsHome.make();
    after(() => pgs.destroy());
    await pgs.setup();
    const lost = await pgs.json<Created>(['create', 'lost']);
    await sql(pgs, 'lost', lost.password, 'CREATE TABLE keep (n int); INSERT INTO keep SELECT generate_series(1, 77)');
    await pgs.ok(['backup', 'lost']);
    await pgs.ok(['stop', 'lost']);
    await fs.rm(path.join(await pgs.dataRoot(), 'tenants', 'lost'), { recursive: true });
    await pgs.ok(['restore', 'lost']);
    await pgs.ok(['start', 'lost']);
    assert.equal(await sql(pgs, 'lost', lost.password, 'SELECT count(*) FROM keep'), '77');
    const [shown] = await pgs.json<TenantJson[]>(['list']);
    assert.equal(shown?.hostname, lost.hostname);
  });
});

describe('tenants made before continuous archiving get an archive', () => {
  it('a tenant without a WAL archive in the catalog gets one when the daemon starts, and archives into it', async () => {
    const pgs = await PgsHome.make();
    after(() => pgs.destroy());
    await pgs.setup();
    const old = await pgs.json<Created>(['create', 'old']);
    await pgs.stopDaemonKeepingTenants();
    const catalogFile = path.join(pgs.home, 'catalog.json');
    const catalog = JSON.parse(await fs.readFile(catalogFile, 'utf8')) as { tenants: { generation?: string }[] };
    for (const t of catalog.tenants) delete t.generation;
    await fs.writeFile(catalogFile, JSON.stringify(catalog, null, 2));
    await pgs.ok(['start']);
    const shown = await pgs.json<{ archiving: string; backupSchedule: string }>(['config', 'old']);
    assert.equal(shown.backupSchedule, 'daily');
    const made = await pgs.json<Backup>(['backup', 'old']);
    assert.match(made.generation, /^\d{8}-\d{6}-[0-9a-f]{4}$/);
    await sql(pgs, 'old', old.password, 'CREATE TABLE x (n int)');
    await sleep(1_100);
    const noted = new Date().toISOString();
    await pgs.ok(['restore', 'old', '--time', noted, '--as', 'old-copy']);
    assert.equal(await sql(pgs, 'old-copy', old.password, 'SELECT count(*) FROM x'), '0');
  });
});
