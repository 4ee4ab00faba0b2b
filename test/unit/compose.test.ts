import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Ajv } from 'ajv';
import fc from 'fast-check';
import { parse } from 'yaml';
import type { Catalog } from '../../src/catalog/schema.js';
import { toYaml } from '../../src/core/yaml.js';
import { composeProject, passwordVariable } from '../../src/service/compose.js';
import { ROOT } from '../helpers/pgs.js';

/** The Compose Specification's own JSON schema (test/data/compose-spec, Apache-2.0). */
const schema = JSON.parse(readFileSync(path.join(ROOT, 'test', 'data', 'compose-spec', 'compose-spec.json'), 'utf8')) as { $schema?: string };
delete schema.$schema; // draft-07, ajv's default, named by an address ajv does not know

const catalog = (tenants: Partial<Catalog['tenants'][number]>[]): Catalog => ({
  version: 1,
  settings: {
    domain: 'db.example.com', port: 6432, certFile: '/etc/pgs/server.crt', keyFile: '/etc/pgs/server.key', certSelfSigned: false,
    dataRoot: '/var/lib/pgs', serverUser: 'pgs', defaultMaxConnections: 20,
  },
  tenants: tenants.map((t, i) => ({
    id: `t${i}`, suffix: 'abc123', access: 'enabled', wanted: 'running', maxConnections: 20, createdAt: '2026-11-30T00:00:00.000Z', ...t,
  })),
});

describe('toYaml', () => {
  it('reads back as the same data, whatever the strings hold', () => {
    const scalar = fc.oneof(fc.string(), fc.constantFrom('no', 'yes', 'null', '1e3', '0x10', '*a', '&b', '- x', 'a: b', '#c', '"', '\\', '\n', ' lead', 'trail ', '${X:?y}', '`HostSNI(`a`)`'), fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(), fc.constant(null));
    const data = fc.letrec((tie) => ({
      value: fc.oneof({ depthSize: 'small' }, scalar, tie('array'), tie('object')),
      array: fc.array(tie('value'), { maxLength: 4 }),
      object: fc.dictionary(fc.string({ minLength: 1 }), tie('value'), { maxKeys: 4 }),
    })).object;
    fc.assert(fc.property(data, (value) => {
      const back = parse(toYaml(value)) as unknown;
      assert.deepEqual(back, JSON.parse(JSON.stringify(value)));
    }), { numRuns: 2000 });
    assert.deepEqual(parse(toYaml({ '00': 1, true: 2, No: 3, '1e3': 4, '~': 5 })), { '00': 1, true: 2, No: 3, '1e3': 4, '~': 5 });
  });

  it('writes block style with quoted strings', () => {
    assert.equal(toYaml({ a: { b: ['x', 1], c: {} }, 'd e': [] }), 'a:\n  b:\n    - "x"\n    - 1\n  c: {}\n"d e": []\n');
    assert.equal(toYaml({ list: [{ k: 'v', m: 2 }] }), 'list:\n  - k: "v"\n    m: 2\n');
  });
});

