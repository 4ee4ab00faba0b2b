import saslprep from '@mongodb-js/saslprep';

/**
 * The password as PostgreSQL feeds it to SCRAM: SASLprep (RFC 4013: map
 * non-ASCII spaces to a space and "commonly mapped to nothing" characters to
 * nothing, NFKC, then refuse prohibited, unassigned and badly mixed
 * bidirectional text). Where SASLprep refuses, PostgreSQL uses the password
 * exactly as given (see pg_saslprep and scram_build_secret), and so does pgs:
 * a password a client can type always gives the verifier the server computes.
 */
export function preparePassword(password: string): string {
  if (![...password].some((c) => c.charCodeAt(0) > 0x7f)) return password; // PostgreSQL's fast path: pure ASCII is taken as is
  try {
    return saslprep(password, { allowUnassigned: false });
  } catch {
    return password;
  }
}
