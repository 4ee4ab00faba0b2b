import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { PgsHome, processRunning, psql } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string; database: string; user: string; url: string }
interface Listed { id: string; hostname: string; access: string; state: string; pid: number | null }

describe('a tenant from create to remove, through the CLI, on real PostgreSQL 18', () => {
  let pgs: PgsHome;
  let acme: Created;
  let port: number;

  before(async () => {
    pgs = await PgsHome.make();
    port = await pgs.setup();
    acme = await pgs.json<Created>(['create', 'acme']);
  });
  after(async () => {
    await pgs.destroy();
  });

  it('create prints the contract fields and a strong password', () => {
    assert.equal(acme.id, 'acme');
    assert.match(acme.hostname, /^acme-[a-z0-9]{6}\.pgs\.localhost$/);
    assert.equal(acme.database, 'acme');
    assert.equal(acme.user, 'postgres');
    assert.ok(acme.password.length >= 24, 'generated password has at least 24 characters');
    assert.equal(acme.url, `postgresql://postgres:${acme.password}@${acme.hostname}:${port}/acme?sslmode=require`);
  });

  it('list shows the tenant running with access enabled', async () => {
    const list = await pgs.json<Listed[]>(['list']);
    assert.equal(list.length, 1);
    assert.deepEqual({ ...list[0], pid: undefined }, { ...list[0], id: 'acme', hostname: acme.hostname, access: 'enabled', state: 'running', pid: undefined });
    assert.ok(typeof list[0]?.pid === 'number');
  });

  it('the password is stored nowhere pgs writes', async () => {
    const catalog = await pgs.catalogText();
    assert.ok(!catalog.includes(acme.password));
    const log = await fs.readFile(path.join(await pgs.dataRoot(), 'logs', 'acme.log'), 'utf8');
    assert.ok(!log.includes(acme.password));
  });

  it('connects as postgres over --local, keeps rows across stop and start', async () => {
    const url = (await pgs.ok(['url', 'acme', '--local'])).trim();
    const made = await psql(url, 'CREATE TABLE notes(id int primary key, body text); INSERT INTO notes SELECT g, md5(g::text) FROM generate_series(1, 500) g', acme.password);
    assert.equal(made.code, 0, made.stderr);

    assert.match(await pgs.ok(['stop', 'acme']), /Stopped acme/);
    const stopped = await pgs.json<Listed[]>(['list']);
    assert.equal(stopped[0]?.state, 'stopped');
    const refused = await psql(url, 'SELECT 1', acme.password);
    assert.notEqual(refused.code, 0, 'a stopped server accepts no connection');

    assert.match(await pgs.ok(['start', 'acme']), /Started acme/);
    const count = await psql(url, 'SELECT count(*), sum(id) FROM notes', acme.password);
    assert.equal(count.stdout, '500|125250');
  });

  it('the node-postgres client connects with the password too', async () => {
    const url = (await pgs.ok(['url', 'acme', '--local'])).trim();
    const host = new URLSearchParams(url.split('?')[1]).get('host') ?? '';
    const client = new pg.Client({ host, port: 5432, user: 'postgres', database: 'acme', password: acme.password });
    await client.connect();
    try {
      const { rows } = await client.query<{ db: string; me: string }>('SELECT current_database() AS db, current_user AS me');
      assert.deepEqual(rows[0], { db: 'acme', me: 'postgres' });
    } finally {
      await client.end();
    }
  });

  it('disable-access and enable-access are recorded', async () => {
    assert.match(await pgs.ok(['disable-access', 'acme']), /disabled/);
    assert.equal((await pgs.json<Listed[]>(['list']))[0]?.access, 'disabled');
    assert.match(await pgs.ok(['disable-access', 'acme']), /already disabled/);
    assert.match(await pgs.ok(['enable-access', 'acme']), /enabled/);
    assert.equal((await pgs.json<Listed[]>(['list']))[0]?.access, 'enabled');
  });

  it('passwd sets a new password and the old one stops working', async () => {
    const url = `host=${acme.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=acme sslmode=require`;
    await pgs.ok(['passwd', 'acme', '--password', 'a-new-secret-1']);
    assert.equal((await psql(url, 'SELECT 1', 'a-new-secret-1')).stdout, '1');
    const old = await psql(url, 'SELECT 1', acme.password);
    assert.notEqual(old.code, 0);
    assert.match(old.stderr, /password authentication failed/);

    const generated = await pgs.json<{ id: string; password: string }>(['passwd', 'acme']);
    assert.ok(generated.password.length >= 24);
    assert.equal((await psql(url, 'SELECT 2', generated.password)).stdout, '2');
  });

  it('passwd works on a stopped tenant and leaves it stopped', async () => {
    await pgs.ok(['stop', 'acme']);
    await pgs.ok(['passwd', 'acme', '--password', 'while-stopped-9']);
    assert.equal((await pgs.json<Listed[]>(['list']))[0]?.state, 'stopped');
    await pgs.ok(['start', 'acme']);
    const url = `host=${acme.hostname} hostaddr=127.0.0.1 port=${port} user=postgres dbname=acme sslmode=require`;
    assert.equal((await psql(url, 'SELECT 3', 'while-stopped-9')).stdout, '3');
    assert.match((await psql(url, 'SELECT 3', 'a-new-secret-1')).stderr, /password authentication failed/);
  });

  it('logs shows the server log; -n limits the lines', async () => {
    const url = (await pgs.ok(['url', 'acme', '--local'])).trim();
    assert.match((await psql(url, 'SELECT 1/0', '')).stderr, /division by zero/);
    const all = await pgs.ok(['logs', 'acme']);
    assert.match(all, /database system is ready to accept connections/);
    assert.match(all, /ERROR: {2}division by zero/, 'the failed statement is logged');
    const two = await pgs.ok(['logs', 'acme', '-n', '2']);
    assert.equal(two.trimEnd().split('\n').length, 2);
    assert.deepEqual(two.trimEnd().split('\n'), all.trimEnd().split('\n').slice(-2));
    const bad = await pgs.run(['logs', 'acme', '-n', 'many']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /invalid --lines "many"/);
  });

  it('remove --yes deletes the server, its data and its catalog entry', async () => {
    const dataRoot = await pgs.dataRoot();
    const pid = (await pgs.json<Listed[]>(['list']))[0]?.pid;
    assert.ok(pid);
    assert.match(await pgs.ok(['remove', 'acme', '--yes']), /Removed tenant acme/);
    await assert.rejects(fs.access(path.join(dataRoot, 'tenants', 'acme')));
    await assert.rejects(fs.access(path.join(dataRoot, 'logs', 'acme.log')));
    assert.ok(!(await pgs.catalogText()).includes('"acme"'));
    assert.deepEqual(await pgs.json<Listed[]>(['list']), []);
    assert.equal(await processRunning(pid), false, 'the server process is gone');
  });
});
