/**
 * What a client's statements do to its session, as far as transaction
 * pooling needs to know: SET, RESET and DISCARD ALL classified into the
 * changes they make to the session's settings, and the statements that leave
 * state behind that another server session would not have (LISTEN, SQL
 * PREPARE, session advisory locks, WITH HOLD cursors, temporary tables,
 * SET ROLE), or that name a DATABASE. Pure: text in, verdicts out.
 */
import { firstWord, quoteIdent, splitStatements, type Statement, type Token } from './sql-lexer.js';

/** A change a client makes to its session's settings. `sql` sets it again on another server session. */
export type Change =
  | { kind: 'set'; name: string; sql: string }
  | { kind: 'reset'; name: string }
  | { kind: 'reset-all' }
  /** DISCARD ALL: RESET ALL, and the session's prepared statements gone. */
  | { kind: 'discard-all' };

export type SetStatement =
  /** SET, RESET, SET … TO DEFAULT, RESET ALL, DISCARD ALL, SET SESSION CHARACTERISTICS. */
  | { kind: 'change'; changes: Change[] }
  /** SET LOCAL, SET TRANSACTION, SET CONSTRAINTS, SET transaction_isolation: they end with the transaction. */
  | { kind: 'transaction' }
  /** What pooling cannot carry: SET ROLE, SET SESSION AUTHORIZATION. */
  | { kind: 'refused'; what: string }
  /** Not one of those, or one the server will refuse (its error is the answer). */
  | { kind: 'other' };

/** GUCs a SET changes for the current transaction only. */
const TRANSACTION_SETTINGS = new Set(['transaction_isolation', 'transaction_read_only', 'transaction_deferrable']);
const ROLE_SETTINGS = new Set(['role', 'session_authorization']);

/** Classifies a statement (from splitStatements) that may change the session's settings. */
export function classifySet(tokens: readonly Token[]): SetStatement {
  const word = (i: number): string | undefined => (tokens[i]?.kind === 'word' ? tokens[i]?.value : undefined);
  const change = (...changes: Change[]): SetStatement => ({ kind: 'change', changes });
  const first = word(0);
  if (first === 'discard') return tokens.length === 2 && word(1) === 'all' ? change({ kind: 'discard-all' }) : { kind: 'other' };
  if (first === 'reset') {
    if (tokens.length === 2 && word(1) === 'all') return change({ kind: 'reset-all' });
    if (tokens.length === 3 && word(1) === 'time' && word(2) === 'zone') return change({ kind: 'reset', name: 'timezone' });
    const named = nameAt(tokens, 1);
    if (!named || named.end !== tokens.length || ROLE_SETTINGS.has(named.name)) return { kind: 'other' }; // RESET ROLE: the role was never set
    return TRANSACTION_SETTINGS.has(named.name) ? { kind: 'transaction' } : change({ kind: 'reset', name: named.name });
  }
  if (first !== 'set') return { kind: 'other' };
  let at = 1;
  if (word(1) === 'local') return { kind: 'transaction' };
  if (word(1) === 'session') {
    if (word(2) === 'authorization') return { kind: 'refused', what: 'SET SESSION AUTHORIZATION' };
    if (word(2) === 'characteristics') return characteristics(tokens);
    at = 2;
  }
  const key = word(at);
  if (key === 'transaction' || key === 'constraints') return { kind: 'transaction' };
  if (key === 'role') return { kind: 'refused', what: 'SET ROLE' };
  const rest = (from: number): string => tokens.slice(from).map((t) => t.text).join(' ');
  const isDefault = (from: number): boolean => tokens.length === from + 1 && word(from) === 'default';
  if (key === 'time' && word(at + 1) === 'zone') {
    if (tokens.length <= at + 2) return { kind: 'other' };
    if (isDefault(at + 2) || (tokens.length === at + 3 && word(at + 2) === 'local')) return change({ kind: 'reset', name: 'timezone' });
    return change({ kind: 'set', name: 'timezone', sql: `SET TIME ZONE ${rest(at + 2)}` });
  }
  if (key === 'names') {
    if (tokens.length === at + 1 || isDefault(at + 1)) return change({ kind: 'reset', name: 'client_encoding' });
    return change({ kind: 'set', name: 'client_encoding', sql: `SET NAMES ${rest(at + 1)}` });
  }
  if (key === 'schema' && tokens.length === at + 2 && tokens[at + 1]?.kind === 'string') return change({ kind: 'set', name: 'search_path', sql: `SET SCHEMA ${rest(at + 1)}` });
  if (key === 'xml' && word(at + 1) === 'option' && tokens.length === at + 3) return change({ kind: 'set', name: 'xmloption', sql: `SET XML OPTION ${rest(at + 2)}` });
  const named = nameAt(tokens, at);
  if (!named) return { kind: 'other' };
  const to = tokens[named.end];
  if (!to || !((to.kind === 'word' && to.value === 'to') || (to.kind === 'op' && to.value === '=')) || tokens.length <= named.end + 1) return { kind: 'other' };
  if (ROLE_SETTINGS.has(named.name)) return { kind: 'refused', what: named.name === 'role' ? 'SET ROLE' : 'SET SESSION AUTHORIZATION' };
  if (TRANSACTION_SETTINGS.has(named.name)) return { kind: 'transaction' };
  if (isDefault(named.end + 1)) return change({ kind: 'reset', name: named.name });
  return change({ kind: 'set', name: named.name, sql: `SET ${quoteIdent(named.name)} TO ${rest(named.end + 1)}` });
}

