/**
 * The API tokens of pgs on Kubernetes: one list for every pgs pod, in the
 * Secret `pgs-tokens` (SHA-256 hashes only, as in the token file on one
 * host). A write names the version it read, so two pods creating tokens at
 * once both get theirs in (the store retries on the conflict); each pod
 * watches the Secret, so a token made or revoked through one pod holds at
 * every pod at once.
 */
import type { TokenBacking } from '../api/tokens.js';
import { KubeError, RESOURCES, type KubeClient, type KubeResource } from '../runtime/kubernetes/client.js';
import { LABEL_MANAGED_BY } from '../runtime/kubernetes/objects.js';
import { secretValue } from './kube-backends.js';

export const TOKENS_SECRET = 'pgs-tokens';
const KEY = 'tokens.json';

type Secret = KubeResource & { data?: Record<string, string> };

export class SecretTokenBacking implements TokenBacking {
  readonly where = `the Secret ${TOKENS_SECRET}`;
  private readonly client: KubeClient;
  /** The version last read (undefined: there was no Secret). */
  private version: string | undefined;

  constructor(client: KubeClient) {
    this.client = client;
  }

  async read(): Promise<string | undefined> {
    const secret = await this.client.get<Secret>(RESOURCES.secrets, TOKENS_SECRET);
    this.version = secret?.metadata.resourceVersion;
    return secretValue(secret, KEY);
  }

  async write(text: string): Promise<void> {
    if (this.version === undefined) {
      const made = await this.client.create<Secret>(RESOURCES.secrets, {
        apiVersion: 'v1', kind: 'Secret', type: 'Opaque',
        metadata: { name: TOKENS_SECRET, labels: { [LABEL_MANAGED_BY]: 'pgs' } },
        stringData: { [KEY]: text },
      });
      this.version = made.metadata.resourceVersion;
      return;
    }
    const patched = await this.client.patch<Secret>(RESOURCES.secrets, TOKENS_SECRET, { stringData: { [KEY]: text } }, this.version);
    this.version = patched.metadata.resourceVersion;
  }

  isConflict(err: unknown): boolean {
    return err instanceof KubeError && (err.statusCode === 409 || err.reason === 'AlreadyExists');
  }
}
