/**
 * Two pgs homes on one host, each with a tenant of the same id: each tenant
 * gets its own control group (native) or container (docker), named by its
 * home's tag; what an older pgs named by id alone is taken over at start,
 * running servers kept running. The docker half needs an engine (DOCKER_HOST).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { homeTag } from '../../src/core/paths.js';
import { containerName } from '../../src/runtime/docker.js';
import { PgsHome, ROOT, psql, realPid, runCommand, waitFor } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string }
interface Listed { id: string; state: string; pid: number | null }

const isRoot = process.getuid?.() === 0;
const v2 = existsSync('/sys/fs/cgroup/cgroup.controllers');
const CONTROLLERS = v2 ? [''] : ['memory', 'cpu', 'pids', 'cpuacct'];
const IMAGE = 'pgs-test/postgres:18';
const dockerSocket = process.env.DOCKER_HOST?.replace(/^unix:\/\//, '') ?? '/var/run/docker.sock';
const dockerHere = existsSync(dockerSocket);

/** The folder of `pid`'s group in a hierarchy ('' on v2). */
async function groupOf(pid: number, controller: string): Promise<string> {
  const lines = (await fs.readFile(`/proc/${pid}/cgroup`, 'utf8')).trim().split('\n');
  const line = v2 ? lines.find((l) => l.startsWith('0::')) : lines.find((l) => l.split(':')[1]?.split(',').includes(controller));
  assert.ok(line, `pid ${pid} has a ${controller || 'v2'} group`);
  return path.join('/sys/fs/cgroup', controller, line.split(':')[2] ?? '');
}

async function memoryLimit(pid: number): Promise<number> {
  const dir = await groupOf(pid, v2 ? '' : 'memory');
  const text = (await fs.readFile(path.join(dir, v2 ? 'memory.max' : 'memory.limit_in_bytes'), 'utf8')).trim();
  return text === 'max' ? Infinity : Number(text) >= 2 ** 62 ? Infinity : Number(text);
}

async function pidOf(pgs: PgsHome, id: string): Promise<number> {
  return realPid((await pgs.json<Listed[]>(['list'])).find((t) => t.id === id)?.pid ?? undefined, id);
}

async function killDaemon(pgs: PgsHome): Promise<void> {
  const status = await pgs.api<{ pid: number }>('GET', '/v1/status');
  process.kill(realPid(status.body.pid, 'the daemon'), 'SIGKILL');
  await waitFor('the daemon to die', async () => !existsSync(`/proc/${status.body.pid}`) || (await fs.readFile(`/proc/${status.body.pid}/stat`, 'utf8')).includes(') Z'));
}

async function restartDaemon(pgs: PgsHome, id: string): Promise<void> {
  await pgs.ok(['start']);
  await waitFor(`${id} adopted`, async () => (await pgs.json<Listed[]>(['list'])).find((t) => t.id === id)?.state === 'running', 60_000);
}

const GiB = 2 ** 30;
const MiB = 2 ** 20;

