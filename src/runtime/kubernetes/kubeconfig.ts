/**
 * Where to connect to the Kubernetes API and as whom: from inside a pod (the
 * service account's token file, CA and namespace) or from a kubeconfig
 * (KUBECONFIG, else ~/.kube/config: its current context's server, CA, and a
 * bearer token, a token file, a credential program (`exec`) or a client
 * certificate).
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PgsError } from '../../core/errors.js';
import { parseExecConfig, type ExecConfig } from './exec-credential.js';

export interface KubeConnection {
  /** https://host:port (or http:// for a local test server). */
  server: string;
  namespace: string;
  token?: string;
  /** The token's file, read again as it rotates (a pod's projected token, a kubeconfig's token-file). */
  tokenFile?: string;
  /** A program that prints the token (a kubeconfig's user.exec). */
  exec?: ExecConfig;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  insecureSkipTlsVerify?: boolean;
}

const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/**
 * Where to connect: inside a pod, its service account; else the kubeconfig's
 * current context. `namespace` overrides both. Errors name what is missing.
 */
export async function loadConnection(options: { env?: NodeJS.ProcessEnv; namespace?: string; serviceAccountDir?: string } = {}): Promise<KubeConnection> {
  const env = options.env ?? process.env;
  const saDir = options.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  if (env.KUBERNETES_SERVICE_HOST) {
    const tokenFile = path.join(saDir, 'token');
    const [token, ca, namespace] = await Promise.all([
      fs.readFile(tokenFile, 'utf8'),
      fs.readFile(path.join(saDir, 'ca.crt')),
      // A pod without the namespace file (an older kubelet) is in "default".
      fs.readFile(path.join(saDir, 'namespace'), 'utf8').catch(() => 'default'),
    ]).catch((e: NodeJS.ErrnoException) => {
      throw new PgsError('KUBE_CONFIG', `inside a pod (KUBERNETES_SERVICE_HOST is set) but the service account's files cannot be read: ${e.message}`);
    });
    const host = env.KUBERNETES_SERVICE_HOST.includes(':') ? `[${env.KUBERNETES_SERVICE_HOST}]` : env.KUBERNETES_SERVICE_HOST;
    return { server: `https://${host}:${env.KUBERNETES_SERVICE_PORT ?? '443'}`, token: token.trim(), tokenFile, ca, namespace: options.namespace ?? namespace.trim() };
  }
  const file = env.KUBECONFIG?.split(path.delimiter)[0] || path.join(env.HOME ?? os.homedir(), '.kube', 'config');
  const text = await fs.readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new PgsError('KUBE_CONFIG', `no Kubernetes API to talk to: not in a pod, and no kubeconfig at ${file} (${e.code ?? e.message}); set KUBECONFIG`);
  });
  return parseKubeconfig(text, file, options.namespace);
}

interface Kubeconfig {
  'current-context'?: string;
  contexts?: { name: string; context: { cluster: string; user: string; namespace?: string } }[];
  clusters?: { name: string; cluster: { server: string; 'certificate-authority-data'?: string; 'certificate-authority'?: string; 'insecure-skip-tls-verify'?: boolean } }[];
  users?: { name: string; user: { token?: string; 'token-file'?: string; 'client-certificate-data'?: string; 'client-key-data'?: string; 'client-certificate'?: string; 'client-key'?: string; exec?: unknown } }[];
}

type YamlParse = (text: string) => unknown;

/** The current context of a kubeconfig as a connection; files it names are read relative to it. */
export async function parseKubeconfig(text: string, file: string, namespace?: string): Promise<KubeConnection> {
  // In the bundled CLI the package is CommonJS behind a default export; unbundled, ES named exports.
  const yaml = await import('yaml') as { parse?: YamlParse; default?: { parse: YamlParse } };
  const parse = (yaml.parse ?? yaml.default?.parse) as YamlParse;
  const config = parse(text) as Kubeconfig | null;
  const bad = (why: string) => new PgsError('KUBE_CONFIG', `kubeconfig ${file}: ${why}`);
  const contextName = config?.['current-context'];
  if (!contextName) throw bad('no current-context');
  const context = config.contexts?.find((c) => c.name === contextName)?.context;
  if (!context) throw bad(`context ${contextName} is not defined`);
  const cluster = config.clusters?.find((c) => c.name === context.cluster)?.cluster;
  if (!cluster?.server) throw bad(`cluster ${context.cluster} has no server`);
  const user = config.users?.find((u) => u.name === context.user)?.user ?? {};
  const relative = (p: string) => (path.isAbsolute(p) ? p : path.join(path.dirname(file), p));
  const data = async (inline: string | undefined, name: string | undefined): Promise<Buffer | undefined> => {
    if (inline) return Buffer.from(inline, 'base64');
    return name ? fs.readFile(relative(name)) : undefined;
  };
  const connection: KubeConnection = { server: cluster.server.replace(/\/+$/, ''), namespace: namespace ?? context.namespace ?? 'default' };
  if (user.token) connection.token = user.token;
  else if (user['token-file']) {
    connection.tokenFile = relative(user['token-file']);
    connection.token = (await fs.readFile(connection.tokenFile, 'utf8')).trim();
  } else if (user.exec !== undefined) {
    try {
      connection.exec = parseExecConfig(user.exec, context.user, path.dirname(file));
    } catch (e) {
      throw bad((e as Error).message);
    }
  }
  const ca = await data(cluster['certificate-authority-data'], cluster['certificate-authority']);
  if (ca) connection.ca = ca;
  const cert = await data(user['client-certificate-data'], user['client-certificate']);
  const key = await data(user['client-key-data'], user['client-key']);
  if (cert && key) {
    connection.cert = cert;
    connection.key = key;
  }
  if (cluster['insecure-skip-tls-verify']) connection.insecureSkipTlsVerify = true;
  return connection;
}
