/**
 * SQL text, the little the router reads of it: a lexer that splits a query's
 * text into statements and tokens (quotes, dollar quotes and nested comments
 * respected), the first word of a statement, and quoting for the SQL the
 * router writes itself. Pure.
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

/** A string literal that reads the same whatever standard_conforming_strings says. */
export function escapeLiteral(value: string): string {
  return `E'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

/** The first word of a statement (after comments and spaces, at most 12 letters), lower-cased. */
export function firstWord(sql: string): string {
  const text = skipComments(sql);
  let end = 0;
  while (end < text.length && end < 12 && isLetter(text.charCodeAt(end))) end++;
  return text.slice(0, end).toLowerCase();
}

function isLetter(code: number): boolean {
  return (code >= 0x61 && code <= 0x7a) || (code >= 0x41 && code <= 0x5a);
}

/** The text from its first character that is neither a space nor in a comment. */
function skipComments(sql: string): string {
  let at = 0;
  for (;;) {
    while (at < sql.length && (sql.charCodeAt(at) <= 0x20 || sql.charCodeAt(at) === 0xa0)) at++;
    if (sql.startsWith('--', at)) {
      const end = sql.indexOf('\n', at);
      if (end < 0) return '';
      at = end + 1;
    } else if (sql.startsWith('/*', at)) {
      const end = sql.indexOf('*/', at + 2);
      if (end < 0) return '';
      at = end + 2;
    } else {
      return sql.slice(at);
    }
  }
}
