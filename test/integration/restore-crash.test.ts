import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgsHome, psql, socketDir, waitFor } from '../helpers/pgs.js';

/**
 * A restore in place is all or nothing across a kill -9 of the daemon, in
 * every phase: the daemon is started with a crash point (PGS_CRASH_AT, see
 * src/core/crash.ts) and dies there; the next daemon finishes the restore if
 * the catalog had committed it and undoes it otherwise. Either way nothing is
 * left behind, the tenant serves whole, and its WAL goes on being archived
 * into the generation the catalog names, without a gap.
 */
interface Created { id: string; password: string }
interface Backup { id: string }
interface BackupList { ranges: { generation: string; gap?: string }[] }

describe('kill -9 of the daemon in every phase of a restore', () => {
  let pgs: PgsHome;
  let k: Created;
  let backup: Backup;
  let dataRoot: string;

  const sql = async (text: string) => {
    const result = await psql((await pgs.ok(['url', 'k', '--local'])).trim(), text, k.password);
    if (result.code !== 0) throw new Error(`psql on k: ${result.stderr}`);
    return result.stdout.trim();
  };
  const admin = async (text: string) => {
    const result = await psql(`host=${socketDir(dataRoot, 'k')} user=pgs_admin dbname=pgs_admin`, text, '');
    if (result.code !== 0) throw new Error(`psql as pgs_admin on k: ${result.stderr}`);
    return result.stdout.trim();
  };
  const generation = async () => (JSON.parse(await pgs.catalogText()) as { tenants: { id: string; generation: string }[] }).tenants.find((t) => t.id === 'k')?.generation ?? '';

  before(async () => {
    pgs = await PgsHome.make();
    await pgs.setup();
    dataRoot = await pgs.dataRoot();
    k = await pgs.json<Created>(['create', 'k', '--autosuspend', 'off']);
    await pgs.ok(['config', 'k', '--retain', '50']); // every restore keeps a backup from before: none is pruned here
    await sql('CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 100)');
    backup = await pgs.json<Backup>(['backup', 'k']);
    await sql('INSERT INTO t SELECT generate_series(101, 200)');
  });
  after(async () => {
    await pgs.destroy();
  });

  // In the order a restore goes; the last one is after the catalog's commit.
  for (const phase of ['download', 'extract', 'swap', 'replay', 'promote', 'commit']) {
    it(`dies at ${phase}: the next daemon ${phase === 'commit' ? 'finishes' : 'undoes'} the restore`, async () => {
      const before = await generation();
      await pgs.stopDaemonKeepingTenants();
      const died = await pgs.run(['restore', 'k', '--backup', backup.id], { env: { PGS_CRASH_AT: `restore:${phase}` } });
      assert.notEqual(died.code, 0, `the daemon was to die at ${phase}: ${died.stdout}`);

      await pgs.ok(['start', 'k']); // a new daemon, without a crash point
      const folders = await fs.readdir(path.join(dataRoot, 'tenants'));
      assert.deepEqual(folders.filter((n) => n.startsWith('.prerestore-') || n.startsWith('.restore-')), [], 'nothing half-moved stays');
      assert.deepEqual(await fs.readdir(path.join(dataRoot, 'restores')).catch(() => []), [], 'no journal stays');
      assert.deepEqual((await fs.readdir(path.join(dataRoot, 'backups', 'k'))).filter((n) => n.startsWith('.')), [], 'no borrowed WAL stays');
      const after = await generation();
      if (phase === 'commit') {
        assert.notEqual(after, before, 'the committed restore stands');
        assert.equal(await sql('SELECT count(*) FROM t'), '100');
      } else {
        assert.equal(after, before, 'the tenant is as it was');
        assert.equal(await sql('SELECT count(*) FROM t'), '200');
        const generations = await fs.readdir(path.join(dataRoot, 'backups', 'k'));
        assert.ok(generations.every((g) => g <= before || !/^\d{8}-/.test(g)), `no generation of the undone restore stays: ${generations.join(', ')}`);
      }

      // Archiving goes on, into the generation the catalog names.
      await sql('INSERT INTO t VALUES (0)');
      await sql('DELETE FROM t WHERE n = 0');
      const segment = await admin('SELECT pg_walfile_name(pg_switch_wal())');
      await waitFor('the segment archived', async () => (await admin('SELECT last_archived_wal FROM pg_stat_archiver')) >= segment, 30_000);
      assert.equal(await admin('SELECT failed_count FROM pg_stat_archiver'), '0');
      await fs.access(path.join(dataRoot, 'backups', 'k', after, 'wal', segment));
      const list = await pgs.json<BackupList>(['backups', 'k']);
      assert.equal(list.ranges.find((r) => r.generation === after)?.gap, undefined, JSON.stringify(list.ranges));
      const doctor = await pgs.run(['doctor']);
      assert.equal(doctor.code, 0, doctor.stdout);
    });
  }

  it('dies while restoring a tenant whose data folder was lost: the next daemon leaves it lost, and a restore then works', async () => {
    await pgs.stopDaemonKeepingTenants();
    await fs.rm(path.join(dataRoot, 'tenants', 'k'), { recursive: true, force: true });
    const died = await pgs.run(['restore', 'k', '--backup', backup.id], { env: { PGS_CRASH_AT: 'restore:promote' } });
    assert.notEqual(died.code, 0);
    const doctor = await pgs.run(['doctor']);
    assert.match(doctor.stdout, /missing data k/);
    assert.deepEqual(await fs.readdir(path.join(dataRoot, 'restores')).catch(() => []), []);
    await pgs.ok(['restore', 'k', '--backup', backup.id]);
    assert.equal(await sql('SELECT count(*) FROM t'), '100');
  });
});
