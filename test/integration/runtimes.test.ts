/**
 * One lifecycle, run on each runtime: native (child processes) and docker (a
 * container per tenant, through a real Docker engine with a locally built
 * image). The docker half needs an engine: DOCKER_HOST or /var/run/docker.sock;
 * in CI (.ci/run starts dockerd) it is required, elsewhere it is skipped with a reason.
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { homeTag } from '../../src/core/paths.js';
import { containerName } from '../../src/runtime/docker.js';
import { PgsHome, assertMemoryHogFailsAlone, psql, runCommand, waitFor } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string }
interface Listed { id: string; state: string; pid: number | null }

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const IMAGE = 'pgs-test/postgres:18';
const dockerSocket = process.env.DOCKER_HOST?.replace(/^unix:\/\//, '') ?? '/var/run/docker.sock';
const dockerHere = existsSync(dockerSocket);
if (!dockerHere && process.env.CI) throw new Error(`no Docker engine at ${dockerSocket}: .ci/run starts one`);
const isRoot = process.getuid?.() === 0;

/** Containers a test's pgs home left (its tenants were not all removed): gone with the home. */
async function removeContainers(pgs: PgsHome | undefined): Promise<void> {
  if (!pgs) return;
  const ids = await runCommand('docker', ['ps', '-aq', '--filter', `label=pgs.home=${pgs.home}`], process.env);
  const list = ids.stdout.split('\n').filter(Boolean);
  if (list.length > 0) await runCommand('docker', ['rm', '-f', ...list], process.env);
}

