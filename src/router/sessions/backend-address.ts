import type { RemoteTarget } from '../remote-backend.js';

/**
 * Where a tenant's server is: the path of its unix socket on this host (the
 * router is trusted there), or a server over the network that the router logs
 * in to with a password of its own (a kubernetes runtime's cluster).
 */
export type BackendAddress = string | RemoteAddress;
/** A server over the network; `database`: the name the tenant's database has there, when not the one its clients ask for. */
export type RemoteAddress = Omit<RemoteTarget, 'database'> & { kind: 'remote'; database?: string };

export function isRemote(address: BackendAddress): address is RemoteAddress {
  return typeof address !== 'string';
}

/** Whether two addresses reach the same server (a failover moves a tenant's address: sessions kept for the old one are of no use). */
export function sameServer(a: BackendAddress, b: BackendAddress): boolean {
  if (!isRemote(a) || !isRemote(b)) return a === b;
  return a.host === b.host && a.port === b.port && a.servername === b.servername;
}
