import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { typed } from '../../src/protocol/messages.js';
import { DROP, MessageScanner, Output, PASS, WHOLE, type Verdict } from '../../src/protocol/scanner.js';
import { inspectStatements, sessionStateUse, settingsSql, splitSettings } from '../../src/router/transaction-pool.js';

/** Scans `stream` cut into the given chunks; returns the output and the message types seen ending. */
function scanIn(chunks: Buffer[]): { bytes: Buffer; ended: string } {
  const ended: string[] = [];
  const scanner = new MessageScanner({
    // A: passed; B: dropped; C: read whole and replaced; D: read whole and passed as it came.
    verdict: (type): Verdict => (type === 0x41 ? PASS : type === 0x42 ? DROP : WHOLE),
    whole: (type, payload, out) => {
      if (type === 0x44) return true;
      out.push(typed(0x63, Buffer.from(payload.toString().toUpperCase())));
      return false;
    },
    ended: (type) => {
      ended.push(String.fromCharCode(type));
    },
  });
  return { bytes: run(scanner, chunks), ended: ended.join('') };
}

/** Feeds the chunks to the scanner; returns what it sends on (and checks it ends between messages). */
function run(scanner: MessageScanner, chunks: Buffer[]): Buffer {
  const out = new Output();
  const parts: Buffer[] = [];
  for (const chunk of chunks) {
    out.begin(chunk);
    scanner.scan(chunk, out);
    const bytes = out.take();
    if (bytes) parts.push(Buffer.from(bytes));
  }
  assert.ok(scanner.atBoundary);
  return Buffer.concat(parts);
}

describe('MessageScanner', () => {
  const stream = Buffer.concat([
    typed(0x41, Buffer.from('pass me')),
    typed(0x42, Buffer.from('drop me')),
    typed(0x43, Buffer.from('shout')),
    typed(0x41, Buffer.alloc(0)),
    typed(0x44, Buffer.from('as it came')),
    typed(0x42, Buffer.alloc(0)),
    typed(0x41, Buffer.alloc(3000, 0x61)),
  ]);
  const expected = Buffer.concat([
    typed(0x41, Buffer.from('pass me')),
    typed(0x63, Buffer.from('SHOUT')),
    typed(0x41, Buffer.alloc(0)),
    typed(0x44, Buffer.from('as it came')),
    typed(0x41, Buffer.alloc(3000, 0x61)),
  ]);

  it('passes, drops and rewrites messages, whole', () => {
    const { bytes, ended } = scanIn([stream]);
    assert.deepEqual(bytes, expected);
    assert.equal(ended, 'ABCADBA');
  });

  it('gives the same output however the stream is cut (every cut point, and byte by byte)', () => {
    for (let cut = 1; cut < stream.length; cut++) {
      const { bytes, ended } = scanIn([stream.subarray(0, cut), stream.subarray(cut)]);
      assert.deepEqual(bytes, expected, `cut at ${cut}`);
      assert.equal(ended, 'ABCADBA');
    }
    const single = scanIn([...stream].map((b) => Buffer.from([b])));
    assert.deepEqual(single.bytes, expected);
  });

  it('passes the rest as it is once a length is impossible', () => {
    const bad = Buffer.concat([typed(0x41, Buffer.from('ok')), Buffer.from([0x41, 0, 0, 0, 2, 9, 9])]);
    const { bytes } = scanIn([bad]);
    assert.deepEqual(bytes, bad);
  });
});

describe('MessageScanner, messages too long to hold', () => {
  // maxWhole 8, heads of 4: A is passed on as it came, B gets a new head, C is dropped after its head.
  const scan = (chunks: Buffer[]): Buffer => {
    const scanner = new MessageScanner({
      verdict: (): Verdict => WHOLE,
      whole: () => true,
      ended: () => undefined,
      head: (type, length, head, out) => {
        if (type === 0x41) return 'pass';
        if (type === 0x43) return 'drop';
        const replacement = Buffer.from(head.toString().toUpperCase() + '!');
        const header = Buffer.alloc(5);
        header[0] = type;
        header.writeInt32BE(length - head.length + replacement.length + 4, 1);
        out.push(Buffer.concat([header, replacement]));
        return 'replaced';
      },
    }, 8, 4);
    return run(scanner, chunks);
  };
  const stream = Buffer.concat([
    typed(0x41, Buffer.from('abcdefghijkl')),
    typed(0x42, Buffer.from('abcdefghijkl')),
    typed(0x43, Buffer.from('abcdefghijkl')),
    typed(0x44, Buffer.from('short')),
  ]);
  const expected = Buffer.concat([
    typed(0x41, Buffer.from('abcdefghijkl')),
    typed(0x42, Buffer.from('ABCD!efghijkl')),
    typed(0x44, Buffer.from('short')),
  ]);

  it('reads only the head of a long message; the rest follows as it came, or is dropped', () => {
    assert.deepEqual(scan([stream]), expected);
    for (let cut = 1; cut < stream.length; cut++) assert.deepEqual(scan([stream.subarray(0, cut), stream.subarray(cut)]), expected, `cut at ${cut}`);
    assert.deepEqual(scan([...stream].map((b) => Buffer.from([b]))), expected);
  });
});

