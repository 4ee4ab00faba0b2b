/**
 * One error base class; each failure has a fixed `code` that callers decide on
 * (never the message text) and that doubles as a log and metric label.
 */
export type PgsErrorCode =
  | 'USAGE'
  | 'INVALID_ID'
  | 'WEAK_PASSWORD'
  | 'INVALID_REQUEST'
  | 'INVALID_STATE'
  | 'PRECONDITION_FAILED'
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'RATE_LIMITED'
  | 'NOT_FOUND'
  | 'TOKEN_EXISTS'
  | 'TOKEN_NOT_FOUND'
  | 'OPERATION_NOT_FOUND'
  | 'DAEMON_UNAVAILABLE'
  | 'DAEMON_STOPPING'
  | 'INTERNAL'
  | 'ADDRESS_IN_USE'
  | 'INIT_FAILED'
  | 'ORPHAN_DATA'
  | 'DAEMON_TIMEOUT'
  | 'INVALID_SETTING'
  | 'NOT_SET_UP'
  | 'TENANT_EXISTS'
  | 'TENANT_NOT_FOUND'
  | 'CATALOG_CORRUPT'
  | 'CATALOG_LOCKED'
  | 'CERT_INVALID'
  | 'PG_BINARIES_MISSING'
  | 'PG_START_FAILED'
  | 'DOCKER_UNAVAILABLE'
  | 'IMAGE_MISSING'
  | 'KUBE_CONFIG'
  | 'KUBE_UNAVAILABLE'
  | 'NOT_SUPPORTED'
  | 'PG_STOP_FAILED'
  | 'PG_COMMAND_FAILED'
  | 'SYSTEM_USER'
  | 'PATH_TOO_LONG'
  | 'NOT_CONFIRMED'
  | 'BACKUP_DAMAGED'
  | 'BACKUP_FAILED'
  | 'BACKUP_NOT_FOUND'
  | 'OUT_OF_WINDOW'
  | 'ARCHIVE_GAP'
  | 'DISK_FULL'
  | 'UPLOAD_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'QUERY_STATS_UNAVAILABLE';

const ALL_CODES: readonly PgsErrorCode[] = [
  'USAGE',
  'INVALID_ID',
  'WEAK_PASSWORD',
  'INVALID_REQUEST',
  'INVALID_STATE',
  'PRECONDITION_FAILED',
  'UNAUTHORIZED',
  'FORBIDDEN',
  'RATE_LIMITED',
  'NOT_FOUND',
  'TOKEN_EXISTS',
  'TOKEN_NOT_FOUND',
  'OPERATION_NOT_FOUND',
  'DAEMON_UNAVAILABLE',
  'DAEMON_STOPPING',
  'INTERNAL',
  'ADDRESS_IN_USE',
  'INIT_FAILED',
  'ORPHAN_DATA',
  'DAEMON_TIMEOUT',
  'INVALID_SETTING',
  'NOT_SET_UP',
  'TENANT_EXISTS',
  'TENANT_NOT_FOUND',
  'CATALOG_CORRUPT',
  'CATALOG_LOCKED',
  'CERT_INVALID',
  'PG_BINARIES_MISSING',
  'PG_START_FAILED',
  'DOCKER_UNAVAILABLE',
  'IMAGE_MISSING',
  'KUBE_CONFIG',
  'KUBE_UNAVAILABLE',
  'NOT_SUPPORTED',
  'PG_STOP_FAILED',
  'PG_COMMAND_FAILED',
  'SYSTEM_USER',
  'PATH_TOO_LONG',
  'NOT_CONFIRMED',
  'BACKUP_DAMAGED',
  'BACKUP_FAILED',
  'BACKUP_NOT_FOUND',
  'OUT_OF_WINDOW',
  'ARCHIVE_GAP',
  'DISK_FULL',
  'UPLOAD_TOO_LARGE',
  'UNSUPPORTED_MEDIA_TYPE',
  'QUERY_STATS_UNAVAILABLE',
];

export class PgsError extends Error {
  readonly code: PgsErrorCode;
  /** The request field at fault, when the error is about one (the API's problem names it). */
  readonly field?: string;

  constructor(code: PgsErrorCode, message: string, options?: { cause?: unknown; field?: string }) {
    super(message, options);
    this.name = 'PgsError';
    this.code = code;
    if (options?.field !== undefined) this.field = options.field;
  }
}

/** The error's code as the API and the CLI show it: `tenant_not_found`, `weak_password`, ... */
export function codeWord(code: PgsErrorCode): string {
  return code.toLowerCase();
}

/** A code word back to the code, for errors that crossed the daemon's API; unknown words become INTERNAL. */
export function codeFromWord(word: unknown): PgsErrorCode {
  const code = typeof word === 'string' ? word.toUpperCase() : '';
  return (ALL_CODES as readonly string[]).includes(code) ? (code as PgsErrorCode) : 'INTERNAL';
}

export function isPgsError(err: unknown, code?: PgsErrorCode): err is PgsError {
  return err instanceof PgsError && (code === undefined || err.code === code);
}

/** The errno code of a Node system error (`ENOENT`, `EEXIST`, ...), if any. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}
