/**
 * What `pgs setup --runtime kubernetes` checks before it writes anything:
 * that an API server answers with these credentials, that CloudNativePG is
 * installed there (its Cluster resource exists), and that pgs may list the
 * clusters of the namespace. Each failure says what to do.
 */
import { PgsError } from '../../core/errors.js';
import { KubeClient, KubeError, RESOURCES, loadConnection, type KubeResource } from './client.js';

/** The Secret with the object store's credentials that a backup target on Kubernetes needs. */
export const S3_SECRET = 'pgs-s3';

export async function probeCluster(env: NodeJS.ProcessEnv, namespace: string | undefined, backups = false, region = false): Promise<{ namespace: string; action: string }> {
  const connection = await loadConnection({ env, ...(namespace !== undefined ? { namespace } : {}) });
  const client = new KubeClient(connection);
  try {
    const clusters = await client.list(RESOURCES.clusters);
    const ours = clusters.items.filter((c) => c.metadata.labels?.['app.kubernetes.io/managed-by'] === 'pgs').length;
    if (backups) {
      const secret = await client.get<KubeResource & { data?: Record<string, string> }>(RESOURCES.secrets, S3_SECRET);
      // The plugin reads the region from the Secret too (the ObjectStore names its key).
      const missing = ['ACCESS_KEY_ID', 'ACCESS_SECRET_KEY', ...(region ? ['REGION'] : [])].filter((k) => !secret?.data?.[k]);
      if (missing.length > 0) {
        throw new PgsError('INVALID_SETTING', `a backup target on Kubernetes needs the Secret ${S3_SECRET} in namespace ${connection.namespace} with ${missing.join(' and ')}: kubectl -n ${connection.namespace} create secret generic ${S3_SECRET} --from-literal=ACCESS_KEY_ID=... --from-literal=ACCESS_SECRET_KEY=...`);
      }
    }
    return {
      namespace: connection.namespace,
      action: `checked the Kubernetes API at ${connection.server}: CloudNativePG answers in namespace ${connection.namespace} (${ours} pgs tenant${ours === 1 ? '' : 's'} there)${backups ? `; the object store's credentials are in the Secret ${S3_SECRET}` : ''}`,
    };
  } catch (e) {
    if (e instanceof KubeError && e.statusCode === 404) {
      throw new PgsError('KUBE_UNAVAILABLE', `the Kubernetes API at ${connection.server} has no postgresql.cnpg.io/v1 clusters: install the CloudNativePG operator first (see the README), then run this again`);
    }
    if (e instanceof KubeError && (e.statusCode === 401 || e.statusCode === 403)) {
      throw new PgsError('KUBE_CONFIG', `the Kubernetes API at ${connection.server} refused to list clusters in namespace ${connection.namespace} (${e.statusCode} ${e.reason}): give these credentials the Role in deploy/kubernetes, or choose another --namespace`);
    }
    throw e;
  } finally {
    client.close();
  }
}
