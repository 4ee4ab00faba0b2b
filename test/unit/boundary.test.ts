import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { MessageBoundaries } from '../../src/protocol/boundary.js';
import { typed } from '../../src/protocol/messages.js';

const stream = Buffer.concat([
  typed(0x54, Buffer.from('row description')),
  typed(0x44, Buffer.alloc(0)),
  typed(0x44, Buffer.alloc(300, 7)),
  typed(0x43, Buffer.from('SELECT 3\0')),
  typed(0x5a, Buffer.from('I')),
]);
const ends = [20, 25, 330, 344, 350];

describe('MessageBoundaries', () => {
  it('the stream cut at every offset: between two messages exactly at their ends', () => {
    assert.equal(stream.length, 350);
    for (let cut = 0; cut <= stream.length; cut++) {
      const b = new MessageBoundaries();
      assert.equal(b.consume(stream.subarray(0, cut)), cut);
      assert.equal(b.atBoundary, cut === 0 || ends.includes(cut), `cut at ${cut}`);
      b.consume(stream.subarray(cut));
      assert.ok(b.atBoundary);
    }
  });

  it('stopAtBoundary stops at the first end after the start, or at once when between messages', () => {
    for (let cut = 1; cut < stream.length; cut++) {
      const b = new MessageBoundaries();
      b.consume(stream.subarray(0, cut));
      const taken = b.consume(stream.subarray(cut), true);
      const next = b.atBoundary ? cut + taken : -1;
      if (ends.includes(cut)) assert.equal(taken, 0);
      else assert.equal(next, ends.find((e) => e > cut), `from ${cut}`);
    }
  });

  it('any split into chunks gives the same boundaries (property)', () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: 60 }), { maxLength: 30 }), (sizes) => {
      const b = new MessageBoundaries();
      let at = 0;
      for (const size of sizes) {
        const chunk = stream.subarray(at, Math.min(stream.length, at + size));
        b.consume(chunk);
        at += chunk.length;
        if (b.atBoundary !== (at === 0 || ends.includes(at))) return false;
      }
      return true;
    }));
  });

  it('an impossible length marks the stream broken', () => {
    const b = new MessageBoundaries();
    b.consume(Buffer.from([0x44, 0, 0, 0, 2]));
    assert.equal(b.broken, true);
  });
});