for (const runtime of ['native', 'docker'] as const) {
  const skip = runtime === 'docker' && (!dockerHere || !isRoot) ? `no Docker engine here (${dockerSocket}), or not root` : false;
  describe(`the ${runtime} runtime: create, connect through the router, stop/start, passwd, suspend/wake, a killed server, remove`, { skip }, () => {
    let pgs: PgsHome;
    let port: number;
    let acme: Created;
    const conn = (password = acme.password) => ({ url: `host=${acme.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=acme sslmode=require connect_timeout=20`, password });
    const q = async (sql: string, password?: string) => {
      const c = conn(password);
      return psql(c.url, sql, c.password);
    };
    const state = async () => (await pgs.json<Listed[]>(['list'])).find((t) => t.id === 'acme');

    before(async () => {
      if (runtime === 'docker') {
        const built = await runCommand('bash', [path.join(ROOT, 'test/docker/build-image.sh'), IMAGE], process.env);
        assert.equal(built.code, 0, built.stderr);
      }
      pgs = await PgsHome.make({ PGS_RUNNING_SPARES: '0' });
      port = await pgs.setup(runtime === 'docker' ? ['--runtime', 'docker', '--image', IMAGE] : []);
      await pgs.ok(['start']);
      acme = await pgs.json<Created>(['create', 'acme']);
    });
    after(async () => {
      await pgs?.destroy();
      if (runtime === 'docker') await removeContainers(pgs);
    });

    it('serves rows through the router, across stop and start', async () => {
      const made = await q('CREATE TABLE notes(id int primary key); INSERT INTO notes SELECT generate_series(1, 300)');
      assert.equal(made.code, 0, made.stderr);
      await pgs.ok(['stop', 'acme']);
      assert.equal((await state())?.state, 'stopped');
      await pgs.ok(['start', 'acme']);
      const count = await q('SELECT count(*) FROM notes');
      assert.equal(count.stdout, '300', count.stderr);
    });

    it('passwd: the new password works, the old one does not', async () => {
      const changed = await pgs.json<{ password: string }>(['passwd', 'acme']);
      assert.equal((await q('SELECT 1', changed.password)).stdout, '1');
      assert.notEqual((await q('SELECT 1')).code, 0);
      acme = { ...acme, password: changed.password };
    });

    it('suspend, then a connection wakes it', async () => {
      const suspended = await pgs.api('POST', '/v1/tenants/acme/suspend');
      assert.equal(suspended.status, 200, suspended.text);
      assert.equal((await state())?.state, 'suspended');
      const count = await q('SELECT count(*) FROM notes');
      assert.equal(count.stdout, '300', count.stderr);
      assert.equal((await state())?.state, 'running');
    });

    it('a killed server is restarted by the daemon, rows intact', async () => {
      const before = (await state())?.pid ?? 0;
      assert.ok(before > 1);
      if (runtime === 'docker') {
        const killed = await runCommand('docker', ['kill', containerName(homeTag(pgs.home), 'acme')], process.env);
        assert.equal(killed.code, 0, killed.stderr);
      } else {
        process.kill(before, 'SIGKILL');
      }
      await waitFor('acme to run again', async () => {
        const t = await state();
        return t?.state === 'running' && t.pid !== before;
      }, 60_000);
      const count = await q('SELECT count(*) FROM notes');
      assert.equal(count.stdout, '300', count.stderr);
    });

    it('after a kill -9 of the daemon, the next one adopts the running server, not a second one', async () => {
      const status = await pgs.api<{ pid: number }>('GET', '/v1/status');
      const pid = (await state())?.pid;
      process.kill(status.body.pid, 'SIGKILL');
      await pgs.ok(['start']);
      await waitFor('acme adopted', async () => (await state())?.state === 'running');
      assert.equal((await state())?.pid, pid, 'the same postmaster');
      assert.equal((await q('SELECT count(*) FROM notes')).stdout, '300');
      if (runtime === 'docker') {
        const ps = await runCommand('docker', ['ps', '-a', '--filter', 'label=pgs.tenant=acme', '--format', '{{.Names}}'], process.env);
        assert.equal(ps.stdout, containerName(homeTag(pgs.home), 'acme'));
      }
    });

    it('backups, a branch at a past time and an in-place restore to a time work alike', async () => {
      const backup = await pgs.json<{ kind: string }>(['backup', 'acme']);
      assert.equal(backup.kind, 'online');
      assert.equal((await q('INSERT INTO notes SELECT generate_series(301, 400)')).code, 0);
      await sleep(1_100);
      const noted = new Date().toISOString();
      await sleep(1_100);
      assert.equal((await q('DELETE FROM notes')).code, 0);
      // A new tenant from the archive, replayed to the noted time (its own uid, its own container).
      const then = await pgs.json<Created>(['branch', 'acme', 'then', '--at', noted]);
      const inThen = await psql(`host=${then.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=then sslmode=require connect_timeout=20`, 'SELECT count(*) FROM notes', acme.password);
      assert.equal(inThen.stdout, '400', inThen.stderr);
      await pgs.ok(['remove', 'then', '--yes']);
      // The tenant itself, back to the noted time in place, same password.
      await pgs.ok(['restore', 'acme', '--time', noted]);
      assert.equal((await q('SELECT count(*) FROM notes')).stdout, '400');
      assert.equal((await state())?.state, 'running');
    });

    it('remove deletes the server (and its container)', async () => {
      await pgs.ok(['remove', 'acme', '--yes']);
      assert.equal((await pgs.json<Listed[]>(['list'])).length, 0);
      if (runtime === 'docker') {
        const ps = await runCommand('docker', ['ps', '-a', '--filter', `name=${containerName(homeTag(pgs.home), 'acme')}`, '--format', '{{.Names}}'], process.env);
        assert.equal(ps.stdout, '');
      }
    });
  });
}

