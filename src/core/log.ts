/**
 * The logger every part writes to: a message and fields, as one JSON line in
 * the daemon's log (daemon/run.ts makes it). Parts take it as an option and
 * default to `QUIET_LOG`, so that a library use of a part prints nothing.
 */
import { debuglog } from 'node:util';

export interface Log {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
}

export const QUIET_LOG: Log = { info: () => undefined, warn: () => undefined };

/**
 * A line for an error a part lets go on purpose (a best-effort clean-up, an
 * optional file): silent unless NODE_DEBUG names the section (`pgs:backup`,
 * or `pgs*` for every part), then one line on stderr with what was being
 * done and the error's message.
 */
export function debugLog(section: string): (what: string, error?: unknown) => void {
  const log = debuglog(section);
  return (what, error) => {
    if (!log.enabled) return;
    if (error === undefined) log('%s', what);
    else log('%s: %s', what, error instanceof Error ? error.message : String(error));
  };
}
