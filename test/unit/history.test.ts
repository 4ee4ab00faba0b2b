import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { History, type HistorySample } from '../../src/telemetry/history.js';

const running = (connections: number, xacts: number, wakes = 0): HistorySample => ({ state: 'running', connections, xacts, wakes });

describe('the daemon\'s history', () => {
  it('turns transaction counts into TPS, leaves gaps while a server does not run, and keeps the last hour in a ring', () => {
    const h = new History(10_000, 4, 2, 3);
    h.record(0, new Map([['a', running(1, 100)]]));
    h.record(10_000, new Map([['a', running(2, 201)]]));
    h.record(20_000, new Map([['a', { state: 'suspended', connections: 0, wakes: 0 }]]));
    h.record(30_000, new Map([['a', running(1, 205, 1)], ['b', running(0, 50)]]));
    h.record(40_000, new Map([['a', running(1, 305)]]));
    const hour = h.series('1h');
    assert.deepEqual(hour.times, [10_000, 20_000, 30_000, 40_000]);
    // 101 more over 10 s; after a stretch without the server (or at a first sample) there is no rate.
    assert.deepEqual(hour.tenants.a?.tps, [10.1, null, null, 10]);
    assert.deepEqual(hour.tenants.a?.state, ['running', 'suspended', 'running', 'running']);
    assert.deepEqual(hour.tenants.a?.connections, [2, 0, 1, 1]);
    assert.deepEqual(hour.tenants.a?.wakes, [0, 0, 1, 0]);
    assert.deepEqual(hour.host.wakes, [0, 0, 1, 0]);
    // b appeared later and was not sampled at 40 s: no point there.
    assert.deepEqual(hour.tenants.b?.connections, [null, null, 0, null]);
    assert.deepEqual(Object.keys(h.series('1h', ['b']).tenants), ['b']);
    // The day: a point per 2 samples, averaged (TPS over the samples that had one).
    const day = h.series('1d');
    assert.deepEqual(day.times, [10_000, 30_000]);
    assert.equal(day.intervalSeconds, 20);
    assert.deepEqual(day.tenants.a?.connections, [1.5, 0.5]);
    assert.deepEqual(day.tenants.a?.tps, [10.1, null]);
    // All tenants together, and only the series asked for.
    assert.deepEqual(hour.host.running, [1, 0, 2, 1]);
    assert.deepEqual(hour.host.connections, [2, 0, 1, 1]);
    assert.deepEqual(hour.host.tps, [10.1, 0, 0, 10]);
    assert.deepEqual(Object.keys(h.series('1h', ['a'], ['tps']).tenants.a ?? {}), ['tps']);
    h.forget('a');
    assert.equal(h.series('1h').tenants.a, undefined);
  });
});
