/**
 * Server sessions the router holds: its own backends of a tenant's server,
 * kept for reuse between clients (see docs/design.md, "Server sessions kept
 * for reuse"). The parts live in sessions/: backend-address.ts (where a
 * tenant's server is), server-session.ts (one session: open, query, lend,
 * close), session-pool.ts (each tenant's idle ones), session-state.ts and
 * stream-cursors.ts (where a client's session stands, read from both
 * directions at message boundaries), session-reuse.ts (a client's start-up
 * settings for a kept session, and the reset before the next one),
 * cancel-request.ts and parameter-status.ts (small protocol pieces they share).
 */
export { isRemote, sameServer, type BackendAddress, type RemoteAddress } from './sessions/backend-address.js';
export { cancelOn } from './sessions/cancel-request.js';
export { ServerSession, ServerSessionError, closeServerSocket, poolKey } from './sessions/server-session.js';
export { ServerSessionPool } from './sessions/session-pool.js';
export { SessionState, TX_IDLE } from './sessions/session-state.js';
export { clientSettings, recycle } from './sessions/session-reuse.js';
/** The SQL literal kept sessions' set_config calls are written with (one implementation: the lexer's). */
export { escapeLiteral } from '../protocol/sql-lexer.js';
