import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { refusalBytes, sqlstateOf, type RefusalReason } from '../../src/protocol/refusals.js';
import {
  decodeFirstPacket, encodeStartup, takeEndpointOption, TLS_HANDSHAKE_BYTE, type FirstPacket,
} from '../../src/protocol/startup.js';
import { Bytes } from '../helpers/bytes.js';

// Codes from the protocol docs (major.minor packed as major << 16 | minor).
const SSL_REQUEST = 80877103; // 1234.5679
const GSSENC_REQUEST = 80877104; // 1234.5680
const CANCEL_REQUEST = 80877102; // 1234.5678
const V3_0 = 196608; // 3.0
const V3_2 = 196610; // 3.2

function params(entries: [string, string][]): Bytes {
  const body = new Bytes();
  for (const [key, value] of entries) body.cstring(key).cstring(value);
  return body.byte(0);
}

function cancel(pid: number, secret: Buffer): Buffer {
  return Bytes.packet(CANCEL_REQUEST, new Bytes().int32(pid).raw(secret));
}

function secretOf(length: number): Buffer {
  return Buffer.from(Array.from({ length }, (_, i) => (i * 37 + 11) & 0xff));
}

const startupEntries: [string, string][] = [
  ['user', 'postgres'],
  ['database', 'acme'],
  ['options', '-c search_path=app endpoint=acme-abc123'],
  ['application_name', 'pgs ✓ test'],
];

interface Valid {
  name: string;
  bytes: Buffer;
  expected: FirstPacket;
}

const valid: Valid[] = [
  { name: 'SSLRequest', bytes: Bytes.packet(SSL_REQUEST), expected: { kind: 'ssl' } },
  { name: 'GSSENCRequest', bytes: Bytes.packet(GSSENC_REQUEST), expected: { kind: 'gssenc' } },
  {
    name: 'CancelRequest 3.0 (4-byte secret)',
    bytes: cancel(4242, Buffer.from([0xde, 0xad, 0xbe, 0xef])),
    expected: { kind: 'cancel', pid: 4242, secret: Buffer.from([0xde, 0xad, 0xbe, 0xef]) },
  },
  {
    name: 'CancelRequest 3.2 (32-byte secret)',
    bytes: cancel(0x7fff_fffe, secretOf(32)),
    expected: { kind: 'cancel', pid: 0x7fff_fffe, secret: secretOf(32) },
  },
  {
    name: 'CancelRequest 3.2 (256-byte secret, the maximum)',
    bytes: cancel(1, secretOf(256)),
    expected: { kind: 'cancel', pid: 1, secret: secretOf(256) },
  },
  {
    name: 'StartupMessage 3.0',
    bytes: Bytes.packet(V3_0, params(startupEntries)),
    expected: { kind: 'startup', version: V3_0, params: new Map(startupEntries) },
  },
  {
    name: 'StartupMessage 3.2',
    bytes: Bytes.packet(V3_2, params(startupEntries)),
    expected: { kind: 'startup', version: V3_2, params: new Map(startupEntries) },
  },
  {
    name: 'StartupMessage 3.0 with only a user, an empty value allowed elsewhere',
    bytes: Bytes.packet(V3_0, params([['user', 'u'], ['database', '']])),
    expected: { kind: 'startup', version: V3_0, params: new Map([['user', 'u'], ['database', '']]) },
  },
];

