import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { BackendMessage, PROTOCOL_3_0, PROTOCOL_3_2 } from '../../src/protocol/constants.js';
import {
  MessageReader, parseDataRow, parseErrorFields, serializeErrorResponse, serializeQuery, serializeStartup,
  serializeTerminate, type ErrorFields, type Message,
} from '../../src/protocol/messages.js';
import { Bytes } from '../helpers/bytes.js';

function readAll(reader: MessageReader): Message[] {
  const out: Message[] = [];
  for (let m = reader.next(); m !== undefined; m = reader.next()) out.push(m);
  return out;
}

function readChunks(chunks: Buffer[], maxLength?: number): Message[] {
  const reader = new MessageReader(maxLength);
  const out: Message[] = [];
  for (const chunk of chunks) {
    reader.push(chunk);
    out.push(...readAll(reader));
  }
  return out;
}

/** Copies payloads out, so that comparison does not depend on shared memory. */
function plain(messages: Message[]): { type: number; payload: number[] }[] {
  return messages.map((m) => ({ type: m.type, payload: [...m.payload] }));
}

describe('serializers produce the exact bytes', () => {
  it('StartupMessage with user and database', () => {
    const expected = new Bytes();
    const body = new Bytes().int32(0x0003_0000).cstring('user').cstring('postgres').cstring('database').cstring('acme').byte(0);
    expected.int32(4 + body.length).raw(body.buffer());
    assert.deepEqual(serializeStartup({ user: 'postgres', database: 'acme' }), expected.buffer());
  });

  it('StartupMessage with no parameters is 9 bytes', () => {
    assert.deepEqual(serializeStartup({}), Buffer.from([0, 0, 0, 9, 0, 3, 0, 0, 0]));
  });

  it('StartupMessage with protocol 3.2 and a UTF-8 value', () => {
    const body = new Bytes().int32(0x0003_0002).cstring('application_name').cstring('pgs ✓').byte(0);
    const expected = new Bytes().int32(4 + body.length).raw(body.buffer()).buffer();
    assert.deepEqual(serializeStartup({ application_name: 'pgs ✓' }, PROTOCOL_3_2), expected);
    assert.equal(PROTOCOL_3_0, 196608);
  });

  it('Query', () => {
    assert.deepEqual(serializeQuery('SELECT 1'), Buffer.from([
      0x51, 0, 0, 0, 13, 0x53, 0x45, 0x4c, 0x45, 0x43, 0x54, 0x20, 0x31, 0,
    ]));
    assert.deepEqual(serializeQuery(''), Buffer.from([0x51, 0, 0, 0, 5, 0]));
    assert.deepEqual(serializeQuery('é'), Bytes.typed('Q', new Bytes().byte(0xc3).byte(0xa9).byte(0)));
  });

  it('Terminate', () => {
    assert.deepEqual(serializeTerminate(), Buffer.from([0x58, 0, 0, 0, 4]));
  });

  it('ErrorResponse', () => {
    const expected = Bytes.typed('E', new Bytes()
      .ascii('S').cstring('FATAL')
      .ascii('C').cstring('28P01')
      .ascii('M').cstring('password authentication failed')
      .byte(0));
    assert.deepEqual(serializeErrorResponse({ S: 'FATAL', C: '28P01', M: 'password authentication failed' }), expected);
  });
});

describe('parseErrorFields', () => {
  const cases: readonly (readonly [name: string, fields: ErrorFields])[] = [
    ['no fields', {}],
    ['a typical FATAL', { S: 'FATAL', V: 'FATAL', C: '3D000', M: 'database "x" does not exist' }],
    ['detail and hint', { S: 'ERROR', C: '42601', M: 'syntax error', D: 'near "SELEC"', H: 'check the query' }],
    ['empty value and UTF-8', { S: 'NOTICE', M: '', D: 'ünïcødé ✓' }],
  ];
  for (const [name, fields] of cases) {
    it(`round-trips ${name}`, () => {
      assert.deepEqual(parseErrorFields(serializeErrorResponse(fields).subarray(5)), fields);
    });
  }

  it('round-trips any fields (property)', () => {
    const code = fc.constantFrom('S', 'V', 'C', 'M', 'D', 'H', 'P', 'p', 'q', 'W', 's', 't', 'c', 'd', 'n', 'F', 'L', 'R');
    const value = fc.string({ unit: 'grapheme' }).filter((s) => !s.includes('\0'));
    fc.assert(fc.property(fc.dictionary(code, value, { noNullPrototype: true }), (fields) => {
      assert.deepEqual(parseErrorFields(serializeErrorResponse(fields).subarray(5)), fields);
    }));
  });

  it('leaves out undefined values when serialising', () => {
    assert.deepEqual(parseErrorFields(serializeErrorResponse({ S: 'ERROR', D: undefined }).subarray(5)), { S: 'ERROR' });
  });

  it('stops at a field without its terminating zero', () => {
    const payload = new Bytes().ascii('S').cstring('ERROR').ascii('Mtruncated').buffer();
    assert.deepEqual(parseErrorFields(payload), { S: 'ERROR' });
  });
});

describe('parseDataRow', () => {
  it('reads values and NULLs', () => {
    const payload = new Bytes()
      .int16(5)
      .int32(1).ascii('1')
      .int32(-1)
      .int32(0)
      .int32(5).ascii('hello')
      .int32(-1)
      .buffer();
    assert.deepEqual(parseDataRow(payload), ['1', null, '', 'hello', null]);
  });

  it('reads zero columns', () => {
    assert.deepEqual(parseDataRow(new Bytes().int16(0).buffer()), []);
  });

  it('decodes UTF-8 by byte length', () => {
    const value = Buffer.from('✓é', 'utf8');
    const payload = new Bytes().int16(2).int32(value.length).raw(value).int32(-1).buffer();
    assert.deepEqual(parseDataRow(payload), ['✓é', null]);
  });
});

