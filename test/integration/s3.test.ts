import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import S3rver from 's3rver';
import { S3Client } from '../../src/backup/s3.js';
import { PgsHome, psql, waitFor } from '../helpers/pgs.js';

/**
 * The S3 target against a real S3 API server (s3rver) this test starts on
 * loopback: WAL and backups reach the bucket, a host whose data root is gone
 * restores a tenant from the bucket alone, and an outage loses nothing.
 */
interface Created { id: string; password: string }
interface Status { backupTarget: { url: string; pendingFiles: number; failingSince: string | null; error?: string } | null; tenants: { id: string; archiving?: string; archivingError?: string }[] }

// Parts of S3's smallest size: a tenant's base backup goes up as a multipart upload and comes back whole.
const CREDENTIALS = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', PGS_S3_PART_SIZE: '5MiB' };

async function sql(pgs: PgsHome, id: string, password: string, text: string): Promise<string> {
  const url = (await pgs.ok(['url', id, '--local'])).trim();
  const result = await psql(url, text, password);
  if (result.code !== 0) throw new Error(`psql on ${id}: ${result.stderr}`);
  return result.stdout.trim();
}

describe('backups in S3', () => {
  let dir: string;
  let server: S3rver;
  let port: number;
  let bucket: S3Client;
  let first: PgsHome;
  let shop: Created;

  const startServer = async (at = 0) => {
    server = new S3rver({ address: '127.0.0.1', port: at, silent: true, directory: dir, configureBuckets: [{ name: 'pgs-backups' }] });
    port = (await server.run()).port;
  };
  const shipped = async (pgs: PgsHome) => {
    const status = await pgs.api<Status>('GET', '/v1/status');
    return status.body.backupTarget !== null && status.body.backupTarget.pendingFiles === 0 && status.body.backupTarget.failingSince === null;
  };

  before(async () => {
    dir = await fs.mkdtemp(path.join(tmpdir(), 'pgs-s3-'));
    await startServer();
    bucket = new S3Client({ bucket: 'pgs-backups', prefix: 'hosts/one', endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1' }, { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' });
    first = await PgsHome.make(CREDENTIALS);
    await first.setup(['--backup-target', 's3://pgs-backups/hosts/one', '--s3-endpoint', `http://127.0.0.1:${port}`]);
    shop = await first.json<Created>(['create', 'shop']);
  });
  after(async () => {
    await first.destroy();
    await server.close().catch(() => undefined);
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('setup refuses a target it cannot write to, and changes nothing', async () => {
    const data = path.join(dir, 'other-data');
    const other = await PgsHome.make({ ...CREDENTIALS, PGS_DATA: data });
    try {
      const result = await other.run(['setup', '--backup-target', 's3://no-such-bucket/x', '--s3-endpoint', `http://127.0.0.1:${port}`]);
      assert.equal(result.code, 2);
      assert.match(result.stderr, /^pgs setup: the backup target s3:\/\/no-such-bucket\/x is not writable: .*NoSuchBucket/);
      await assert.rejects(fs.access(path.join(other.home, 'catalog.json')));
      await assert.rejects(fs.access(data), 'no data folder was made');
      const bad = await other.run(['setup', '--backup-target', 'ftp://x']);
      assert.match(bad.stderr, /invalid backup target "ftp:\/\/x"/);
    } finally {
      await other.destroy();
    }
  });

  it('WAL and backups reach the bucket; a host without its data root restores the tenant from the bucket alone', async () => {
    await sql(first, 'shop', shop.password, 'CREATE TABLE orders (n int); INSERT INTO orders SELECT generate_series(1, 300)');
    await first.ok(['backup', 'shop']);
    // Written after the backup: reaches the bucket as archived WAL (RPO 1 s here).
    await first.ok(['config', 'shop', '--rpo', '1s']);
    const dataRoot = await first.dataRoot();
    const generation = (await fs.readdir(path.join(dataRoot, 'backups', 'shop'))).find((n) => /^\d{8}-/.test(n)) as string;
    const walFolder = path.join(dataRoot, 'backups', 'shop', generation, 'wal');
    const segments = async () => (await fs.readdir(walFolder)).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
    const before = await segments();
    await sql(first, 'shop', shop.password, 'INSERT INTO orders SELECT generate_series(301, 500)');
    // The segment with these rows is finished within the RPO (1 s), archived, then copied.
    await waitFor('the segment with the new rows archived', async () => ((await segments()).at(-1) ?? '') > (before.at(-1) ?? ''), 30_000);
    const local = await segments();
    await waitFor('every archived segment in the bucket', async () => {
      const remote = new Set((await bucket.list(bucket.key(`shop/${generation}/wal/`))).map((o) => path.basename(o.key)));
      return local.every((n) => remote.has(n));
    }, 30_000);
    await waitFor('everything copied to S3', () => shipped(first), 30_000);
    const objects = await bucket.list(bucket.key('shop/'));
    const keys = objects.map((o) => o.key);
    assert.ok(keys.some((k) => k.endsWith('/pgs-backup.json')), keys.join('\n'));
    // Larger than PGS_S3_PART_SIZE: it went up in parts (and comes back whole in the restores below).
    assert.ok(objects.some((o) => o.key.endsWith('/base.tar') && o.size > 5 << 20), JSON.stringify(objects.filter((o) => o.key.endsWith('/base.tar'))));
    assert.ok(keys.some((k) => /\/wal\/[0-9A-F]{24}$/.test(k)));
    const noted = new Date().toISOString();

    // The host is lost: daemon, servers, config and data root all gone.
    await first.ok(['stop']);
    await fs.rm(dataRoot, { recursive: true, force: true });
    const second = await PgsHome.make(CREDENTIALS);
    try {
      await second.setup(['--backup-target', 's3://pgs-backups/hosts/one', '--s3-endpoint', `http://127.0.0.1:${port}`]);
      const listed = await second.json<{ backups: unknown[]; window: { latest: string } | null }>(['backups', 'shop']);
      assert.equal(listed.backups.length, 1);
      assert.ok(listed.window && listed.window.latest >= noted.slice(0, 16), JSON.stringify(listed.window));
      await second.ok(['restore', 'shop']);
      assert.equal(await sql(second, 'shop', shop.password, 'SELECT count(*) FROM orders'), '500');
    } finally {
      await second.destroy();
    }
  });

  it('a bucket is not trusted: objects pgs does not write are left there, a record that names another place is not listed, a tar with a link is refused before it is unpacked', async () => {
    // A copy of shop's archive under another prefix, then made hostile the ways someone with write access to the bucket could.
    const evil = new S3Client({ ...bucket.target, prefix: 'hosts/evil' }, { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' });
    const work = await fs.mkdtemp(path.join(dir, 'evil-'));
    const backupKeys: string[] = [];
    for (const o of await bucket.list(bucket.key('shop/'))) {
      const relative = o.key.slice(bucket.key('shop/').length);
      const local = path.join(work, 'copy');
      await bucket.getFile(o.key, local);
      await evil.putFile(evil.key(`shop/${relative}`), local);
      await fs.rm(local);
      if (relative.endsWith('/pgs-backup.json')) backupKeys.push(relative);
    }
    const [generation] = (backupKeys[0] ?? '').split('/');
    const ids = backupKeys.map((k) => k.split('/')[2] ?? '').sort();
    // Every base.tar: a symbolic link to a host file, with its record's size made to match.
    await fs.mkdir(path.join(work, 'tree'));
    await fs.writeFile(path.join(work, 'tree', 'PG_VERSION'), '18\n');
    await fs.symlink('/etc/passwd', path.join(work, 'tree', 'pg_hba.conf'));
    const tar = path.join(work, 'base.tar');
    const made = spawnSync('tar', ['--format=ustar', '-cf', tar, '-C', path.join(work, 'tree'), '.']);
    assert.equal(made.status, 0, String(made.stderr));
    let record: { id: string; bytes: number } = { id: '', bytes: 0 };
    for (const key of backupKeys) {
      await evil.putFile(evil.key(`shop/${path.dirname(key)}/base.tar`), tar);
      record = JSON.parse(await evil.getText(evil.key(`shop/${key}`))) as { id: string; bytes: number };
      record.bytes = (await fs.stat(tar)).size;
      await evil.putText(evil.key(`shop/${key}`), JSON.stringify(record));
    }
    // A second backup whose record names a path outside its folder, a file pgs never writes, an oversized "segment".
    const other = `${generation}/base/20200101-000000-abcd/pgs-backup.json`;
    await evil.putText(evil.key(`shop/${other}`), JSON.stringify({ ...record, id: '../../../../tmp/pgs-evil' }));
    await evil.putText(evil.key(`shop/${generation}/wal/run-me.sh`), '#!/bin/sh\nid\n');
    await evil.putText(evil.key(`shop/${generation}/notes.txt`), 'hello');

    const fourth = await PgsHome.make(CREDENTIALS);
    try {
      await fourth.setup(['--backup-target', 's3://pgs-backups/hosts/evil', '--s3-endpoint', `http://127.0.0.1:${port}`]);
      const listed = await fourth.json<{ backups: { id: string }[] }>(['backups', 'shop']);
      assert.deepEqual(listed.backups.map((b) => b.id).sort(), ids, 'only the records that name their own place are listed');
      const refused = await fourth.run(['restore', 'shop']);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /backup \S+ is refused: member "\.\/pg_hba\.conf" is a symbolic link; a backup holds only files and folders/);
      assert.equal((await fourth.json<{ id: string }[]>(['list'])).length, 0, 'nothing is made');
      const dataRoot = await fourth.dataRoot();
      const kept = await fs.readdir(path.join(dataRoot, 'backups', 'shop', generation ?? '', 'wal'));
      assert.ok(!kept.includes('run-me.sh'), kept.join(' '));
      assert.equal(await fs.stat(path.join(dataRoot, 'backups', 'shop', generation ?? '', 'notes.txt')).catch(() => undefined), undefined);
      assert.equal(await fs.stat('/tmp/pgs-evil').catch(() => undefined), undefined);
    } finally {
      await fourth.destroy();
    }
  });

  it('S3 down: archiving goes on locally, the status says so, and everything is copied when it returns', async () => {
    const third = await PgsHome.make(CREDENTIALS);
    try {
      await third.setup(['--backup-target', 's3://pgs-backups/hosts/three', '--s3-endpoint', `http://127.0.0.1:${port}`]);
      const app = await third.json<Created>(['create', 'app', '--autosuspend', 'off']);
      await third.ok(['config', 'app', '--rpo', '1s']);
      await third.ok(['backup', 'app']);
      await waitFor('the first copy', () => shipped(third), 30_000);
      await server.close();
      for (let i = 0; i < 3; i++) {
        await sql(third, 'app', app.password, `CREATE TABLE t${i} AS SELECT generate_series(1, 1000) n`);
        await sleep(1_200);
      }
      await waitFor('the status to show the failure', async () => {
        const status = (await third.api<Status>('GET', '/v1/status')).body;
        return status.backupTarget?.failingSince !== null && status.tenants.some((t) => t.archiving === 'failing');
      }, 30_000);
      const text = await third.ok(['status']);
      assert.match(text, /backups to +s3:\/\/pgs-backups\/hosts\/three: failing since/);
      // The tenant runs on.
      assert.equal(await sql(third, 'app', app.password, 'SELECT count(*) FROM t2'), '1000');
      const dataRoot = await third.dataRoot();
      const generation = (await fs.readdir(path.join(dataRoot, 'backups', 'app'))).find((n) => /^\d{8}-/.test(n)) as string;
      const remote = new S3Client({ ...bucket.target, prefix: 'hosts/three' }, { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' });
      const localWal = async () => (await fs.readdir(path.join(dataRoot, 'backups', 'app', generation, 'wal'))).filter((n) => /^[0-9A-F]{24}$/.test(n));
      const remoteWal = async () => new Set((await remote.list(remote.key(`app/${generation}/wal/`))).map((o) => path.basename(o.key)));
      const written = await localWal(); // includes what was archived while S3 was down
      await startServer(port);
      // The server goes on finishing segments (archive_timeout): caught up is every segment here, at the look, in the bucket.
      await waitFor('the copies to catch up', async () => {
        const [here, there] = await Promise.all([localWal(), remoteWal()]);
        return here.every((name) => there.has(name)) && (await shipped(third));
      }, 90_000);
      const there = await remoteWal();
      for (const name of written) assert.ok(there.has(name), `${name} reached the bucket`);
      const after = (await third.api<Status>('GET', '/v1/status')).body;
      assert.equal(after.tenants.find((t) => t.id === 'app')?.archiving !== 'failing', true);
    } finally {
      await third.destroy();
    }
  });
});