/** Packets whose length field is in range and fully present, but whose content is refused. */
const invalidWhole: { name: string; bytes: Buffer }[] = [
  { name: 'SSLRequest with a body', bytes: Bytes.packet(SSL_REQUEST, new Bytes().int32(0)) },
  { name: 'GSSENCRequest with a body', bytes: Bytes.packet(GSSENC_REQUEST, new Bytes().byte(0)) },
  { name: 'CancelRequest without a secret', bytes: Bytes.packet(CANCEL_REQUEST) },
  { name: 'CancelRequest with a 3-byte secret', bytes: cancel(1, secretOf(3)) },
  { name: 'CancelRequest with a 257-byte secret', bytes: cancel(1, secretOf(257)) },
  { name: 'protocol 2.0', bytes: Bytes.packet((2 << 16) | 0, params([['user', 'u']])) },
  { name: 'protocol 4.0', bytes: Bytes.packet((4 << 16) | 0, params([['user', 'u']])) },
  // 1234.5678 itself is the CancelRequest code; 1234.5681 is the next unassigned one.
  { name: 'protocol 1234.5681', bytes: Bytes.packet((1234 << 16) | 5681, params([['user', 'u']])) },
  { name: 'a negative code', bytes: Bytes.packet(-1, params([['user', 'u']])) },
  { name: 'no terminating zero', bytes: Bytes.packet(V3_0, new Bytes().cstring('user').cstring('u')) },
  { name: 'no parameters and no terminator', bytes: Bytes.packet(V3_0) },
  { name: 'no user', bytes: Bytes.packet(V3_0, params([['database', 'acme']])) },
  { name: 'no parameters at all', bytes: Bytes.packet(V3_0, new Bytes().byte(0)) },
  { name: 'an empty user', bytes: Bytes.packet(V3_0, params([['user', ''], ['database', 'acme']])) },
  { name: 'bytes after the terminating zero', bytes: Bytes.packet(V3_0, params([['user', 'u']]).byte(0x41)) },
  { name: 'a zero and more after the terminating zero', bytes: Bytes.packet(V3_0, params([['user', 'u']]).byte(0).byte(0)) },
  { name: 'a key without a value', bytes: Bytes.packet(V3_0, new Bytes().cstring('user').cstring('u').raw(Buffer.from('database'))) },
  { name: 'a value without its terminator', bytes: Bytes.packet(V3_0, new Bytes().cstring('user').cstring('u').cstring('database').raw(Buffer.from('acme'))) },
];

function prefixes(bytes: Buffer): Buffer[] {
  return Array.from({ length: bytes.length }, (_, cut) => bytes.subarray(0, cut));
}

describe('decodeFirstPacket: the table of valid first packets', () => {
  for (const { name, bytes, expected } of valid) {
    it(`${name} decodes whole, with length = packet length`, () => {
      assert.deepEqual(decodeFirstPacket(bytes), { packet: expected, length: bytes.length });
    });

    it(`${name}: every proper prefix needs more bytes`, () => {
      for (const prefix of prefixes(bytes)) {
        assert.equal(decodeFirstPacket(prefix), undefined, `cut at ${prefix.length} of ${bytes.length}`);
      }
    });

    it(`${name}: bytes after the packet are not consumed`, () => {
      for (const extra of [Buffer.from([0]), Buffer.from([TLS_HANDSHAKE_BYTE, 3, 1]), Bytes.packet(SSL_REQUEST), Buffer.alloc(20_000, 0x41)]) {
        assert.deepEqual(decodeFirstPacket(Buffer.concat([bytes, extra])), { packet: expected, length: bytes.length });
      }
    });

    it(`${name}: the decoded packet does not alias the input`, () => {
      const copy = Buffer.from(bytes);
      const decoded = decodeFirstPacket(copy);
      copy.fill(0xff);
      assert.deepEqual(decoded, { packet: expected, length: bytes.length });
    });
  }

  it('a TLS record first (0x16) is direct TLS: nothing consumed, whatever follows', () => {
    assert.equal(TLS_HANDSHAKE_BYTE, 0x16);
    const clientHelloStart = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);
    assert.equal(decodeFirstPacket(Buffer.alloc(0)), undefined);
    for (let cut = 1; cut <= clientHelloStart.length; cut++) {
      assert.deepEqual(decodeFirstPacket(clientHelloStart.subarray(0, cut)), { packet: { kind: 'tls' }, length: 0 }, `cut at ${cut}`);
    }
  });

  it('the StartupMessage keeps parameter order and UTF-8', () => {
    const decoded = decodeFirstPacket(Bytes.packet(V3_2, params(startupEntries)));
    assert.ok(decoded && decoded.packet.kind === 'startup');
    assert.deepEqual([...decoded.packet.params.entries()], startupEntries);
  });
});