describe('statements that would leave session state behind', () => {
  const cases: [string, string | undefined][] = [
    ['SELECT 1', undefined],
    ['  -- a comment\n/* another */ select pg_advisory_xact_lock(1)', undefined],
    ['SELECT pg_advisory_lock(42)', 'a session advisory lock'],
    ['select PG_TRY_ADVISORY_LOCK_SHARED (1)', 'a session advisory lock'],
    ['LISTEN news', 'LISTEN'],
    ['/* x */ listen news', 'LISTEN'],
    ['UNLISTEN *', undefined],
    ['PREPARE p AS SELECT 1', 'PREPARE (prepared statements of the protocol work)'],
    ['DECLARE c CURSOR WITH HOLD FOR SELECT 1', 'a cursor WITH HOLD'],
    ['DECLARE c CURSOR FOR SELECT 1', undefined],
    ['CREATE TEMP TABLE t (x int)', 'a temporary table that outlives its transaction'],
    ['create temporary table t (x int) on commit drop', undefined],
    ['CREATE TABLE t (x int)', undefined],
    ['SET work_mem = \'64MB\'', undefined],
    ['SET SESSION statement_timeout TO 5', undefined],
    ['SET work_mem = 1; SELECT 1', 'SET or RESET in a query with other statements (send it as a query of its own)'],
    ['SET work_mem = 1; SET extra_float_digits = 3', undefined],
    ['SELECT 1; LISTEN news', 'LISTEN'],
    ["SELECT ';'; LISTEN news", 'LISTEN'],
    ["SELECT $$; LISTEN news$$", undefined],
    ['PREPARE TRANSACTION \'x\'', undefined],
    ['SET LOCAL work_mem = \'64MB\'', undefined],
    ['SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', undefined],
    ['SET TimeZone = \'Asia/Tokyo\'', undefined],
    ['SET TIME ZONE \'UTC\'', undefined],
    ['set application_name=x', undefined],
    ['SET search_path = a', undefined],
    ['SET ROLE other', 'SET ROLE'],
    ['SET SESSION AUTHORIZATION other', 'SET SESSION AUTHORIZATION'],
    ['DISCARD ALL', 'discard'],
    ['DEALLOCATE ALL', 'discard'],
    ['RESET work_mem', undefined],
    ['RESET ALL', undefined],
    ['DISCARD PLANS', 'discard'],
    ['DROP DATABASE x', 'database'],
    ['CREATE DATABASE x', 'database'],
    ['DROP TABLE x', undefined],
  ];
  for (const [sql, expected] of cases) {
    it(`${JSON.stringify(sql)} → ${expected ?? 'nothing'}`, () => {
      assert.equal(sessionStateUse(sql), expected);
    });
  }
  it('SET, RESET and DISCARD ALL come back as changes to record', () => {
    assert.deepEqual(inspectStatements('SET work_mem = 1; RESET statement_timeout').changes, [
      { kind: 'set', name: 'work_mem', sql: 'SET "work_mem" TO 1' },
      { kind: 'reset', name: 'statement_timeout' },
    ]);
    assert.deepEqual(inspectStatements('DISCARD ALL'), { taint: true, changes: [{ kind: 'discard-all' }] });
    assert.equal(inspectStatements('SELECT 1').changes, undefined);
  });
});

describe('setting a server session as a client expects it', () => {
  it('sets what differs, sets start-up settings and SETs the session lacks, and resets ones another client left', () => {
    const server = new Map([['TimeZone', 'UTC'], ['application_name', 'other'], ['DateStyle', 'ISO, MDY'], ['server_version', '17']]);
    const applied = new Map([['work_mem', '=8MB'], ['statement_timeout', '=5s'], ['extra_float_digits', '\0?']]);
    const seen = new Map([['TimeZone', 'UTC'], ['application_name', 'mine'], ['DateStyle', 'ISO, MDY'], ['server_version', '18']]);
    const wanted = new Map<string, string | { sql: string }>([['work_mem', '16MB'], ['extra_float_digits', { sql: 'SET "extra_float_digits" TO 3' }]]);
    assert.equal(
      settingsSql(server, applied, seen, wanted),
      'RESET "statement_timeout"; SET "extra_float_digits" TO 3; SELECT pg_catalog.set_config(E\'application_name\', E\'mine\', false), pg_catalog.set_config(E\'work_mem\', E\'16MB\', false)',
    );
    const done = new Map([['work_mem', '=16MB'], ['extra_float_digits', ';SET "extra_float_digits" TO 3']]);
    assert.equal(settingsSql(server, done, new Map(server), wanted), undefined);
  });

  it('splits start-up settings into those the server reports (compared) and the rest (set each time)', () => {
    const { carried, fixed } = splitSettings(new Map([['application_name', 'a'], ['DateStyle', 'ISO'], ['search_path', 'x'], ['work_mem', '1MB']]), new Map([['application_name', ''], ['DateStyle', '']]));
    assert.deepEqual([...carried], [['application_name', 'a'], ['datestyle', 'ISO']]);
    assert.deepEqual([...fixed], [['search_path', 'x'], ['work_mem', '1MB']]);
  });
});
