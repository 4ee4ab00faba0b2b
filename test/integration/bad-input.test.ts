import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgsHome, type Result } from '../helpers/pgs.js';

/** One clear line on stderr, nothing on stdout, a non-zero exit. */
function assertOneLineError(result: Result, pattern: RegExp, code = 1): void {
  assert.equal(result.code, code, `exit code (stderr: ${result.stderr})`);
  assert.equal(result.stdout, '');
  assert.equal(result.stderr.trimEnd().split('\n').length, 1, `one line, got: ${result.stderr}`);
  assert.match(result.stderr, pattern);
}

describe('bad input: one clear error line, and nothing changes', () => {
  let pgs: PgsHome;
  let catalogBefore: string;

  before(async () => {
    pgs = await PgsHome.make();
  });
  after(async () => {
    await pgs.destroy();
  });

  it('every command before setup says to run setup, and writes nothing', async () => {
    for (const args of [['create', 'acme'], ['list'], ['remove', 'acme', '--yes'], ['start'], ['stop', 'acme'], ['url', 'acme'], ['passwd', 'acme'], ['enable-access', 'acme']]) {
      const result = await pgs.run(args);
      assertOneLineError(result, /is not set up in .*: run "pgs setup" first/);
    }
    const status = await pgs.run(['status']);
    assert.equal(status.code, 3);
    assert.match(status.stdout, /^No daemon runs, and pgs is not set up in \S+: "pgs setup" sets it up, then "pgs start" starts it$/m);
    await assert.rejects(fs.access(path.join(pgs.home, 'catalog.json')));
  });

  it('setup refuses a half-given or broken certificate and writes nothing', async () => {
    assertOneLineError(await pgs.run(['setup', '--cert', '/nonexistent.pem']), /--cert and --key go together/, 2);
    const junk = path.join(pgs.home, 'junk.pem');
    await fs.writeFile(junk, 'not a certificate');
    assertOneLineError(await pgs.run(['setup', '--cert', junk, '--key', junk]), /is not a PEM certificate/);
    assertOneLineError(await pgs.run(['setup', '--port', '70000']), /invalid --port "70000"/, 2);
    assertOneLineError(await pgs.run(['setup', '--domain', 'Not A Domain']), /invalid --domain/, 2);
    assertOneLineError(await pgs.run(['setup', '--api-listen', 'nowhere']), /invalid API address "nowhere"/, 2);
    await assert.rejects(fs.access(path.join(pgs.home, 'catalog.json')));
  });

  it('setup then succeeds and is idempotent', async () => {
    await pgs.setup();
    const first = await pgs.catalogText();
    const again = await pgs.ok(['setup']);
    assert.match(again, /pgs is set up in/);
    assert.equal(await pgs.catalogText(), first.replace(/\n$/, '') + '\n');
    await pgs.ok(['create', 'acme', '--password', 'correct-horse']);
    catalogBefore = await pgs.catalogText();
  });

  const badIds = ['Acme', '9lives', '-lead', 'trail-', 'under_score', 'dot.ted', 'x'.repeat(41), 'émile', 'template0', 'template1', 'postgres'];
  for (const id of badIds) {
    it(`create refuses the id ${JSON.stringify(id)}`, async () => {
      assertOneLineError(await pgs.run(['create', '--', id]), /^pgs create: invalid tenant id /, 2);
      assert.equal(await pgs.catalogText(), catalogBefore);
      await assert.rejects(fs.access(path.join(await pgs.dataRoot(), 'tenants', id)));
    });
  }

  it('create refuses a duplicate id and a weak password', async () => {
    assertOneLineError(await pgs.run(['create', 'acme']), /^pgs create: tenant acme already exists$/m);
    assertOneLineError(await pgs.run(['create', 'weak', '--password', 'short']), /password is too short: at least 8 characters/, 2);
    assert.equal(await pgs.catalogText(), catalogBefore);
    await assert.rejects(fs.access(path.join(await pgs.dataRoot(), 'tenants', 'weak')));
  });

  for (const args of [['remove', 'ghost', '--yes'], ['start', 'ghost'], ['stop', 'ghost'], ['restart', 'ghost'], ['enable-access', 'ghost'], ['disable-access', 'ghost'], ['url', 'ghost'], ['passwd', 'ghost'], ['logs', 'ghost']]) {
    it(`${args[0]} of an unknown tenant fails`, async () => {
      assertOneLineError(await pgs.run(args), /no tenant ghost \(see "pgs list"\)/);
      assert.equal(await pgs.catalogText(), catalogBefore);
    });
  }

  it('remove without --yes refuses when stdin is not a terminal', async () => {
    assertOneLineError(await pgs.run(['remove', 'acme']), /not removing acme: stdin is not a terminal, pass --yes/, 2);
    assert.equal(await pgs.catalogText(), catalogBefore);
    await fs.access(path.join(await pgs.dataRoot(), 'tenants', 'acme'));
  });

  it('usage errors exit 2 with the usage line', async () => {
    assertOneLineError(await pgs.run(['frobnicate']), /unknown command "frobnicate"/, 2);
    assertOneLineError(await pgs.run(['create']), /missing argument; usage: pgs create <id>/, 2);
    assertOneLineError(await pgs.run(['create', 'a', 'b']), /unexpected argument "b"/, 2);
    assertOneLineError(await pgs.run(['list', '--bogus']), /^pgs list: unknown option --bogus; usage: pgs list/, 2);
    assert.equal(await pgs.catalogText(), catalogBefore);
  });

  it('--help explains every command', async () => {
    const overview = await pgs.ok(['--help']);
    for (const name of ['setup', 'create', 'list', 'remove', 'start', 'stop', 'status', 'reload', 'enable-access', 'disable-access', 'logs', 'url', 'passwd']) {
      assert.match(overview, new RegExp(`^  ${name} `, 'm'));
      assert.match(await pgs.ok([name, '--help']), new RegExp(`Usage: pgs ${name}`));
    }
  });

  it('a server that fails to start: the error shows its log, the tenant stays', async () => {
    const conf = path.join(await pgs.dataRoot(), 'tenants', 'acme', 'postgresql.conf');
    const good = await fs.readFile(conf, 'utf8');
    await pgs.ok(['stop', 'acme']);
    await fs.appendFile(conf, "\nshared_buffers = 'plenty'\n");
    try {
      const result = await pgs.run(['start', 'acme']);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /pgs start: tenant acme did not start: the server of tenant acme exited with code 1; last lines of .*acme\.log:/);
      assert.match(result.stderr, /invalid value for parameter "shared_buffers": "plenty"/);
    } finally {
      await fs.writeFile(conf, good);
    }
    await pgs.ok(['start', 'acme']);
  });

  it('a create whose server cannot start leaves no tenant, no folder and no catalog entry', async () => {
    const realBin = path.dirname((await import('../../src/runtime/binaries.js')).locatePgBinaries().postgres);
    const fakeBin = await fs.mkdtemp(path.join(tmpdir(), 'pgs-fakebin-'));
    try {
      await fs.chmod(fakeBin, 0o755);
      await fs.symlink(path.join(realBin, 'initdb'), path.join(fakeBin, 'initdb'));
      await fs.writeFile(path.join(fakeBin, 'postgres'), '#!/bin/sh\necho "FATAL:  simulated start failure" >&2\nexit 1\n', { mode: 0o755 });
      // The daemon runs the servers: restart it on the broken binaries.
      await pgs.ok(['stop']);
      await pgs.run(['start'], { env: { PGS_PG_BIN: fakeBin } }); // acme cannot start either: exit 1
      // As the stop and start left it (each counts a change of every tenant's wanted state).
      const catalog = await pgs.catalogText();
      const result = await pgs.run(['create', 'doomed']);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /the server of tenant doomed exited with code 1/);
      assert.match(result.stderr, /simulated start failure/);
      assert.equal(await pgs.catalogText(), catalog);
      await assert.rejects(fs.access(path.join(await pgs.dataRoot(), 'tenants', 'doomed')));
      await assert.rejects(fs.access(path.join(await pgs.dataRoot(), 'logs', 'doomed.log')));
    } finally {
      await pgs.run(['stop']);
      await fs.rm(fakeBin, { recursive: true, force: true });
    }
    // and the id is free for a create that works
    await pgs.ok(['create', 'doomed']);
  });

  it('a hand-broken catalog is an error naming the file and the backup, and is left as it is', async () => {
    const file = path.join(pgs.home, 'catalog.json');
    const good = await pgs.catalogText();
    const broken = good.replace('"enabled"', '"sort-of"');
    await fs.writeFile(file, broken);
    try {
      const result = await pgs.run(['list']);
      assertOneLineError(result, /the catalog .*catalog\.json is not valid \(tenants\.0\.access: .*\); nothing was changed\. The previous good version is .*catalog\.json\.bak/);
      assert.equal(await fs.readFile(file, 'utf8'), broken);
      assertOneLineError(await pgs.run(['create', 'another']), /is not valid/);
      assert.equal(await fs.readFile(file, 'utf8'), broken);
    } finally {
      await fs.writeFile(file, good);
    }
  });
});
