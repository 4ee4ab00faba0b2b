import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { formatBytes, parseCpus, parseMemory } from '../../src/cli/command.js';
import { Cgroups } from '../../src/runtime/cgroups.js';
import { memorySettings } from '../../src/runtime/server-config.js';
import { runningBudget } from '../../src/supervisor/budget.js';

describe('limit values', () => {
  it('memory sizes: binary units, at least 64M, off lifts', () => {
    assert.equal(parseMemory('512M'), 512 * 2 ** 20);
    assert.equal(parseMemory('2G'), 2 * 2 ** 30);
    assert.equal(parseMemory('1.5GiB'), 1.5 * 2 ** 30);
    assert.equal(parseMemory('64m'), 64 * 2 ** 20);
    assert.equal(parseMemory(String(2 ** 30)), 2 ** 30);
    assert.equal(parseMemory('off'), null);
    for (const bad of ['63M', '0', '', 'lots', '-1G', '1P', '512 MB extra']) assert.throws(() => parseMemory(bad), /invalid --memory/, bad);
  });

  it('cpus: from 0.01 to 1024 cores, off lifts', () => {
    assert.equal(parseCpus('0.5'), 0.5);
    assert.equal(parseCpus('2'), 2);
    assert.equal(parseCpus('off'), null);
    for (const bad of ['0', '0.001', '-1', 'half', '2000']) assert.throws(() => parseCpus(bad), /invalid --cpus/, bad);
  });

  it('formats sizes for people', () => {
    assert.equal(formatBytes(512 * 2 ** 20), '512 MiB');
    assert.equal(formatBytes(1.5 * 2 ** 30), '1.5 GiB');
    assert.equal(formatBytes(100), '100 B');
  });

  it('work_mem and maintenance_work_mem follow the memory limit, within bounds', () => {
    assert.deepEqual(memorySettings(128 * 2 ** 20, 20), ['work_mem = 1638kB', 'maintenance_work_mem = 16384kB', 'hash_mem_multiplier = 1.0']);
    assert.deepEqual(memorySettings(64 * 2 ** 20, 10_000), ['work_mem = 64kB', 'maintenance_work_mem = 8192kB', 'hash_mem_multiplier = 1.0']);
    assert.deepEqual(memorySettings(64 * 2 ** 30, 20), ['work_mem = 4096kB', 'maintenance_work_mem = 65536kB', 'hash_mem_multiplier = 1.0']);
  });

  it('the running budget: the setting, else memory / 64 MiB, at least 1', () => {
    assert.equal(runningBudget(3), 3);
    assert.equal(runningBudget(undefined, 24 * 2 ** 30), 384);
    assert.equal(runningBudget(undefined, 10 * 2 ** 20), 1);
  });
});

describe('Cgroups.detect', () => {
  it('says why when no controller is mounted, or a v2 hierarchy lacks one', { skip: process.getuid?.() === 0 ? false : 'as root only (else it says "not root" first)' }, async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'pgs-cgroup-'));
    try {
      assert.match(String(Cgroups.detect('0123456789', root)), /no cgroup memory controller is mounted/);
      writeFileSync(path.join(root, 'cgroup.controllers'), 'cpuset cpu io pids\n');
      assert.equal(Cgroups.detect('0123456789', root), 'the cgroup v2 hierarchy lacks the memory controller');
      rmSync(path.join(root, 'cgroup.controllers'));
      for (const c of ['memory', 'cpu', 'pids', 'cpuacct']) {
        mkdirSync(path.join(root, c));
        writeFileSync(path.join(root, c, 'cgroup.procs'), '');
      }
      const found = Cgroups.detect('0123456789', root);
      assert.ok(typeof found !== 'string', String(found));
      assert.equal(found.version, 1);
      // Every hierarchy names the tenant's group by the home's tag, then the id.
      await found.apply('acme', { memoryBytes: 2 ** 30, cpus: 1 });
      assert.equal(readFileSync(path.join(root, 'memory/pgs/0123456789/acme/memory.limit_in_bytes'), 'utf8'), String(2 ** 30));
      assert.equal(readFileSync(path.join(root, 'cpu/pgs/0123456789/acme/cpu.cfs_quota_us'), 'utf8'), '100000');
      assert.deepEqual(found.groupDirs('acme'), ['memory', 'cpu', 'pids', 'cpuacct'].map((c) => path.join(root, c, 'pgs/0123456789/acme')));
      // The group an older pgs made (pgs/<id>) is found; a home's folder of that name is not a tenant's group.
      mkdirSync(path.join(root, 'memory/pgs/acme'));
      mkdirSync(path.join(root, 'memory/pgs/beta/child'), { recursive: true });
      assert.deepEqual(await found.untaggedGroups('acme'), [path.join(root, 'memory/pgs/acme')]);
      assert.deepEqual(await found.untaggedGroups('beta'), []);
      const other = Cgroups.detect('abcdefabcd', root);
      assert.ok(typeof other !== 'string');
      assert.notDeepEqual(other.groupDirs('acme'), found.groupDirs('acme'));
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
