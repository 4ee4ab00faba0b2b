/**
 * pg_stat_statements keeps a utility statement's text as it was sent: `ALTER ROLE
 * app PASSWORD 'secret'` keeps its password. pgs never stores or shows one: in a
 * statement that names a password (PASSWORD, or a role's verifier), every string
 * constant (quoted, E'', U&'', dollar-quoted) becomes '***'.
 */
const SECRET_HINT = /\b(password|scram-sha-256|md5)\b/i;
const LITERAL = /\$([A-Za-z_][A-Za-z0-9_]*)?\$[\s\S]*?\$\1\$|(?:[Ee]|[Uu]&)?'(?:[^'\\]|''|\\[\s\S])*'?/g;

export function redactSecrets(query: string): string {
  if (!SECRET_HINT.test(query)) return query;
  return query.replace(LITERAL, "'***'");
}
