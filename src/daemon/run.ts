import { parseSeconds } from '../core/duration.js';
import { PgsError } from '../core/errors.js';
import type { Pgs } from '../service/pgs.js';
import { Daemon, jsonLog } from './daemon.js';
import { packageVersion } from '../core/version.js';

/** `pgs start --foreground`: the daemon in this process, JSON log lines on stderr, until SIGTERM/SIGINT or POST /v1/stop. */
export async function runForeground(pgs: Pgs, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const log = jsonLog((line) => process.stderr.write(line));
  const interval = env.PGS_HEALTH_INTERVAL;
  const healthSeconds = interval === undefined || interval === '' ? undefined : parseSeconds(interval, 'PGS_HEALTH_INTERVAL');
  const runningSpares = envCount(env, 'PGS_RUNNING_SPARES', 50);
  const serverSessions = envCount(env, 'PGS_SERVER_SESSIONS', 100);
  const historyInterval = env.PGS_HISTORY_INTERVAL;
  const historySeconds = historyInterval === undefined || historyInterval === '' ? undefined : parseSeconds(historyInterval, 'PGS_HISTORY_INTERVAL');
  const poolTimeout = env.PGS_POOL_TIMEOUT;
  const poolTimeoutSeconds = poolTimeout === undefined || poolTimeout === '' ? undefined : parseSeconds(poolTimeout, 'PGS_POOL_TIMEOUT');
  const daemon = new Daemon(pgs, log, {
    ...(healthSeconds ? { healthIntervalMs: healthSeconds * 1000 } : {}),
    ...(runningSpares !== undefined ? { runningSpares } : {}),
    ...(serverSessions !== undefined ? { serverSessions } : {}),
    ...(poolTimeoutSeconds !== undefined ? { poolTimeoutMs: poolTimeoutSeconds * 1000 } : {}),
    ...(historySeconds !== undefined ? { historyIntervalMs: historySeconds * 1000 } : {}),
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
  return 0;
}

/** A whole number from 0 to `max` in environment variable `name`; undefined when unset or empty. */
function envCount(env: NodeJS.ProcessEnv, name: string, max: number): number | undefined {
  const text = env[name];
  if (text === undefined || text === '') return undefined;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0 || value > max) throw new PgsError('USAGE', `invalid ${name} ${JSON.stringify(text)}: a number from 0 to ${max}`);
  return value;
}
