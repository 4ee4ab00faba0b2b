/**
 * Backups on the kubernetes runtime, through the CLI against the fake API
 * server and operator (which plays the barman-cloud plugin too): the objects
 * pgs writes (each valid against its CRD), `pgs backup`, `pgs backups`,
 * `pgs restore --as/--time`, `pgs branch`, a backup before an idle tenant is
 * hibernated, and a removed tenant brought back with its login. The fake
 * gives each new cluster a fresh server: it checks what pgs asks of the
 * operator, not that a real restore replays the data.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import S3rver from 's3rver';
import { S3Client } from '../../src/backup/s3.js';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fakeClusterHome, type FakeCnpg } from '../helpers/fake-cnpg.js';
import type { FakeKube } from '../helpers/fake-kube.js';
import { kubeProblems } from '../helpers/kube-schemas.js';
import type { PgsHome } from '../helpers/pgs.js';
import { freePort, psql, waitFor } from '../helpers/pgs.js';

const NS = 'tenants';
const DOMAIN = 'k8s.test';
const CNPG = 'postgresql.cnpg.io';
type Listed = { id: string; hostname: string; state: string };
type Obj = { apiVersion?: string; kind?: string; metadata: { name: string; annotations?: Record<string, string> }; spec: Record<string, unknown>; [k: string]: unknown };
type BackupList = { backups: { id: string; reason: string }[]; window: { earliest: string; latest: string } | null };

describe('backups on the kubernetes runtime: the plugin\'s objects, backup, backups, restore --as/--time, branch, a backup before hibernation, a removed tenant back', () => {
  let fake: FakeKube;
  let operator: FakeCnpg;
  let home: PgsHome;
  let stop: (() => Promise<void>) | undefined;
  let port: number;
  let s3: S3rver;
  let s3dir: string;
  let bucket: S3Client;
  let endpoint: string;
  const token = randomBytes(16).toString('hex');
  const get = (group: string, resource: string, name: string) => fake.get(group, 'v1', resource, NS, name) as Obj | undefined;
  const valid = (o: Obj | undefined) => {
    assert.ok(o);
    // What pgs wrote: the operator's status is not pgs's.
    const written: Record<string, unknown> = { ...o };
    delete written.status;
    assert.deepEqual(kubeProblems({ ...written, metadata: { name: o.metadata.name, namespace: NS } }), [], `${o.kind} ${o.metadata.name}`);
  };
  const connect = async (id: string, sql: string, password: string) => {
    const host = (await home.json<Listed[]>(['list'])).find((t) => t.id === id)?.hostname ?? '';
    return psql(`host=${host} hostaddr=127.0.0.1 port=${port} user=postgres dbname=${id} sslmode=require connect_timeout=20`, sql, password);
  };

  before(async () => {
    // The object store's S3 API (the plugin would write there; pgs deletes from it): s3rver on loopback.
    s3dir = mkdtempSync(path.join(tmpdir(), 'pgs-kube-s3-'));
    s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: s3dir, configureBuckets: [{ name: 'pgs-backups' }] });
    endpoint = `http://127.0.0.1:${(await s3.run()).port}`;
    bucket = new S3Client({ bucket: 'pgs-backups', prefix: 'tenants', endpoint, region: 'us-east-1' }, { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' });
    ({ fake, operator, home, stop } = await fakeClusterHome({ token, namespace: NS, env: { PGS_ACTIVITY_INTERVAL: '1' } }));
    port = await freePort();
  });
  after(async () => {
    await stop?.();
    await s3?.close();
    if (s3dir) rmSync(s3dir, { recursive: true, force: true });
  });

  it('a backup target needs the credentials Secret: refused without it, and nothing written', async () => {
    const args = ['setup', '--runtime', 'kubernetes', '--domain', DOMAIN, '--port', String(port), '--api-listen', 'off', '--backup-target', 's3://pgs-backups/tenants', '--s3-endpoint', endpoint];
    const refused = await home.run(args);
    assert.equal(refused.code, 2, 'a setting refused: exit 2');
    assert.match(refused.stderr.trim(), /^pgs setup: a backup target on Kubernetes needs the Secret pgs-s3 in namespace tenants with ACCESS_KEY_ID and ACCESS_SECRET_KEY: kubectl -n tenants create secret generic pgs-s3 [^\n]+$/);
    assert.equal(existsSync(path.join(home.home, 'catalog.json')), false);
    fake.put('', 'v1', 'secrets', NS, { metadata: { name: 'pgs-s3' }, data: { ACCESS_KEY_ID: Buffer.from('S3RVER').toString('base64'), ACCESS_SECRET_KEY: Buffer.from('S3RVER').toString('base64') } });
    assert.match(await home.ok(args), /the object store's credentials are in the Secret pgs-s3/);
  });

  it('a tenant gets its ObjectStore, a WAL-archiving plugin and a schedule, each valid against its CRD', async () => {
    await home.ok(['create', 'acme', '--password', 'acme-password']);
    const store = get('barmancloud.cnpg.io', 'objectstores', 'acme-store');
    valid(store);
    assert.deepEqual((store?.spec.configuration as Record<string, unknown>).destinationPath, 's3://pgs-backups/tenants/acme');
    assert.deepEqual((store?.spec.configuration as Record<string, unknown>).endpointURL, endpoint);
    const cluster = get(CNPG, 'clusters', 'acme');
    valid(cluster);
    assert.deepEqual(cluster?.spec.plugins, [{ name: 'barman-cloud.cloudnative-pg.io', isWALArchiver: true, parameters: { barmanObjectName: 'acme-store', serverName: 'acme' } }]);
    const schedule = get(CNPG, 'scheduledbackups', 'acme-backup');
    valid(schedule);
    assert.equal(schedule?.spec.suspend, false);
    assert.equal((await connect('acme', 'SELECT 1', 'acme-password')).stdout, '1');
  });

  it('pgs backup makes a Backup through the plugin and waits for it; pgs backups lists it with the window', async () => {
    const made = await home.json<{ id: string; reason: string; finishedAt: string }>(['backup', 'acme']);
    assert.match(made.id, /^\d{8}-\d{6}-[0-9a-f]{4}$/);
    assert.equal(made.reason, 'manual');
    valid(get(CNPG, 'backups', `acme-${made.id}`));
    const list = await home.json<BackupList>(['backups', 'acme']);
    assert.deepEqual(list.backups.map((b) => b.id), [made.id]);
    assert.ok(list.window && Date.parse(list.window.earliest) <= Date.parse(made.finishedAt));
    // The tenant shows its newest backup and the operator's word on its WAL archiving.
    await waitFor('the list to show the backup', async () => (await home.json<{ id: string; lastBackupAt: string | null }[]>(['list']))[0]?.lastBackupAt === made.finishedAt, 5_000);
    assert.equal((await home.json<{ archiving: string }[]>(['list']))[0]?.archiving, 'ok');
    assert.match(await home.ok(['status']), /backups to\s+s3:\/\/pgs-backups\/tenants, through the barman-cloud plugin/);
  });

  it('restore makes a new cluster from the object store (the tenant stays); out of the window it is refused and makes nothing', async () => {
    assert.match((await home.run(['restore', 'acme'])).stderr, /tenant acme exists: on the kubernetes runtime a restore makes a new cluster/);
    const refused = await home.run(['restore', 'acme', '--as', 'old', '--time', '2020-01-01T00:00:00Z']);
    assert.match(refused.stderr, /can be restored to a time from .+ to now, not 2020-01-01T00:00:00/);
    assert.equal(get(CNPG, 'clusters', 'old'), undefined);
    const at = new Date(Date.now() - 200).toISOString();
    await new Promise((r) => setTimeout(r, 300));
    const restored = await home.run(['restore', 'acme', '--as', 'acme2', '--time', at]);
    assert.equal(restored.code, 0, restored.stderr);
    const cluster = get(CNPG, 'clusters', 'acme2');
    valid(cluster);
    assert.deepEqual((cluster?.spec.bootstrap as { recovery: unknown }).recovery, {
      source: 'origin', database: 'acme', owner: 'app', secret: { name: 'acme2-app' }, recoveryTarget: { targetTime: new Date(at).toISOString() },
    });
    assert.deepEqual(cluster?.spec.externalClusters, [{ name: 'origin', plugin: { name: 'barman-cloud.cloudnative-pg.io', parameters: { barmanObjectName: 'acme-store', serverName: 'acme' } } }]);
    // The copy keeps its source's login; the source is untouched.
    // The restored data keeps its source's database name; its clients ask for acme2 and get it.
    const copy = await connect('acme2', 'SELECT current_database()', 'acme-password');
    assert.equal(copy.stdout, 'acme', copy.stderr);
    const source = await connect('acme', 'SELECT 1', 'acme-password');
    assert.equal(source.stdout, '1', source.stderr);
    await home.ok(['branch', 'acme', 'feature']);
    assert.equal((get(CNPG, 'clusters', 'feature')?.spec.bootstrap as { recovery: { recoveryTarget?: unknown } }).recovery.recoveryTarget, undefined);
    for (const id of ['acme2', 'feature']) await home.ok(['remove', id, '--yes']);
  });

  it('an idle tenant whose backup fails stays up, and the backup is not asked again at every look', async () => {
    assert.equal((await connect('acme', 'SELECT 1', 'acme-password')).stdout, '1');
    operator.failBackups = true;
    const before = Object.keys(Object.fromEntries(fake.objects)).filter((k) => k.includes('/backups/')).length;
    await home.ok(['config', 'acme', '--autosuspend', '1s']);
    await waitFor('a backup before hibernation to be asked for, and to fail', async () => (await home.json<{ lastFailure: unknown }>(['backups', 'acme'])).lastFailure !== null, 20_000);
    await new Promise((r) => setTimeout(r, 4_000)); // four more looks of the leader
    assert.equal((await home.json<Listed[]>(['list'])).find((t) => t.id === 'acme')?.state, 'running', 'not hibernated without a backup');
    const after = [...fake.objects.keys()].filter((k) => k.includes('/backups/')).length;
    assert.equal(after - before, 1, 'one backup asked for, not one per look');
    await home.ok(['config', 'acme', '--autosuspend', 'off']);
    operator.failBackups = false;
    // The failed Backup would hold the next try back for an hour: gone, as a person would clean it up.
    for (const k of [...fake.objects.keys()].filter((key) => key.includes('/backups/'))) {
      const name = k.split('/').pop() as string;
      if ((get(CNPG, 'backups', name) as { status?: { phase?: string } } | undefined)?.status?.phase === 'failed') fake.remove(CNPG, 'v1', 'backups', NS, name);
    }
  });

  it('an idle tenant whose data changed since its last backup is backed up first, then hibernated; its schedule is suspended with it', async () => {
    assert.equal((await connect('acme', 'SELECT 1', 'acme-password')).stdout, '1');
    await home.ok(['config', 'acme', '--autosuspend', '2s']);
    await waitFor('acme to be suspended', async () => (await home.json<Listed[]>(['list'])).find((t) => t.id === 'acme')?.state === 'suspended', 30_000);
    const list = await home.json<BackupList>(['backups', 'acme']);
    assert.equal(list.backups.at(-1)?.reason, 'pre-suspend');
    assert.equal(get(CNPG, 'scheduledbackups', 'acme-backup')?.spec.suspend, true);
    await home.ok(['config', 'acme', '--autosuspend', 'off']);
  });

  it('a removed tenant keeps its backups and comes back under its id with its login, archiving beside its old self', async () => {
    await home.ok(['remove', 'acme', '--yes']);
    assert.equal(get(CNPG, 'clusters', 'acme'), undefined);
    assert.ok(get('barmancloud.cnpg.io', 'objectstores', 'acme-store'), 'the object store stays');
    assert.ok((await home.json<BackupList>(['backups', 'acme'])).window, 'its restore window is still known');
    // The id is not free while its backups are kept.
    assert.match((await home.run(['create', 'acme'])).stderr, /tenant acme was removed and its backups are kept: "pgs restore acme" brings it back, "pgs backups acme --delete" deletes them/);
    // A restore refused by the API server leaves the kept login as it was.
    fake.refuse = (method, collection) => (method === 'POST' && collection.includes('/clusters/') ? { code: 422, reason: 'Invalid', message: 'admission webhook denied the request' } : undefined);
    const refused = await home.run(['restore', 'acme']);
    fake.refuse = undefined;
    assert.match(refused.stderr, /admission webhook denied the request/);
    assert.ok(get('', 'secrets', 'acme-app'), 'the login is kept');
    assert.ok(get('barmancloud.cnpg.io', 'objectstores', 'acme-store'), 'the object store is kept');
    await home.ok(['restore', 'acme']);
    const cluster = get(CNPG, 'clusters', 'acme');
    valid(cluster);
    const parameters = (cluster?.spec.plugins as { parameters: { serverName: string } }[])[0]?.parameters;
    assert.match(parameters?.serverName ?? '', /^acme-\d{8}-\d{6}-[0-9a-f]{4}$/);
    assert.deepEqual((cluster?.spec.externalClusters as { plugin: { parameters: unknown } }[])[0]?.plugin.parameters, { barmanObjectName: 'acme-store', serverName: 'acme' });
    const back = await connect('acme', 'SELECT 1', 'acme-password');
    assert.equal(back.stdout, '1', back.stderr);
  });

  it('a removed tenant\'s backups are deleted on request (its files in the object store, its objects), and its id is free again', async () => {
    await bucket.putText(bucket.key('acme/base/20261201T000000/data.tar'), 'a base backup');
    await bucket.putText(bucket.key('acme/wals/0000000100000000/000000010000000000000001'), 'a WAL segment');
    await bucket.putText(bucket.key('other/base/x'), 'another tenant\'s');
    assert.equal((await bucket.list('tenants/acme/')).length, 2);
    assert.match((await home.run(['backups', 'acme', '--delete', '--yes'])).stderr, /tenant acme exists: its backups are deleted only after "pgs remove acme"/);
    await home.ok(['remove', 'acme', '--yes']);
    await home.ok(['backups', 'acme', '--delete', '--yes']);
    assert.deepEqual((await bucket.list('tenants/acme/')).map((o) => o.key), []);
    assert.deepEqual((await bucket.list('tenants/other/')).map((o) => o.key), ['tenants/other/base/x']);
    assert.equal(get('barmancloud.cnpg.io', 'objectstores', 'acme-store'), undefined);
    assert.equal(get('', 'secrets', 'acme-app'), undefined);
    assert.equal([...fake.objects.keys()].filter((k) => /\/backups\/[^/]+\/acme-\d/.test(k)).length, 0, 'its Backup objects are gone');
    await home.ok(['create', 'acme', '--password', 'new-acme-password']);
    const plugin = (get(CNPG, 'clusters', 'acme')?.spec.plugins as { parameters: { serverName: string } }[])[0]?.parameters;
    assert.equal(plugin?.serverName, 'acme', 'a fresh archive under its own name');
  });
});
