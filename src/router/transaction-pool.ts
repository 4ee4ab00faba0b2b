/**
 * Transaction pooling: a tenant's clients share a few server sessions, each
 * client holding one only from the first message of a transaction to the
 * ReadyForQuery that says it is idle again. What a client believes of its
 * session is carried from one server session to the next:
 *
 * - the settings the server reports (ParameterStatus) that a client may set,
 *   as the client last saw them, its start-up settings, and the other
 *   settings it changed with SET or RESET outside a transaction block (run on
 *   the session it held then, so the server validated them, and recorded once
 *   they succeeded), are set on each server session it gets where they differ;
 * - its named prepared statements (protocol level) live under names of the
 *   router's own, one per statement text, prepared on whichever server session
 *   runs them: a session that has one already is not asked again (the client
 *   is answered ParseComplete by the router), one that lacks it gets a Parse
 *   just before the message that uses it, whose answer the client never sees.
 *
 * Session state that cannot be carried (LISTEN, SQL PREPARE, session advisory
 * locks, WITH HOLD cursors, temporary tables that outlive a transaction, SET
 * ROLE) is refused when a statement begins with it, with an
 * error of the server's own (it runs `DO … RAISE`), so the transaction's state
 * stays what the server says.
 *
 * The parts live in pool/: pool.ts (the sessions and the waiting clients),
 * pooled-client.ts (one client on its sockets), exchange.ts (the messages
 * between a client and the session it holds, pure), client-settings.ts (what
 * a client believes of its settings), server-state.ts (what the router knows
 * of each pooled session). The SQL they read is protocol/sql-statements.ts's.
 */
export { PoolTimeout, TransactionPool, type Handed } from './pool/pool.js';
export { PooledClient, type PooledClientHost } from './pool/pooled-client.js';
export { applySettings, settingsSql, splitSettings, type Wanted } from './pool/server-state.js';
export { inspectStatements, sessionStateUse, type Inspection } from '../protocol/sql-statements.js';
