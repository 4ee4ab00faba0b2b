import { walDir } from '../backup/layout.js';
import type { Tenant } from '../catalog/schema.js';
import { DEFAULT_RPO_SECONDS } from '../catalog/schema.js';
import type { TenantServerSpec } from './runtime.js';

/** How the server of `tenant` is started: its connection limit and where it archives. */
export function tenantServerSpec(dataRoot: string, tenant: Tenant): TenantServerSpec {
  return {
    id: tenant.id,
    maxConnections: tenant.maxConnections,
    ...(tenant.memoryBytes !== undefined || tenant.cpus !== undefined
      ? { limits: { ...(tenant.memoryBytes !== undefined ? { memoryBytes: tenant.memoryBytes } : {}), ...(tenant.cpus !== undefined ? { cpus: tenant.cpus } : {}) } }
      : {}),
    ...(tenant.diskState === 'read-only' ? { readOnly: 'soft' as const } : tenant.diskState === 'standby' ? { readOnly: 'standby' as const } : {}),
    ...(tenant.generation !== undefined
      ? { archive: { directory: walDir(dataRoot, tenant.id, tenant.generation), timeoutSeconds: tenant.rpoSeconds ?? DEFAULT_RPO_SECONDS } }
      : {}),
  };
}
