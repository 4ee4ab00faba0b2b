import type { Refusal } from '../protocol/refusals.js';
import type { TenantRoute } from './contract.js';
import { labelUnder } from './tls-front.js';

/**
 * Which tenant a client asks for: the first label of its TLS SNI host name
 * under `domain`, or (for clients that send no SNI, such as those given an IP
 * address) the `endpoint` option of its start-up packet; both, when given,
 * must name the same one. Either the label, or why the client is refused.
 */
export function tenantLabel(sni: string | undefined, endpoint: string | undefined, domain: string): { label: string } | { refusal: Refusal } {
  const sniLabel = sni === undefined ? undefined : labelUnder(sni, domain);
  if (sni !== undefined && sniLabel === undefined) {
    return {
      refusal: {
        reason: 'unknown_host',
        message: `unknown host name "${sni}": tenants are reached as <id>-<suffix>.${domain}`,
        hint: 'pgs list shows each tenant\'s host name',
      },
    };
  }
  if (sniLabel !== undefined && endpoint !== undefined && endpoint.toLowerCase() !== sniLabel) {
    return { refusal: { reason: 'host_mismatch', message: `the host name "${sni}" and options endpoint=${endpoint} name different tenants` } };
  }
  const label = sniLabel ?? endpoint?.toLowerCase();
  if (label === undefined) {
    return {
      refusal: {
        reason: 'no_host',
        message: 'no tenant host name: the client sent no TLS SNI name and no endpoint option',
        hint: `connect with host=<id>-<suffix>.${domain} (hostaddr= for an IP address), or add options=endpoint=<id>-<suffix>`,
      },
    };
  }
  return { label };
}

/** The refusal of a client whose label names no tenant. */
export function noSuchTenant(sni: string | undefined, label: string, domain: string): Refusal {
  return {
    reason: 'unknown_host',
    message: `unknown host name "${sni ?? `${label}.${domain}`}": no such tenant`,
    hint: 'pgs list shows each tenant\'s host name',
  };
}

/**
 * Why a client of `tenant` from `address` logging in as `user` is refused before
 * its password is checked, if it is: the tenant's allow-list first (an address it
 * leaves out learns nothing more, costs no password check and wakes nothing),
 * access disabled, no user name, a role reserved to pgs, pgs shutting down.
 */
export function refusalBeforeLogin(tenant: TenantRoute, address: string, user: string, reserved: ReadonlySet<string>, closing: boolean): Refusal | undefined {
  if (tenant.allow && !tenant.allow.allows(address)) {
    return { reason: 'address_not_allowed', message: `connections from ${address} are not allowed for tenant ${tenant.id}` };
  }
  if (tenant.access === 'disabled') {
    return { reason: 'access_disabled', message: `access to tenant ${tenant.id} is disabled`, hint: `pgs enable-access ${tenant.id} allows it again` };
  }
  if (user === '') return { reason: 'auth_failed', code: '28000', message: 'no PostgreSQL user name specified in startup packet' };
  if (reserved.has(user)) return { reason: 'reserved_role', message: `role "${user}" cannot log in through pgs` };
  if (closing) return { reason: 'shutting_down', message: 'pgs is shutting down' };
  return undefined;
}
