import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import S3rver from 's3rver';
import { S3Client } from '../../src/backup/s3.js';
import { PgsHome, psql, shell, socketDir, waitFor } from '../helpers/pgs.js';
import { pgsShim, readReadme, readmeBlocks } from '../helpers/readme.js';

/**
 * Losing a host, against a real S3 API server (s3rver) on loopback: a planned
 * stop leaves nothing only on the host, a fresh host brings a tenant back from
 * the bucket with the README's "Disaster recovery" commands (same rows, host
 * name, password and certificate), a stop with S3 down says what it could not
 * copy, the pending counts of the status and the metrics are true, and only
 * one host writes a tenant's archive once another has restored it.
 *
 * The tests run in order and share the bucket and the second host: the host
 * that restores in the first is the one whose bucket goes down in the next.
 */
interface Created { id: string; hostname: string; password: string }
interface TenantStatus { id: string; archiving?: string; archivingError?: string }
interface TargetStatus { url: string; pendingFiles: number; pendingBytes: number; oldestPendingAt: string | null; lastCopiedAt: string | null; failingSince: string | null; error?: string }
interface Status { backupTarget: TargetStatus | null; tenants: TenantStatus[] }
interface LastStop { at: string; shipped: boolean; skipped?: boolean; left: string[]; error?: string }

const CREDENTIALS = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };
const BUCKET = 'pgs-dr';
/** The README's example target, with the bucket this test makes. */
const TARGET = `s3://${BUCKET}/pgs/prod`;
const DOMAIN = 'db.example.com';

async function sql(pgs: PgsHome, id: string, password: string, text: string): Promise<string> {
  const url = (await pgs.ok(['url', id, '--local'])).trim();
  const result = await psql(url, text, password);
  if (result.code !== 0) throw new Error(`psql on ${id}: ${result.stderr}`);
  return result.stdout.trim();
}

/** Finishes the tenant's current WAL segment (as pgs's superuser, over the socket) and returns its name. */
async function switchWal(pgs: PgsHome, id: string): Promise<string> {
  const switched = await psql(`host=${socketDir(await pgs.dataRoot(), id)} user=pgs_admin dbname=pgs_admin`, 'SELECT pg_walfile_name(pg_switch_wal())', '');
  assert.equal(switched.code, 0, switched.stderr);
  return switched.stdout;
}

async function status(pgs: PgsHome): Promise<Status> {
  const answer = await pgs.api<Status>('GET', '/v1/status');
  assert.equal(answer.status, 200, answer.text);
  return answer.body;
}

/** Everything of every tenant is in the bucket and copying works. */
async function shipped(pgs: PgsHome): Promise<boolean> {
  const target = (await status(pgs)).backupTarget;
  return target !== null && target.pendingFiles === 0 && target.failingSince === null;
}

async function lastStop(pgs: PgsHome): Promise<LastStop> {
  return JSON.parse(await fs.readFile(path.join(pgs.home, 'last-stop.json'), 'utf8')) as LastStop;
}

async function hostId(pgs: PgsHome): Promise<string> {
  return (await fs.readFile(path.join(await pgs.dataRoot(), 'host-id'), 'utf8')).trim();
}

/** The finished WAL segments of a tenant's generation on a host. */
async function localSegments(pgs: PgsHome, id: string, generation: string): Promise<string[]> {
  const names = await fs.readdir(path.join(await pgs.dataRoot(), 'backups', id, generation, 'wal'));
  return names.filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
}

async function generationOf(pgs: PgsHome, id: string): Promise<string> {
  const catalog = JSON.parse(await pgs.catalogText()) as { tenants: { id: string; generation: string }[] };
  const tenant = catalog.tenants.find((t) => t.id === id);
  assert.ok(tenant, `${id} is in the catalog`);
  return tenant.generation;
}

/** One gauge of the daemon's /metrics. */
function gauge(text: string, name: string): number {
  const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  assert.ok(match?.[1], `${name} in the metrics`);
  return Number(match[1]);
}

