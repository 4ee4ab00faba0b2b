// What each action of the page is as a pgs command and as a curl call, so
// that anything done here can be scripted.

export interface Equivalent {
  /** The pgs command, or null when only the API does it. */
  pgs: string | null;
  curl: string;
  /** Further calls that finish the job (an export's download), in order. */
  then?: string[];
}

let caCert: string | null = null;

/** With HTTPS and the certificate pgs made itself, curl needs it: --cacert FILE. */
export function setCaCert(file: string | null): void {
  caCert = file;
}

export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** `output`: the file curl writes (-o), for a download. */
export function curl(method: string, path: string, body?: unknown, output?: string): string {
  const parts = ['curl'];
  if (output !== undefined) parts.push('-o', shellQuote(output));
  if (location.protocol === 'https:' && caCert) parts.push('--cacert', shellQuote(caCert));
  if (method !== 'GET') parts.push('-X', method);
  parts.push('-H', '"Authorization: Bearer $PGS_TOKEN"');
  if (body !== undefined) parts.push('-H', "'content-type: application/json'", '-d', shellQuote(JSON.stringify(body)));
  parts.push(shellQuote(`${location.origin}${path}`));
  return parts.join(' ');
}

export function equivalent(pgs: string | null, method: string, path: string, body?: unknown): Equivalent {
  return { pgs, curl: curl(method, path, body) };
}
