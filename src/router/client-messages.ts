import type { Log } from '../core/log.js';
import { BackendMessage } from '../protocol/constants.js';
import { serializeNoticeResponse, typed, type ErrorFields } from '../protocol/messages.js';
import type { Refusal } from '../protocol/refusals.js';
import type { ClientSide } from './client-side.js';
import { ServerSessionError, TX_IDLE } from './server-sessions.js';
import { ServerFull } from './server-slots.js';
import { PoolTimeout } from './transaction-pool.js';

/** A WARNING of pgs's own for a session (NoticeResponse, SQLSTATE 01000). */
export function noticeBytes(message: string): Buffer {
  return serializeNoticeResponse({ S: 'WARNING', V: 'WARNING', C: '01000', M: message });
}

/**
 * What a server's start-up would end with, for a client greeted from a session
 * the router holds: AuthenticationOk and the ParameterStatus set (`parameters`,
 * from ServerSession.greeting), the router's BackendKeyData (`key`), the login
 * notice if any, and ReadyForQuery (idle).
 */
export function greetingBytes(parameters: Buffer, key: Buffer, notice: string | undefined): Buffer {
  const greeting = [parameters, key];
  if (notice !== undefined) greeting.push(noticeBytes(notice));
  greeting.push(typed(BackendMessage.ReadyForQuery, Buffer.from([TX_IDLE])));
  return Buffer.concat(greeting);
}

/**
 * What a client is told when no server session could be had for it: pgs's own
 * refusal (`unexpected`: a failure worth a warning in the log, told to the
 * client only as "not available"), or the server's own ErrorResponse, passed on as it is.
 */
export type SessionFailure = { kind: 'refuse'; refusal: Refusal; unexpected: boolean } | { kind: 'server'; fields: ErrorFields };

export function sessionFailure(err: unknown, tenantId: string): SessionFailure {
  if (err instanceof ServerFull) return { kind: 'refuse', refusal: { reason: 'too_many_connections', message: err.message, hint: err.hint }, unexpected: false };
  if (err instanceof ServerSessionError) return { kind: 'server', fields: err.fields };
  if (err instanceof PoolTimeout) {
    return {
      kind: 'refuse',
      refusal: { reason: 'too_many_connections', message: `${err.message} for tenant ${tenantId} (its transaction pool is full)`, hint: `pgs config ${tenantId} --pool-size N allows more server sessions` },
      unexpected: false,
    };
  }
  return { kind: 'refuse', refusal: { reason: 'tenant_unavailable', message: `the server of tenant ${tenantId} is not available` }, unexpected: true };
}

/** Tells the client why no server session could be had for it (sessionFailure); a failure nobody expected is logged too. */
export function refuseForSession(client: Pick<ClientSide, 'refuse' | 'refuseAsServer'>, err: unknown, tenantId: string, log: Log): void {
  const failure = sessionFailure(err, tenantId);
  if (failure.kind === 'server') {
    client.refuseAsServer(failure.fields);
    return;
  }
  if (failure.unexpected) log.warn('backend connection failed', { tenant: tenantId, error: (err as Error).message });
  client.refuse(failure.refusal);
}