describe('native: two homes, one tenant id, each its own control group', { skip: isRoot ? false : 'cgroups need root' }, () => {
  let a: PgsHome;
  let b: PgsHome;
  let port: number;
  let acme: Created;
  let stray: ReturnType<typeof spawn> | undefined;

  before(async () => {
    a = await PgsHome.make({ PGS_RUNNING_SPARES: '0' });
    b = await PgsHome.make({ PGS_RUNNING_SPARES: '0' });
    port = await a.setup();
    await b.setup();
    await a.ok(['start']);
    await b.ok(['start']);
    acme = await a.json<Created>(['create', 'acme', '--memory', '1G', '--autosuspend', 'off']);
    await b.json<Created>(['create', 'acme', '--memory', '128M', '--autosuspend', 'off']);
  });
  after(async () => {
    stray?.kill('SIGKILL');
    await a?.destroy();
    await b?.destroy();
    for (const c of CONTROLLERS) await fs.rmdir(path.join('/sys/fs/cgroup', c, 'pgs/acme')).catch(() => undefined);
  });

  it('each server is in pgs/<its home\'s tag>/acme with its own limit; lifting one leaves the other', async () => {
    const [pa, pb] = [await pidOf(a, 'acme'), await pidOf(b, 'acme')];
    for (const c of CONTROLLERS) {
      assert.ok((await groupOf(pa, c)).endsWith(`/pgs/${homeTag(a.home)}/acme`), await groupOf(pa, c));
      assert.ok((await groupOf(pb, c)).endsWith(`/pgs/${homeTag(b.home)}/acme`), await groupOf(pb, c));
    }
    assert.notEqual(homeTag(a.home), homeTag(b.home));
    assert.equal(await memoryLimit(pa), GiB);
    assert.equal(await memoryLimit(pb), 128 * MiB);
    await b.ok(['config', 'acme', '--memory', 'off']);
    assert.equal(await memoryLimit(pb), Infinity);
    assert.equal(await memoryLimit(pa), GiB, 'the other home\'s tenant keeps its limit');
  });

  it('a running server in the untagged group an older pgs made (pgs/acme) moves to its home\'s group at start; the old group goes once empty', async () => {
    const pid = await pidOf(a, 'acme');
    await killDaemon(a);
    // As an older pgs left it: the server in pgs/acme, limited by whichever home wrote last; beside it a process of "another home".
    stray = spawn('sleep', ['600'], { stdio: 'ignore' });
    const children = (await fs.readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim().split(/\s+/).filter(Boolean).map(Number);
    for (const c of CONTROLLERS) {
      const tagged = await groupOf(pid, c);
      const untagged = path.join('/sys/fs/cgroup', c, 'pgs/acme');
      await fs.mkdir(untagged).catch(() => undefined);
      for (const p of [pid, ...children, realPid(stray.pid, 'sleep')]) await fs.writeFile(path.join(untagged, 'cgroup.procs'), String(p)).catch(() => undefined);
      await fs.rmdir(tagged).catch(() => undefined);
    }
    await fs.writeFile(path.join('/sys/fs/cgroup', v2 ? '' : 'memory', 'pgs/acme', v2 ? 'memory.max' : 'memory.limit_in_bytes'), String(128 * MiB));
    assert.equal(await memoryLimit(pid), 128 * MiB);

    await restartDaemon(a, 'acme');
    assert.equal(await pidOf(a, 'acme'), pid, 'the same server, not restarted');
    for (const c of CONTROLLERS) assert.ok((await groupOf(pid, c)).endsWith(`/pgs/${homeTag(a.home)}/acme`), await groupOf(pid, c));
    assert.equal(await memoryLimit(pid), GiB);
    const sessions = await psql(`host=${acme.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=acme sslmode=require`, 'SELECT pg_backend_pid()', acme.password);
    const backend = Number(sessions.stdout);
    assert.ok(backend > 0, sessions.stderr);
    // The other home's process keeps the old group.
    assert.ok((await groupOf(realPid(stray.pid, 'sleep'), CONTROLLERS[0] as string)).endsWith('/pgs/acme'));

    stray.kill('SIGKILL');
    await waitFor('sleep gone', async () => !existsSync(`/proc/${stray?.pid}`));
    await killDaemon(a);
    await restartDaemon(a, 'acme');
    for (const c of CONTROLLERS) assert.equal(existsSync(path.join('/sys/fs/cgroup', c, 'pgs/acme')), false, `${c}: the empty untagged group is removed`);
  });

  it('a removed tenant\'s groups go: its own, an empty untagged one and its home\'s folder; the other home\'s stay', async () => {
    const pb = await pidOf(b, 'acme');
    for (const c of CONTROLLERS) await fs.mkdir(path.join('/sys/fs/cgroup', c, 'pgs/acme'));
    await a.ok(['remove', 'acme', '--yes']);
    for (const c of CONTROLLERS) {
      for (const dir of [`pgs/${homeTag(a.home)}/acme`, `pgs/${homeTag(a.home)}`, 'pgs/acme']) {
        assert.equal(existsSync(path.join('/sys/fs/cgroup', c, dir)), false, `${c}: ${dir} is removed`);
      }
      assert.ok((await groupOf(pb, c)).endsWith(`/pgs/${homeTag(b.home)}/acme`), await groupOf(pb, c));
    }
    // A daemon start with no tenant's group leaves no folder of its home either.
    await a.ok(['stop']);
    await a.ok(['start']);
    await a.api('GET', '/v1/status');
    for (const c of CONTROLLERS) assert.equal(existsSync(path.join('/sys/fs/cgroup', c, `pgs/${homeTag(a.home)}`)), false, `${c}: the home's empty folder is removed at start`);
  });
});

describe('docker: two homes, one tenant id, each its own container', { skip: dockerHere && isRoot ? false : `no Docker engine here (${dockerSocket}), or not root` }, () => {
  let a: PgsHome;
  let b: PgsHome;
  let port: number;
  let acme: Created;
  const docker = async (...args: string[]) => {
    const r = await runCommand('docker', args, process.env);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  };
  const names = async (home: PgsHome) => (await docker('ps', '-a', '--filter', `label=pgs.home=${home.home}`, '--format', '{{.Names}}')).split('\n').filter(Boolean);

  before(async () => {
    const built = await runCommand('bash', [path.join(ROOT, 'test/docker/build-image.sh'), IMAGE], process.env);
    assert.equal(built.code, 0, built.stderr);
    a = await PgsHome.make({ PGS_RUNNING_SPARES: '0' });
    b = await PgsHome.make({ PGS_RUNNING_SPARES: '0' });
    port = await a.setup(['--runtime', 'docker', '--image', IMAGE]);
    await b.setup(['--runtime', 'docker', '--image', IMAGE]);
    await a.ok(['start']);
    await b.ok(['start']);
    acme = await a.json<Created>(['create', 'acme', '--memory', '1G', '--autosuspend', 'off']);
    await b.json<Created>(['create', 'acme', '--memory', '256M', '--autosuspend', 'off']);
  });
  after(async () => {
    await a?.destroy();
    await b?.destroy();
    for (const home of [a, b]) {
      if (!home) continue;
      const left = (await runCommand('docker', ['ps', '-aq', '--filter', `label=pgs.home=${home.home}`], process.env)).stdout.split('\n').filter(Boolean);
      if (left.length > 0) await runCommand('docker', ['rm', '-f', ...left], process.env);
    }
  });

  it('containers pgs-<home tag>-acme, each with its own limit; lifting one leaves the other', async () => {
    const [na, nb] = [containerName(homeTag(a.home), 'acme'), containerName(homeTag(b.home), 'acme')];
    assert.deepEqual(await names(a), [na]);
    assert.deepEqual(await names(b), [nb]);
    assert.ok(na.length <= 63, na);
    assert.equal(await docker('inspect', '--format', '{{.HostConfig.Memory}}', na), String(GiB));
    assert.equal(await docker('inspect', '--format', '{{.HostConfig.Memory}}', nb), String(256 * MiB));
    await b.ok(['config', 'acme', '--memory', 'off']);
    // The engine cannot lift a running container's limit: pgs sets one no server reaches.
    assert.ok(Number(await docker('inspect', '--format', '{{.HostConfig.Memory}}', nb)) >= 2 ** 53);
    assert.equal(await docker('inspect', '--format', '{{.HostConfig.Memory}}', na), String(GiB));
  });

  it('a running container an older pgs named pgs-acme is renamed at start, still running; another home\'s is left to that home', async () => {
    const [na, nb] = [containerName(homeTag(a.home), 'acme'), containerName(homeTag(b.home), 'acme')];
    const pid = await pidOf(a, 'acme');
    await killDaemon(a);
    await docker('rename', na, 'pgs-acme');
    await restartDaemon(a, 'acme');
    assert.deepEqual(await names(a), [na]);
    assert.equal(await pidOf(a, 'acme'), pid, 'the same server, not restarted');
    assert.equal(await docker('inspect', '--format', '{{.State.Pid}}', na), String(pid));
    const q = await psql(`host=${acme.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=acme sslmode=require connect_timeout=20`, 'SELECT 1', acme.password);
    assert.equal(q.stdout, '1', q.stderr);

    // Home b's container under the old name: home a's daemon leaves it; home b's takes it back.
    const pb = await pidOf(b, 'acme');
    await killDaemon(b);
    await docker('rename', nb, 'pgs-acme');
    await killDaemon(a);
    await restartDaemon(a, 'acme');
    assert.deepEqual(await names(b), ['pgs-acme']);
    await restartDaemon(b, 'acme');
    assert.deepEqual(await names(b), [nb]);
    assert.equal(await pidOf(b, 'acme'), pb);
  });
});
