import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgsError } from '../../src/core/errors.js';
import { KubeClient, KubeError, RESOURCES, loadConnection, parseKubeconfig } from '../../src/runtime/kubernetes/client.js';
import { parseExecCredential, runExecPlugin, type ExecConfig } from '../../src/runtime/kubernetes/exec-credential.js';
import { FakeKube } from '../helpers/fake-kube.js';

const NS = 'pgs';
const V1 = 'client.authentication.k8s.io/v1';
const BETA = 'client.authentication.k8s.io/v1beta1';

/** One clear error: a PgsError of the kubeconfig, on one line, matching `pattern`. */
const oneLine = (pattern: RegExp) => (e: unknown) => {
  assert.ok(e instanceof PgsError, String(e));
  assert.equal(e.code, 'KUBE_CONFIG');
  assert.ok(!e.message.includes('\n'), `one line: ${e.message}`);
  assert.match(e.message, pattern);
  return true;
};

describe('a token that rotates: a pod\'s projected token file, a kubeconfig\'s token-file', () => {
  let dir: string;
  let fake: FakeKube;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'pgs-kube-token-'));
    fake = await new FakeKube({ token: 'first' }).start();
  });
  after(async () => {
    await fake.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('inside a pod the token file is kept, and after the kubelet rotates it a 401 makes the client read it again and retry once', async () => {
    const sa = path.join(dir, 'sa');
    mkdirSync(sa);
    writeFileSync(path.join(sa, 'token'), 'first\n');
    writeFileSync(path.join(sa, 'ca.crt'), '');
    const connection = await loadConnection({ env: { KUBERNETES_SERVICE_HOST: '127.0.0.1' }, serviceAccountDir: sa });
    assert.equal(connection.tokenFile, path.join(sa, 'token'));
    // The same files, against the fake server over HTTP.
    const client = new KubeClient({ ...connection, server: fake.url, ca: undefined, namespace: NS });
    try {
      await client.list(RESOURCES.secrets);
      writeFileSync(path.join(sa, 'token'), 'second\n');
      fake.token = 'second';
      const before = fake.requests.length;
      assert.deepEqual((await client.list(RESOURCES.secrets)).items, []);
      assert.equal(fake.requests.length, before + 2, 'refused with the old token, then sent with the one read again');
      // A token the server refuses that the file does not replace: the 401 stands, after one read, no loop.
      fake.token = 'third';
      const again = fake.requests.length;
      await assert.rejects(client.list(RESOURCES.secrets), (e: unknown) => e instanceof KubeError && e.statusCode === 401);
      assert.equal(fake.requests.length, again + 1, 'the file held the same token: no second try');
    } finally {
      fake.token = 'first';
      client.close();
    }
  });

  it('the file is read again once it is older than the refresh period (here 0: every request), so a rotation costs no 401', async () => {
    const file = path.join(dir, 'token-file');
    writeFileSync(path.join(dir, 'config'), [
      'current-context: c', 'contexts: [{name: c, context: {cluster: k, user: u}}]', `clusters: [{name: k, cluster: {server: "${fake.url}"}}]`,
      'users: [{name: u, user: {token-file: token-file}}]',
    ].join('\n'));
    writeFileSync(file, 'first');
    const connection = await loadConnection({ env: { KUBECONFIG: path.join(dir, 'config') }, namespace: NS });
    assert.deepEqual([connection.token, connection.tokenFile], ['first', file]);
    const client = new KubeClient(connection, { credentials: { refreshMs: 0 } });
    try {
      await client.list(RESOURCES.secrets);
      writeFileSync(file, 'rotated');
      fake.token = 'rotated';
      const before = fake.requests.length;
      await client.list(RESOURCES.secrets);
      assert.equal(fake.requests.length, before + 1, 'the new token went with the first request');
    } finally {
      fake.token = 'first';
      client.close();
    }
  });

  it('a token given as such is not retried after a 401', async () => {
    const client = new KubeClient({ server: fake.url, namespace: NS, token: 'stale' });
    const before = fake.requests.length;
    await assert.rejects(client.list(RESOURCES.secrets), (e: unknown) => e instanceof KubeError && e.statusCode === 401);
    assert.equal(fake.requests.length, before + 1);
    client.close();
  });
});

