/**
 * What the router knows of each server session of the transaction pool
 * beyond what the server reports: the statements it prepared on it under
 * names of its own, the settings it set there that the server does not
 * report, and whether its state is still what the router believes. And the
 * SQL that sets a session as a client expects it, run when the client gets it.
 */
import type { ErrorFields } from '../../protocol/messages.js';
import { TxStatus } from '../../protocol/codes.js';
import { escapeLiteral, quoteIdent } from '../../protocol/sql-lexer.js';
import type { ServerSession } from '../server-sessions.js';

/** Settings the server reports that no client sets (the rest of what it reports is carried from session to session). */
const NOT_CARRIED = new Set(['server_version', 'server_encoding', 'integer_datetimes', 'is_superuser', 'session_authorization', 'in_hot_standby']);
export const carried = (lower: string): boolean => !NOT_CARRIED.has(lower);

/** How a client wants a setting the server does not report: a start-up value, or the SQL of the SET that set it. */
export type Wanted = string | { sql: string };
export const wantedKey = (w: Wanted): string => (typeof w === 'string' ? `=${w}` : `;${w.sql}`);
/** In PooledState.applied: a value the router no longer knows (set within a transaction block, or by a SET that failed). */
export const UNKNOWN = '\0?';

/** A server session of the transaction pool: the statements prepared on it, and the start-up settings set on it. */
export interface PooledState {
  /** Its statements of the router's names, least recently used first. */
  prepared: Map<string, true>;
  /** Settings the server does not report that differ from its defaults on this session, by name: wantedKey, or UNKNOWN. */
  applied: Map<string, string>;
  /** Its session state is no longer what the router believes (DISCARD, DEALLOCATE): closed when given back. */
  tainted: boolean;
  /** The settings key of the client that last had it set up or held it (see ClientSettings.key). */
  settings?: string | undefined;
  /** What the server reported when the session opened (no client's settings), by lower-case name. */
  defaults: Map<string, string>;
  /** What the server reports now (the session's own map, kept by ParameterStatus). */
  params: Map<string, string>;
}

/** The state of a session whose server reports `params` (taken as its defaults). */
export function newPooledState(params: Map<string, string>): PooledState {
  return { prepared: new Map(), applied: new Map(), tainted: false, defaults: new Map([...params].map(([k, v]) => [k.toLowerCase(), v])), params };
}

const states = new WeakMap<ServerSession, PooledState>();

export function stateOf(session: ServerSession): PooledState {
  let state = states.get(session);
  if (!state) {
    state = newPooledState(session.params);
    states.set(session, state);
  }
  return state;
}

/**
 * Sets `session` as a client expects it (see settingsSql); returns the
 * server's error, if any. Rejects when the session ends.
 */
export async function applySettings(session: ServerSession, seen: ReadonlyMap<string, string>, wanted: ReadonlyMap<string, Wanted>, key?: string): Promise<ErrorFields | undefined> {
  const state = stateOf(session);
  if (key !== undefined && state.settings === key) return undefined;
  // A reported setting the client never gave goes back to the session's own value, not another client's.
  const reported = new Map(state.defaults);
  for (const [name, value] of seen) reported.set(name.toLowerCase(), value);
  const sql = settingsSql(session.params, state.applied, reported, wanted);
  if (sql !== undefined) {
    const result = await session.query(sql);
    if (result.error) return result.error;
    if (result.status !== TxStatus.Idle) return { S: 'ERROR', C: '08P01', M: 'setting up the server session left a transaction open' };
    state.applied = new Map([...wanted].map(([name, w]) => [name, wantedKey(w)]));
  }
  state.settings = key;
  return undefined;
}

/**
 * The SQL that sets a server session as the client expects it: the carried
 * settings the client last saw where the server's differ, and the others it
 * wants (start-up values, SETs) where the session was given other ones (or
 * RESET where it wants none). Undefined when nothing differs.
 */
export function settingsSql(server: ReadonlyMap<string, string>, applied: ReadonlyMap<string, string>, seen: ReadonlyMap<string, string>, wanted: ReadonlyMap<string, Wanted>): string | undefined {
  const calls: string[] = [];
  const statements: string[] = [];
  const resets: string[] = [];
  const serverLower = new Map<string, string>();
  for (const [name, value] of server) serverLower.set(name.toLowerCase(), value);
  for (const [name, value] of seen) {
    const lower = name.toLowerCase();
    if (!carried(lower) || wanted.has(lower)) continue;
    if (serverLower.has(lower) && serverLower.get(lower) !== value) calls.push(`pg_catalog.set_config(${escapeLiteral(name)}, ${escapeLiteral(value)}, false)`);
  }
  for (const [name, w] of wanted) {
    if (applied.get(name) === wantedKey(w)) continue;
    if (typeof w === 'string') calls.push(`pg_catalog.set_config(${escapeLiteral(name)}, ${escapeLiteral(w)}, false)`);
    else statements.push(w.sql);
  }
  for (const name of applied.keys()) if (!wanted.has(name)) resets.push(`RESET ${quoteIdent(name)}`);
  if (calls.length === 0 && statements.length === 0 && resets.length === 0) return undefined;
  return [...resets, ...statements, ...(calls.length > 0 ? [`SELECT ${calls.join(', ')}`] : [])].join('; ');
}

/** The client's start-up settings split: the carried ones the server reports (compared with what it reports) and the rest. Names in lower case. */
export function splitSettings(settings: Map<string, string>, reported: Map<string, string>): { carried: Map<string, string>; fixed: Map<string, string> } {
  const carriedOnes = new Map<string, string>();
  const fixed = new Map<string, string>();
  const names = new Set([...reported.keys()].map((k) => k.toLowerCase()));
  for (const [name, value] of settings) {
    const lower = name.toLowerCase();
    (carried(lower) && names.has(lower) ? carriedOnes : fixed).set(lower, value);
  }
  return { carried: carriedOnes, fixed };
}
