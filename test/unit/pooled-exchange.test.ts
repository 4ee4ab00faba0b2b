import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Backend, Frontend, TxStatus } from '../../src/protocol/codes.js';
import { serializeErrorResponse, typed } from '../../src/protocol/messages.js';
import { ClientSettings } from '../../src/router/pool/client-settings.js';
import { PooledExchange, WHOLE_MAX } from '../../src/router/pool/exchange.js';
import { newPooledState, type PooledState } from '../../src/router/pool/server-state.js';

// The pooled client's state machine fed whole streams and the same streams cut
// into pieces: the bytes each side gets, and what the router keeps of the
// session, must not depend on where the cuts fall.

const cstr = (s: string): Buffer => Buffer.from(`${s}\0`);
const int16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
const int32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n, 0);
  return b;
};
const parseBody = (sql: string): Buffer => Buffer.concat([cstr(sql), int16(0)]);
const parse = (name: string, sql: string): Buffer => typed(Frontend.Parse, Buffer.concat([cstr(name), parseBody(sql)]));
const bind = (portal: string, statement: string): Buffer => typed(Frontend.Bind, Buffer.concat([cstr(portal), cstr(statement), int16(0), int16(0), int16(0)]));
const describeStatement = (name: string): Buffer => typed(Frontend.Describe, Buffer.concat([Buffer.from('S'), cstr(name)]));
const execute = (portal = ''): Buffer => typed(Frontend.Execute, Buffer.concat([cstr(portal), int32(0)]));
const closeStatement = (name: string): Buffer => typed(Frontend.Close, Buffer.concat([Buffer.from('S'), cstr(name)]));
const sync = typed(Frontend.Sync, Buffer.alloc(0));
const query = (sql: string): Buffer => typed(Frontend.Query, cstr(sql));
const terminate = typed(Frontend.Terminate, Buffer.alloc(0));

const parseComplete = typed(Backend.ParseComplete, Buffer.alloc(0));
const bindComplete = typed(Backend.BindComplete, Buffer.alloc(0));
const closeComplete = typed(Backend.CloseComplete, Buffer.alloc(0));
const noData = typed(Backend.NoData, Buffer.alloc(0));
const parameterDescription = typed(Backend.ParameterDescription, int16(0));
const dataRow = (value: string): Buffer => typed(Backend.DataRow, Buffer.concat([int16(1), int32(Buffer.byteLength(value)), Buffer.from(value)]));
const complete = (tag: string): Buffer => typed(Backend.CommandComplete, cstr(tag));
const ready = (status: number = TxStatus.Idle): Buffer => typed(Backend.ReadyForQuery, Buffer.from([status]));
const parameterStatus = (name: string, value: string): Buffer => typed(Backend.ParameterStatus, Buffer.concat([cstr(name), cstr(value)]));
const error = (code: string): Buffer => serializeErrorResponse({ S: 'ERROR', C: code, M: 'no' });
/** The router's name for a statement: pgs_ and the start of the SHA-1 of what follows the name in its Parse. */
const serverName = (sql: string): string => `pgs_${createHash('sha1').update(parseBody(sql)).digest('hex').slice(0, 24)}`;

/** One exchange: what the client sends on session `session`, and the server's answer to what the router sent on. */
interface Phase {
  session: number;
  client: Buffer;
  server: Buffer;
}

interface Outcome {
  phases: { toServer: Buffer; toClient: Buffer; status: number; idle: boolean; terminated: boolean }[];
  prepared: string[][];
  applied: [string, string][][];
  tainted: boolean[];
  key: string;
  ended: number;
  database: number;
}

type Cut = (stream: Buffer, which: string) => Buffer[];
const whole: Cut = (stream) => [stream];

function run(phases: Phase[], cut: Cut): Outcome {
  const host = {
    tenantId: 'acme',
    ended: 0,
    database: 0,
    databaseStatement(): void {
      host.database++;
    },
    transactionEnded(): void {
      host.ended++;
    },
  };
  const settings = new ClientSettings(new Map([['application_name', 'app'], ['TimeZone', 'UTC']]), new Map([['work_mem', '4MB']]));
  const exchange = new PooledExchange(host, settings);
  const states: PooledState[] = [0, 1].map(() => newPooledState(new Map([['application_name', 'app'], ['TimeZone', 'UTC']])));
  const outcome: Outcome = { phases: [], prepared: [], applied: [], tainted: [], key: '', ended: 0, database: 0 };
  let held: PooledState | undefined;
  phases.forEach((phase, n) => {
    const state = states[phase.session] as PooledState;
    if (held === undefined) exchange.attach(state);
    else assert.equal(held, state, 'a session is held until the transaction ends');
    held = state;
    const toServer: Buffer[] = [];
    const toClient: Buffer[] = [];
    for (const chunk of cut(phase.client, `client ${n}`)) {
      const bytes = exchange.fromClient(chunk);
      if (bytes) toServer.push(Buffer.from(bytes));
      const answers = exchange.takeAnswers();
      if (answers) toClient.push(Buffer.from(answers));
    }
    for (const chunk of cut(phase.server, `server ${n}`)) {
      const bytes = exchange.fromServer(chunk);
      if (bytes) toClient.push(Buffer.from(bytes));
    }
    outcome.phases.push({ toServer: Buffer.concat(toServer), toClient: Buffer.concat(toClient), status: exchange.status, idle: exchange.idle, terminated: exchange.terminated });
    if (exchange.idle) {
      settings.released(state);
      exchange.detach();
      held = undefined;
    }
  });
  outcome.prepared = states.map((s) => [...s.prepared.keys()]);
  outcome.applied = states.map((s) => [...s.applied]);
  outcome.tainted = states.map((s) => s.tainted);
  outcome.key = settings.key();
  outcome.ended = host.ended;
  outcome.database = host.database;
  return outcome;
}