/** A setting's name at `at` (`a`, `"A"`, `a.b`), lower-cased: GUC names are case-insensitive. */
function nameAt(tokens: readonly Token[], at: number): { name: string; end: number } | undefined {
  const parts: string[] = [];
  let i = at;
  for (;;) {
    const t = tokens[i];
    if (!t || (t.kind !== 'word' && t.kind !== 'ident')) return undefined;
    parts.push(t.value.toLowerCase());
    i++;
    if (tokens[i]?.kind !== 'op' || tokens[i]?.value !== '.') break;
    i++;
  }
  return { name: parts.join('.'), end: i };
}

/** SET SESSION CHARACTERISTICS AS TRANSACTION …: the default_transaction_* settings it stands for. */
function characteristics(tokens: readonly Token[]): SetStatement {
  const words = tokens.map((t) => (t.kind === 'word' ? t.value : t.kind === 'op' && t.value === ',' ? ',' : '\0'));
  if (words.slice(0, 5).join(' ') !== 'set session characteristics as transaction') return { kind: 'other' };
  const changes: Change[] = [];
  const set = (name: string, value: string): void => {
    changes.push({ kind: 'set', name, sql: `SET ${name} TO '${value}'` });
  };
  const levels = ['serializable', 'repeatable read', 'read committed', 'read uncommitted'];
  let i = 5;
  while (i < words.length) {
    if (words[i] === ',') {
      i++;
      continue;
    }
    const two = words.slice(i, i + 2).join(' ');
    if (two === 'isolation level') {
      const level = levels.find((l) => words.slice(i + 2, i + 2 + l.split(' ').length).join(' ') === l);
      if (!level) return { kind: 'refused', what: 'SET SESSION CHARACTERISTICS' };
      set('default_transaction_isolation', level);
      i += 2 + level.split(' ').length;
    } else if (two === 'read only' || two === 'read write') {
      set('default_transaction_read_only', two === 'read only' ? 'on' : 'off');
      i += 2;
    } else if (two === 'not deferrable') {
      set('default_transaction_deferrable', 'off');
      i += 2;
    } else if (words[i] === 'deferrable') {
      set('default_transaction_deferrable', 'on');
      i++;
    } else {
      return { kind: 'refused', what: 'SET SESSION CHARACTERISTICS' };
    }
  }
  return changes.length > 0 ? { kind: 'change', changes } : { kind: 'other' };
}

