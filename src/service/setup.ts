import { promises as fs } from 'node:fs';
import path from 'node:path';
import { domainProblem } from '../catalog/ids.js';
import { CATALOG_VERSION, DEFAULT_API_LISTEN, type Catalog, type Settings } from '../catalog/schema.js';
import { parseListen } from '../core/listen.js';
import { pathExists, writeAtomic } from '../core/files.js';
import { PgsError } from '../core/errors.js';
import { defaultDataRoot, isRoot } from '../core/paths.js';
import { installDistribution } from '../runtime/distribution.js';
import { DockerApi, dockerSocket } from '../runtime/docker-api.js';
import { parseS3Url, probeTarget, s3ClientFor } from '../backup/s3.js';
import { DEFAULT_SERVER_USER, ensureSystemUser } from '../runtime/system-user.js';
import { checkCertificatePair, generateSelfSigned, type CertificateInfo } from '../tls/certificate.js';
import type { PgsContext } from './context.js';

/** `pgs setup`: the home's settings, its certificate, its runtime made ready; a setup refused makes nothing. */
export const DEFAULT_DOMAIN = 'pgs.localhost';
export const DEFAULT_PORT = 5432;
export const DEFAULT_MAX_CONNECTIONS = 20;

export interface SetupOptions {
  domain?: string;
  port?: number;
  certFile?: string;
  keyFile?: string;
  /** `ADDR:PORT` for the REST API on TCP; null: off (unix socket only). */
  apiListen?: string | null;
  /** Per-tenant series in /metrics. */
  tenantMetrics?: boolean;
  /** `s3://bucket/prefix`, or null for none (the data root only). */
  backupTarget?: string | null;
  s3Endpoint?: string | null;
  s3Region?: string | null;
  /** Servers that may run at once; null: derived from memory. */
  maxRunning?: number | null;
  /** The largest upload to import, in bytes; null: auto (from the data root's free space). */
  importMaxBytes?: number | null;
  /** A new domain renames every tenant's host name: it must be confirmed when tenants exist. */
  confirmDomainChange?: boolean;
  runtime?: 'native' | 'docker' | 'kubernetes';
  /** The docker runtime's image (null: postgres:18); the kubernetes runtime's PostgreSQL image (null: the operator's). */
  image?: string | null;
  /** The kubernetes runtime: the tenants' namespace (null: the kubeconfig's or the pod's). */
  namespace?: string | null;
  /** The kubernetes runtime: the volumes' storage class (null: the cluster's default). */
  storageClass?: string | null;
  /** The kubernetes runtime: instances per tenant cluster. */
  instances?: 1 | 2 | 3;
  /** The folder holding `postgres` inside the image; null: the official image's. */
  pgBinPath?: string | null;
}

export interface SetupReport {
  home: string;
  settings: Settings;
  certificate: CertificateInfo;
  actions: string[];
}