describe('decodeFirstPacket: invalid first packets', () => {
  it('a length under 8 is refused as soon as the length is in, whatever follows', () => {
    for (const length of [0, 1, 4, 7, -1, -8, -2_147_483_648]) {
      const bytes = new Bytes().int32(length).int32(V3_0).buffer();
      for (const cut of [4, 5, 8]) {
        const decoded = decodeFirstPacket(bytes.subarray(0, cut));
        assert.equal(decoded?.packet.kind, 'invalid', `length ${length}, cut ${cut}`);
        assert.equal(decoded.length, 0);
      }
      for (const cut of [1, 2, 3]) assert.equal(decodeFirstPacket(bytes.subarray(0, cut)), undefined);
    }
  });

  it('a length over 10,000 is refused before its body arrives', () => {
    for (const length of [10_001, 10_008, 65_536, 0x7fff_ffff]) {
      const header = new Bytes().int32(length).int32(V3_0).buffer();
      assert.equal(decodeFirstPacket(header.subarray(0, 3)), undefined);
      assert.deepEqual(decodeFirstPacket(header.subarray(0, 4))?.length, 0);
      assert.equal(decodeFirstPacket(header)?.packet.kind, 'invalid', `length ${length}`);
    }
  });

  it('lengths 8 and 10,000 are the bounds that are let in', () => {
    assert.deepEqual(decodeFirstPacket(Bytes.packet(SSL_REQUEST)), { packet: { kind: 'ssl' }, length: 8 });
    const user = 'u'.repeat(10_000 - 8 - 'user\0'.length - 2);
    const biggest = Bytes.packet(V3_0, params([['user', user]]));
    assert.equal(biggest.length, 10_000);
    assert.deepEqual(decodeFirstPacket(biggest), { packet: { kind: 'startup', version: V3_0, params: new Map([['user', user]]) }, length: 10_000 });
    const tooBig = Bytes.packet(V3_0, params([['user', `${user}u`]]));
    assert.equal(tooBig.length, 10_001);
    assert.equal(decodeFirstPacket(tooBig)?.packet.kind, 'invalid');
  });

  for (const { name, bytes } of invalidWhole) {
    it(`${name}: invalid once whole, undefined before`, () => {
      const decoded = decodeFirstPacket(bytes);
      assert.equal(decoded?.packet.kind, 'invalid', JSON.stringify(decoded));
      assert.equal(decoded.length, bytes.length);
      for (const prefix of prefixes(bytes)) {
        assert.equal(decodeFirstPacket(prefix), undefined, `cut at ${prefix.length} of ${bytes.length}`);
      }
      assert.equal(decodeFirstPacket(Buffer.concat([bytes, Buffer.from([0, 0, 0])]))?.packet.kind, 'invalid');
    });
  }

  it('CancelRequest secrets of 4 to 256 bytes are accepted, 3 and 257 are not', () => {
    for (const size of [0, 1, 2, 3, 4, 5, 31, 32, 33, 255, 256, 257, 258, 1000]) {
      const decoded = decodeFirstPacket(cancel(77, secretOf(size)));
      assert.equal(decoded?.packet.kind, size >= 4 && size <= 256 ? 'cancel' : 'invalid', `secret of ${size} bytes`);
    }
  });
});

describe('encodeStartup', () => {
  it('builds the same bytes as the protocol docs', () => {
    assert.deepEqual(encodeStartup(V3_0, new Map(startupEntries)), Bytes.packet(V3_0, params(startupEntries)));
    assert.deepEqual(encodeStartup(V3_2, new Map([['user', 'ü']])), Bytes.packet(V3_2, params([['user', 'ü']])));
  });

  it('round-trips through decodeFirstPacket for any parameters', () => {
    const noNul = (s: string): boolean => !s.includes('\0');
    const key = fc.string({ unit: 'binary', minLength: 1, maxLength: 16 }).filter((s) => noNul(s) && s !== 'user');
    const value = fc.string({ unit: 'binary', maxLength: 40 }).filter(noNul);
    const user = fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }).filter(noNul);
    const version = fc.oneof(fc.constantFrom(V3_0, V3_2), fc.integer({ min: 0, max: 0xffff }).map((minor) => (3 << 16) | minor));
    const entries = fc.uniqueArray(fc.tuple(key, value), { maxLength: 12, selector: ([k]) => k });
    fc.assert(fc.property(version, user, entries, fc.nat(), (v, u, rest, at) => {
      const list: [string, string][] = [...rest];
      list.splice(at % (list.length + 1), 0, ['user', u]);
      const map = new Map(list);
      const bytes = encodeStartup(v, map);
      assert.deepEqual(bytes, Bytes.packet(v, params(list)));
      const decoded = decodeFirstPacket(bytes);
      assert.ok(decoded?.packet.kind === 'startup', JSON.stringify(decoded));
      assert.equal(decoded.length, bytes.length);
      assert.equal(decoded.packet.version, v);
      assert.deepEqual([...decoded.packet.params.entries()], list);
    }), { numRuns: 300 });
  });
});

