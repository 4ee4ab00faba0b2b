import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { PgsError, errnoCode } from '../core/errors.js';
import { writeAtomic } from '../core/files.js';

/**
 * API tokens: `pgs_` + 32 random bytes (base64url), shown once. Only a
 * SHA-256 of each is kept, in `$PGS_HOME/tokens.json` (0600), or, on the
 * kubernetes runtime, in a Secret every pgs pod reads; a token's 256 random
 * bits make a slow hash pointless.
 */
export type TokenScope = 'read' | 'admin';
export const TOKEN_PREFIX = 'pgs_';

interface StoredToken {
  name: string;
  scope: TokenScope;
  /** hex SHA-256 of the whole token */
  sha256: string;
  createdAt: string;
  lastUsedAt: string | null;
}

export interface TokenInfo {
  name: string;
  scope: TokenScope;
  createdAt: string;
  lastUsedAt: string | null;
}

/**
 * Where the token list lives, as text. `write` may fail with a conflict
 * (`isConflict`) when another writer changed it since the last `read`: the
 * store then reads it again and applies its change again.
 */
export interface TokenBacking {
  /** What to name in an error (a file, a Secret). */
  readonly where: string;
  read(): Promise<string | undefined>;
  write(text: string): Promise<void>;
  isConflict?(err: unknown): boolean;
}

/** The token file of a pgs home (0600), written atomically. */
export function fileBacking(file: string): TokenBacking {
  return {
    where: `the token file ${file}`,
    read: async () => {
      try {
        return await fs.readFile(file, 'utf8');
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') return undefined;
        throw err;
      }
    },
    write: (text) => writeAtomic(file, text, 0o600),
  };
}

const WRITE_ATTEMPTS = 5;

export class TokenStore {
  private readonly backing: TokenBacking;
  private tokens: StoredToken[] = [];
  private byHash = new Map<string, StoredToken>();
  /** When each token (by hash) was last used here: kept apart, so that a list read again does not lose it. */
  private readonly used = new Map<string, string>();
  /** lastUsedAt is written at most once a minute per token, not per request. */
  private dirtySince: number | undefined;

  constructor(backing: string | TokenBacking) {
    this.backing = typeof backing === 'string' ? fileBacking(backing) : backing;
  }

  async load(): Promise<void> {
    this.index(this.parse(await this.backing.read()));
  }

  /** Reads the list again (another writer changed it), in turn with this store's own writes. */
  reload(): Promise<void> {
    const run = this.writes.then(() => this.load());
    this.writes = run.catch(() => undefined);
    return run;
  }

  private parse(text: string | undefined): StoredToken[] {
    if (text === undefined) return [];
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new PgsError('CATALOG_CORRUPT', `${this.backing.where} is not JSON; fix or delete it (every token in it stops working)`);
    }
    const list = (parsed as { tokens?: unknown }).tokens;
    if (!Array.isArray(list) || !list.every(isStoredToken)) {
      throw new PgsError('CATALOG_CORRUPT', `${this.backing.where} is not valid; fix or delete it (every token in it stops working)`);
    }
    return list;
  }

  private index(list: StoredToken[]): void {
    for (const t of list) {
      const used = this.used.get(t.sha256);
      if (used !== undefined && (t.lastUsedAt === null || used > t.lastUsedAt)) t.lastUsedAt = used;
    }
    this.tokens = list;
    this.byHash = new Map(list.map((t) => [t.sha256, t]));
  }

  list(): TokenInfo[] {
    return this.tokens.map(({ name, scope, createdAt, lastUsedAt }) => ({ name, scope, createdAt, lastUsedAt }));
  }

  async create(name: string, scope: TokenScope): Promise<TokenInfo & { token: string }> {
    const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
    const stored: StoredToken = { name, scope, sha256: sha256(token), createdAt: new Date().toISOString(), lastUsedAt: null };
    await this.change((tokens) => {
      if (tokens.some((t) => t.name === name)) throw new PgsError('TOKEN_EXISTS', `a token named ${name} exists already; "pgs token revoke ${name}" first`);
      return [...tokens, stored];
    });
    return { name, scope, createdAt: stored.createdAt, lastUsedAt: null, token };
  }

  async revoke(name: string): Promise<void> {
    await this.change((tokens) => {
      if (!tokens.some((t) => t.name === name)) throw new PgsError('TOKEN_NOT_FOUND', `no token named ${name} (see "pgs token list")`);
      return tokens.filter((t) => t.name !== name);
    });
  }

  /** The token's scope, or undefined for anything that is not a live token. */
  verify(token: string): { name: string; scope: TokenScope } | undefined {
    if (!token.startsWith(TOKEN_PREFIX) || token.length > 200) return undefined;
    const digest = sha256(token);
    const found = this.byHash.get(digest);
    // The map lookup already matched; the constant-time compare keeps it so if the lookup changes.
    if (!found || !timingSafeEqual(Buffer.from(found.sha256, 'hex'), Buffer.from(digest, 'hex'))) return undefined;
    found.lastUsedAt = new Date().toISOString();
    this.used.set(found.sha256, found.lastUsedAt);
    if (this.dirtySince === undefined) {
      this.dirtySince = Date.now();
      setTimeout(() => {
        this.dirtySince = undefined;
        void this.change((tokens) => tokens).catch(() => undefined);
      }, 60_000).unref();
    }
    return { name: found.name, scope: found.scope };
  }

  /** Writes pending lastUsedAt times (at daemon stop). */
  async flush(): Promise<void> {
    if (this.dirtySince !== undefined) await this.change((tokens) => tokens);
  }

  /**
   * Every write, one at a time, from the list as it is when its turn comes: a
   * revoke cannot be undone by a lastUsedAt write that started before it, and
   * two creates cannot lose one another.
   */
  private writes: Promise<unknown> = Promise.resolve();

  private change(next: (tokens: StoredToken[]) => StoredToken[]): Promise<void> {
    const run = this.writes.then(async () => {
      for (let attempt = 1; ; attempt++) {
        const list = next(this.tokens);
        try {
          await this.backing.write(`${JSON.stringify({ tokens: list }, null, 2)}\n`);
          this.index(list);
          return;
        } catch (err) {
          if (!this.backing.isConflict?.(err) || attempt >= WRITE_ATTEMPTS) throw err;
          await this.load(); // another pod wrote first: apply the change to what it wrote
        }
      }
    });
    this.writes = run.catch(() => undefined);
    return run;
  }
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function isStoredToken(value: unknown): value is StoredToken {
  const t = value as StoredToken;
  return typeof t === 'object' && t !== null && typeof t.name === 'string' && (t.scope === 'read' || t.scope === 'admin') &&
    typeof t.sha256 === 'string' && /^[0-9a-f]{64}$/.test(t.sha256) && typeof t.createdAt === 'string' &&
    (t.lastUsedAt === null || typeof t.lastUsedAt === 'string');
}
