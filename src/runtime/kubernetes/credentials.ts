/**
 * The bearer token a request carries, kept fresh. A token given as such is
 * used as it is. A token file (a pod's projected service-account token, which
 * the kubelet rotates about hourly; a kubeconfig's `token-file`) is read
 * again every minute. A credential program's token (kubeconfig `exec`) is
 * kept until the expiry it gave, less a margin, and the program run again
 * then. After a 401 the token is dropped, so that the next request reads or
 * runs again; the client retries a refused request once when that gave a
 * new token.
 */
import { promises as fs } from 'node:fs';
import { debugLog } from '../../core/log.js';
import { runExecPlugin, type ExecConfig, type ExecLimits, type ExecToken } from './exec-credential.js';

const debug = debugLog('pgs:kube');

export interface CredentialSource {
  /** The token as given (for a file, as first read). */
  token?: string;
  /** A file to read the token from again. */
  tokenFile?: string;
  /** A program that prints the token. */
  exec?: ExecConfig;
}

export interface CredentialOptions {
  /** How long a token read from a file is used before it is read again (60 s). */
  refreshMs?: number;
  /** How long before its expiry a program's token is renewed (10 s). */
  expiryMarginMs?: number;
  exec?: ExecLimits;
  now?: () => number;
}

export class BearerToken {
  private readonly source: CredentialSource;
  private readonly refreshMs: number;
  private readonly marginMs: number;
  private readonly limits: ExecLimits;
  private readonly now: () => number;
  private current: string | undefined;
  /** When `current` stops being used (ms since the epoch); Infinity for a token that does not change. */
  private until = 0;
  private pending: Promise<string | undefined> | undefined;

  constructor(source: CredentialSource, options: CredentialOptions = {}) {
    this.source = source;
    this.refreshMs = options.refreshMs ?? 60_000;
    this.marginMs = options.expiryMarginMs ?? 10_000;
    this.limits = options.exec ?? {};
    this.now = options.now ?? Date.now;
    this.current = source.token;
    if (source.exec) this.until = 0;
    else if (source.tokenFile) this.until = source.token ? this.now() + this.refreshMs : 0;
    else this.until = Infinity;
  }

  /** Whether dropping the token can give another one (a file or a program): a 401 is then worth a second try. */
  get renewable(): boolean {
    return Boolean(this.source.exec ?? this.source.tokenFile);
  }

  /** The token to send now (undefined: none, as with a client certificate). */
  get(): Promise<string | undefined> {
    if (this.now() < this.until) return Promise.resolve(this.current);
    // One read or run at a time, shared by the requests that wait for it.
    this.pending ??= this.renew().finally(() => {
      this.pending = undefined;
    });
    return this.pending;
  }

  /** The API server refused `token`: forget it (if it is still the one held), so that the next get() reads or runs again. */
  refused(token: string | undefined): void {
    if (this.renewable && token === this.current) this.until = 0;
  }

  private async renew(): Promise<string | undefined> {
    if (this.source.exec) {
      const got: ExecToken = await runExecPlugin(this.source.exec, this.limits);
      this.current = got.token;
      this.until = got.expiresAt === undefined ? Infinity : got.expiresAt - this.marginMs;
      return got.token;
    }
    const file = this.source.tokenFile as string;
    try {
      const token = (await fs.readFile(file, 'utf8')).trim();
      if (token) this.current = token;
    } catch (e) {
      // The kubelet swaps the file by renaming; a read in between fails. The token held is still the best there is.
      debug(`reading the token file ${file}`, e);
      if (this.current === undefined) throw e;
    }
    this.until = this.now() + this.refreshMs;
    return this.current;
  }
}