describe('decodeFirstPacket: properties over arbitrary bytes', () => {
  const KNOWN = [SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST, V3_0, V3_2];
  /** Random bytes, and random bytes behind a plausible header so that the body checks are reached too. */
  const input = fc.oneof(
    fc.uint8Array({ maxLength: 12_000 }),
    fc.tuple(
      fc.oneof(fc.integer({ min: 8, max: 10_000 }), fc.integer({ min: 0, max: 16 }), fc.integer()),
      fc.oneof(fc.constantFrom(...KNOWN), fc.integer()),
      fc.uint8Array({ maxLength: 400 }),
      fc.boolean(),
    ).map(([length, code, body, exact]) => {
      const head = new Bytes().int32(exact ? 8 + body.length : length).int32(code).buffer();
      return new Uint8Array(Buffer.concat([head, body]));
    }),
  );

  it('never throws; a result takes 0 or 8..10,000 bytes and no more than it was given', () => {
    fc.assert(fc.property(input, (array) => {
      const bytes = Buffer.from(array);
      const decoded = decodeFirstPacket(bytes);
      if (decoded === undefined) return;
      const { length, packet } = decoded;
      assert.ok(length === 0 || (length >= 8 && length <= 10_000), `length ${length}`);
      assert.ok(length <= bytes.length, `length ${length} > input ${bytes.length}`);
      if (length === 0) assert.ok(packet.kind === 'tls' || packet.kind === 'invalid', packet.kind);
      if (packet.kind === 'tls') assert.equal(bytes[0], TLS_HANDSHAKE_BYTE);
    }), { numRuns: 300 });
  });

  it('a result depends only on the bytes it took: cutting or extending after them changes nothing', () => {
    fc.assert(fc.property(input, fc.uint8Array({ maxLength: 64 }), (array, tail) => {
      const bytes = Buffer.from(array);
      const decoded = decodeFirstPacket(bytes);
      if (decoded === undefined || decoded.length === 0) return;
      assert.deepEqual(decodeFirstPacket(bytes.subarray(0, decoded.length)), decoded);
      assert.deepEqual(decodeFirstPacket(Buffer.concat([bytes, tail])), decoded);
      assert.equal(decodeFirstPacket(bytes.subarray(0, decoded.length - 1)), undefined);
    }), { numRuns: 300 });
  });
});

describe('takeEndpointOption', () => {
  const table: { options: string | undefined; endpoint: string | undefined; rest: string | undefined }[] = [
    { options: undefined, endpoint: undefined, rest: undefined },
    { options: '', endpoint: undefined, rest: undefined },
    { options: 'endpoint=acme-abc123', endpoint: 'acme-abc123', rest: undefined },
    { options: '--endpoint=x', endpoint: 'x', rest: undefined },
    { options: '-c search_path=a endpoint=x', endpoint: 'x', rest: '-c search_path=a' },
    { options: 'endpoint=x -c a=b', endpoint: 'x', rest: '-c a=b' },
    { options: '  -c a=b   endpoint=x  ', endpoint: 'x', rest: '-c a=b' },
    { options: 'a\\ b endpoint=x', endpoint: 'x', rest: 'a\\ b' },
    { options: '-c a=b\\ endpoint=x', endpoint: undefined, rest: '-c a=b\\ endpoint=x' },
    { options: '-c search_path=a', endpoint: undefined, rest: '-c search_path=a' },
    { options: '-c application_name=endpoint=x', endpoint: undefined, rest: '-c application_name=endpoint=x' },
  ];
  for (const { options, endpoint, rest } of table) {
    it(`${JSON.stringify(options)} → endpoint ${JSON.stringify(endpoint)}, rest ${JSON.stringify(rest)}`, () => {
      const taken = takeEndpointOption(options);
      assert.equal(taken.endpoint, endpoint);
      assert.equal(taken.rest, rest);
    });
  }

  // libpq/PostgreSQL (pg_split_opts): a backslash escapes the next character, so "\\" is a
  // literal backslash and the space after it separates. The look-behind split does not see that.
  it('an escaped backslash before a space does not escape the space', () => {
    const taken = takeEndpointOption('-c a=b\\\\ endpoint=x');
    assert.equal(taken.endpoint, 'x');
    assert.equal(taken.rest, '-c a=b\\\\');
  });

  // pg_split_opts separates on isspace(): a tab or a newline ends a token as a space does.
  it('a tab separates tokens as a space does', () => {
    const taken = takeEndpointOption('-c a=b\tendpoint=x');
    assert.equal(taken.endpoint, 'x');
    assert.equal(taken.rest, '-c a=b');
  });
});

