import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { dockerSocket } from '../../src/runtime/docker-api.js';
import { healthcheck } from '../../src/runtime/docker.js';

describe('the docker runtime\'s pieces', () => {
  it('DOCKER_HOST: unix sockets only, /var/run/docker.sock by default', () => {
    assert.equal(dockerSocket({}), '/var/run/docker.sock');
    assert.equal(dockerSocket({ DOCKER_HOST: 'unix:///run/x.sock' }), '/run/x.sock');
    assert.throws(() => dockerSocket({ DOCKER_HOST: 'tcp://127.0.0.1:2375' }), /over a unix socket only/);
  });

  it('the health check, without pg_isready, reads the server\'s state from postmaster.pid in its working folder', () => {
    const check = healthcheck();
    assert.equal((check.Test as string[])[0], 'CMD-SHELL');
    const line = (check.Test as string[])[1] as string;
    const dir = mkdtempSync(path.join(tmpdir(), 'pgs-health-'));
    // An empty PATH: no pg_isready, as in an image without one (the shell's built-ins still work).
    const run = () => spawnSync('/bin/sh', ['-c', line], { cwd: dir, env: { PATH: path.join(dir, 'no-such-folder') } }).status;
    const pidFile = (state: string) => writeFileSync(path.join(dir, 'postmaster.pid'), ['1', dir, '1764550000', '5432', dir, '', '  1234   5678', state, ''].join('\n'));
    try {
      assert.notEqual(run(), 0, 'no postmaster.pid: unhealthy');
      pidFile('starting');
      assert.notEqual(run(), 0);
      pidFile('ready   ');
      assert.equal(run(), 0);
      pidFile('stopping');
      assert.notEqual(run(), 0);
      writeFileSync(path.join(dir, 'postmaster.pid'), '1\n2\n');
      assert.notEqual(run(), 0, 'a file cut short');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
