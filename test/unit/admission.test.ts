import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { addressNetwork, plainAddress } from '../../src/core/address.js';
import { Startups, type ShedInterval } from '../../src/router/admission.js';

interface Conn { address: string; network: string; name: string }
const conn = (address: string, name = address): Conn => ({ ...Startups.source(address), name });

describe('admission of start-ups', () => {
  it('networks: /24 and /64, loopback split unless asked whole', () => {
    assert.equal(addressNetwork('127.0.1.9'), '127.0.1.0/24');
    assert.equal(addressNetwork('::ffff:127.0.0.1'), '127.0.0.0/24');
    assert.equal(addressNetwork('127.0.1.9', { loopbackWhole: true }), 'loopback');
    assert.equal(addressNetwork('2001:db8:1:2:aaaa::5'), '2001:db8:1:2::/64');
    assert.equal(addressNetwork('::1'), '0:0:0:0::/64');
    assert.equal(plainAddress('::ffff:10.1.2.3'), '10.1.2.3');
    assert.equal(plainAddress('fe80::1%eth0'), 'fe80::1');
  });

  it('an address at its limit waits its turn, in arrival order; others start at once', () => {
    const started: string[] = [];
    const s = new Startups<Conn>({ maxPending: 100, maxPerAddress: 2, onTurn: (c) => { started.push(c.name); s.add(c); } });
    const [a, b, c, d] = [conn('10.0.0.1', 'a'), conn('10.0.0.1', 'b'), conn('::ffff:10.0.0.1', 'c'), conn('10.0.0.1', 'd')];
    for (const x of [a, b]) {
      assert.equal(s.admit(x, () => assert.fail('nothing is shed')), 'start');
      s.add(x);
    }
    for (const x of [c, d]) {
      assert.equal(s.admit(x, () => assert.fail('nothing is shed')), 'wait');
      s.wait(x);
    }
    assert.equal(s.admit(conn('10.0.0.2'), () => assert.fail('nothing is shed')), 'start');
    assert.equal(s.size, 4);
    assert.equal(s.waitingCount, 2);
    s.remove(a); // logged in
    assert.deepEqual(started, ['c']);
    assert.equal(s.admit(conn('10.0.0.1', 'e'), () => assert.fail('nothing is shed')), 'wait', 'd still waits: no one overtakes it');
    s.remove(d); // gave up while waiting
    s.remove(b);
    s.remove(c);
    assert.deepEqual(started, ['c']);
    assert.equal(s.size, 0);
    assert.equal(s.admit(conn('10.0.0.1'), () => assert.fail('nothing is shed')), 'start');
    s.close();
  });

  it('all slots taken: a waiting connection is shed like any other, and a shed start-up lets the next of its address in', () => {
    const started: string[] = [];
    const s = new Startups<Conn>({ maxPending: 3, maxPerAddress: 1, onTurn: (c) => { started.push(c.name); s.add(c); } });
    const [x1, x2, x3] = [conn('10.0.1.1', 'x1'), conn('10.0.1.1', 'x2'), conn('10.0.1.1', 'x3')];
    s.add(x1);
    s.wait(x2);
    s.wait(x3);
    const shed: string[] = [];
    const real = conn('10.0.0.1', 'real');
    assert.equal(s.admit(real, (victim) => { shed.push(victim.name); s.remove(victim); }), 'start');
    s.add(real);
    assert.deepEqual(shed, ['x1'], 'the oldest of the network with the most');
    assert.deepEqual(started, ['x2'], 'the next of its address starts in its place');
    assert.equal(s.size, 3);
    s.close();
  });

  it('all slots taken: the oldest of the network with the most goes, the new one comes in', () => {
    const s = new Startups<Conn>({ maxPending: 4, maxPerAddress: 0 });
    const all = [conn('10.0.1.1', 'x1'), conn('10.0.0.1', 'real'), conn('10.0.1.2', 'x2'), conn('10.0.1.3', 'x3')];
    for (const c of all) { s.admit(c, () => assert.fail()); s.add(c); }
    const shed: string[] = [];
    const comer = conn('10.0.0.1', 'real2');
    assert.equal(s.admit(comer, (victim, network) => { shed.push(`${victim.name} ${network}`); s.remove(victim); }), 'start');
    s.add(comer);
    assert.deepEqual(shed, ['x1 10.0.1.0/24']);
    assert.equal(s.size, 4);
    assert.equal(s.fromAddress('10.0.0.1'), 2);
    s.close();
  });

  it('all slots taken and the newcomer from the network with the most: it is the one closed, nothing else is', () => {
    const s = new Startups<Conn>({ maxPending: 3, maxPerAddress: 0 });
    for (const c of [conn('10.0.1.1', 'x1'), conn('10.0.1.2', 'x2'), conn('10.0.0.1', 'real')]) { s.admit(c, () => assert.fail()); s.add(c); }
    assert.equal(s.admit(conn('10.0.1.3', 'x3'), () => assert.fail('nothing already in is shed')), 'refuse');
    assert.equal(s.size, 3);
    s.close();
  });

  it('sheds are told once per interval, then once more with none', async () => {
    const told: ShedInterval[] = [];
    const s = new Startups<Conn>({ maxPending: 1000, maxPerAddress: 1, intervalMs: 50, onInterval: (summary) => told.push(summary) });
    const first = conn('10.0.1.1');
    assert.equal(s.admit(first, () => undefined), 'start');
    s.add(first);
    for (let i = 0; i < 20; i++) {
      const waiting = conn('10.0.1.1');
      assert.equal(s.admit(waiting, () => undefined), 'wait');
      s.wait(waiting);
      s.timedOut(waiting); // waited its deadline
    }
    s.timedOut(first); // not waiting: not counted as such
    await new Promise((r) => setTimeout(r, 180));
    assert.equal(told.length, 2);
    assert.equal(told[0]?.addressLimit, 20);
    assert.deepEqual(told[0]?.networks, [{ network: '10.0.1.0/24', count: 20 }]);
    assert.deepEqual({ ...told[1], seconds: 0 }, { seconds: 0, addressLimit: 0, globalLimit: 0, networks: [], pending: 1 });
    s.close();
  });
});
