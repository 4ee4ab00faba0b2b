import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { splitStatements } from '../../src/protocol/sql-lexer.js';
import { type SetStatement, classifySet } from '../../src/protocol/sql-statements.js';

const classify = (sql: string): SetStatement => {
  const { statements } = splitStatements(sql);
  assert.equal(statements.length, 1, sql);
  return classifySet((statements[0] as { tokens: Parameters<typeof classifySet>[0] }).tokens);
};
const set = (name: string, sql: string): SetStatement => ({ kind: 'change', changes: [{ kind: 'set', name, sql }] });
const reset = (name: string): SetStatement => ({ kind: 'change', changes: [{ kind: 'reset', name }] });

describe('splitting a query into statements', () => {
  it('splits at semicolons outside quotes, dollar quotes and comments', () => {
    const { statements, more } = splitStatements(`SELECT 'a;b', "x;y", E'\\';', $q$;$q$; -- c;\n/* d; /* nested; */ */ SELECT 2;;`);
    assert.deepEqual(statements.map((s) => s.text), [`SELECT 'a;b', "x;y", E'\\';', $q$;$q$`, 'SELECT 2']);
    assert.equal(more, false);
  });
  it('reads only up to its limit, and says when there is more', () => {
    const { statements, more } = splitStatements('SET a = 1; SELECT 2', 10);
    assert.equal(statements.length, 1);
    assert.equal(more, true);
  });
  it('an unterminated quote runs to the end', () => {
    assert.equal(splitStatements("SET a = 'x; SELECT 1").statements.length, 1);
  });
});

describe('SET, RESET and DISCARD ALL', () => {
  const cases: [string, SetStatement][] = [
    ["SET work_mem = '64MB'", set('work_mem', `SET "work_mem" TO '64MB'`)],
    ['set WORK_MEM to 64', set('work_mem', 'SET "work_mem" TO 64')],
    ['SET extra_float_digits = 3', set('extra_float_digits', 'SET "extra_float_digits" TO 3')],
    ['SET extra_float_digits = -15', set('extra_float_digits', 'SET "extra_float_digits" TO - 15')],
    ['SET SESSION statement_timeout TO 5000', set('statement_timeout', 'SET "statement_timeout" TO 5000')],
    ['SET "Work_Mem" = 1', set('work_mem', 'SET "work_mem" TO 1')],
    ['SET search_path = a, "B", public', set('search_path', 'SET "search_path" TO a , "B" , public')],
    ["SET search_path TO 'a b', E'c\\'d'", set('search_path', `SET "search_path" TO 'a b' , E'c\\'d'`)],
    ['SET myapp.user_id = 42', set('myapp.user_id', 'SET "myapp.user_id" TO 42')],
    ["/* lead */ SET -- note\n application_name /* x */ = 'a' -- trailing", set('application_name', `SET "application_name" TO 'a'`)],
    ["SET TIME ZONE 'Asia/Tokyo'", set('timezone', `SET TIME ZONE 'Asia/Tokyo'`)],
    ["set time zone interval '+02:00' hour to minute", set('timezone', `SET TIME ZONE interval '+02:00' hour to minute`)],
    ['SET TIME ZONE LOCAL', reset('timezone')],
    ['SET SESSION TIME ZONE DEFAULT', reset('timezone')],
    ["SET NAMES 'LATIN1'", set('client_encoding', `SET NAMES 'LATIN1'`)],
    ["SET SCHEMA 'app'", set('search_path', `SET SCHEMA 'app'`)],
    ['SET XML OPTION DOCUMENT', set('xmloption', 'SET XML OPTION DOCUMENT')],
    ['SET work_mem TO DEFAULT', reset('work_mem')],
    ['SET work_mem = default', reset('work_mem')],
    ['RESET work_mem', reset('work_mem')],
    ['reset "Work_Mem"', reset('work_mem')],
    ['RESET TIME ZONE', reset('timezone')],
    ['RESET ALL', { kind: 'change', changes: [{ kind: 'reset-all' }] }],
    ['DISCARD ALL', { kind: 'change', changes: [{ kind: 'discard-all' }] }],
    ['SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY', { kind: 'change', changes: [
      { kind: 'set', name: 'default_transaction_isolation', sql: "SET default_transaction_isolation TO 'repeatable read'" },
      { kind: 'set', name: 'default_transaction_read_only', sql: "SET default_transaction_read_only TO 'on'" },
    ] }],
    ['SET SESSION CHARACTERISTICS AS TRANSACTION NOT DEFERRABLE', set('default_transaction_deferrable', "SET default_transaction_deferrable TO 'off'")],
    ['SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL CHAOS', { kind: 'refused', what: 'SET SESSION CHARACTERISTICS' }],
    ["SET LOCAL work_mem = '64MB'", { kind: 'transaction' }],
    ['SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', { kind: 'transaction' }],
    ['SET SESSION TRANSACTION READ ONLY', { kind: 'transaction' }],
    ['SET CONSTRAINTS ALL DEFERRED', { kind: 'transaction' }],
    ['SET transaction_isolation = serializable', { kind: 'transaction' }],
    ['SET ROLE other', { kind: 'refused', what: 'SET ROLE' }],
    ['SET role = other', { kind: 'refused', what: 'SET ROLE' }],
    ['SET SESSION AUTHORIZATION other', { kind: 'refused', what: 'SET SESSION AUTHORIZATION' }],
    ["SET session_authorization TO 'other'", { kind: 'refused', what: 'SET SESSION AUTHORIZATION' }],
    ['RESET ROLE', { kind: 'other' }],
    ['DISCARD PLANS', { kind: 'other' }],
    ['SET', { kind: 'other' }],
    ['SET work_mem', { kind: 'other' }],
    ['SET work_mem =', { kind: 'other' }],
    ['SET = 3', { kind: 'other' }],
    ['SET TIME ZONE', { kind: 'other' }],
    ['RESET', { kind: 'other' }],
    ['RESET a b', { kind: 'other' }],
    ['SELECT 1', { kind: 'other' }],
  ];
  for (const [sql, expected] of cases) {
    it(`${JSON.stringify(sql)}`, () => {
      assert.deepEqual(classify(sql), expected);
    });
  }
});