describe('refusalBytes and sqlstateOf', () => {
  const reasons: RefusalReason[] = [
    'tls_required', 'protocol_violation', 'unknown_host', 'no_host', 'host_mismatch', 'access_disabled', 'address_not_allowed',
    'reserved_role', 'too_many_connections', 'tenant_unavailable', 'startup_timeout', 'shutting_down',
  ];

  /** ErrorResponse: 'E', Int32 length counting itself, (field byte, C string)*, 0. Parsed strictly. */
  function parseError(bytes: Buffer): [string, string][] {
    assert.equal(bytes[0], 0x45, 'type E');
    assert.equal(bytes.readInt32BE(1), bytes.length - 1, 'length field');
    assert.equal(bytes[bytes.length - 1], 0, 'terminator');
    const fields: [string, string][] = [];
    let offset = 5;
    while (bytes[offset] !== 0) {
      const end = bytes.indexOf(0, offset + 1);
      assert.ok(end > 0 && end < bytes.length - 1, 'field terminated before the final zero');
      fields.push([String.fromCharCode(bytes[offset] as number), bytes.toString('utf8', offset + 1, end)]);
      offset = end + 1;
    }
    assert.equal(offset, bytes.length - 1, 'nothing after the final zero');
    return fields;
  }

  it('the SQLSTATEs the design names', () => {
    assert.equal(sqlstateOf('too_many_connections'), '53300');
    assert.equal(sqlstateOf('tenant_unavailable'), '57P03');
    assert.equal(sqlstateOf('tls_required'), '28000');
    assert.equal(sqlstateOf('protocol_violation'), '08P01');
  });

  for (const reason of reasons) {
    it(`${reason}: a FATAL ErrorResponse with a 5-character SQLSTATE`, () => {
      const sqlstate = sqlstateOf(reason);
      assert.match(sqlstate, /^[0-9A-Z]{5}$/);
      const fields = parseError(refusalBytes({ reason, message: `refused: ${reason} ✓` }));
      assert.deepEqual(new Map(fields), new Map([['S', 'FATAL'], ['V', 'FATAL'], ['C', sqlstate], ['M', `refused: ${reason} ✓`]]));
      assert.equal(fields.length, 4);
      const hinted = new Map(parseError(refusalBytes({ reason, message: 'm', hint: 'try pgs list' })));
      assert.equal(hinted.get('H'), 'try pgs list');
      assert.equal(hinted.get('C'), sqlstate);
      assert.equal(hinted.size, 5);
    });
  }

  it('every message round-trips, whatever it says', () => {
    const text = fc.string({ unit: 'binary', maxLength: 200 }).filter((s) => !s.includes('\0'));
    fc.assert(fc.property(fc.constantFrom(...reasons), text, fc.option(text, { nil: undefined }), (reason, message, hint) => {
      const fields = new Map(parseError(refusalBytes(hint === undefined ? { reason, message } : { reason, message, hint })));
      assert.equal(fields.get('M'), message);
      assert.equal(fields.get('H'), hint);
      assert.equal(fields.get('S'), 'FATAL');
    }), { numRuns: 200 });
  });
});