describe('credentials from a program (kubeconfig exec), as EKS and GKE give them', () => {
  let dir: string;
  let fake: FakeKube;
  const plugin = (name: string, body: string) => {
    const file = path.join(dir, name);
    writeFileSync(file, `#!/bin/sh\n${body}\n`);
    chmodSync(file, 0o755);
    return file;
  };
  const config = (command: string, more: Partial<ExecConfig> = {}): ExecConfig => ({ apiVersion: BETA, command, args: [], env: [], dir, ...more });
  const kubeconfig = (exec: string) => [
    'current-context: c', 'contexts: [{name: c, context: {cluster: k, user: u, namespace: pgs}}]', `clusters: [{name: k, cluster: {server: "${fake.url}"}}]`,
    `users: [{name: u, user: {exec: ${exec}}}]`,
  ].join('\n');

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'pgs-kube-exec-'));
    fake = await new FakeKube({ token: 'from-plugin-1' }).start();
    // The plugin: counts its runs, keeps what it was told, prints the token in its file and an expiry its args give.
    plugin('get-token.sh', [
      'echo run >> "$RUNS"',
      'printf %s "$KUBERNETES_EXEC_INFO" > "$RUNS.info"',
      'echo "$@" > "$RUNS.args"',
      'printf \'{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"%s","expirationTimestamp":"%s"}}\' "$(cat "$TOKEN_FILE")" "$2"',
    ].join('\n'));
    writeFileSync(path.join(dir, 'token'), 'from-plugin-1');
  });
  after(async () => {
    await fake.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs the command with its args and env, sends its token, keeps it until its expiry, and runs again after a 401', async () => {
    const runs = path.join(dir, 'runs');
    const inAnHour = new Date(Date.now() + 3_600_000).toISOString();
    const text = kubeconfig(`{apiVersion: ${BETA}, command: ./get-token.sh, args: [--expires, "${inAnHour}"], env: [{name: RUNS, value: "${runs}"}, {name: TOKEN_FILE, value: "${path.join(dir, 'token')}"}], interactiveMode: Never}`);
    const connection = await parseKubeconfig(text, path.join(dir, 'config'));
    assert.equal(connection.exec?.command, './get-token.sh');
    const client = new KubeClient(connection);
    try {
      await client.list(RESOURCES.secrets);
      await client.list(RESOURCES.secrets);
      assert.equal(readFileSync(runs, 'utf8'), 'run\n', 'one run for two requests: the token is kept until it expires');
      assert.equal(readFileSync(`${runs}.args`, 'utf8').trim(), `--expires ${inAnHour}`);
      assert.deepEqual(JSON.parse(readFileSync(`${runs}.info`, 'utf8')), { apiVersion: BETA, kind: 'ExecCredential', spec: { interactive: false } });
      // The cluster stops taking the token: the program is run again and the request retried once.
      writeFileSync(path.join(dir, 'token'), 'from-plugin-2');
      fake.token = 'from-plugin-2';
      const before = fake.requests.length;
      await client.list(RESOURCES.secrets);
      assert.equal(fake.requests.length, before + 2);
      assert.equal(readFileSync(runs, 'utf8'), 'run\nrun\n');
    } finally {
      client.close();
    }
  });

  it('a token that expires within the margin is not kept: each request runs the program', async () => {
    const runs = path.join(dir, 'runs-soon');
    const soon = new Date(Date.now() + 5_000).toISOString();
    const client = new KubeClient({ server: fake.url, namespace: NS, exec: config('./get-token.sh', { args: ['--expires', soon], env: [{ name: 'RUNS', value: runs }, { name: 'TOKEN_FILE', value: path.join(dir, 'token') }] }) });
    try {
      await client.list(RESOURCES.secrets);
      await client.list(RESOURCES.secrets);
      assert.equal(readFileSync(runs, 'utf8'), 'run\nrun\n');
    } finally {
      client.close();
    }
  });

  it('a hostile or broken program is one clear error, and nothing it printed is repeated', async () => {
    const garbage = plugin('garbage.sh', 'echo "secret-looking-garbage {{{"');
    await assert.rejects(runExecPlugin(config(garbage)), (e: unknown) => oneLine(/printed \d+ bytes that are not JSON/)(e) && !(e as Error).message.includes('secret-looking'));
    const huge = plugin('huge.sh', 'head -c 5000000 /dev/zero');
    await assert.rejects(runExecPlugin(config(huge)), oneLine(/printed more than 256 KiB/));
    const fails = plugin('fails.sh', 'echo "the SSO session has expired\nsecond line" >&2; exit 3');
    await assert.rejects(runExecPlugin(config(fails)), oneLine(/"[^"]*fails\.sh" exited with status 3: the SSO session has expired$/));
    const hangs = plugin('hangs.sh', 'exec sleep 30');
    await assert.rejects(runExecPlugin(config(hangs), { timeoutMs: 300 }), oneLine(/did not finish in 0\.3 s/));
    await assert.rejects(runExecPlugin(config('pgs-no-such-plugin', { installHint: 'install it with: apt install the-plugin' })), oneLine(/"pgs-no-such-plugin" is not installed \(not found\): install it with: apt install the-plugin/));
    // Through the client: the request fails with the program's error, nothing is sent.
    const before = fake.requests.length;
    const client = new KubeClient({ server: fake.url, namespace: NS, exec: config(garbage) });
    await assert.rejects(client.list(RESOURCES.secrets), oneLine(/not JSON/));
    assert.equal(fake.requests.length, before);
    client.close();
  });

  it('what the program prints is checked field by field', () => {
    const cred = (status: unknown, apiVersion = BETA, kind = 'ExecCredential') => JSON.stringify({ apiVersion, kind, status });
    assert.deepEqual(parseExecCredential(cred({ token: 'abc.def-ghi' }), BETA, 'p'), { token: 'abc.def-ghi' });
    assert.deepEqual(parseExecCredential(cred({ token: 't', expirationTimestamp: '2030-01-02T03:04:05Z' }, V1), V1, 'p'), { token: 't', expiresAt: Date.UTC(2030, 0, 2, 3, 4, 5) });
    const refused: [string, RegExp][] = [
      ['[1, 2]', /JSON that is not an ExecCredential/],
      [cred({ token: 't' }, BETA, 'Secret'), /not an ExecCredential/],
      [cred({ token: 't' }, V1), /answered in apiVersion "client.authentication.k8s.io\/v1", the kubeconfig asks for .*v1beta1/],
      [JSON.stringify({ apiVersion: BETA, kind: 'ExecCredential' }), /without a status/],
      [cred({}), /without status\.token/],
      [cred({ token: 42 }), /without status\.token/],
      [cred({ token: 'abc\r\nX-Injected: 1' }), /not a bearer token/],
      [cred({ token: 'has space' }), /not a bearer token/],
      [cred({ token: 'x'.repeat(20_000) }), /not a bearer token/],
      [cred({ token: 't', expirationTimestamp: 'tomorrow' }), /expirationTimestamp that is not an RFC 3339 time/],
      [cred({ token: 't', expirationTimestamp: 1700000000 }), /expirationTimestamp/],
      [cred({ clientCertificateData: 'PEM', clientKeyData: 'PEM' }), /gave a client certificate; pgs takes only a token/],
    ];
    for (const [text, pattern] of refused) assert.throws(() => parseExecCredential(text, BETA, 'p'), oneLine(pattern), text.slice(0, 80));
  });

  it('an exec stanza pgs cannot run is refused when the kubeconfig is read, naming the field', async () => {
    const cases: [string, RegExp][] = [
      ['{command: aws}', /user u's exec: apiVersion null is not one pgs speaks/],
      ['{apiVersion: client.authentication.k8s.io/v1alpha1, command: aws}', /v1alpha1" is not one pgs speaks/],
      [`{apiVersion: ${V1}}`, /has no command/],
      [`{apiVersion: ${V1}, command: aws, args: [1]}`, /args must be a list of strings/],
      [`{apiVersion: ${V1}, command: aws, env: [{name: A}]}`, /env must be a list of \{name, value\} strings/],
      [`{apiVersion: ${V1}, command: aws, interactiveMode: Always}`, /interactiveMode Always needs a terminal/],
      [`{apiVersion: ${V1}, command: aws, interactiveMode: Sometimes}`, /interactiveMode "Sometimes" is not/],
    ];
    for (const [exec, pattern] of cases) {
      await assert.rejects(parseKubeconfig(kubeconfig(exec), 'kc'), (e: unknown) => oneLine(/^kubeconfig kc: /)(e) && oneLine(pattern)(e), exec);
    }
  });
});