/** What only the docker runtime has: limits as the container's, a health check, and a tenant over its memory killed alone. */
describe('the docker runtime\'s containers: no network, limits, a health check; a tenant past its memory limit fails alone', { skip: !dockerHere || !isRoot ? `no Docker engine here (${dockerSocket}), or not root` : false }, () => {
  let pgs: PgsHome;
  let port: number;
  const t: Record<string, Created> = {};
  const conn = (c: Created) => `host=${c.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=${c.id} sslmode=require connect_timeout=20`;
  const inspect = async (name: string, format: string) => {
    const r = await runCommand('docker', ['inspect', '--format', format, name], process.env);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  };
  const named = (id: string) => containerName(homeTag(pgs.home), id);

  before(async () => {
    const built = await runCommand('bash', [path.join(ROOT, 'test/docker/build-image.sh'), IMAGE], process.env);
    assert.equal(built.code, 0, built.stderr);
    pgs = await PgsHome.make({ PGS_RUNNING_SPARES: '0' });
    port = await pgs.setup(['--runtime', 'docker', '--image', IMAGE]);
    await pgs.ok(['start']);
    t.hog = await pgs.json<Created>(['create', 'hog', '--memory', '128M', '--autosuspend', 'off']);
    t.calm = await pgs.json<Created>(['create', 'calm', '--autosuspend', 'off']);
  });
  after(async () => {
    await pgs?.destroy();
    await removeContainers(pgs);
  });

  it('each tenant\'s container has no network, no capabilities, its tenant\'s uid and its limits; a change applies to the running container', async () => {
    assert.equal(await inspect(named('hog'), '{{.HostConfig.NetworkMode}} {{.HostConfig.CapDrop}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}'), `none [ALL] ${128 * 2 ** 20} ${128 * 2 ** 20}`);
    assert.equal(await inspect(named('calm'), '{{.HostConfig.Memory}}'), '0');
    const owner = (await fs.stat(path.join(await pgs.dataRoot(), 'tenants', 'hog'))).uid;
    assert.equal((await inspect(named('hog'), '{{.Config.User}}')).split(':')[0], String(owner));
    assert.notEqual(owner, 0);
    const pid = Number(await inspect(named('calm'), '{{.State.Pid}}'));
    await pgs.ok(['config', 'calm', '--memory', '256M', '--cpus', '0.5']);
    assert.equal(await inspect(named('calm'), '{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}'), `${256 * 2 ** 20} 500000000`);
    assert.equal(Number(await inspect(named('calm'), '{{.State.Pid}}')), pid, 'changed in place, not restarted');
    const shown = await pgs.json<{ memoryBytes: number; usage?: { memoryBytes: number } }>(['config', 'calm']);
    assert.ok((shown.usage?.memoryBytes ?? 0) > 0, JSON.stringify(shown));
    const status = await pgs.ok(['status']);
    assert.match(status, /runtime\s+docker: a container per tenant from pgs-test\/postgres:18/);
    assert.match(status, /limits\s+memory and CPU enforced with the container's resource limits/);
    // The server's output, written from inside the container, is the tenant's log.
    assert.match(await pgs.ok(['logs', 'calm']), /database system is ready to accept connections/);
  });

  it('a tenant that allocates past its memory limit fails alone; another tenant keeps answering', async () => {
    const hog = t.hog as Created;
    const calm = t.calm as Created;
    await assertMemoryHogFailsAlone({ url: conn(hog), password: hog.password }, { url: conn(calm), password: calm.password });
  });

  it('the container\'s health check reports a running server healthy', async () => {
    await waitFor('the calm container healthy', async () => (await inspect(named('calm'), '{{.State.Health.Status}}')) === 'healthy', 60_000);
  });

  it('back to the native runtime: refused while servers run; then the containers go and the tenants run natively with their data', async () => {
    const refused = await pgs.run(['setup', '--runtime', 'native']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /runs on the docker runtime: stop pgs \("pgs stop"\) before changing the runtime/);
    assert.equal((await runCommand('docker', ['ps', '-aq', '--filter', `label=pgs.home=${pgs.home}`], process.env)).stdout.split('\n').filter(Boolean).length, 2);
    await psql(conn(t.calm as Created), 'CREATE TABLE kept(x int); INSERT INTO kept VALUES (7)', (t.calm as Created).password);
    await pgs.ok(['stop']);
    assert.match(await pgs.ok(['setup', '--runtime', 'native']), /removed the docker runtime's 2 containers/);
    assert.equal((await runCommand('docker', ['ps', '-aq', '--filter', `label=pgs.home=${pgs.home}`], process.env)).stdout, '');
    await pgs.ok(['start']);
    assert.equal((await psql(conn(t.calm as Created), 'SELECT x FROM kept', (t.calm as Created).password)).stdout, '7');
    assert.match(await pgs.ok(['status']), /runtime\s+native/);
  });
});
