import assert from 'node:assert/strict';
import net from 'node:net';
import pg from 'pg';
import { after, before, describe, it } from 'node:test';
import { PgsHome, freePort, psql, shell as sh } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string }
interface Status { port: number; certificate: string; certificateSelfSigned: boolean }

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => { socket.destroy(); resolve(false); });
    socket.once('error', () => resolve(true));
  });
}

/** `.invalid` never resolves (RFC 2606): the strings pgs prints must work without DNS. */
describe('the first ten minutes: what pgs prints works as printed', () => {
  let pgs: PgsHome;
  let port: number;
  let demo: Created;
  let createdText: string;

  before(async () => {
    pgs = await PgsHome.make();
    port = await pgs.setup(['--domain', 'pgs.invalid']);
    createdText = await pgs.ok(['create', 'demo', '--password', "correct horse's battery"]);
    demo = (await pgs.json<Created[]>(['list']))[0] as Created;
    demo.password = "correct horse's battery";
  });
  after(async () => {
    await pgs.destroy();
  });

  it('create prints a psql line that connects as is, though the host name does not resolve', async () => {
    const line = /^ {2}psql {6}(.+)$/m.exec(createdText)?.[1];
    assert.ok(line, createdText);
    assert.match(line, /hostaddr=127\.0\.0\.1/);
    const result = await sh(`${line} -Atc 'SELECT current_database()'`);
    assert.equal(result.stdout, 'demo', result.stderr);
  });

  it('pgs url --format psql and env work as printed; uri and jdbc keep the contract form', async () => {
    const keywords = (await pgs.ok(['url', 'demo', '--format', 'psql'])).trim();
    assert.equal(keywords, `host=${demo.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=demo sslmode=require`);
    assert.equal((await psql(keywords, 'SELECT 1', demo.password)).stdout, '1');
    const env = (await pgs.ok(['url', 'demo', '--format', 'env'])).trim();
    assert.match(env, /^PGHOSTADDR=127\.0\.0\.1$/m);
    const viaEnv = await sh(`export ${env.split('\n').join(' ')}; psql -Atc 'SELECT current_user'`, { PGPASSWORD: demo.password });
    assert.equal(viaEnv.stdout, 'postgres', viaEnv.stderr);
    assert.equal((await pgs.ok(['url', 'demo'])).trim(), `postgresql://postgres@${demo.hostname}:${port}/demo?sslmode=require`);
    assert.equal((await pgs.ok(['url', 'demo', '--format', 'jdbc'])).trim(), `jdbc:postgresql://${demo.hostname}:${port}/demo?user=postgres&sslmode=require`);
    const bad = await pgs.run(['url', 'demo', '--format', 'yaml']);
    assert.equal(bad.code, 2);
  });

  it('the generated certificate is its own CA: status names it, and sslmode=verify-full works with it', async () => {
    const status = await pgs.json<Status>(['status']);
    assert.equal(status.certificateSelfSigned, true);
    assert.match(await pgs.ok(['status']), /sslmode=verify-full sslrootcert=/);
    const verified = await psql(`host=${demo.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=demo sslmode=verify-full sslrootcert=${status.certificate}`, 'SELECT 1', demo.password);
    assert.equal(verified.stdout, '1', verified.stderr);
    // The README's node-postgres snippet: servername for SNI, the certificate as CA, verification on.
    const { readFileSync } = await import('node:fs');
    const verifiedNode = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'demo', password: demo.password, ssl: { servername: demo.hostname, ca: readFileSync(status.certificate) } });
    await verifiedNode.connect();
    assert.equal((await verifiedNode.query<{ one: number }>('SELECT 1 AS one')).rows[0]?.one, 1);
    await verifiedNode.end();
    const unverified = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'demo', password: demo.password, ssl: { servername: demo.hostname } });
    await assert.rejects(unverified.connect(), /self-signed certificate|DEPTH_ZERO_SELF_SIGNED_CERT/);
    const wrongName = await psql(`host=127.0.0.1 port=${port} user=postgres dbname=demo sslmode=verify-full sslrootcert=${status.certificate} options=endpoint=${demo.hostname.split('.')[0]}`, 'SELECT 1', demo.password);
    assert.notEqual(wrongName.code, 0, 'verify-full refuses a name the certificate does not hold');
  });

  it('setup --port while the daemon runs: it moves at once, status says so; a busy port is refused and nothing moves', async () => {
    const next = await freePort();
    await pgs.ok(['setup', '--port', String(next)]);
    assert.equal((await pgs.json<Status>(['status'])).port, next);
    assert.equal(await refused(port), true, 'the old port is closed');
    assert.equal((await psql(`host=${demo.hostname} hostaddr=127.0.0.1 port=${next} user=postgres dbname=demo sslmode=require`, 'SELECT 1', demo.password)).stdout, '1');
    const blocker = net.createServer();
    const busy = await new Promise<number>((resolve) => blocker.listen(0, () => resolve((blocker.address() as net.AddressInfo).port)));
    try {
      const result = await pgs.run(['setup', '--port', String(busy)]);
      assert.equal(result.code, 1);
      assert.match(result.stderr, new RegExp(`cannot listen on port ${busy} \\(it is in use\\); it still listens on ${next}`));
      assert.equal((await pgs.json<Status>(['status'])).port, next, 'status shows the port actually listened on');
    } finally {
      blocker.close();
      await pgs.ok(['setup', '--port', String(next)]);
    }
    port = next;
  });

  it('a new domain renames every host name: refused without --yes, nothing changed; with --yes clients use the new names', async () => {
    const catalog = await pgs.catalogText();
    const refusedChange = await pgs.run(['setup', '--domain', 'other.invalid']);
    assert.equal(refusedChange.code, 2);
    assert.match(refusedChange.stderr, /changes the host name of every tenant \(1: pgs\.invalid -> other\.invalid\).*--yes/);
    assert.equal(await pgs.catalogText(), catalog);
    await pgs.ok(['setup', '--domain', 'other.invalid', '--yes']);
    const [renamed] = await pgs.json<Created[]>(['list']);
    assert.equal(renamed?.hostname, demo.hostname.replace('pgs.invalid', 'other.invalid'));
    assert.equal((await psql(`host=${renamed?.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=demo sslmode=require`, 'SELECT 1', demo.password)).stdout, '1');
  });

  it('a single-label domain (localhost) takes the certificate pgs makes for it', async () => {
    await pgs.ok(['setup', '--domain', 'localhost', '--yes']);
    const status = await pgs.json<Status>(['status']);
    const [tenant] = await pgs.json<Created[]>(['list']);
    const verified = await psql(`host=${tenant?.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=demo sslmode=verify-full sslrootcert=${status.certificate}`, 'SELECT 1', demo.password);
    assert.equal(verified.stdout, '1', verified.stderr);
  });

  it('disable-access: an idle session and one in the middle of a result both get FATAL 57P01 saying why', async () => {
    const connect = async () => {
      const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'demo', password: demo.password, ssl: { servername: hostname, rejectUnauthorized: false } });
      await c.connect();
      return c;
    };
    const [tenant] = await pgs.json<Created[]>(['list']);
    const hostname = tenant?.hostname ?? '';
    const idle = await connect();
    const busy = await connect();
    const idleError = new Promise<{ code?: string; message: string }>((resolve) => idle.once('error', resolve));
    idle.on('error', () => undefined); // and the close that follows
    busy.on('error', () => undefined);
    const streaming = busy.query('SELECT g, repeat(\'x\', 100) FROM generate_series(1, 3000000) g').then(() => undefined, (e: { code?: string; message: string }) => e);
    await new Promise((r) => setTimeout(r, 300));
    await pgs.ok(['disable-access', 'demo']);
    try {
      const err = await idleError;
      assert.equal(err.code, '57P01');
      assert.equal(err.message, 'access to tenant demo was disabled');
      const streamError = await streaming;
      assert.equal(streamError?.code, '57P01', 'the query in the middle of its result');
      assert.equal(streamError?.message, 'access to tenant demo was disabled');
    } finally {
      await Promise.all([idle.end().catch(() => undefined), busy.end().catch(() => undefined)]);
      await pgs.ok(['enable-access', 'demo']);
    }
  });

  it('stop and remove: open sessions get FATAL 57P01 saying which, not a bare close', async () => {
    const gone = await pgs.json<Created>(['create', 'gone']);
    const session = async () => {
      const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'gone', password: gone.password, ssl: { servername: gone.hostname, rejectUnauthorized: false } });
      await c.connect();
      const first = new Promise<{ code?: string; message: string }>((resolve) => c.once('error', resolve));
      c.on('error', () => undefined);
      return { c, first };
    };
    const a = await session();
    await pgs.ok(['stop', 'gone']);
    const stopped = await a.first;
    assert.deepEqual([stopped.code, stopped.message], ['57P01', 'tenant gone was stopped']);
    await a.c.end().catch(() => undefined);
    await pgs.ok(['start', 'gone']);
    const b = await session();
    await pgs.ok(['remove', 'gone', '--yes']);
    const removed = await b.first;
    assert.deepEqual([removed.code, removed.message], ['57P01', 'tenant gone was removed']);
    await b.c.end().catch(() => undefined);
  });

  it('start <id> wakes a suspended tenant, and says so; on a running one it says it already runs', async () => {
    assert.equal((await pgs.api('POST', '/v1/tenants/demo/suspend')).status, 200);
    assert.match(await pgs.ok(['start', 'demo']), /^Woke demo$/m);
    const [tenant] = (await pgs.json<{ id: string; state: string }[]>(['list'])).filter((t) => t.id === 'demo');
    assert.equal(tenant?.state, 'running');
    assert.match(await pgs.ok(['start', 'demo']), /^demo is already running$/m);
  });

  it('exit codes: 2 for what was typed wrong, 1 for what failed, 3 for status without a daemon', async () => {
    for (const command of ['create', 'remove', 'start', 'stop', 'enable-access', 'disable-access', 'config', 'logs', 'url', 'passwd']) {
      const badId = await pgs.run([command, 'Not_An_Id', ...(command === 'remove' ? ['--yes'] : [])]);
      assert.equal(badId.code, 2, `${command} with a bad id: ${badId.stderr}`);
      assert.match(badId.stderr, new RegExp(`^pgs ${command}: invalid tenant id "Not_An_Id"`));
      if (command !== 'create') assert.equal((await pgs.run([command, 'ghost', ...(command === 'remove' ? ['--yes'] : [])])).code, 1, `${command} of an unknown tenant`);
      assert.equal((await pgs.run([command, '--bogus'])).code, 2, `${command} --bogus`);
    }
    for (const command of ['setup', 'list', 'status', 'reload', 'doctor', 'token']) assert.equal((await pgs.run([command, '--bogus'])).code, 2, `${command} --bogus`);
    assert.match(await pgs.ok(['start', 'demo']), /demo is already running/);
    await pgs.ok(['stop']);
    assert.equal((await pgs.run(['status'])).code, 3);
    const fresh = await PgsHome.make();
    try {
      assert.equal((await fresh.run(['status'])).code, 3, 'status before setup');
    } finally {
      await fresh.destroy();
    }
  });
});
