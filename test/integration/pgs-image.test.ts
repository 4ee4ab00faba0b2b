/**
 * The pgs image (deploy/docker): built here without a registry by
 * deploy/docker/build-local.sh, the layout of the Dockerfile, run as the
 * Deployment runs it (no network here, read-only root, every capability
 * dropped, its home a tmpfs). Needs a Docker engine: DOCKER_HOST or
 * /var/run/docker.sock; in CI (.ci/run starts dockerd) it is required,
 * elsewhere it is skipped with a reason.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { ROOT, runCommand } from '../helpers/pgs.js';

const IMAGE = 'pgs-test/pgs:local';
const dockerSocket = process.env.DOCKER_HOST?.replace(/^unix:\/\//, '') ?? '/var/run/docker.sock';
const dockerHere = existsSync(dockerSocket);
if (!dockerHere && process.env.CI) throw new Error(`no Docker engine at ${dockerSocket}: .ci/run starts one`);
const isRoot = process.getuid?.() === 0;

/** docker run as deploy/kubernetes's Deployment runs the container, with no network. */
const run = (args: string[], env: Record<string, string> = {}) => runCommand('docker', [
  'run', '--rm', '--network', 'none', '--read-only', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges',
  '--tmpfs', '/var/run/pgs:uid=10001,gid=10001,mode=0700',
  ...Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]), IMAGE, ...args,
], process.env);

describe('the pgs image: built locally, it runs unprivileged with a read-only root and says what it lacks', { skip: !dockerHere || !isRoot ? `no Docker engine here (${dockerSocket}), or not root` : false }, () => {
  before(async () => {
    const built = await runCommand('bash', [path.join(ROOT, 'deploy/docker/build-local.sh'), IMAGE], process.env);
    assert.equal(built.code, 0, built.stderr);
  });

  it('has the Dockerfile\'s user, entry point, command and ports', async () => {
    const config = await runCommand('docker', ['inspect', '--format', '{{json .Config}}', IMAGE], process.env);
    const c = JSON.parse(config.stdout) as { User: string; Entrypoint: string[]; Cmd: string[]; ExposedPorts: Record<string, unknown>; Env: string[] };
    const dockerfile = readFileSync(path.join(ROOT, 'deploy/docker/Dockerfile'), 'utf8');
    assert.equal(c.User, /^USER (\S+)$/m.exec(dockerfile)?.[1]);
    assert.deepEqual(c.Entrypoint, JSON.parse(/^ENTRYPOINT (.+)$/m.exec(dockerfile)?.[1] ?? 'null'));
    assert.deepEqual(c.Cmd, JSON.parse(/^CMD (.+)$/m.exec(dockerfile)?.[1] ?? 'null'));
    assert.deepEqual(Object.keys(c.ExposedPorts).sort(), ['5432/tcp', '5480/tcp']);
    assert.ok(c.Env.includes('PGS_HOME=/var/run/pgs'));
  });

  it('runs the CLI as uid 10001', async () => {
    const version = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version as string;
    const shown = await run(['--version']);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, new RegExp(version.replace(/\./g, '\\.')));
    const uid = await runCommand('docker', ['run', '--rm', '--network', 'none', '--entrypoint', 'node', IMAGE, '-e', 'console.log(process.getuid(), process.getgid())'], process.env);
    assert.equal(uid.stdout, '10001 10001');
    // "pgs" is on the PATH, for kubectl exec deploy/pgs -- pgs list.
    const onPath = await runCommand('docker', ['run', '--rm', '--network', 'none', '--entrypoint', 'pgs', IMAGE, '--version'], process.env);
    assert.equal(onPath.code, 0, onPath.stderr);
    assert.match(onPath.stdout, new RegExp(version.replace(/\./g, '\\.')));
  });

  it('the daemon on the kubernetes runtime, with no API server to talk to, fails with one line saying so', async () => {
    const outside = await run([], { PGS_RUNTIME: 'kubernetes', PGS_DOMAIN: 'db.example.com' });
    assert.equal(outside.code, 1);
    assert.equal(outside.stderr.trim(), 'pgs start: no Kubernetes API to talk to: not in a pod, and no kubeconfig at /var/run/pgs/.kube/config (ENOENT); set KUBECONFIG');
    const inPod = await run([], { PGS_RUNTIME: 'kubernetes', KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' });
    assert.equal(inPod.code, 1);
    assert.match(inPod.stderr.trim(), /^pgs start: inside a pod \(KUBERNETES_SERVICE_HOST is set\) but the service account's files cannot be read: ENOENT[^\n]*$/);
  });
});
