/**
 * What the Kubernetes API serves, as far as pgs uses it: the kinds of object
 * it calls (group, version, plural resource), an object's shape, a watch
 * event, and a failed call.
 */

/** A kind of object in the API: its group ('' for the core API), version and plural resource name. */
export interface ResourceRef {
  group: string;
  version: string;
  resource: string;
}

export const RESOURCES = {
  clusters: { group: 'postgresql.cnpg.io', version: 'v1', resource: 'clusters' },
  scheduledBackups: { group: 'postgresql.cnpg.io', version: 'v1', resource: 'scheduledbackups' },
  backups: { group: 'postgresql.cnpg.io', version: 'v1', resource: 'backups' },
  objectStores: { group: 'barmancloud.cnpg.io', version: 'v1', resource: 'objectstores' },
  secrets: { group: '', version: 'v1', resource: 'secrets' },
  persistentVolumeClaims: { group: '', version: 'v1', resource: 'persistentvolumeclaims' },
  leases: { group: 'coordination.k8s.io', version: 'v1', resource: 'leases' },
  endpointSlices: { group: 'discovery.k8s.io', version: 'v1', resource: 'endpointslices' },
} as const satisfies Record<string, ResourceRef>;

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  creationTimestamp?: string;
  deletionTimestamp?: string;
}

export interface KubeResource {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  [field: string]: unknown;
}

export interface WatchEvent<T extends KubeResource = KubeResource> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: T;
}

/** A failed call: the API server's status code, its reason (NotFound, AlreadyExists, Conflict, Forbidden...) and message. */
export class KubeError extends Error {
  readonly statusCode: number;
  readonly reason: string;

  constructor(statusCode: number, reason: string, message: string) {
    super(message);
    this.statusCode = statusCode;
    this.reason = reason;
  }
}

/** The path of a kind's objects in a namespace. */
export function collectionPath(ref: ResourceRef, namespace: string): string {
  const base = ref.group === '' ? `/api/${ref.version}` : `/apis/${ref.group}/${ref.version}`;
  return `${base}/namespaces/${encodeURIComponent(namespace)}/${ref.resource}`;
}
