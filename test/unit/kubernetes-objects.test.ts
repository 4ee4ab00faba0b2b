import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { Tenant } from '../../src/catalog/schema.js';
import {
  HIBERNATION, LABEL_TENANT, OWNER_ROLE, TENANT_ANNOTATION, cpuQuantity, quantity, tenantCluster, tenantObjects, tenantScheduledBackup, type BackupTarget, type KubernetesSettings,
} from '../../src/runtime/kubernetes/objects.js';
import { kubeProblems } from '../helpers/kube-schemas.js';

const kube: KubernetesSettings = { namespace: 'pgs', instances: 1 };
const tenant = (t: Partial<Tenant> = {}): Tenant => ({
  id: 'acme', suffix: 'x7k2q9', access: 'enabled', wanted: 'running', maxConnections: 20, createdAt: '2026-12-01T00:00:00.000Z', ...t,
});
const backup: BackupTarget = { url: 's3://bucket/pgs/', endpointURL: 'http://127.0.0.1:9000', region: 'eu-west-1', credentialsSecret: 'pgs-s3' };
const secrets = { ownerPassword: 'p'.repeat(32), clientVerifier: 'SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2Vydg==' };

describe('the kubernetes runtime\'s objects', () => {
  it('validate against the CloudNativePG CRDs and the core types, unknown fields refused', () => {
    const all = [
      ...tenantObjects(tenant(), kube, { suspended: false, ...secrets }),
      ...tenantObjects(tenant({ memoryBytes: 512 * 2 ** 20, cpus: 0.5, diskBytes: 10 * 2 ** 30, backupSchedule: 'hourly', pool: 'transaction', poolSize: 5, autosuspendSeconds: null }),
        { namespace: 'tenants', instances: 3, storageClass: 'fast', imageName: 'ghcr.io/cloudnative-pg/postgresql:18' }, { suspended: true, backup, ...secrets }),
      ...tenantObjects(tenant({ wanted: 'stopped', backupSchedule: 'off' }), kube, { suspended: false, backup, ...secrets }),
    ];
    assert.deepEqual(all.map((o) => o.kind), ['Secret', 'Cluster', 'Secret', 'ObjectStore', 'Cluster', 'ScheduledBackup', 'Secret', 'ObjectStore', 'Cluster']);
    for (const object of all) assert.deepEqual(kubeProblems(object), [], JSON.stringify(object));
  });

  it('a misspelled or misplaced field is caught, in a custom resource and in a core object', () => {
    const cluster = tenantCluster(tenant(), kube, { suspended: false });
    const spec = cluster.spec as Record<string, unknown>;
    assert.match(kubeProblems({ ...cluster, spec: { ...spec, enableSuperUserAccess: false } }).join('\n'), /must NOT have additional properties \(enableSuperUserAccess\)/);
    assert.match(kubeProblems({ ...cluster, spec: { ...spec, instances: '1' } }).join('\n'), /instances: must be integer/);
    assert.match(kubeProblems({ ...cluster, spec: { ...spec, bootstrap: { initdb: { database: 'acme', ownr: 'app' } } } }).join('\n'), /\(ownr\)/);
    const [secret] = tenantObjects(tenant(), kube, { suspended: false, ...secrets });
    assert.match(kubeProblems({ ...secret, stringdata: {} } as never).join('\n'), /stringdata: no such field in V1Secret/);
    assert.match(kubeProblems({ ...(secret as object), metadata: { name: 'x', label: {} } } as never).join('\n'), /metadata\.label: no such field in V1ObjectMeta/);
    assert.match(kubeProblems({ apiVersion: 'v1', kind: 'Sekret', metadata: { name: 'x' } }).join('\n'), /neither a core type nor a known CRD/);
  });

  it('the Cluster carries the tenant: its database owned by app, no superuser, limits, quota as its volume, pgs\'s fields as annotations', () => {
    const c = tenantCluster(tenant({ memoryBytes: 256 * 2 ** 20, cpus: 1.5, diskBytes: 5 * 2 ** 30, maxConnections: 50, autosuspendSeconds: 30 }), kube, { suspended: false });
    const spec = c.spec as {
      bootstrap: { initdb: unknown }; enableSuperuserAccess: boolean; resources: unknown; storage: { size: string };
      postgresql: { parameters: unknown }; plugins?: unknown;
    };
    assert.equal(c.metadata.name, 'acme');
    assert.equal(c.metadata.labels[LABEL_TENANT], 'acme');
    assert.deepEqual(spec.bootstrap.initdb, { database: 'acme', owner: OWNER_ROLE, secret: { name: 'acme-app' }, dataChecksums: true });
    assert.equal(spec.enableSuperuserAccess, false);
    assert.deepEqual(spec.resources, { requests: { memory: '256Mi', cpu: '1500m' }, limits: { memory: '256Mi', cpu: '1500m' } });
    assert.equal(spec.storage.size, '5Gi');
    assert.deepEqual(spec.postgresql.parameters, { max_connections: '50' });
    assert.deepEqual(JSON.parse(c.metadata.annotations?.[TENANT_ANNOTATION] ?? ''), tenant({ memoryBytes: 256 * 2 ** 20, cpus: 1.5, diskBytes: 5 * 2 ** 30, maxConnections: 50, autosuspendSeconds: 30 }));
    assert.equal(c.metadata.annotations?.[HIBERNATION], 'off');
    assert.equal(spec.plugins, undefined, 'no archiving without an S3 target');
  });

  it('suspended or stopped: the Cluster hibernates and its backup schedule is suspended with it', () => {
    for (const [t, suspended] of [[tenant(), true], [tenant({ wanted: 'stopped' }), false]] as const) {
      assert.equal(tenantCluster(t, kube, { suspended }).metadata.annotations?.[HIBERNATION], 'on');
      assert.equal((tenantScheduledBackup(t, kube, { suspended })?.spec as { suspend: boolean }).suspend, true);
    }
    assert.equal((tenantScheduledBackup(tenant(), kube, { suspended: false })?.spec as { suspend: boolean }).suspend, false);
    assert.equal(tenantScheduledBackup(tenant({ backupSchedule: 'off' }), kube, { suspended: false }), undefined);
  });

  it('quantities: exact MiB and GiB, else bytes; CPUs in millicores', () => {
    assert.equal(quantity(2 ** 30), '1Gi');
    assert.equal(quantity(1536 * 2 ** 20), '1536Mi');
    assert.equal(quantity(100_000_001), '100000001');
    assert.equal(cpuQuantity(0.25), '250m');
    assert.equal(cpuQuantity(0.0001), '1m');
    fc.assert(fc.property(fc.integer({ min: 1, max: 2 ** 40 }), (bytes) => {
      const q = quantity(bytes);
      const value = q.endsWith('Gi') ? Number(q.slice(0, -2)) * 2 ** 30 : q.endsWith('Mi') ? Number(q.slice(0, -2)) * 2 ** 20 : Number(q);
      return value === bytes;
    }));
  });

  it('the same tenant gives the same objects (the runtime compares wanted with held)', () => {
    const a = tenantObjects(tenant({ memoryBytes: 2 ** 30 }), kube, { suspended: false, backup, ...secrets });
    const b = tenantObjects(tenant({ memoryBytes: 2 ** 30 }), kube, { suspended: false, backup, ...secrets });
    assert.deepEqual(a, b);
  });
});
