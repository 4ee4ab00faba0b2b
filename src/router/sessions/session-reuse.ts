import { splitOptions } from '../../protocol/startup.js';
import type { ServerSession } from './server-session.js';
import type { ServerSessionPool } from './session-pool.js';
import { TX_IDLE } from './session-state.js';

/**
 * Makes a session a client left clean again and keeps it: ROLLBACK when it was
 * in a transaction, then DISCARD ALL (temporary tables, prepared statements,
 * cursors, LISTEN, advisory locks, every SET). Any trouble closes it instead.
 */
export async function recycle(pool: ServerSessionPool, session: ServerSession, status: number): Promise<void> {
  try {
    if (status !== TX_IDLE) {
      const rollback = await session.query('ROLLBACK');
      if (rollback.status !== TX_IDLE) throw new Error('ROLLBACK left a transaction open');
    }
    const reset = await session.query('DISCARD ALL');
    if (reset.error || reset.status !== TX_IDLE) throw new Error(reset.error?.M ?? 'DISCARD ALL left a transaction open');
    pool.give(session);
  } catch {
    session.destroy();
  }
}

/**
 * The start-up parameters a kept session must be given with set_config, or
 * undefined when the client's start-up cannot be reproduced that way
 * (replication, protocol extensions, options other than `-c name=value` and
 * `--name=value`).
 */
export function clientSettings(params: Map<string, string>): Map<string, string> | undefined {
  const out = new Map<string, string>();
  for (const [name, value] of params) {
    if (name === 'user' || name === 'database') continue;
    if (name === 'replication' || name.startsWith('_pq_.')) return undefined;
    if (name !== 'options') {
      out.set(name, value);
      continue;
    }
    const tokens = splitOptions(value);
    for (let i = 0; i < tokens.length; i++) {
      const token = tokens[i] as string;
      const setting = token === '-c' ? tokens[++i] : token.startsWith('-c') ? token.slice(2) : token.startsWith('--') ? token.slice(2) : undefined;
      const eq = setting?.indexOf('=') ?? -1;
      if (setting === undefined || eq <= 0) return undefined;
      // As PostgreSQL reads them: dashes in the name are underscores.
      out.set(setting.slice(0, eq).replace(/-/g, '_'), setting.slice(eq + 1));
    }
  }
  return out;
}
