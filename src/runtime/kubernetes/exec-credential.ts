/**
 * Credentials from a program, as a kubeconfig's `user.exec` names one (how
 * EKS's `aws eks get-token` and GKE's `gke-gcloud-auth-plugin` log in): pgs
 * runs the command with its arguments and environment, without a shell or a
 * terminal, and reads an ExecCredential (client.authentication.k8s.io/v1 or
 * v1beta1) from its standard output: `status.token`, and
 * `status.expirationTimestamp` until which the token may be kept.
 *
 * The kubeconfig is the operator's, so running its command is what they
 * asked for; what the program prints is not trusted: it is read up to a size,
 * in a time, and checked field by field, and nothing of it is repeated in an
 * error (it may hold a secret).
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { PgsError } from '../../core/errors.js';

export const EXEC_API_VERSIONS = ['client.authentication.k8s.io/v1', 'client.authentication.k8s.io/v1beta1'] as const;
export type ExecApiVersion = (typeof EXEC_API_VERSIONS)[number];

/** A kubeconfig's `exec` stanza, checked. */
export interface ExecConfig {
  apiVersion: ExecApiVersion;
  command: string;
  args: string[];
  env: { name: string; value: string }[];
  installHint?: string;
  /** The kubeconfig's folder: a command named by a relative path with a slash is found from there. */
  dir: string;
}

/** A token from the program, and when it stops being good (ms since the epoch), if it said. */
export interface ExecToken {
  token: string;
  expiresAt?: number;
}

export interface ExecLimits {
  /** How long the program may run (30 s). */
  timeoutMs?: number;
  /** How much it may print on standard output (256 KiB). */
  maxBytes?: number;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The `exec` stanza of kubeconfig user `user`, or an error saying which field is wrong. */
export function parseExecConfig(raw: unknown, user: string, dir: string): ExecConfig {
  const bad = (why: string) => new PgsError('KUBE_CONFIG', `user ${user}'s exec: ${why}`);
  if (!isRecord(raw)) throw bad('is not a mapping');
  const apiVersion = raw.apiVersion;
  if (!EXEC_API_VERSIONS.includes(apiVersion as ExecApiVersion)) {
    throw bad(`apiVersion ${JSON.stringify(apiVersion ?? null)} is not one pgs speaks (${EXEC_API_VERSIONS.join(' or ')})`);
  }
  if (typeof raw.command !== 'string' || raw.command.trim() === '') throw bad('has no command');
  const args = raw.args ?? [];
  if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) throw bad('args must be a list of strings');
  const env = raw.env ?? [];
  if (!Array.isArray(env) || !env.every((e) => isRecord(e) && typeof e.name === 'string' && e.name !== '' && !e.name.includes('=') && typeof e.value === 'string')) {
    throw bad('env must be a list of {name, value} strings');
  }
  if (raw.interactiveMode !== undefined && !['Never', 'IfAvailable', 'Always'].includes(raw.interactiveMode as string)) {
    throw bad(`interactiveMode ${JSON.stringify(raw.interactiveMode)} is not Never, IfAvailable or Always`);
  }
  if (raw.interactiveMode === 'Always') throw bad('interactiveMode Always needs a terminal, and pgs runs the program without one');
  const config: ExecConfig = { apiVersion: apiVersion as ExecApiVersion, command: raw.command, args: args as string[], env: env as ExecConfig['env'], dir };
  if (typeof raw.installHint === 'string') config.installHint = raw.installHint;
  return config;
}