describe('composeProject: the original deployment from the catalog', () => {
  const project = composeProject(catalog([
    { id: 'acme' },
    { id: 'big-co', memoryBytes: 512 * 2 ** 20, cpus: 1.5, maxConnections: 50 },
    { id: 'closed', access: 'disabled' },
    { id: 'paused', wanted: 'stopped' },
  ]));
  const file = (name: string) => parse(project.files.find((f) => f.path === name)?.content ?? '') as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

  it('docker-compose.yml is valid against the Compose Specification schema', () => {
    const ajv = new Ajv({ strict: false, allErrors: true });
    const validate = ajv.compile(schema);
    const compose = file('docker-compose.yml');
    assert.ok(validate(compose), JSON.stringify(validate.errors, null, 2));
    assert.equal(validate({ ...compose, services: { x: { imagez: 'postgres:18' } } }), false, 'the schema does refuse a wrong file');
  });

  it('one postgres:18 service per tenant with its volume, limits and password variable; Traefik on the pgs port', () => {
    const compose = file('docker-compose.yml');
    assert.deepEqual(Object.keys(compose.services).sort(), ['pgs-acme', 'pgs-big-co', 'pgs-closed', 'pgs-paused', 'traefik']);
    assert.deepEqual(compose.services.traefik.ports, ['6432:5432']);
    assert.ok(compose.services.traefik.volumes.includes('/etc/pgs/server.key:/etc/traefik/certs/server.key:ro'));
    const big = compose.services['pgs-big-co'];
    assert.equal(big.image, 'postgres:18');
    assert.equal(big.mem_limit, 512 * 2 ** 20);
    assert.equal(big.cpus, 1.5);
    assert.deepEqual(big.command, ['postgres', '-c', 'max_connections=50']);
    assert.equal(big.environment.POSTGRES_DB, 'big-co');
    assert.equal(big.environment.POSTGRES_PASSWORD, '${PGS_BIG_CO_PASSWORD:?set PGS_BIG_CO_PASSWORD in .env}');
    assert.deepEqual(big.networks, ['tenants']);
    assert.equal(compose.networks.tenants.internal, true, 'tenants reach nothing and publish nothing');
    assert.equal(big.ports, undefined);
    assert.deepEqual(compose.services['pgs-paused'].profiles, ['stopped']);
    assert.deepEqual(Object.keys(compose.volumes).sort(), ['pgs-acme-data', 'pgs-big-co-data', 'pgs-closed-data', 'pgs-paused-data']);
    for (const [name, svc] of Object.entries(compose.services as Record<string, { environment?: { POSTGRES_PASSWORD?: string } }>)) {
      if (name !== 'traefik') assert.match(svc.environment?.POSTGRES_PASSWORD ?? '', /^\$\{PGS_[A-Z0-9_]+_PASSWORD:\?/, 'a password is a variable of .env, never a value');
    }
    assert.equal(passwordVariable('big-co'), 'PGS_BIG_CO_PASSWORD');
  });

  it('Traefik routes every tenant whose access is enabled by HostSNI, with ALPN postgresql', () => {
    const dynamic = file('traefik/dynamic.yml');
    assert.deepEqual(Object.keys(dynamic.tcp.routers).sort(), ['pgs-acme', 'pgs-big-co', 'pgs-paused']);
    assert.equal(dynamic.tcp.routers['pgs-acme'].rule, 'HostSNI(`acme-abc123.db.example.com`)');
    assert.deepEqual(dynamic.tcp.routers['pgs-acme'].entryPoints, ['postgres']);
    assert.deepEqual(dynamic.tcp.routers['pgs-acme'].tls, {});
    assert.deepEqual(dynamic.tcp.services['pgs-acme'].loadBalancer.servers, [{ address: 'pgs-acme:5432' }]);
    assert.deepEqual(dynamic.tls.options.default.alpnProtocols, ['postgresql']);
    assert.deepEqual(project.unrouted, ['closed']);
    const traefik = file('traefik/traefik.yml');
    assert.equal(traefik.entryPoints.postgres.address, ':5432');
    assert.equal(traefik.providers.file.filename, '/etc/traefik/dynamic.yml');
  });

  it('a tenant\'s allow-list becomes a Traefik ipAllowList middleware on its router; no list, no middleware', () => {
    assert.equal(file('traefik/dynamic.yml').tcp.middlewares, undefined);
    const listed = composeProject(catalog([{ id: 'acme', allow: ['203.0.113.0/24', '2001:db8::/32'] }, { id: 'open' }]));
    const dynamic = parse(listed.files.find((f) => f.path === 'traefik/dynamic.yml')?.content ?? '') as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    assert.deepEqual(dynamic.tcp.routers['pgs-acme'].middlewares, ['pgs-acme-allow']);
    assert.deepEqual(dynamic.tcp.middlewares['pgs-acme-allow'], { ipAllowList: { sourceRange: ['203.0.113.0/24', '2001:db8::/32'] } });
    assert.equal(dynamic.tcp.routers['pgs-open'].middlewares, undefined);
    assert.deepEqual(Object.keys(dynamic.tcp.middlewares), ['pgs-acme-allow']);
  });
});
