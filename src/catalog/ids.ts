import { randomInt } from 'node:crypto';
import { PgsError } from '../core/errors.js';

/** A tenant id is a DNS label: it becomes the first part of `<id>-<suffix>.<domain>`. */
export const TENANT_ID_PATTERN = /^[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?$/;
export const SUFFIX_LENGTH = 6;
/** The tenant's database is named after its id: these names exist in every server already. */
const RESERVED_IDS = new Set(['template0', 'template1', 'postgres']);
const SUFFIX_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

export function tenantIdProblem(id: string): string | undefined {
  if (id.length === 0) return 'it is empty';
  if (id.length > 40) return `it is ${id.length} characters long (at most 40)`;
  if (!/^[a-z]/.test(id)) return 'it must start with a lower-case letter';
  if (!/^[a-z0-9-]*$/.test(id)) return 'only lower-case letters, digits and "-" are allowed';
  if (id.endsWith('-')) return 'it must not end with "-"';
  if (!TENANT_ID_PATTERN.test(id)) return 'it is not a DNS label';
  if (RESERVED_IDS.has(id)) return 'it is reserved (a database every server has)';
  return undefined;
}

export function assertTenantId(id: string): void {
  const problem = tenantIdProblem(id);
  if (problem !== undefined) {
    throw new PgsError('INVALID_ID', `invalid tenant id ${JSON.stringify(id)}: ${problem}`);
  }
}

export function newSuffix(): string {
  let out = '';
  for (let i = 0; i < SUFFIX_LENGTH; i++) out += SUFFIX_ALPHABET[randomInt(SUFFIX_ALPHABET.length)];
  return out;
}

export function tenantHostname(id: string, suffix: string, domain: string): string {
  return `${id}-${suffix}.${domain}`;
}

/** A domain is one or more DNS labels; `localhost`-style single labels are allowed. */
export function domainProblem(domain: string): string | undefined {
  if (domain.length === 0 || domain.length > 200) return 'it must be 1 to 200 characters';
  const labels = domain.split('.');
  for (const label of labels) {
    if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(label)) {
      return `label ${JSON.stringify(label)} is not a lower-case DNS label`;
    }
  }
  return undefined;
}
