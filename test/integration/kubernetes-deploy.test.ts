/**
 * deploy/kubernetes as `kubectl apply -k` would send it: built by kubectl's
 * own kustomize (offline), every object checked against its type with
 * unknown fields refused, and the Role checked against the calls the
 * kubernetes runtime declares (src/runtime/kubernetes/permissions.ts).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { PERMISSIONS } from '../../src/runtime/kubernetes/permissions.js';
import { kubeProblems } from '../helpers/kube-schemas.js';
import { ROOT, runCommand } from '../helpers/pgs.js';

interface Obj { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> }; [field: string]: unknown }
interface Container {
  args: string[];
  ports: { name: string; containerPort: number }[];
  envFrom: { configMapRef: { name: string } }[];
  securityContext: { readOnlyRootFilesystem: boolean; allowPrivilegeEscalation: boolean; capabilities: { drop: string[] } };
}
interface Deployment { spec: { replicas: number; template: { metadata: { labels: Record<string, string> }; spec: { serviceAccountName: string; securityContext: { runAsNonRoot: boolean }; containers: Container[] } } } }
interface RoleBinding { roleRef: { name: string }; subjects: unknown[] }
interface Service { spec: { selector: Record<string, string>; ports: { port: number; targetPort: string }[] } }
interface Monitor { kind: string; spec: { endpoints: { port: string }[] } }

const DEPLOY = path.join(ROOT, 'deploy', 'kubernetes');
const kubectlHere = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status === 0;
if (!kubectlHere && process.env.CI) throw new Error('no kubectl: .ci/run installs kubernetes-client');

describe('deploy/kubernetes: kubectl kustomize builds it, every object validates, the Role grants exactly what the code calls', { skip: kubectlHere ? false : 'no kubectl here' }, () => {
  let objects: Obj[] = [];
  const one = (kind: string) => {
    const found = objects.filter((o) => o.kind === kind);
    assert.equal(found.length, 1, `one ${kind}`);
    return found[0] as Obj;
  };

  before(async () => {
    const built = await runCommand('kubectl', ['kustomize', DEPLOY], process.env);
    assert.equal(built.code, 0, built.stderr);
    objects = parseAllDocuments(built.stdout).map((d) => d.toJS() as Obj).filter(Boolean);
  });

  it('builds the pgs objects, each valid against its type (unknown fields refused), all in namespace pgs', () => {
    assert.deepEqual(objects.map((o) => o.kind).sort(), ['ConfigMap', 'Deployment', 'Namespace', 'PodDisruptionBudget', 'Role', 'RoleBinding', 'Service', 'ServiceAccount']);
    for (const o of objects) {
      assert.deepEqual(kubeProblems(o), [], `${o.kind} ${o.metadata.name}`);
      if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, 'pgs', `${o.kind} in namespace pgs`);
    }
  });

  it('the Role grants exactly the verbs and resources the runtime calls, nothing cluster-wide', () => {
    const granted = new Set<string>();
    for (const rule of one('Role').rules as { apiGroups: string[]; resources: string[]; verbs: string[] }[]) {
      for (const g of rule.apiGroups) for (const r of rule.resources) for (const v of rule.verbs) granted.add(`${g}/${r}/${v}`);
    }
    const needed = new Set(PERMISSIONS.flatMap((p) => p.verbs.map((v) => `${p.group}/${p.resource}/${v}`)));
    assert.deepEqual([...granted].filter((g) => !needed.has(g)), [], 'granted but never called');
    assert.deepEqual([...needed].filter((n) => !granted.has(n)), [], 'called but not granted');
    assert.ok(![...granted].some((g) => g.includes('*')), 'no wildcards');
    assert.equal(objects.filter((o) => o.kind === 'ClusterRole' || o.kind === 'ClusterRoleBinding').length, 0);
  });

  it('the pods run as the bound service account, unprivileged, two or more, behind a Service on 5432', () => {
    const deployment = one('Deployment') as unknown as Deployment;
    const pod = deployment.spec.template.spec;
    assert.ok(deployment.spec.replicas >= 2);
    assert.equal(pod.serviceAccountName, one('ServiceAccount').metadata.name);
    const binding = one('RoleBinding') as unknown as RoleBinding;
    assert.equal(binding.roleRef.name, one('Role').metadata.name);
    assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: pod.serviceAccountName, namespace: 'pgs' }]);
    assert.equal(pod.securityContext.runAsNonRoot, true);
    const container = pod.containers[0] as Container;
    assert.equal(container.securityContext.readOnlyRootFilesystem, true);
    assert.equal(container.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(container.securityContext.capabilities.drop, ['ALL']);
    assert.deepEqual(container.args, ['start', '--foreground']);
    const service = one('Service') as unknown as Service;
    for (const [k, v] of Object.entries(service.spec.selector)) assert.equal(deployment.spec.template.metadata.labels[k], v);
    const named = new Map(container.ports.map((p) => [p.name, p.containerPort]));
    for (const port of service.spec.ports) assert.ok(named.has(port.targetPort), `service port ${port.port} → ${port.targetPort}`);
    assert.ok(service.spec.ports.some((p) => p.port === 5432));
    const config = one('ConfigMap');
    assert.equal((config.data as Record<string, string>).PGS_RUNTIME, 'kubernetes');
    assert.equal(container.envFrom[0]?.configMapRef.name, config.metadata.name);
  });

  it('the ServiceMonitor component scrapes the api port (its CRD is the Prometheus Operator\'s, not checked here)', () => {
    const [monitor] = parseAllDocuments(readFileSync(path.join(DEPLOY, 'servicemonitor', 'servicemonitor.yaml'), 'utf8')).map((d) => d.toJS() as Monitor);
    assert.equal(monitor?.kind, 'ServiceMonitor');
    assert.equal(monitor?.spec.endpoints[0]?.port, 'api');
  });
});
