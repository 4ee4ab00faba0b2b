/**
 * Session settings under transaction pooling, the pure part: a lexer that
 * splits a query's text into statements (quotes, dollar quotes and comments
 * respected), and a classifier of SET, RESET and DISCARD ALL statements into
 * the changes a client makes to its session's settings.
 */

export interface Token {
  kind: 'word' | 'ident' | 'string' | 'number' | 'op';
  /** The token as written. */
  text: string;
  /** Words lower-cased, quoted identifiers unquoted; otherwise the text. */
  value: string;
}

export interface Statement {
  tokens: Token[];
  /** Its text as written (comments included). */
  text: string;
}

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

const WORD = /[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*/y;
const NUMBER = /(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?|0[xXoObB][0-9A-Fa-f_]+/y;
const DOLLAR_TAG = /\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/y;

/** The index after a quoted run that began at `at` (its opening quote), doubled quotes inside; backslashes escape when `backslash`. */
function quotedEnd(sql: string, at: number, quote: string, backslash: boolean): number {
  let i = at + 1;
  while (i < sql.length) {
    const c = sql[i];
    if (backslash && c === '\\') i += 2;
    else if (c === quote) {
      if (sql[i + 1] === quote) i += 2;
      else return i + 1;
    } else i++;
  }
  return sql.length;
}

/**
 * The statements of a query's text, split at semicolons outside quotes and
 * comments. Only the first `limit` characters are read; `more` says the text
 * goes on past them.
 */
export function splitStatements(sql: string, limit = 64 * 1024): { statements: Statement[]; more: boolean } {
  const end = Math.min(sql.length, limit);
  const statements: Statement[] = [];
  let tokens: Token[] = [];
  let start = -1;
  let last = 0;
  const finish = (): void => {
    if (tokens.length > 0) statements.push({ tokens, text: sql.slice(start, last) });
    tokens = [];
    start = -1;
  };
  let at = 0;
  while (at < end) {
    const c = sql.charCodeAt(at);
    if (c <= 0x20 || c === 0xa0) {
      at++;
      continue;
    }
    const ch = sql[at] as string;
    if (sql.startsWith('--', at)) {
      const nl = sql.indexOf('\n', at);
      at = nl < 0 ? sql.length : nl + 1;
      continue;
    }
    if (sql.startsWith('/*', at)) {
      let depth = 1;
      let i = at + 2;
      while (i < sql.length && depth > 0) {
        if (sql.startsWith('/*', i)) { depth++; i += 2; } else if (sql.startsWith('*/', i)) { depth--; i += 2; } else i++;
      }
      at = i;
      continue;
    }
    if (ch === ';') {
      finish();
      at++;
      continue;
    }
    let next: number;
    let token: Token;
    if (ch === "'") {
      next = quotedEnd(sql, at, "'", false);
      token = { kind: 'string', text: sql.slice(at, next), value: sql.slice(at + 1, next - 1).replace(/''/g, "'") };
    } else if (ch === '"') {
      next = quotedEnd(sql, at, '"', false);
      token = { kind: 'ident', text: sql.slice(at, next), value: sql.slice(at + 1, next - 1).replace(/""/g, '"') };
    } else if (ch === '$') {
      DOLLAR_TAG.lastIndex = at;
      const tag = DOLLAR_TAG.exec(sql);
      if (tag) {
        const close = sql.indexOf(tag[0], at + tag[0].length);
        next = close < 0 ? sql.length : close + tag[0].length;
        token = { kind: 'string', text: sql.slice(at, next), value: sql.slice(at + tag[0].length, close < 0 ? sql.length : close) };
      } else {
        next = at + 1;
        while (next < sql.length && /[0-9]/.test(sql[next] as string)) next++;
        token = { kind: 'op', text: sql.slice(at, next), value: sql.slice(at, next) };
      }
    } else if (/[0-9.]/.test(ch) && (NUMBER.lastIndex = at, NUMBER.test(sql))) {
      next = NUMBER.lastIndex;
      token = { kind: 'number', text: sql.slice(at, next), value: sql.slice(at, next) };
    } else if ((WORD.lastIndex = at, WORD.test(sql))) {
      next = WORD.lastIndex;
      const word = sql.slice(at, next);
      const lower = word.toLowerCase();
      // E'…' (backslash escapes), B'…', X'…', N'…', U&'…' and U&"…".
      if (sql[next] === "'" && ['e', 'b', 'x', 'n'].includes(lower)) {
        next = quotedEnd(sql, next, "'", lower === 'e');
        token = { kind: 'string', text: sql.slice(at, next), value: sql.slice(at + 2, next - 1) };
      } else if (lower === 'u' && sql[next] === '&' && (sql[next + 1] === "'" || sql[next + 1] === '"')) {
        const quote = sql[next + 1] as string;
        next = quotedEnd(sql, next + 1, quote, false);
        token = { kind: quote === "'" ? 'string' : 'ident', text: sql.slice(at, next), value: sql.slice(at + 3, next - 1) };
      } else {
        token = { kind: 'word', text: word, value: lower };
      }
    } else {
      next = at + 1;
      token = { kind: 'op', text: ch, value: ch };
    }
    if (start < 0) start = at;
    tokens.push(token);
    last = next;
    at = next;
  }
  finish();
  return { statements, more: end < sql.length && sql.slice(end).trim() !== '' };
}

/** A name in double quotes, as PostgreSQL reads it back. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

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
