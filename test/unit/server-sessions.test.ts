import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { typed } from '../../src/protocol/messages.js';
import { SessionState, clientSettings, escapeLiteral, sameServer } from '../../src/router/server-sessions.js';

const msg = (type: string, payload: Buffer | string = Buffer.alloc(0)) => typed(type.charCodeAt(0), Buffer.isBuffer(payload) ? payload : Buffer.from(payload));
const ready = (status: string) => msg('Z', status);
const param = (name: string, value: string) => msg('S', `${name}\0${value}\0`);

describe('clientSettings', () => {
  it('keeps what a start-up packet sets, without the role and database', () => {
    const got = clientSettings(new Map([['user', 'u'], ['database', 'd'], ['application_name', 'app'], ['DateStyle', 'ISO']]));
    assert.deepEqual([...(got ?? [])], [['application_name', 'app'], ['DateStyle', 'ISO']]);
  });
  it('reads -c name=value, -cname=value and --name=value from options, dashes in names as underscores', () => {
    const got = clientSettings(new Map([['options', '-c search_path=a,b -cwork_mem=4MB --statement-timeout=3s']]));
    assert.deepEqual([...(got ?? [])], [['search_path', 'a,b'], ['work_mem', '4MB'], ['statement_timeout', '3s']]);
  });
  it('gives up where a kept session cannot reproduce the start-up', () => {
    assert.equal(clientSettings(new Map([['replication', 'database']])), undefined);
    assert.equal(clientSettings(new Map([['_pq_.something', '1']])), undefined);
    assert.equal(clientSettings(new Map([['options', '-B 100']])), undefined);
    assert.equal(clientSettings(new Map([['options', '-c']])), undefined);
  });
});

describe('escapeLiteral', () => {
  it('doubles quotes and backslashes inside E\'\'', () => {
    assert.equal(escapeLiteral("it's a\\b"), "E'it''s a\\\\b'");
  });
});

describe('sameServer', () => {
  const remote = { kind: 'remote' as const, host: 'db.example', port: 5432, servername: 'db.example', ca: Buffer.alloc(0), user: 'owner', password: 'x' };
  it('compares sockets by path and servers on the network by host, port and name, not by login', () => {
    assert.equal(sameServer('/run/a/.s.PGSQL.5432', '/run/a/.s.PGSQL.5432'), true);
    assert.equal(sameServer('/run/a/.s.PGSQL.5432', '/run/b/.s.PGSQL.5432'), false);
    assert.equal(sameServer(remote, { ...remote, user: 'other', database: 'elsewhere' }), true);
    assert.equal(sameServer(remote, { ...remote, port: 5433 }), false);
    assert.equal(sameServer(remote, { ...remote, servername: 'replica.example' }), false);
    assert.equal(sameServer(remote, '/run/a/.s.PGSQL.5432'), false);
  });
});

describe('SessionState', () => {
  it('a client that ended after its last query was answered is reusable; Terminate is not forwarded', () => {
    const params = new Map<string, string>();
    const state = new SessionState(params);
    const query = msg('Q', 'SELECT 1\0');
    const both = Buffer.concat([query, msg('X')]);
    assert.equal(state.fromClient(both), query.length, 'everything before the Terminate goes on');
    assert.equal(state.terminated, true);
    assert.equal(state.reusable, false, 'the query is not answered yet');
    state.fromServer(Buffer.concat([msg('T', Buffer.alloc(6)), msg('D', Buffer.alloc(6)), msg('C', 'SELECT 1\0'), ready('I')]));
    assert.equal(state.reusable, true);
    assert.equal(state.status, 0x49);
  });

  it('tracks the transaction status and the server\'s parameter reports, even cut anywhere', () => {
    const params = new Map([['application_name', 'old']]);
    const state = new SessionState(params);
    state.fromClient(msg('Q', 'BEGIN\0'));
    const stream = Buffer.concat([msg('C', 'BEGIN\0'), param('application_name', 'new'), ready('T')]);
    for (let i = 0; i < stream.length; i++) state.fromServer(stream.subarray(i, i + 1)); // a byte at a time
    assert.equal(params.get('application_name'), 'new');
    assert.equal(state.status, 0x54);
    assert.equal(state.reusable, true, 'in a transaction, but between exchanges: it is rolled back before reuse');
  });

  it('extended-protocol messages without their Sync make a session not reusable', () => {
    const state = new SessionState(new Map());
    state.fromClient(Buffer.concat([msg('P', '\0SELECT 1\0\0\0'), msg('B', Buffer.alloc(8)), msg('E', Buffer.alloc(5))]));
    assert.equal(state.reusable, false);
    state.fromClient(msg('S'));
    state.fromServer(Buffer.concat([msg('1'), msg('2'), msg('C', 'SELECT 1\0'), ready('I')]));
    assert.equal(state.reusable, true);
  });

  it('a client stream cut inside a message is not reusable', () => {
    const state = new SessionState(new Map());
    const query = msg('Q', 'SELECT 1\0');
    state.fromClient(query.subarray(0, 7));
    assert.equal(state.reusable, false);
  });

  it('a Terminate whose header was split across chunks breaks the stream rather than reach the server whole', () => {
    const state = new SessionState(new Map());
    const terminate = msg('X');
    assert.equal(state.fromClient(terminate.subarray(0, 2)), 2);
    assert.equal(state.fromClient(terminate.subarray(2)), 0);
    assert.equal(state.terminated, true);
    assert.equal(state.reusable, false);
  });

  it('a statement that names DATABASE is announced before it is forwarded (idle kept sessions would block it)', () => {
    const state = new SessionState(new Map());
    let told = 0;
    state.onDatabaseStatement = () => { told++; };
    state.fromClient(msg('Q', 'SELECT 1\0'));
    assert.equal(told, 0);
    state.fromClient(msg('Q', 'CREATE DATABASE copy TEMPLATE shop\0'));
    state.fromClient(msg('P', '\0drop database x\0\0\0'));
    assert.equal(told, 2);
  });
});