const SQL = 'SELECT $1::int';
const S1 = serverName(SQL);

/** Each scenario with what the whole-stream run must give (so that a core that does nothing fails too). */
const scenarios: { name: string; phases: Phase[]; check: (o: Outcome) => void }[] = [
  {
    name: 'a named statement: prepared under the router name, found again on the same session, prepared again on another',
    phases: [
      { session: 0, client: Buffer.concat([parse('s1', SQL), bind('', 's1'), execute(), sync]), server: Buffer.concat([parseComplete, bindComplete, dataRow('1'), complete('SELECT 1'), ready()]) },
      // The session has it: the router answers the Parse itself.
      { session: 0, client: Buffer.concat([parse('s2', SQL), describeStatement('s2'), sync]), server: Buffer.concat([parameterDescription, noData, ready()]) },
      // Another session lacks it: a Parse goes ahead of the Bind, and its ParseComplete is not the client's.
      { session: 1, client: Buffer.concat([bind('', 's1'), execute(), sync]), server: Buffer.concat([parseComplete, bindComplete, dataRow('2'), complete('SELECT 1'), ready()]) },
    ],
    check: (o) => {
      const [first, second, third] = o.phases;
      assert.deepEqual(first?.toServer, Buffer.concat([parse(S1, SQL), bind('', S1), execute(), sync]));
      assert.deepEqual(first?.toClient, Buffer.concat([parseComplete, bindComplete, dataRow('1'), complete('SELECT 1'), ready()]));
      assert.deepEqual(second?.toServer, Buffer.concat([describeStatement(S1), sync]));
      assert.deepEqual(second?.toClient, Buffer.concat([parseComplete, parameterDescription, noData, ready()]));
      assert.deepEqual(third?.toServer, Buffer.concat([parse(S1, SQL), bind('', S1), execute(), sync]));
      assert.deepEqual(third?.toClient, Buffer.concat([bindComplete, dataRow('2'), complete('SELECT 1'), ready()]));
      assert.deepEqual(o.prepared, [[S1], [S1]]);
      assert.ok(o.phases.every((p) => p.idle));
      assert.equal(o.ended, 3);
    },
  },
  {
    name: 'an error skips to the Sync; the statement it would have prepared is forgotten; Close is answered by the router',
    phases: [
      { session: 0, client: Buffer.concat([parse('bad', 'SELEC 1'), bind('', 'bad'), execute(), sync]), server: Buffer.concat([error('42601'), ready()]) },
      { session: 0, client: Buffer.concat([closeStatement('bad'), sync]), server: ready() },
    ],
    check: (o) => {
      assert.deepEqual(o.phases[0]?.toClient, Buffer.concat([error('42601'), ready()]));
      assert.deepEqual(o.prepared[0], []);
      assert.deepEqual(o.phases[1]?.toServer, sync);
      assert.deepEqual(o.phases[1]?.toClient, Buffer.concat([closeComplete, ready()]));
      assert.ok(o.phases.every((p) => p.idle));
    },
  },
  {
    name: 'SET outside a block is kept, inside a block it is not; ParameterStatus changes what the client saw',
    phases: [
      { session: 0, client: query("SET statement_timeout = '5s'"), server: Buffer.concat([complete('SET'), ready()]) },
      { session: 0, client: query('BEGIN'), server: Buffer.concat([complete('BEGIN'), ready(TxStatus.InBlock)]) },
      { session: 0, client: query('SET lock_timeout = 1'), server: Buffer.concat([complete('SET'), ready(TxStatus.InBlock)]) },
      { session: 0, client: query('COMMIT'), server: Buffer.concat([complete('COMMIT'), ready()]) },
      { session: 0, client: query('SET work_mem = 1; SELECT 1'), server: Buffer.concat([error('0A000'), ready()]) },
      { session: 0, client: query("SET application_name = 'other'"), server: Buffer.concat([parameterStatus('application_name', 'other'), complete('SET'), ready()]) },
    ],
    check: (o) => {
      assert.deepEqual(o.phases[0]?.toServer, query("SET statement_timeout = '5s'"));
      assert.deepEqual(o.phases.map((p) => p.idle), [true, false, false, true, true, true]);
      assert.equal(o.phases[2]?.status, TxStatus.InBlock);
      // Set within a block: the router no longer knows the session's value, and the client does not keep it.
      assert.deepEqual(o.applied[0], [['statement_timeout', `;SET "statement_timeout" TO '5s'`], ['lock_timeout', '\0?']]);
      assert.match(o.phases[4]?.toServer.toString() ?? '', /SET or RESET in a query with other statements/);
      assert.ok(o.key.includes('other') && o.key.includes('statement_timeout') && !o.key.includes('lock_timeout'));
      assert.equal(o.ended, 4);
    },
  },
  {
    name: 'what pooling cannot carry is refused by the server itself; DATABASE statements and DISCARD are told',
    phases: [
      { session: 0, client: query('LISTEN news'), server: Buffer.concat([error('0A000'), ready()]) },
      { session: 0, client: query('DROP DATABASE old'), server: Buffer.concat([complete('DROP DATABASE'), ready()]) },
      { session: 1, client: query('DEALLOCATE ALL'), server: Buffer.concat([complete('DEALLOCATE ALL'), ready()]) },
    ],
    check: (o) => {
      const sent = o.phases[0]?.toServer.toString() ?? '';
      assert.match(sent, /^Q.*DO \$pgs\$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000'/s);
      assert.match(sent, /LISTEN is not supported with transaction pooling/);
      assert.equal(o.database, 1);
      assert.deepEqual(o.tainted, [false, true]);
    },
  },
  {
    name: 'a Terminate ends what is read',
    phases: [{ session: 0, client: Buffer.concat([terminate, query('SELECT 1')]), server: Buffer.alloc(0) }],
    check: (o) => {
      assert.deepEqual(o.phases[0]?.toServer, Buffer.alloc(0));
      assert.equal(o.phases[0]?.terminated, true);
    },
  },
];

/** The streams cut in two at every offset, one stream at a time. */
function everyCut(phases: Phase[], check: (cut: Cut, where: string) => void): void {
  phases.forEach((phase, n) => {
    for (const side of ['client', 'server'] as const) {
      const length = phase[side].length;
      for (let at = 1; at < length; at++) {
        const target = `${side} ${n}`;
        check((stream, which) => (which === target ? [stream.subarray(0, at), stream.subarray(at)] : [stream]), `${target} cut at ${at}`);
      }
    }
  });
}

/** Cuts every stream into pieces of the given sizes in turn (one counter over all the streams of a run). */
function cutBy(sizes: number[]): Cut {
  let turn = 0;
  return (stream) => {
    const parts: Buffer[] = [];
    for (let at = 0; at < stream.length;) {
      const size = sizes[turn++ % sizes.length] as number;
      parts.push(stream.subarray(at, at + size));
      at += size;
    }
    return parts;
  };
}

describe('PooledExchange: the same outcome however the streams are cut', () => {
  for (const scenario of scenarios) {
    it(scenario.name, () => {
      const expected = run(scenario.phases, whole);
      scenario.check(expected);
      everyCut(scenario.phases, (cut, where) => assert.deepEqual(run(scenario.phases, cut), expected, where));
      assert.deepEqual(run(scenario.phases, (stream) => [...stream].map((b) => Buffer.from([b]))), expected, 'byte by byte');
    });
  }

  it('any cuts of all the streams at once (property)', () => {
    const all = scenarios.flatMap((s) => [s.phases]);
    const expected = all.map((phases) => run(phases, whole));
    fc.assert(fc.property(fc.integer({ min: 0, max: all.length - 1 }), fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 20 }), (which, sizes) => {
      assert.deepEqual(run(all[which] as Phase[], cutBy(sizes)), expected[which]);
    }));
  });

  it('a query longer than is read whole: its head is looked at, the rest streams on, the same for any cuts (property)', () => {
    const long = `LISTEN news; SELECT '${'x'.repeat(WHOLE_MAX + 10)}'`;
    const phases: Phase[] = [
      { session: 0, client: query(long), server: Buffer.concat([error('0A000'), ready()]) },
      { session: 0, client: query(`SELECT '${'y'.repeat(WHOLE_MAX)}'`), server: Buffer.concat([complete('SELECT 1'), ready()]) },
    ];
    const expected = run(phases, whole);
    assert.match(expected.phases[0]?.toServer.subarray(0, 200).toString() ?? '', /DO \$pgs\$BEGIN RAISE/);
    assert.ok((expected.phases[0]?.toServer.length ?? 0) < 1000, 'the refused query does not go on');
    assert.deepEqual(expected.phases[1]?.toServer, phases[1]?.client);
    fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: 300_000 }), { minLength: 1, maxLength: 8 }), (sizes) => {
      assert.deepEqual(run(phases, cutBy(sizes)), expected);
    }), { numRuns: 30 });
  });
});