/** What the router makes of a client's statement (or statements, in a simple Query). */
export interface Inspection {
  /** Session state pooling cannot carry: the phrase for the error. */
  refusal?: string;
  /** What it changes in the session's settings, recorded once it succeeds outside a transaction block. */
  changes?: Change[];
  /** It makes the router's view of the server session wrong (DISCARD, DEALLOCATE): closed when given back. */
  taint?: boolean;
  /** It names DATABASE: the tenant's idle sessions go first. */
  database?: boolean;
}

/**
 * Looks at a query's statements (those in its first 64 KiB; the first words
 * of each, and for advisory locks the whole text). SET, RESET and DISCARD ALL
 * are tracked when they are the query's only statements.
 */
export function inspectStatements(sql: string): Inspection {
  if (ADVISORY_LOCK.test(sql)) return { refusal: 'a session advisory lock' };
  if (!sql.includes(';') && !WATCHED.has(firstWord(sql))) return {};
  const { statements, more } = splitStatements(sql);
  const found: Inspection = {};
  const changes: Change[] = [];
  let others = more ? 1 : 0;
  for (const statement of statements) {
    const first = statement.tokens[0]?.kind === 'word' ? statement.tokens[0].value : '';
    if (first === 'set' || first === 'reset' || first === 'discard') {
      const set = classifySet(statement.tokens);
      if (set.kind === 'refused') return { refusal: set.what };
      if (set.kind === 'change') {
        changes.push(...set.changes);
        if (set.changes.some((c) => c.kind === 'discard-all')) found.taint = true;
        continue;
      }
    }
    others++;
    const use = statementUse(first, statement);
    if (use === 'discard') found.taint = true;
    else if (use === 'database') found.database = true;
    else if (use !== undefined) return { refusal: use };
  }
  if (changes.length > 0) {
    if (others > 0) return { refusal: 'SET or RESET in a query with other statements (send it as a query of its own)' };
    found.changes = changes;
  }
  return found;
}

/** inspectStatements as one phrase (`discard`, `database`, a refusal), or undefined: for the tests. */
export function sessionStateUse(sql: string): string | undefined {
  const found = inspectStatements(sql);
  return found.refusal ?? (found.taint ? 'discard' : found.database ? 'database' : undefined);
}

/**
 * The quick test of session pooling, on the bytes of a Query or Parse as they
 * come (maybe only their start): does the text name DATABASE in any usual
 * case? CREATE, ALTER and DROP DATABASE fail while other sessions are
 * connected to that database, so a yes closes the tenant's idle ones first.
 */
export function mentionsDatabase(sql: Buffer): boolean {
  return sql.indexOf('DATABASE') >= 0 || sql.indexOf('database') >= 0 || sql.indexOf('Database') >= 0;
}

function statementUse(first: string, statement: Statement): string | undefined {
  const text = statement.text;
  const second = statement.tokens[1]?.kind === 'word' ? statement.tokens[1].value : '';
  switch (first) {
    case 'listen':
      return 'LISTEN';
    case 'prepare':
      return second === 'transaction' ? undefined : 'PREPARE (prepared statements of the protocol work)';
    case 'declare':
      return /\bwith\s+hold\b/i.test(text) ? 'a cursor WITH HOLD' : undefined;
    case 'create':
      if (/^create\s+(global\s+|local\s+)?(temp|temporary)\s/i.test(text) && !/\bon\s+commit\s+drop\b/i.test(text)) return 'a temporary table that outlives its transaction';
      return second === 'database' ? 'database' : undefined;
    case 'drop':
    case 'alter':
      return second === 'database' ? 'database' : undefined;
    case 'discard':
    case 'deallocate':
      return 'discard';
    case 'load':
      return 'LOAD';
    default:
      return undefined;
  }
}

const ADVISORY_LOCK = /\bpg_(try_)?advisory_lock(_shared)?\s*\(/i;
/** First words of statements that inspectStatements looks at further. */
const WATCHED = new Set(['listen', 'prepare', 'declare', 'create', 'drop', 'alter', 'discard', 'deallocate', 'reset', 'load', 'set']);
