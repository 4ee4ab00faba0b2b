import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { homeTag } from '../../src/core/paths.js';
import { PgsHome, assertMemoryHogFailsAlone, psql } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string }
interface Config { memoryBytes: number | null; cpus: number | null; usage?: { memoryBytes: number; cpuSeconds: number; memorySource: string }; limitsNotEnforced?: string }
/** An idle server's processes hold more than this (16 MB of shared buffers, the catalogs read): a reading below it missed most of them. */
const FEW_MIB = 4 * 2 ** 20;

const isRoot = process.getuid?.() === 0;

/** The control group (of one controller) a process is in, as a path under its hierarchy's mount. */
async function cgroupOf(pid: number, controller: string): Promise<string | undefined> {
  const lines = (await fs.readFile(`/proc/${pid}/cgroup`, 'utf8')).trim().split('\n');
  const v1 = lines.find((l) => l.split(':')[1]?.split(',').includes(controller));
  if (v1) return path.join('/sys/fs/cgroup', controller, v1.split(':')[2] ?? '');
  const v2 = lines.find((l) => l.startsWith('0::'));
  return v2 ? path.join('/sys/fs/cgroup', v2.slice(3)) : undefined;
}

/** Memory and CPU limits, enforced by the kernel through cgroups: real servers, real queries. */
describe('per-tenant memory and CPU limits', { skip: isRoot ? false : 'cgroups need root' }, () => {
  let pgs: PgsHome;
  let port: number;
  const t: Record<string, Created> = {};
  const conn = (c: Created) => `host=${c.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=${c.id} sslmode=require`;
  const pidOf = async (id: string) => (await pgs.json<{ id: string; pid: number }[]>(['list'])).find((x) => x.id === id)?.pid ?? 0;

  before(async () => {
    pgs = await PgsHome.make({ PGS_RUNNING_SPARES: '1' });
    port = await pgs.setup();
    t.hog = await pgs.json<Created>(['create', 'hog', '--memory', '128M', '--autosuspend', 'off']);
    t.calm = await pgs.json<Created>(['create', 'calm', '--autosuspend', 'off']);
    t.spin = await pgs.json<Created>(['create', 'spin', '--cpus', '0.5', '--autosuspend', 'off']);
  });
  after(async () => {
    await pgs.destroy();
  });

  it('a limited tenant\'s server and its sessions run in its own control group, with its limits', async () => {
    const pid = await pidOf('hog');
    const memory = await cgroupOf(pid, 'memory');
    assert.ok((memory ?? '').endsWith(`/pgs/${homeTag(pgs.home)}/hog`), memory);
    const limitFile = (await fs.readFile(path.join(memory as string, 'memory.max'), 'utf8').catch(() => undefined))
      ?? (await fs.readFile(path.join(memory as string, 'memory.limit_in_bytes'), 'utf8'));
    assert.equal(limitFile.trim(), String(128 * 2 ** 20));
    const procs = (await fs.readFile(path.join(memory as string, 'cgroup.procs'), 'utf8')).trim().split('\n').map(Number);
    assert.ok(procs.includes(pid), 'the postmaster is in it');
    assert.ok(procs.length >= 4, `its workers too (${procs.length} processes)`);
    assert.doesNotMatch(await cgroupOf(await pidOf('calm'), 'memory') ?? '', /\/pgs\//, 'a tenant without limits is not in one');
    // work_mem follows the limit; the config shows the limit and what is used.
    assert.equal((await psql(conn(t.hog as Created), 'SHOW work_mem', (t.hog as Created).password)).stdout, '1638kB');
    const shown = await pgs.json<Config>(['config', 'hog']);
    assert.equal(shown.memoryBytes, 128 * 2 ** 20);
    assert.ok((shown.usage?.memoryBytes ?? 0) > FEW_MIB, JSON.stringify(shown));
    assert.match(await pgs.ok(['config', 'hog']), /memory\s+128 MiB, using [\d.]+ MiB \((cgroup|PSS)\)/);
    // A server limited while it runs is moved into its group, which then holds little of the memory it had.
    await pgs.ok(['create', 'moved', '--autosuspend', 'off']);
    await pgs.ok(['config', 'moved', '--memory', '256M']);
    const moved = await pgs.json<Config>(['config', 'moved']);
    assert.ok((moved.usage?.memoryBytes ?? 0) > FEW_MIB, JSON.stringify(moved));
    assert.equal(moved.usage?.memorySource, 'pss', JSON.stringify(moved));
    assert.match(await pgs.ok(['config', 'moved']), /memory\s+256 MiB, using [\d.]+ MiB \(PSS\)/);
    await pgs.ok(['remove', 'moved', '--yes']);
    assert.match(await pgs.ok(['status']), /limits\s+memory and CPU enforced with cgroup v[12]/);
  });

  it('a tenant that allocates past its memory limit fails alone; another tenant keeps answering', async () => {
    const hog = t.hog as Created;
    const calm = t.calm as Created;
    await assertMemoryHogFailsAlone({ url: conn(hog), password: hog.password }, { url: conn(calm), password: calm.password });
  });

  it('a CPU-bound tenant at --cpus 0.5 gets about half a core, measured from its control group', async () => {
    const spin = t.spin as Created;
    const before = await pgs.json<Config>(['config', 'spin']);
    const started = Date.now();
    const busy = await psql(conn(spin), "SET statement_timeout = '5s'; SELECT count(*) FROM generate_series(1, 10000000000)", spin.password);
    assert.match(busy.stderr, /statement timeout/);
    const wall = (Date.now() - started) / 1000;
    const afterwards = await pgs.json<Config>(['config', 'spin']);
    const share = ((afterwards.usage?.cpuSeconds ?? 0) - (before.usage?.cpuSeconds ?? 0)) / wall;
    assert.ok(share > 0.3 && share < 0.7, `CPU share ${share.toFixed(2)} of a core (${wall.toFixed(1)} s wall)`);
  });

  it('limits change at once and lift with off; bad values change nothing', async () => {
    const pid = await pidOf('spin');
    const cpu = await cgroupOf(pid, 'cpu');
    const quota = async () => (await fs.readFile(path.join(cpu as string, 'cpu.max'), 'utf8').catch(() => undefined))?.split(' ')[0]
      ?? (await fs.readFile(path.join(cpu as string, 'cpu.cfs_quota_us'), 'utf8')).trim();
    assert.equal(await quota(), '50000');
    await pgs.ok(['config', 'spin', '--cpus', '1.5']);
    assert.equal(await quota(), '150000');
    await pgs.ok(['config', 'spin', '--cpus', 'off']);
    assert.match(await quota(), /^(-1|max)$/);
    assert.equal((await pgs.json<Config>(['config', 'spin'])).cpus, null);
    for (const [flag, value, message] of [['--memory', '10M', /invalid --memory "10M": a size such as 512M or 2G \(at least 64M\), or off/], ['--cpus', '0', /invalid --cpus "0"/], ['--memory', 'lots', /invalid --memory "lots"/]] as const) {
      const before = await pgs.catalogText();
      const bad = await pgs.run(['config', 'hog', flag, value]);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, message);
      assert.equal(await pgs.catalogText(), before);
    }
    const bad = await pgs.run(['create', 'nope', '--memory', '1K']);
    assert.equal(bad.code, 2);
    assert.ok(!(await pgs.catalogText()).includes('"nope"'));
  });

  it('a stopped server\'s control groups go; its next start makes them again', async () => {
    const memory = await cgroupOf(await pidOf('hog'), 'memory') as string;
    await pgs.ok(['stop', 'hog']);
    await assert.rejects(fs.access(memory), 'the group is removed with the server');
    await pgs.ok(['start', 'hog']);
    assert.equal(await cgroupOf(await pidOf('hog'), 'memory'), memory);
    assert.equal((await psql(conn(t.hog as Created), 'SELECT 1', (t.hog as Created).password)).stdout, '1');
  });

  it('a removed tenant\'s control groups go, and its home\'s folder with the last group in it', async () => {
    const hog = [await cgroupOf(await pidOf('hog'), 'memory'), await cgroupOf(await pidOf('hog'), 'cpu')] as string[];
    const homes = [...new Set(hog.map((dir) => path.dirname(dir)))];
    await pgs.ok(['remove', 'hog', '--yes']);
    for (const dir of hog) await assert.rejects(fs.access(dir), `${dir} is removed with the tenant`);
    // spin's server stayed in its group when its limit was lifted.
    for (const dir of homes) await fs.access(dir);
    await pgs.ok(['remove', 'spin', '--yes']);
    for (const dir of homes) await assert.rejects(fs.access(dir), `${dir} is removed with its last group`);
  });
});