/** What the program printed, as a token, or an error that says what is wrong with it (never what it printed). */
export function parseExecCredential(text: string, apiVersion: ExecApiVersion, name: string): ExecToken {
  const bad = (why: string) => new PgsError('KUBE_CONFIG', `the credential program ${name} ${why}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // The parser's message quotes the text, which may be a secret: say only that it is not JSON.
    throw bad(`printed ${Buffer.byteLength(text)} bytes that are not JSON (an ExecCredential was expected)`);
  }
  if (!isRecord(parsed) || parsed.kind !== 'ExecCredential') throw bad('printed JSON that is not an ExecCredential');
  if (parsed.apiVersion !== apiVersion) throw bad(`answered in apiVersion ${JSON.stringify(String(parsed.apiVersion)).slice(0, 80)}, the kubeconfig asks for ${apiVersion}`);
  const status = parsed.status;
  if (!isRecord(status)) throw bad('printed an ExecCredential without a status');
  if (status.token === undefined && (status.clientCertificateData !== undefined || status.clientKeyData !== undefined)) {
    throw bad('gave a client certificate; pgs takes only a token from a credential program');
  }
  const token = status.token;
  if (typeof token !== 'string' || token === '') throw bad('printed an ExecCredential without status.token');
  if (token.length > 16_384 || !/^[\x21-\x7e]+$/.test(token)) throw bad('printed a status.token that is not a bearer token (visible ASCII, at most 16 KiB)');
  const result: ExecToken = { token };
  const expiry = status.expirationTimestamp;
  if (expiry !== undefined && expiry !== null) {
    // RFC 3339, as the API's metav1.Time is written.
    const at = typeof expiry === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/i.test(expiry) ? Date.parse(expiry) : NaN;
    if (!Number.isFinite(at)) throw bad('printed a status.expirationTimestamp that is not an RFC 3339 time');
    result.expiresAt = at;
  }
  return result;
}

/** The first line of what the program wrote on standard error, without control characters, short. */
function stderrLine(text: string): string {
  const line = text.split('\n').map((l) => l.trim()).find((l) => l !== '') ?? '';
  const clean = line.replace(/[\p{Cc}\p{Cf}]/gu, '');
  return clean.length > 200 ? `${clean.slice(0, 200)}…` : clean;
}

/** Runs the program once and reads its token. */
export function runExecPlugin(config: ExecConfig, limits: ExecLimits = {}): Promise<ExecToken> {
  const timeoutMs = limits.timeoutMs ?? 30_000;
  const maxBytes = limits.maxBytes ?? 256 * 1024;
  const command = config.command.includes('/') && !path.isAbsolute(config.command) ? path.join(config.dir, config.command) : config.command;
  const name = JSON.stringify(config.command);
  const fail = (why: string) => new PgsError('KUBE_CONFIG', `the credential program ${name} ${why}`);
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const e of config.env) env[e.name] = e.value;
  env.KUBERNETES_EXEC_INFO = JSON.stringify({ apiVersion: config.apiVersion, kind: 'ExecCredential', spec: { interactive: false } });
  return new Promise((resolve, reject) => {
    const child = spawn(command, config.args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let outBytes = 0;
    let err = '';
    let failure: Error | undefined;
    const stop = (e: Error) => {
      failure ??= e;
      child.kill('SIGKILL');
    };
    const timer = setTimeout(() => stop(fail(`did not finish in ${timeoutMs / 1000} s`)), timeoutMs);
    child.stdout.on('data', (chunk: Buffer) => {
      outBytes += chunk.length;
      if (outBytes > maxBytes) stop(fail(`printed more than ${Math.round(maxBytes / 1024)} KiB (an ExecCredential is a few)`));
      else out.push(chunk);
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      if (err.length < 4096) err += chunk.slice(0, 4096 - err.length);
    });
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const hint = config.installHint ? `: ${stderrLine(config.installHint)}` : '';
      reject(e.code === 'ENOENT' ? fail(`is not installed (not found)${hint}`) : fail(`cannot be run: ${e.code ?? e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (failure) return reject(failure);
      if (code !== 0) {
        const said = stderrLine(err);
        return reject(fail(`${code === null ? `was killed by ${signal}` : `exited with status ${code}`}${said ? `: ${said}` : ''}`));
      }
      try {
        resolve(parseExecCredential(Buffer.concat(out).toString('utf8'), config.apiVersion, name));
      } catch (e) {
        reject(e as Error);
      }
    });
  });
}
