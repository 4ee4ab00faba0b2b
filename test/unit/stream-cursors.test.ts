import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { typed } from '../../src/protocol/messages.js';
import { keepParameterStatus } from '../../src/router/sessions/parameter-status.js';
import { ClientCursor, ServerCursor } from '../../src/router/sessions/stream-cursors.js';

const msg = (type: string, payload: Buffer | string = Buffer.alloc(0)) => typed(type.charCodeAt(0), Buffer.isBuffer(payload) ? payload : Buffer.from(payload));

describe('keepParameterStatus', () => {
  it('reads name NUL value NUL; a payload without a name changes nothing', () => {
    const params = new Map<string, string>();
    keepParameterStatus(params, Buffer.from('TimeZone\0UTC\0'));
    keepParameterStatus(params, Buffer.from('application_name\0no end'));
    keepParameterStatus(params, Buffer.from('\0x\0'));
    keepParameterStatus(params, Buffer.from('no nul'));
    assert.deepEqual([...params], [['TimeZone', 'UTC'], ['application_name', 'no end']]);
  });
});

describe('ServerCursor', () => {
  const messages = [
    msg('S', 'DateStyle\0ISO, MDY\0'),
    msg('C', 'SET\0'),
    msg('Z', 'T'),
    msg('D', Buffer.alloc(300, 7)),
    msg('S', 'search_path\0a, b\0'),
    msg('Z', 'I'),
  ];
  const stream = Buffer.concat(messages);
  const boundaries = messages.reduce((ends, m) => [...ends, (ends.at(-1) as number) + m.length], [0]);

  it('reports each ReadyForQuery status and every ParameterStatus, the stream cut at every offset', () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const params = new Map<string, string>();
      const statuses: number[] = [];
      const cursor = new ServerCursor(params, (s) => statuses.push(s));
      cursor.walk(stream.subarray(0, cut));
      assert.equal(cursor.atBoundary, boundaries.includes(cut), `at ${cut}`);
      cursor.walk(stream.subarray(cut));
      assert.deepEqual(statuses, [0x54, 0x49], `cut at ${cut}`);
      assert.deepEqual([...params], [['DateStyle', 'ISO, MDY'], ['search_path', 'a, b']], `cut at ${cut}`);
      assert.equal(cursor.atBoundary, true);
      assert.equal(cursor.broken, false);
    }
  });

  it('a ReadyForQuery without its status byte counts as idle', () => {
    const statuses: number[] = [];
    new ServerCursor(new Map(), (s) => statuses.push(s)).walk(Buffer.from([0x5a, 0, 0, 0, 4]));
    assert.deepEqual(statuses, [0x49]);
  });

  it('a length under 4 breaks the stream, which is read no further', () => {
    const statuses: number[] = [];
    const cursor = new ServerCursor(new Map(), (s) => statuses.push(s));
    cursor.walk(Buffer.from([0x43, 0, 0, 0, 3]));
    cursor.walk(msg('Z', 'I'));
    assert.equal(cursor.broken, true);
    assert.deepEqual(statuses, []);
  });
});

describe('ClientCursor', () => {
  it('tells each message type at its header, byte by byte as well as whole', () => {
    const stream = Buffer.concat([msg('Q', 'SELECT 1\0'), msg('P', '\0SELECT 2\0\0\0'), msg('S')]);
    for (const step of [stream.length, 1]) {
      const types: string[] = [];
      const sql: string[] = [];
      const cursor = new ClientCursor((part) => sql.push(part.toString()));
      for (let at = 0; at < stream.length; at += step) {
        assert.equal(cursor.walk(stream.subarray(at, at + step), (t) => (types.push(String.fromCharCode(t)), true)), Math.min(step, stream.length - at));
      }
      assert.deepEqual(types, ['Q', 'P', 'S']);
      assert.equal(cursor.atBoundary, true);
      // Only the part in the chunk the header ends in: all of it, or none when the header ends the chunk.
      assert.deepEqual(sql, step === 1 ? ['', ''] : ['SELECT 1\0', '\0SELECT 2\0\0\0']);
    }
  });

  it('stops at the start of a message it is told to stop at', () => {
    const query = msg('Q', 'SELECT 1\0');
    const cursor = new ClientCursor(() => undefined);
    const stop = cursor.walk(Buffer.concat([query, msg('X'), msg('Q', 'x\0')]), (t) => t !== 0x58);
    assert.equal(stop, query.length);
    assert.equal(cursor.broken, false);
  });

  it('a length under 4 breaks the stream and takes the whole chunk', () => {
    const cursor = new ClientCursor(() => undefined);
    assert.equal(cursor.walk(Buffer.from([0x51, 0, 0, 0, 2, 9, 9]), () => true), 7);
    assert.equal(cursor.broken, true);
  });
});