async function timed<T>(work: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = Date.now();
  const value = await work();
  return { value, ms: Date.now() - started };
}

describe('disaster recovery from the bucket', () => {
  let dir: string;
  let server: S3rver | undefined;
  let s3Port: number;
  let bucket: S3Client;
  /** The host that is lost (first test). */
  let first: PgsHome | undefined;
  /** The fresh host that restores dr1, then loses its bucket for a while. */
  let second: PgsHome | undefined;
  /** Another host that restores the second one's tenant. */
  let third: PgsHome | undefined;
  let dr1: Created;
  let port: number;

  const startServer = async (at = 0) => {
    server = new S3rver({ address: '127.0.0.1', port: at, silent: true, directory: dir, configureBuckets: [{ name: BUCKET }] });
    s3Port = (await server.run()).port;
  };
  const stopServer = async () => {
    await server?.close();
    server = undefined;
  };
  const endpoint = () => `http://127.0.0.1:${s3Port}`;
  const remoteKeys = async (under: string) => new Set((await bucket.list(bucket.key(under))).map((o) => o.key.slice(bucket.key('').length)));

  before(async () => {
    dir = await fs.mkdtemp(path.join(tmpdir(), 'pgs-dr-'));
    await startServer();
    bucket = new S3Client({ bucket: BUCKET, prefix: 'pgs/prod', endpoint: endpoint(), region: 'us-east-1' }, { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' });
  });
  after(async () => {
    for (const pgs of [first, second, third]) await pgs?.destroy();
    await stopServer().catch(() => undefined);
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('a host is lost after a plain pgs stop: the README\'s commands bring dr1 back on a fresh one, every row, its host name, its password and its certificate', async () => {
    first = await PgsHome.make(CREDENTIALS);
    port = await first.setup(['--domain', DOMAIN, '--backup-target', TARGET, '--s3-endpoint', endpoint()]);
    dr1 = await first.json<Created>(['create', 'dr1']);
    assert.match(dr1.hostname, new RegExp(`^dr1-[a-z0-9]{6}\\.${DOMAIN.replaceAll('.', '\\.')}$`));
    await sql(first, 'dr1', dr1.password, 'CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 1000)');
    // Settings a restore brings back with the data.
    await first.ok(['config', 'dr1', '--pool', 'transaction', '--pool-size', '4', '--max-client-conn', '77', '--max-connections', '30']);
    // A restore starts from a base backup (a new tenant's first comes after five minutes).
    await first.ok(['backup', 'dr1']);
    // These rows are in no backup: only in the WAL, which the stop must get to the bucket.
    await sql(first, 'dr1', dr1.password, 'INSERT INTO t SELECT generate_series(1001, 1100)');
    const firstHost = await hostId(first);
    const stopped = await first.run(['stop']);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.match(stopped.stdout, /^Stopped the daemon and every server$/m);
    const report = await lastStop(first);
    assert.deepEqual({ shipped: report.shipped, left: report.left }, { shipped: true, left: [] });

    // What the README says to keep: the certificate and its key, beside the S3 settings and credentials.
    const kept = path.join(dir, 'safe');
    await fs.mkdir(kept);
    for (const name of ['server.crt', 'server.key']) await fs.copyFile(path.join(first.home, 'certs', name), path.join(kept, name));
    // The host is lost: its data root and its home, all of it.
    await fs.rm(await first.dataRoot(), { recursive: true, force: true });
    await fs.rm(first.home, { recursive: true, force: true });
    first = undefined;

    // A fresh host runs the README's commands as written, with this run's bucket, endpoint, port and folder.
    second = await PgsHome.make({ ...CREDENTIALS, PGS_STOP_SHIP_TIMEOUT: '3s' });
    const [block] = readmeBlocks(await readReadme(), '### Disaster recovery', 'sh');
    assert.ok(block, 'the README has a Disaster recovery block');
    const substitutions: [string | RegExp, string][] = [
      ['s3://my-bucket/pgs/prod', TARGET],
      ['https://minio.example.com:9000', endpoint()],
      // Another test's daemon may hold the API's default port.
      ['--port 5432', `--port ${port} --api-listen 127.0.0.1:0`],
      ['/safe/pgs/', `${kept}/`],
      [/\bacme\b/g, 'dr1'],
    ];
    const lines = block.replace(/\\\n\s*/g, '').split('\n').map((l) => l.replace(/\s+#.*$/, '')).filter((l) => l.trim() !== '')
      // The credentials are this run's, in the environment already.
      .filter((l) => !l.startsWith('export AWS_'));
    assert.ok(lines.some((l) => l.startsWith('pgs setup --backup-target')) && lines.some((l) => l.startsWith('pgs restore acme')), lines.join('\n'));
    let script = `set -e\n${lines.join('\n')}`;
    for (const [from, to] of substitutions) script = typeof from === 'string' ? script.split(from).join(to) : script.replace(from, to);
    const shims = await pgsShim(dir);
    const recovered = await shell(script, { ...second.env, PATH: `${shims}:${process.env.PATH ?? ''}` });
    assert.equal(recovered.code, 0, `${script}\n${recovered.stdout}\n${recovered.stderr}`);
    // The restore names the host name it had, and the lost host it takes the archive over from.
    assert.match(recovered.stdout, new RegExp(`^Restored to the latest point: dr1: ${dr1.hostname.replaceAll('.', '\\.')}, running$`, 'm'), recovered.stdout);
    assert.match(recovered.stdout, new RegExp(`^this host now writes dr1's archive in ${TARGET}: host ${firstHost}, which wrote it before, stops copying it$`, 'm'), recovered.stdout);

    const url = (await second.ok(['url', 'dr1'])).trim();
    assert.ok(url.includes(`@${dr1.hostname}:${port}/`), url);
    // Through the router, with the old password, verifying the kept certificate: as a careful client would.
    const conn = `${(await second.ok(['url', 'dr1', '--format', 'psql'])).trim()} sslmode=verify-full sslrootcert=${path.join(kept, 'server.crt')}`;
    const rows = await psql(conn, 'SELECT count(*), max(n) FROM t', dr1.password);
    assert.equal(rows.stdout, '1100|1100', `${conn}: ${rows.stderr}`);
    const settings = await second.json<{ pool: string; poolSize: number; maxConnections: number }>(['config', 'dr1']);
    assert.deepEqual({ pool: settings.pool, poolSize: settings.poolSize, maxConnections: settings.maxConnections }, { pool: 'transaction', poolSize: 4, maxConnections: 30 });
    assert.equal((await second.json<{ maxClientConnections: number }>(['config', 'dr1'])).maxClientConnections, 77);
    // The bucket's owner object names the new host.
    const owner = JSON.parse(await bucket.getText(bucket.key('dr1/pgs-owner.json'))) as { host: string };
    assert.equal(owner.host, await hostId(second));
  });

  it('S3 down: the pending files, bytes and age are in the status, pgs status and the metrics, and go to 0 when it is back', async () => {
    const pgs = second as PgsHome;
    // The restore's first backup (taken in the background) is in the bucket, and nothing else waits.
    const generation = await generationOf(pgs, 'dr1');
    await waitFor('the restored tenant\'s first backup in the bucket', async () => [...(await remoteKeys(`dr1/${generation}/base/`))].some((k) => k.endsWith('/pgs-backup.json')) && (await shipped(pgs)), 60_000);
    await stopServer();
    const downAt = Date.now();
    await sql(pgs, 'dr1', dr1.password, 'INSERT INTO t SELECT generate_series(1101, 1200)');
    await switchWal(pgs, 'dr1');
    let seen: TargetStatus | undefined;
    await waitFor('the status to count what waits', async () => {
      seen = (await status(pgs)).backupTarget ?? undefined;
      return seen !== undefined && seen.pendingFiles > 0 && seen.failingSince !== null;
    }, 30_000);
    const target = seen as TargetStatus;
    assert.ok(target.pendingBytes > 0, JSON.stringify(target));
    assert.ok(target.oldestPendingAt !== null && Date.parse(target.oldestPendingAt) >= downAt - 1_000 && Date.parse(target.oldestPendingAt) <= Date.now(), JSON.stringify(target));
    assert.equal(target.url, TARGET);

    const text = await pgs.ok(['status']);
    const line = /^backups to +(.*)$/m.exec(text)?.[1] ?? '';
    assert.match(line, new RegExp(`^${TARGET}: failing since \\S+ \\(.+\\), (\\d+) files \\([\\d.]+ (B|KiB|MiB)\\) to copy, the oldest \\d+ s old`), text);
    assert.ok(Number(/(\d+) files/.exec(line)?.[1]) > 0, line);

    // The metrics say the same (both read at once; a new segment between them would differ, so until they agree).
    await waitFor('the metrics to agree with the status', async () => {
      const [now, metrics] = await Promise.all([status(pgs), pgs.api('GET', '/metrics')]);
      const t = now.backupTarget as TargetStatus;
      const age = t.oldestPendingAt === null ? 0 : (Date.now() - Date.parse(t.oldestPendingAt)) / 1000;
      return gauge(metrics.text, 'pgs_backup_pending_files') === t.pendingFiles && t.pendingFiles > 0
        && gauge(metrics.text, 'pgs_backup_pending_bytes') === t.pendingBytes
        && Math.abs(gauge(metrics.text, 'pgs_backup_oldest_pending_seconds') - age) < 5;
    }, 10_000);

    // Back on the same port: everything is copied, and the status says when.
    await startServer(s3Port);
    const backAt = new Date().toISOString();
    await waitFor('the copies to catch up', () => shipped(pgs), 60_000);
    const after = (await status(pgs)).backupTarget as TargetStatus;
    assert.deepEqual({ files: after.pendingFiles, bytes: after.pendingBytes, oldest: after.oldestPendingAt }, { files: 0, bytes: 0, oldest: null });
    assert.ok(after.lastCopiedAt !== null && after.lastCopiedAt >= backAt, JSON.stringify(after));
    const metrics = (await pgs.api('GET', '/metrics')).text;
    assert.equal(gauge(metrics, 'pgs_backup_pending_files'), 0);
    assert.equal(gauge(metrics, 'pgs_backup_pending_bytes'), 0);
    assert.equal(gauge(metrics, 'pgs_backup_oldest_pending_seconds'), 0);
    // As the README shows it.
    assert.match(await pgs.ok(['status']), new RegExp(`^backups to +${TARGET}: nothing to copy; last copied \\S+$`, 'm'));
  });

  it('S3 down: pgs stop fails after PGS_STOP_SHIP_TIMEOUT naming the files it left, --no-wait-ship stops at once, and the next start copies them', async () => {
    const pgs = second as PgsHome;
    // This daemon was started with PGS_STOP_SHIP_TIMEOUT=3s (the daemon's environment decides, not the stop's).
    await stopServer();
    await sql(pgs, 'dr1', dr1.password, 'INSERT INTO t SELECT generate_series(1201, 1300)');
    const segment = await switchWal(pgs, 'dr1');
    const { value: failed, ms } = await timed(() => pgs.run(['stop'], { env: { NODE_DEBUG: 'pgs' } }));
    assert.equal(failed.code, 1, failed.stderr);
    assert.match(failed.stderr, /error code backup_failed/);
    const message = /^pgs stop: the daemon stopped, but (\d+) files? (?:is|are) only on this host, not in the backup bucket \((.+)\): (.*); the next "pgs start" copies them$/m.exec(failed.stderr);
    assert.ok(message, failed.stderr);
    assert.ok(ms < 30_000, `the stop took ${ms} ms`);
    const report = await lastStop(pgs);
    assert.equal(report.shipped, false);
    assert.equal(report.left.length, Number(message[1]));
    assert.ok(report.error, 'the report says why');
    const named = (message[3] ?? '').replace(/, \.\.\.$/, '').split(', ');
    assert.deepEqual(named, report.left.slice(0, 5));
    const dataRoot = await pgs.dataRoot();
    for (const file of report.left) {
      assert.match(file, /^dr1\/\d{8}-\d{6}-[0-9a-f]{4}\//);
      await fs.access(path.join(dataRoot, 'backups', file)); // kept here
    }
    assert.ok(report.left.some((f) => f.endsWith(`/wal/${segment}`)), `${segment} is left: ${report.left.join(', ')}`);

    // A daemon with the default wait (2 min): --no-wait-ship does not wait for the bucket at all.
    await pgs.ok(['start'], { env: { PGS_STOP_SHIP_TIMEOUT: '' } });
    const { value: quick, ms: quickMs } = await timed(() => pgs.run(['stop', '--no-wait-ship']));
    assert.equal(quick.code, 0, quick.stderr);
    assert.match(quick.stdout, /^Stopped the daemon and every server$/m);
    assert.ok(quickMs < 20_000, `the stop took ${quickMs} ms`);
    assert.equal((await lastStop(pgs)).skipped, true);

    await startServer(s3Port);
    await pgs.ok(['start']);
    await waitFor('the next start to copy what the stop left', () => shipped(pgs), 60_000);
    const keys = await remoteKeys('dr1/');
    for (const file of report.left) assert.ok(keys.has(file), `${file} reached the bucket`);
    assert.equal(await sql(pgs, 'dr1', dr1.password, 'SELECT count(*) FROM t'), '1300');
  });

  it('one writer per archive: a host that restores a tenant another host runs takes its archive over, and the other stops copying it', async () => {
    const one = second as PgsHome;
    const dup = await one.json<Created>(['create', 'dup']);
    await sql(one, 'dup', dup.password, 'CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 50)');
    await one.ok(['backup', 'dup']);
    await waitFor('dup in the bucket', () => shipped(one), 60_000);
    const oldGeneration = await generationOf(one, 'dup');
    const oneHost = await hostId(one);
    assert.equal((JSON.parse(await bucket.getText(bucket.key('dup/pgs-owner.json'))) as { host: string }).host, oneHost);

    // Another host, same target and prefix, restores dup under its own id while the first still runs it.
    third = await PgsHome.make(CREDENTIALS);
    await third.setup(['--domain', DOMAIN, '--backup-target', TARGET, '--s3-endpoint', endpoint()]);
    const restored = await third.run(['restore', 'dup']);
    assert.equal(restored.code, 0, restored.stderr);
    const two = third;
    const twoHost = await hostId(two);
    assert.notEqual(twoHost, oneHost);
    assert.match(restored.stdout, new RegExp(`^Restored to the latest point: dup: ${dup.hostname.replaceAll('.', '\\.')}, running$`, 'm'));
    assert.match(restored.stdout, new RegExp(`^this host now writes dup's archive in ${TARGET}: host ${oneHost}, which wrote it before, stops copying it$`, 'm'), restored.stdout);
    assert.equal((JSON.parse(await bucket.getText(bucket.key('dup/pgs-owner.json'))) as { host: string }).host, twoHost);
    assert.equal(await sql(two, 'dup', dup.password, 'SELECT count(*) FROM t'), '50');
    // It writes into a generation of its own: its first backup reaches the bucket.
    const newGeneration = await generationOf(two, 'dup');
    assert.notEqual(newGeneration, oldGeneration);
    await waitFor('the new host\'s first backup of dup in the bucket', async () => [...(await remoteKeys(`dup/${newGeneration}/base/`))].some((k) => k.endsWith('/pgs-backup.json')), 60_000);

    // The first host reads the owner object again only a minute after it last did (until then it
    // still copies what it writes into its old generation: not asserted here), and at each start:
    // restarted (without copying on the way out), it finds the archive another host's.
    await one.ok(['stop', '--no-wait-ship']);
    await one.ok(['start'], { env: { PGS_STOP_SHIP_TIMEOUT: '' } }); // the default wait: the stop below must not spend it
    await sql(one, 'dup', dup.password, 'INSERT INTO t SELECT generate_series(51, 100)');
    const newest = await switchWal(one, 'dup');
    let error = '';
    await waitFor('the first host to say another writes dup\'s archive', async () => {
      const t = (await status(one)).tenants.find((x) => x.id === 'dup');
      error = t?.archivingError ?? '';
      return t?.archiving === 'failing' && error.includes(twoHost);
    }, 30_000);
    assert.match(error, new RegExp(`^host ${twoHost} writes this tenant's archive in ${TARGET} since \\S+ \\(it restored it there\\): this host copies nothing of it; "pgs restore dup --as <new-id>" gives a copy an archive of its own$`));
    const listed = await one.json<TenantStatus[]>(['list']);
    assert.equal(listed.find((t) => t.id === 'dup')?.archiving, 'failing');
    // dr1 is still this host's: copied as before.
    assert.equal((await status(one)).tenants.find((t) => t.id === 'dr1')?.archiving, 'ok');

    // What the first host wrote since is archived here, and not in the bucket.
    await waitFor(`${newest} archived on the first host`, async () => (await localSegments(one, 'dup', oldGeneration)).includes(newest), 30_000);
    assert.ok(!(await remoteKeys(`dup/${oldGeneration}/wal/`)).has(`dup/${oldGeneration}/wal/${newest}`), `${newest} of the first host is not in the bucket`);

    // Its stop does not wait for them (the default wait is 2 min): it names them as left on this host,
    // and says that no start of this host copies them.
    const { value: stopped, ms } = await timed(() => one.run(['stop']));
    assert.ok(ms < 30_000, `the stop took ${ms} ms`);
    assert.equal(stopped.code, 1, stopped.stderr);
    assert.match(stopped.stderr, /^pgs stop: the daemon stopped, but \d+ files? (?:is|are) only on this host, not in the backup bucket: dup\//m);
    assert.match(stopped.stderr, new RegExp(`; dup's archive is now written by host ${twoHost}: this host never copies its files$`, 'm'));
    assert.doesNotMatch(stopped.stderr, /next "pgs start" copies/);
    const report = await lastStop(one);
    assert.ok(report.left.length > 0);
    for (const file of report.left) assert.match(file, new RegExp(`^dup/${oldGeneration}/`), report.left.join('\n'));
    assert.ok(report.left.includes(`dup/${oldGeneration}/wal/${newest}`), report.left.join('\n'));
    assert.equal(report.error, undefined, 'nothing failed: the files are another host\'s to write');
    assert.ok(!(await remoteKeys(`dup/${oldGeneration}/wal/`)).has(`dup/${oldGeneration}/wal/${newest}`));
    assert.equal((JSON.parse(await bucket.getText(bucket.key('dup/pgs-owner.json'))) as { host: string }).host, twoHost);

    // The first host gives dup up and deletes its backups: what the other host writes stays in the bucket.
    await one.ok(['start']);
    await one.ok(['remove', 'dup', '--yes']);
    await one.ok(['backups', 'dup', '--delete', '--yes']);
    const keptKeys = await remoteKeys('dup/');
    assert.ok(keptKeys.has('dup/pgs-owner.json'), [...keptKeys].join('\n'));
    assert.ok([...keptKeys].some((k) => k.startsWith(`dup/${newGeneration}/base/`) && k.endsWith('/pgs-backup.json')), [...keptKeys].join('\n'));
    assert.equal(await sql(two, 'dup', dup.password, 'SELECT count(*) FROM t'), '50');
  });
});
