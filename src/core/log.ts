/**
 * The logger every part writes to: a message and fields, as one JSON line in
 * the daemon's log (daemon/run.ts makes it). Parts take it as an option and
 * default to `QUIET_LOG`, so that a library use of a part prints nothing.
 */
export interface Log {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
}

export const QUIET_LOG: Log = { info: () => undefined, warn: () => undefined };
