import { parseSeconds } from '../core/duration.js';
import { PgsError } from '../core/errors.js';
import type { Pgs } from '../service/pgs.js';
import { Daemon, jsonLog } from './daemon.js';
import { KubeDaemon } from './kube-daemon.js';
import { packageVersion } from '../core/version.js';

/** `pgs start --foreground`: the daemon in this process, JSON log lines on stderr, until SIGTERM/SIGINT or POST /v1/stop. */
export async function runForeground(pgs: Pgs, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const log = jsonLog((line) => process.stderr.write(line));
  const interval = env.PGS_HEALTH_INTERVAL;
  const healthSeconds = interval === undefined || interval === '' ? undefined : parseSeconds(interval, 'PGS_HEALTH_INTERVAL');
  const runningSpares = envCount(env, 'PGS_RUNNING_SPARES', 50);
  const serverSessions = envCount(env, 'PGS_SERVER_SESSIONS', 100);
  const maxStartupsPerAddress = envCount(env, 'PGS_MAX_STARTUPS_PER_ADDRESS', 100_000);
  const historyInterval = env.PGS_HISTORY_INTERVAL;
  const historySeconds = historyInterval === undefined || historyInterval === '' ? undefined : parseSeconds(historyInterval, 'PGS_HISTORY_INTERVAL');
  const poolTimeout = env.PGS_POOL_TIMEOUT;
  const poolTimeoutSeconds = poolTimeout === undefined || poolTimeout === '' ? undefined : parseSeconds(poolTimeout, 'PGS_POOL_TIMEOUT');
  // In a pod, the settings come from the environment (the ConfigMap): written at every start, as pgs setup would.
  if (env.PGS_RUNTIME === 'kubernetes') await setupFromEnv(pgs, env);
  const catalog = await pgs.store.read();
  const daemon = catalog.settings.runtime === 'kubernetes' ? new KubeDaemon(pgs, log, {
    version: await packageVersion(),
    env,
    ...(env.PGS_POD ? { pod: env.PGS_POD } : {}),
    ...(serverSessions !== undefined ? { serverSessions } : {}),
    ...(maxStartupsPerAddress !== undefined ? { maxStartupsPerAddress } : {}),
    ...(poolTimeoutSeconds !== undefined ? { poolTimeoutMs: poolTimeoutSeconds * 1000 } : {}),
    ...(historySeconds !== undefined ? { historyIntervalMs: historySeconds * 1000 } : {}),
    ...(envSeconds(env, 'PGS_READY_TIMEOUT') !== undefined ? { readyTimeoutMs: (envSeconds(env, 'PGS_READY_TIMEOUT') as number) * 1000 } : {}),
    ...(envSeconds(env, 'PGS_ACTIVITY_INTERVAL') !== undefined ? { activityIntervalMs: (envSeconds(env, 'PGS_ACTIVITY_INTERVAL') as number) * 1000 } : {}),
  }) : new Daemon(pgs, log, {
    ...(healthSeconds ? { healthIntervalMs: healthSeconds * 1000 } : {}),
    ...(runningSpares !== undefined ? { runningSpares } : {}),
    ...(serverSessions !== undefined ? { serverSessions } : {}),
    ...(maxStartupsPerAddress !== undefined ? { maxStartupsPerAddress } : {}),
    ...(poolTimeoutSeconds !== undefined ? { poolTimeoutMs: poolTimeoutSeconds * 1000 } : {}),
    ...(historySeconds !== undefined ? { historyIntervalMs: historySeconds * 1000 } : {}),
    ...(envSeconds(env, 'PGS_STOP_SHIP_TIMEOUT') !== undefined ? { shipTimeoutMs: (envSeconds(env, 'PGS_STOP_SHIP_TIMEOUT') as number) * 1000 } : {}),
    version: await packageVersion(),
  });
  let signalled = false;
  let started = false;
  const onSignal = (signal: string) => {
    log.info('signal', { signal });
    signalled = true;
    if (started) void daemon.stop();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  await daemon.start();
  started = true;
  if (signalled) void daemon.stop(); // a signal during start-up: stop as soon as there is something to stop
  await daemon.stopped;
  // A stop that left files only on this host (the bucket did not take them) is not a clean one.
  return daemon instanceof Daemon && !daemon.cleanStop ? 1 : 0;
}

/** A whole number from 0 to `max` in environment variable `name`; undefined when unset or empty. */
function envCount(env: NodeJS.ProcessEnv, name: string, max: number): number | undefined {
  const text = env[name];
  if (text === undefined || text === '') return undefined;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0 || value > max) throw new PgsError('USAGE', `invalid ${name} ${JSON.stringify(text)}: a number from 0 to ${max}`);
  return value;
}

function envSeconds(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const text = env[name];
  return text === undefined || text === '' ? undefined : parseSeconds(text, name);
}

/**
 * The settings of a pgs pod, from its environment (deploy/kubernetes's
 * ConfigMap and Deployment): the kubernetes runtime, the domain, the
 * certificate mounted from a Secret, the namespace, instances and storage class.
 */
async function setupFromEnv(pgs: Pgs, env: NodeJS.ProcessEnv): Promise<void> {
  const text = (name: string) => (env[name] === undefined || env[name] === '' ? undefined : env[name]);
  const instances = text('PGS_INSTANCES');
  if (instances !== undefined && !['1', '2', '3'].includes(instances)) throw new PgsError('USAGE', `invalid PGS_INSTANCES ${JSON.stringify(instances)}: 1, 2 or 3`);
  const port = text('PGS_PORT');
  const certFile = text('PGS_CERT_FILE');
  const keyFile = text('PGS_KEY_FILE');
  await pgs.setup({
    runtime: 'kubernetes',
    ...(text('PGS_DOMAIN') ? { domain: text('PGS_DOMAIN') as string } : {}),
    ...(port ? { port: Number(port) } : {}),
    ...(certFile && keyFile ? { certFile, keyFile } : {}),
    ...(text('PGS_NAMESPACE') ? { namespace: text('PGS_NAMESPACE') as string } : {}),
    storageClass: text('PGS_STORAGE_CLASS') ?? null,
    ...(instances ? { instances: Number(instances) as 1 | 2 | 3 } : {}),
    ...(text('PGS_IMAGE') ? { image: text('PGS_IMAGE') as string } : {}),
    backupTarget: text('PGS_BACKUP_TARGET') ?? null,
    s3Endpoint: text('PGS_S3_ENDPOINT') ?? null,
    ...(text('PGS_API_LISTEN') ? { apiListen: text('PGS_API_LISTEN') === 'off' ? null : text('PGS_API_LISTEN') as string } : {}),
    confirmDomainChange: true,
  });
}
