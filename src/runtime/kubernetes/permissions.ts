/**
 * Every call the kubernetes runtime makes to the API server, as RBAC would
 * name it: API group, resource, verbs. The runtime's client refuses a call
 * that is not listed here, and a test checks that deploy/kubernetes's Role
 * grants exactly this list: no verb the code does not use, none missing.
 */
export interface Permission {
  group: string;
  resource: string;
  verbs: readonly string[];
}

export const PERMISSIONS: readonly Permission[] = [
  // A CloudNativePG Cluster per tenant, with pgs's fields as its annotations: every pgs pod watches them.
  { group: 'postgresql.cnpg.io', resource: 'clusters', verbs: ['get', 'list', 'watch', 'create', 'patch', 'delete'] },
  // Base backups: scheduled per tenant, on demand with `pgs backup`, listed by `pgs backups`.
  { group: 'postgresql.cnpg.io', resource: 'scheduledbackups', verbs: ['get', 'list', 'create', 'patch', 'delete'] },
  { group: 'postgresql.cnpg.io', resource: 'backups', verbs: ['get', 'list', 'watch', 'create', 'delete'] },
  // Where a tenant's backups and WAL go (the barman-cloud plugin).
  { group: 'barmancloud.cnpg.io', resource: 'objectstores', verbs: ['get', 'list', 'create', 'patch', 'delete'] },
  // The owner's credentials and the client's verifier (written), each Cluster's CA (read).
  { group: '', resource: 'secrets', verbs: ['get', 'list', 'watch', 'create', 'patch', 'delete'] },
  // A removed tenant's volumes, deleted only after a confirmation.
  { group: '', resource: 'persistentvolumeclaims', verbs: ['list', 'delete'] },
  // One pgs pod at a time reconciles (suspends, schedules); every pod routes and says which tenants
  // it served (a Lease of its own, listed by the leader, deleted once its pod is long gone).
  { group: 'coordination.k8s.io', resource: 'leases', verbs: ['get', 'list', 'create', 'update', 'delete'] },
  // Where each cluster's read-write service points now (its primary's address): the router dials it.
  { group: 'discovery.k8s.io', resource: 'endpointslices', verbs: ['list', 'watch'] },
];

/** Whether a call is one the runtime declared. */
export function permitted(group: string, resource: string, verb: string): boolean {
  return PERMISSIONS.some((p) => p.group === group && p.resource === resource && p.verbs.includes(verb));
}
