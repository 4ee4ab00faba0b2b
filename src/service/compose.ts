import type { Catalog, Tenant } from '../catalog/schema.js';
import { toYaml } from '../core/yaml.js';
import { tenantHostname } from '../catalog/ids.js';

/**
 * The original deployment, written from the catalog: Docker Compose with one
 * `postgres:18` container per tenant and Traefik v3 in front of them on the
 * router's port, routing PostgreSQL's TLS by SNI host name (`HostSNI`).
 * Access is honoured (a disabled tenant gets no route), limits become the
 * containers' limits, tenants pgs keeps stopped are in the `stopped` profile.
 * Passwords are never written: each tenant's is a variable of `.env`, which
 * compose refuses to start without.
 */
export const TRAEFIK_IMAGE = 'traefik:v3.5';
export const POSTGRES_IMAGE = 'postgres:18';

export interface ComposeFile {
  /** Relative to the output folder. */
  path: string;
  content: string;
}

export interface ComposeProject {
  files: ComposeFile[];
  /** Every tenant's password variable, in tenant order (the `.env` lines). */
  passwordVariables: { tenant: string; variable: string }[];
  routed: string[];
  unrouted: string[];
}

export function passwordVariable(id: string): string {
  return `PGS_${id.toUpperCase().replace(/-/g, '_')}_PASSWORD`;
}

function service(tenant: Tenant): Record<string, unknown> {
  const variable = passwordVariable(tenant.id);
  return {
    image: POSTGRES_IMAGE,
    ...(tenant.wanted === 'stopped' ? { profiles: ['stopped'] } : {}),
    restart: 'unless-stopped',
    environment: {
      POSTGRES_USER: 'postgres',
      POSTGRES_DB: tenant.id,
      POSTGRES_PASSWORD: `\${${variable}:?set ${variable} in .env}`,
      POSTGRES_INITDB_ARGS: '--data-checksums --auth-host=scram-sha-256',
    },
    command: ['postgres', '-c', `max_connections=${tenant.maxConnections}`],
    volumes: [`pgs-${tenant.id}-data:/var/lib/postgresql`],
    networks: ['tenants'],
    healthcheck: { test: ['CMD', 'pg_isready', '-U', 'postgres', '-d', tenant.id], interval: '10s', timeout: '5s', retries: 5 },
    ...(tenant.memoryBytes !== undefined ? { mem_limit: tenant.memoryBytes } : {}),
    ...(tenant.cpus !== undefined ? { cpus: tenant.cpus } : {}),
    labels: { 'pgs.tenant': tenant.id },
  };
}

export function composeProject(catalog: Catalog, now = new Date()): ComposeProject {
  const { settings } = catalog;
  const tenants = [...catalog.tenants].sort((a, b) => (a.id < b.id ? -1 : 1));
  const routed = tenants.filter((t) => t.access === 'enabled');
  const header = (what: string) => [
    `# ${what}`,
    `# Written by "pgs export-compose" from the pgs catalog at ${now.toISOString()}.`,
    '',
  ].join('\n');

  const compose = {
    name: 'pgs',
    services: {
      traefik: {
        image: TRAEFIK_IMAGE,
        restart: 'unless-stopped',
        ports: [`${settings.port}:5432`],
        volumes: [
          './traefik/traefik.yml:/etc/traefik/traefik.yml:ro',
          './traefik/dynamic.yml:/etc/traefik/dynamic.yml:ro',
          `${settings.certFile}:/etc/traefik/certs/server.crt:ro`,
          `${settings.keyFile}:/etc/traefik/certs/server.key:ro`,
        ],
        networks: ['edge', 'tenants'],
      },
      ...Object.fromEntries(tenants.map((t) => [`pgs-${t.id}`, service(t)])),
    },
    networks: {
      edge: {},
      // Tenants' servers have no way out and publish nothing: only Traefik reaches them.
      tenants: { internal: true },
    },
    volumes: Object.fromEntries(tenants.map((t) => [`pgs-${t.id}-data`, {}])),
  };

  const traefikStatic = {
    entryPoints: { postgres: { address: ':5432' } },
    providers: { file: { filename: '/etc/traefik/dynamic.yml', watch: true } },
    log: { level: 'INFO' },
  };

  const certificate = { certFile: '/etc/traefik/certs/server.crt', keyFile: '/etc/traefik/certs/server.key' };
  const dynamic = {
    tcp: {
      routers: Object.fromEntries(routed.map((t) => [`pgs-${t.id}`, {
        entryPoints: ['postgres'],
        rule: `HostSNI(\`${tenantHostname(t.id, t.suffix, settings.domain)}\`)`,
        service: `pgs-${t.id}`,
        // A tenant's allow-list (pgs config --allow); Traefik closes a refused connection without a PostgreSQL error.
        ...(t.allow !== undefined ? { middlewares: [`pgs-${t.id}-allow`] } : {}),
        tls: {},
      }])),
      ...(routed.some((t) => t.allow !== undefined)
        ? { middlewares: Object.fromEntries(routed.filter((t) => t.allow !== undefined).map((t) => [`pgs-${t.id}-allow`, { ipAllowList: { sourceRange: [...(t.allow ?? [])] } }])) }
        : {}),
      services: Object.fromEntries(routed.map((t) => [`pgs-${t.id}`, { loadBalancer: { servers: [{ address: `pgs-${t.id}:5432` }] } }])),
    },
    tls: {
      certificates: [certificate],
      stores: { default: { defaultCertificate: certificate } },
      // libpq 17+ can skip the SSLRequest (sslnegotiation=direct) and asks for ALPN "postgresql".
      options: { default: { minVersion: 'VersionTLS12', alpnProtocols: ['postgresql'] } },
    },
  };

  const passwordVariables = tenants.map((t) => ({ tenant: t.id, variable: passwordVariable(t.id) }));
  return {
    files: [
      {
        path: 'docker-compose.yml',
        content: header('One PostgreSQL 18 container per tenant behind Traefik v3 on one TLS port, routed by SNI host name.\n# Fill .env with each tenant\'s password, then: docker compose up -d\n# The containers start empty: move data with pg_dump/pg_restore.') + toYaml(compose),
      },
      { path: 'traefik/traefik.yml', content: header('Traefik\'s static configuration: one entry point for PostgreSQL.') + toYaml(traefikStatic) },
      { path: 'traefik/dynamic.yml', content: header('A route per tenant whose access is enabled; TLS with the certificate pgs serves.') + toYaml(dynamic) },
    ],
    passwordVariables,
    routed: routed.map((t) => t.id),
    unrouted: tenants.filter((t) => t.access !== 'enabled').map((t) => t.id),
  };
}
