import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import S3rver from 's3rver';
import { PgsHome, psql, socketDir, waitFor } from '../helpers/pgs.js';

/**
 * Every kind of backup restores every way. Kinds: online (the server runs),
 * offline of a suspended tenant, offline of a stopped one. Ways: to the
 * backup's end (--backup), to a time after it (--time), to the latest point,
 * as an export and import, and from the bucket on a host that has only the
 * bucket. Each restore is checked by its exact row count.
 */
interface Created { id: string; password: string }
interface Backup { id: string; kind: string; finishedAt: string }
interface Status { backupTarget: { pendingFiles: number; failingSince: string | null } | null }

const CREDENTIALS = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };

describe('the restore matrix: each kind of backup, each way', () => {
  let s3dir: string;
  let server: S3rver;
  let target: string[];
  let pgs: PgsHome;
  let m: Created;
  const backups: Record<'online' | 'suspended' | 'stopped', Backup> = {} as never;
  const times: Record<'online' | 'suspended' | 'stopped', string> = {} as never;

  const sql = async (home: PgsHome, id: string, text: string): Promise<string> => {
    await home.ok(['start', id]); // wakes a suspended one (the local socket does not)
    const result = await psql((await home.ok(['url', id, '--local'])).trim(), text, m.password);
    if (result.code !== 0) throw new Error(`psql on ${id}: ${result.stderr}`);
    return result.stdout.trim();
  };
  const rows = (home: PgsHome, id: string) => sql(home, id, 'SELECT count(*) FROM t');
  const insert = (from: number, to: number) => sql(pgs, 'm', `INSERT INTO t SELECT generate_series(${from}, ${to})`);
  const noteTime = async () => {
    await sleep(1_100);
    const at = new Date().toISOString();
    await sleep(1_100);
    return at;
  };
  const state = async (id: string) => (await pgs.json<{ id: string; state: string }[]>(['list'])).find((t) => t.id === id)?.state;

  before(async () => {
    s3dir = await fs.mkdtemp(path.join(tmpdir(), 'pgs-matrix-s3-'));
    server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: s3dir, configureBuckets: [{ name: 'matrix' }] });
    const { port } = await server.run();
    target = ['--backup-target', 's3://matrix/one', '--s3-endpoint', `http://127.0.0.1:${port}`];
    pgs = await PgsHome.make(CREDENTIALS);
    await pgs.setup(target);
    m = await pgs.json<Created>(['create', 'm']);
    await pgs.ok(['config', 'm', '--rpo', '1s']);
    await sql(pgs, 'm', 'CREATE TABLE t (n int)');

    // online: 100 rows, backed up while it runs
    await insert(1, 100);
    backups.online = await pgs.json<Backup>(['backup', 'm']);
    assert.equal(backups.online.kind, 'online');
    times.online = await noteTime();
    // suspended: 200 rows, backed up from its files while suspended
    await insert(101, 200);
    assert.equal((await pgs.api('POST', '/v1/tenants/m/suspend')).status, 200);
    assert.equal(await state('m'), 'suspended');
    backups.suspended = await pgs.json<Backup>(['backup', 'm']);
    assert.equal(backups.suspended.kind, 'offline');
    assert.equal(await state('m'), 'suspended', 'backed up without a wake');
    times.suspended = await noteTime();
    // stopped: 300 rows, backed up from its files while stopped
    await insert(201, 300);
    await pgs.ok(['stop', 'm']);
    backups.stopped = await pgs.json<Backup>(['backup', 'm']);
    assert.equal(backups.stopped.kind, 'offline');
    times.stopped = await noteTime();
    // and more after all of them: 400 rows now
    await insert(301, 400);
    // The segment with the last rows finished (as pgs's superuser, over the socket), archived, then copied.
    const socket = socketDir(await pgs.dataRoot(), 'm');
    const switched = await psql(`host=${socket} user=pgs_admin dbname=pgs_admin`, 'SELECT pg_walfile_name(pg_switch_wal())', '');
    assert.equal(switched.code, 0, switched.stderr);
    await waitFor('the last segment archived', async () => {
      const archived = await psql(`host=${socket} user=pgs_admin dbname=pgs_admin`, 'SELECT last_archived_wal FROM pg_stat_archiver', '');
      return archived.stdout >= switched.stdout;
    }, 30_000);
    await waitFor('everything copied to the bucket', async () => {
      const status = (await pgs.api<Status>('GET', '/v1/status')).body.backupTarget;
      return status !== null && status.pendingFiles === 0 && status.failingSince === null;
    }, 60_000);
  });
  after(async () => {
    await pgs.destroy();
    await server.close().catch(() => undefined);
    await fs.rm(s3dir, { recursive: true, force: true });
  });

  const kinds = [['online', 100], ['suspended', 200], ['stopped', 300]] as const;

  for (const [kind, count] of kinds) {
    it(`${kind}: to the backup's end (--backup), and to a time after it (--time)`, async () => {
      await pgs.ok(['restore', 'm', '--backup', backups[kind].id, '--as', `${kind}-end`]);
      assert.equal(await rows(pgs, `${kind}-end`), String(count));
      await pgs.ok(['restore', 'm', '--time', times[kind], '--as', `${kind}-time`]);
      assert.equal(await rows(pgs, `${kind}-time`), String(count));
      for (const id of [`${kind}-end`, `${kind}-time`]) await pgs.ok(['remove', id, '--yes']);
    });

    it(`${kind}: as an export and an import`, async () => {
      const id = `${kind}-x`;
      await pgs.ok(['restore', 'm', '--backup', backups[kind].id, '--as', id]);
      if (kind === 'suspended') assert.equal((await pgs.api('POST', `/v1/tenants/${id}/suspend`)).status, 200);
      if (kind === 'stopped') await pgs.ok(['stop', id]);
      const file = path.join(pgs.home, `${id}.pgs`);
      await pgs.ok(['export', id, '-o', file]);
      await pgs.ok(['import', file, '--as', `${kind}-imported`]);
      assert.equal(await rows(pgs, `${kind}-imported`), String(count));
      for (const made of [id, `${kind}-imported`]) await pgs.ok(['remove', made, '--yes']);
      await fs.rm(file);
    });
  }

  it('the latest point', async () => {
    await pgs.ok(['restore', 'm', '--as', 'latest']);
    assert.equal(await rows(pgs, 'latest'), '400');
    await pgs.ok(['remove', 'latest', '--yes']);
  });

  it('from the bucket alone, on another host: each kind to its end, and to a time', async () => {
    const other = await PgsHome.make(CREDENTIALS);
    try {
      await other.setup(target);
      for (const [kind, count] of kinds) {
        await other.ok(['restore', 'm', '--backup', backups[kind].id, '--as', `s3-${kind}`]);
        assert.equal(await rows(other, `s3-${kind}`), String(count));
        await other.ok(['restore', 'm', '--time', times[kind], '--as', `s3-${kind}-time`]);
        assert.equal(await rows(other, `s3-${kind}-time`), String(count));
      }
    } finally {
      await other.destroy();
    }
  });
});