describe('MessageReader', () => {
  const stream = Buffer.concat([
    serializeErrorResponse({ S: 'ERROR', C: '42P01', M: 'relation "x" does not exist' }),
    Bytes.typed('D', new Bytes().int16(3).int32(2).ascii('42').int32(-1).int32(3).ascii('abc')),
    Bytes.typed('Z', new Bytes().ascii('I')),
    Bytes.typed('C', new Bytes().cstring('SELECT 1')),
    Bytes.typed('I', new Bytes()), // EmptyQueryResponse: no payload at all
  ]);
  const expected = [
    { type: BackendMessage.ErrorResponse, payload: [...serializeErrorResponse({ S: 'ERROR', C: '42P01', M: 'relation "x" does not exist' }).subarray(5)] },
    { type: BackendMessage.DataRow, payload: [...new Bytes().int16(3).int32(2).ascii('42').int32(-1).int32(3).ascii('abc').buffer()] },
    { type: BackendMessage.ReadyForQuery, payload: [0x49] },
    { type: BackendMessage.CommandComplete, payload: [...Buffer.from('SELECT 1\0')] },
    { type: BackendMessage.EmptyQueryResponse, payload: [] },
  ];

  it('reads a whole stream pushed at once', () => {
    const messages = readChunks([stream]);
    assert.deepEqual(plain(messages), expected);
    assert.deepEqual(parseDataRow(messages[1]?.payload ?? Buffer.alloc(0)), ['42', null, 'abc']);
    assert.equal(parseErrorFields(messages[0]?.payload ?? Buffer.alloc(0)).C, '42P01');
  });

  it('yields the same messages when the stream is cut in two at every offset', () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const messages = readChunks([stream.subarray(0, cut), stream.subarray(cut)]);
      assert.deepEqual(plain(messages), expected, `cut at ${cut}`);
    }
  });

  it('yields the same messages when fed one byte at a time', () => {
    const chunks = Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
    assert.deepEqual(plain(readChunks(chunks)), expected);
  });

  it('returns nothing until a message is complete, and keeps the rest', () => {
    const reader = new MessageReader();
    reader.push(Buffer.from([0x5a, 0, 0, 0]));
    assert.equal(reader.next(), undefined);
    reader.push(Buffer.from([5]));
    assert.equal(reader.next(), undefined, 'header complete, payload not');
    reader.push(Buffer.from([0x49, 0x58]));
    assert.deepEqual(plain(readAll(reader)), [{ type: 0x5a, payload: [0x49] }]);
    reader.push(Buffer.from([0, 0, 0, 4]));
    assert.deepEqual(plain(readAll(reader)), [{ type: 0x58, payload: [] }]);
  });

  it('any list of messages, cut into any chunks, yields the same messages (property)', () => {
    const message = fc.record({
      type: fc.integer({ min: 0, max: 255 }),
      payload: fc.uint8Array({ maxLength: 300 }),
    });
    fc.assert(fc.property(
      fc.array(message, { maxLength: 20 }),
      fc.array(fc.nat(), { maxLength: 30 }),
      (messages, rawCuts) => {
        const bytes = Buffer.concat(messages.map((m) => new Bytes().byte(m.type).int32(4 + m.payload.length).raw(Buffer.from(m.payload)).buffer()));
        const cuts = [...new Set(rawCuts.map((c) => (bytes.length === 0 ? 0 : c % (bytes.length + 1))))].sort((a, b) => a - b);
        const chunks: Buffer[] = [];
        let start = 0;
        for (const cut of [...cuts, bytes.length]) {
          chunks.push(bytes.subarray(start, cut));
          start = cut;
        }
        const got = plain(readChunks(chunks));
        assert.deepEqual(got, messages.map((m) => ({ type: m.type, payload: [...m.payload] })));
      },
    ));
  });

  describe('a length outside 4..maxLength is a RangeError', () => {
    const cases: readonly (readonly [name: string, length: number, maxLength?: number])[] = [
      ['0', 0],
      ['3', 3],
      ['negative', -1],
      ['INT32_MIN', -0x8000_0000],
      ['one over maxLength', 1001, 1000],
      ['over the default 64 MiB', 64 * 1024 * 1024 + 1],
    ];
    for (const [name, length, maxLength] of cases) {
      it(`length ${name}`, () => {
        const reader = new MessageReader(maxLength);
        reader.push(new Bytes().ascii('D').int32(length).buffer());
        assert.throws(() => reader.next(), RangeError);
      });
    }

    it('is raised as soon as the header is complete, before the payload arrives', () => {
      const reader = new MessageReader(1000);
      reader.push(new Bytes().ascii('D').int32(0x7fff_ffff).buffer());
      assert.throws(() => reader.next(), RangeError);
    });

    it('exactly 4 and exactly maxLength are accepted', () => {
      const reader = new MessageReader(10);
      reader.push(Buffer.concat([
        new Bytes().ascii('X').int32(4).buffer(),
        new Bytes().ascii('D').int32(10).ascii('abcdef').buffer(),
      ]));
      assert.deepEqual(plain(readAll(reader)), [
        { type: 0x58, payload: [] },
        { type: 0x44, payload: [...Buffer.from('abcdef')] },
      ]);
    });
  });
});
