import { serializeErrorResponse } from './messages.js';

/**
 * What a client sees when the router refuses it: an ErrorResponse with severity
 * FATAL, a SQLSTATE and a message a person can act on. What the log sees may
 * say more. Each refusal has a fixed reason code, used as a log and metric label.
 * https://www.postgresql.org/docs/current/errcodes-appendix.html
 */
export type RefusalReason =
  | 'tls_required'
  | 'protocol_violation'
  | 'unknown_host'
  | 'no_host'
  | 'host_mismatch'
  | 'access_disabled'
  /** The client's source address is not in the tenant's allow-list. */
  | 'address_not_allowed'
  | 'reserved_role'
  /** A wrong password, a role that does not exist or cannot log in: PostgreSQL's one message for all. */
  | 'auth_failed'
  | 'too_many_connections'
  | 'tenant_unavailable'
  | 'startup_timeout'
  | 'shutting_down'
  /** The host's disk is nearly full: no tenant is woken. */
  | 'disk_full'
  /** An established session ended by pgs (access disabled, tenant removed): not counted as a refusal. */
  | 'terminated';

const SQLSTATE: Record<RefusalReason, string> = {
  tls_required: '28000', // invalid_authorization_specification, as for a pg_hba "no encryption" miss
  protocol_violation: '08P01',
  unknown_host: '08004', // sqlserver_rejected_establishment_of_sqlconnection
  no_host: '08004',
  host_mismatch: '08004',
  access_disabled: '28000',
  address_not_allowed: '28000', // invalid_authorization_specification, as a pg_hba.conf miss
  reserved_role: '28000',
  auth_failed: '28P01', // invalid_password
  too_many_connections: '53300',
  tenant_unavailable: '57P03', // cannot_connect_now
  startup_timeout: '08P01',
  shutting_down: '57P01', // admin_shutdown
  disk_full: '53100',
  terminated: '57P01',
};

export interface Refusal {
  reason: RefusalReason;
  message: string;
  hint?: string;
  detail?: string;
  /** The SQLSTATE when it is not the reason's usual one (as PostgreSQL's own errors have it). */
  code?: string;
}

export function refusalBytes(refusal: Refusal): Buffer {
  return serializeErrorResponse({
    S: 'FATAL',
    V: 'FATAL',
    C: refusal.code ?? SQLSTATE[refusal.reason],
    M: refusal.message,
    ...(refusal.detail === undefined ? {} : { D: refusal.detail }),
    ...(refusal.hint === undefined ? {} : { H: refusal.hint }),
  });
}

export function sqlstateOf(reason: RefusalReason): string {
  return SQLSTATE[reason];
}