export async function setupHome(ctx: PgsContext, options: SetupOptions): Promise<SetupReport> {
  const domain = options.domain?.toLowerCase();
  if (domain !== undefined) {
    const problem = domainProblem(domain);
    if (problem) throw new PgsError('INVALID_SETTING', `invalid --domain ${JSON.stringify(options.domain)}: ${problem}`);
  }
  if (options.apiListen !== undefined && options.apiListen !== null) parseListen(options.apiListen);
  if (options.backupTarget) parseS3Url(options.backupTarget);
  if (options.s3Endpoint && !/^https?:\/\/[^/]+/.test(options.s3Endpoint)) {
    throw new PgsError('INVALID_SETTING', `invalid --s3-endpoint ${JSON.stringify(options.s3Endpoint)}: a URL such as https://minio.example.com:9000`);
  }
  if ((options.certFile === undefined) !== (options.keyFile === undefined)) {
    throw new PgsError('USAGE', '--cert and --key go together: give both or neither');
  }
  return ctx.store.update(async (current) => {
    const actions: string[] = [];
    const before = current?.settings;
    const settingsDomain = domain ?? before?.domain ?? DEFAULT_DOMAIN;
    const tenantCount = current?.tenants.length ?? 0;
    if (before && settingsDomain !== before.domain && tenantCount > 0 && !options.confirmDomainChange) {
      throw new PgsError('NOT_CONFIRMED', `a new domain changes the host name of every tenant (${tenantCount}: ${before.domain} -> ${settingsDomain}); clients must use the new names. Pass --yes to confirm`);
    }
    const port = options.port ?? before?.port ?? DEFAULT_PORT;
    const dataRoot = before?.dataRoot ?? defaultDataRoot(ctx.home, ctx.env);
    const runtimeKind = options.runtime ?? before?.runtime ?? 'native';
    const kubernetes = runtimeKind === 'kubernetes';
    // On Kubernetes the servers run in the cluster's pods, not as users of this host.
    const serverUser = isRoot() && !kubernetes ? (ctx.env.PGS_SERVER_USER || before?.serverUser || DEFAULT_SERVER_USER) : null;
    if (serverUser !== null && ensureSystemUser(serverUser)) {
      actions.push(`created the system user ${serverUser}: PostgreSQL refuses to run as root, so the servers run as ${serverUser}`);
    }
    await fs.mkdir(ctx.home, { recursive: true, mode: 0o700 });
    await fs.chmod(ctx.home, 0o700);
    // The runtime only starts and stops servers: the data folders are the same on both, so a change
    // needs only that no server runs (pgs stop first).
    const sameRuntime = runtimeKind === (before?.runtime ?? 'native');
    if (!kubernetes && (options.namespace != null || options.storageClass != null || options.instances !== undefined)) {
      throw new PgsError('USAGE', '--namespace, --storage-class and --instances are settings of the kubernetes runtime: add --runtime kubernetes');
    }
    const runtimeSettings = {
      ...(runtimeKind !== 'native' ? { runtime: runtimeKind } : {}),
      ...(runtimeKind !== 'native' ? keep('image', options.image, sameRuntime ? before?.image : undefined) : {}),
      ...(runtimeKind === 'docker' ? keep('pgBinPath', options.pgBinPath, before?.pgBinPath) : {}),
      ...(kubernetes ? keep('storageClass', options.storageClass, sameRuntime ? before?.storageClass : undefined) : {}),
      ...(kubernetes ? keep('instances', options.instances, sameRuntime ? before?.instances : undefined) : {}),
    };
    if (kubernetes && !sameRuntime && (current?.tenants.length ?? 0) > 0) {
      throw new PgsError('INVALID_STATE', `the kubernetes runtime keeps its tenants in the cluster, and the ${current?.tenants.length} tenants of this host would not move there: remove them first (pgs remove), or keep this runtime`);
    }
    if (before && !sameRuntime && before.runtime !== 'kubernetes') {
      const old = ctx.runtimeFor(before);
      for (const t of current?.tenants ?? []) {
        if ((await old.status(t.id, { fresh: true })).state !== 'stopped') {
          throw new PgsError('INVALID_STATE', `tenant ${t.id}'s server runs on the ${before.runtime ?? 'native'} runtime: stop pgs ("pgs stop") before changing the runtime`);
        }
      }
    }

    // The backup target is checked first: a setup refused for it has made nothing.
    const target = {
      ...keep('backupTarget', options.backupTarget, before?.backupTarget),
      ...keep('s3Endpoint', options.s3Endpoint, before?.s3Endpoint),
      ...keep('s3Region', options.s3Region, before?.s3Region),
    };
    // On Kubernetes the clusters reach the bucket with the Secret's credentials, not this environment's: the probe checks the Secret.
    const client = kubernetes ? undefined : s3ClientFor(target, ctx.env);
    if (client && (target.backupTarget !== before?.backupTarget || target.s3Endpoint !== before?.s3Endpoint || target.s3Region !== before?.s3Region)) {
      await probeTarget(client);
      actions.push(`checked that ${client.url} takes backups (with the credentials of this environment; the daemon uses its own)`);
    }
    // A first setup that fails leaves no data root behind (a later one keeps what works).
    const madeDataRoot = !(await pathExists(dataRoot));
    let cert: Awaited<ReturnType<typeof settleCertificate>>;
    let kubeNamespace: string | undefined;
    try {
      if (kubernetes) {
        const { probeCluster } = await import('../runtime/kubernetes/probe.js');
        const probed = await probeCluster(ctx.env, options.namespace ?? (sameRuntime ? before?.namespace : undefined) ?? undefined, target.backupTarget !== undefined, target.s3Region !== undefined);
        kubeNamespace = probed.namespace;
        actions.push(probed.action);
      } else {
        const { installed } = await installDistribution(dataRoot, ctx.env);
        if (installed) actions.push(installed);
        actions.push(...(await ctx.runtimeFor({ dataRoot, serverUser, ...runtimeSettings }).prepare()));
      }
      cert = await settleCertificate(ctx, options, before, settingsDomain, actions);
    } catch (err) {
      if (madeDataRoot) await fs.rm(dataRoot, { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
    const settings: Settings = {
      domain: settingsDomain,
      port,
      certFile: cert.certFile,
      keyFile: cert.keyFile,
      certSelfSigned: cert.selfSigned,
      dataRoot,
      serverUser,
      defaultMaxConnections: before?.defaultMaxConnections ?? DEFAULT_MAX_CONNECTIONS,
      apiListen: options.apiListen !== undefined ? options.apiListen : (before?.apiListen !== undefined ? before.apiListen : DEFAULT_API_LISTEN),
      ...(options.tenantMetrics !== undefined ? { tenantMetrics: options.tenantMetrics } : before?.tenantMetrics !== undefined ? { tenantMetrics: before.tenantMetrics } : {}),
      ...target,
      ...keep('maxRunning', options.maxRunning, before?.maxRunning),
      ...keep('importMaxBytes', options.importMaxBytes, before?.importMaxBytes),
      ...runtimeSettings,
      ...(kubeNamespace !== undefined ? { namespace: kubeNamespace } : {}),
    };
    const next: Catalog = { version: CATALOG_VERSION, settings, tenants: current?.tenants ?? [] };
    if (!current) actions.push(`wrote ${ctx.store.paths.catalog}`);
    // Leaving the docker runtime: its stopped containers would only linger (the data is in the folders).
    const leftDocker = before?.runtime === 'docker' && runtimeKind !== 'docker';
    const afterWrite = leftDocker ? async () => { actions.push(await removeContainers(ctx)); } : undefined;
    return { next, result: { home: ctx.home, settings, certificate: cert.info, actions }, ...(afterWrite ? { afterWrite } : {}) };
  });
}

/** Removes the docker runtime's containers of this pgs home (all stopped: the runtime changes only with pgs stopped). */
async function removeContainers(ctx: PgsContext): Promise<string> {
  try {
    const docker = new DockerApi(dockerSocket(ctx.env));
    const containers = await docker.list(`pgs.home=${ctx.home}`);
    for (const c of containers) await docker.remove(c.Id);
    return `removed the docker runtime's ${containers.length} container${containers.length === 1 ? '' : 's'} (the tenants' data stays in their folders)`;
  } catch (err) {
    return `could not remove the docker runtime's containers (${(err as Error).message}): remove the containers labelled pgs.home=${ctx.home} yourself`;
  }
}

async function settleCertificate(
  ctx: PgsContext,
  options: SetupOptions,
  before: Settings | undefined,
  domain: string,
  actions: string[],
): Promise<{ certFile: string; keyFile: string; selfSigned: boolean; info: CertificateInfo }> {
  if (options.certFile !== undefined && options.keyFile !== undefined) {
    const certFile = path.resolve(options.certFile);
    const keyFile = path.resolve(options.keyFile);
    const info = await checkCertificatePair(certFile, keyFile, domain);
    actions.push(`using the certificate ${certFile}`);
    return { certFile, keyFile, selfSigned: false, info };
  }
  if (before) {
    try {
      const info = await checkCertificatePair(before.certFile, before.keyFile, domain);
      return { certFile: before.certFile, keyFile: before.keyFile, selfSigned: before.certSelfSigned, info };
    } catch (err) {
      if (!before.certSelfSigned) throw err; // a certificate the user gave is never replaced silently
    }
  }
  const { certDir } = ctx.store.paths;
  await fs.mkdir(certDir, { recursive: true, mode: 0o700 });
  const certFile = path.join(certDir, 'server.crt');
  const keyFile = path.join(certDir, 'server.key');
  const { certPem, keyPem } = await generateSelfSigned(domain);
  await writeAtomic(keyFile, keyPem, 0o600);
  await writeAtomic(certFile, certPem, 0o644);
  actions.push(`generated a self-signed certificate for *.${domain} in ${certDir}`);
  const info = await checkCertificatePair(certFile, keyFile, domain);
  return { certFile, keyFile, selfSigned: true, info };
}

/** `autosuspendSeconds`: null never suspends; absent keeps the default (5 min). */

/** A setting as given (null removes it), else as it was. */
function keep<K extends string, T extends string | number>(key: K, given: T | null | undefined, before: T | undefined): Partial<Record<K, T>> {
  const value = given === undefined ? before : given;
  return value === null || value === undefined ? {} : ({ [key]: value } as Record<K, T>);
}
