/**
 * Validation of Kubernetes objects as the API server would do it, and
 * stricter: CloudNativePG's custom resources against their CRDs'
 * openAPIV3Schema (test/data/cloudnative-pg), core objects against the
 * Kubernetes types as @kubernetes/client-node describes them. An unknown
 * field is an error in both (the API server drops unknown fields of a custom
 * resource silently, which would hide a misspelled one).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { parse } from 'yaml';
import { ROOT } from './pgs.js';

type Schema = Record<string, unknown>;

/** Every object schema with properties and no say on other fields refuses them; Kubernetes' own keywords go. */
function strict(schema: Schema): Schema {
  const out: Schema = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key.startsWith('x-kubernetes-')) continue;
    if (key === 'properties' && value && typeof value === 'object') {
      out.properties = Object.fromEntries(Object.entries(value as Record<string, Schema>).map(([k, v]) => [k, strict(v)]));
    } else if ((key === 'items' || key === 'additionalProperties' || key === 'not') && value && typeof value === 'object' && !Array.isArray(value)) {
      out[key] = strict(value as Schema);
    } else if ((key === 'anyOf' || key === 'allOf' || key === 'oneOf') && Array.isArray(value)) {
      out[key] = (value as Schema[]).map(strict);
    } else {
      out[key] = value;
    }
  }
  if (out.properties && out.additionalProperties === undefined && !schema['x-kubernetes-preserve-unknown-fields']) out.additionalProperties = false;
  return out;
}

const crdFiles = ['postgresql.cnpg.io_clusters.yaml', 'postgresql.cnpg.io_scheduledbackups.yaml', 'postgresql.cnpg.io_backups.yaml', 'barmancloud.cnpg.io_objectstores.yaml'];
const ajv = new Ajv({ strict: false, allErrors: true });
// ajv-formats is CommonJS: its default export arrives wrapped.
const addFormats = (addFormatsModule as unknown as { default?: (a: Ajv) => Ajv }).default ?? (addFormatsModule as unknown as (a: Ajv) => Ajv);
addFormats(ajv);
const crds = new Map<string, ValidateFunction>();
for (const file of crdFiles) {
  const crd = parse(readFileSync(path.join(ROOT, 'test', 'data', 'cloudnative-pg', file), 'utf8')) as {
    spec: { group: string; names: { kind: string }; versions: { name: string; served: boolean; schema: { openAPIV3Schema: Schema } }[] };
  };
  for (const version of crd.spec.versions.filter((v) => v.served)) {
    const schema = strict(version.schema.openAPIV3Schema);
    // metadata is the API server's ObjectMeta, checked below like a core type's.
    (schema.properties as Record<string, Schema>).metadata = { type: 'object' };
    crds.set(`${crd.spec.group}/${version.name}/${crd.spec.names.kind}`, ajv.compile(schema));
  }
}

interface Attribute { name: string; baseName: string; type: string }
type Model = { getAttributeTypeMap(): Attribute[] };
const models = k8s as unknown as Record<string, Model | undefined>;

/** The problems of a value against a client-node type name ("V1Secret", "Array<V1EnvVar>", "{ [key: string]: string; }", "string"...). */
function checkType(value: unknown, type: string, at: string, problems: string[]): void {
  if (value === undefined || value === null) return;
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (!Array.isArray(value)) problems.push(`${at}: an array expected`);
    else value.forEach((v, i) => checkType(v, array[1] as string, `${at}[${i}]`, problems));
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (typeof value !== 'object' || Array.isArray(value)) problems.push(`${at}: an object expected`);
    else for (const [k, v] of Object.entries(value)) checkType(v, map[1] as string, `${at}.${k}`, problems);
    return;
  }
  if (type === 'string') {
    if (typeof value !== 'string') problems.push(`${at}: a string expected, not ${JSON.stringify(value)}`);
    return;
  }
  if (type === 'number') {
    if (typeof value !== 'number') problems.push(`${at}: a number expected, not ${JSON.stringify(value)}`);
    return;
  }
  if (type === 'boolean') {
    if (typeof value !== 'boolean') problems.push(`${at}: a boolean expected, not ${JSON.stringify(value)}`);
    return;
  }
  if (type === 'IntOrString') {
    if (typeof value !== 'string' && typeof value !== 'number') problems.push(`${at}: a number or a string expected`);
    return;
  }
  if (type === 'V1MicroTime') {
    if (typeof value !== 'string' || !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/.test(value)) problems.push(`${at}: a MicroTime (RFC 3339 with microseconds) expected, not ${JSON.stringify(value)}`);
    return;
  }
  if (type === 'Date' || type === 'any' || type === 'object') return;
  const model = models[type];
  if (!model?.getAttributeTypeMap) {
    problems.push(`${at}: no type ${type} known`);
    return;
  }
  if (typeof value !== 'object' || Array.isArray(value)) {
    problems.push(`${at}: an object (${type}) expected`);
    return;
  }
  const attributes = model.getAttributeTypeMap();
  for (const [k, v] of Object.entries(value)) {
    const attribute = attributes.find((a) => a.baseName === k);
    if (!attribute) problems.push(`${at}.${k}: no such field in ${type}`);
    else checkType(v, attribute.type, `${at}.${k}`, problems);
  }
}

/** client-node's class for a core object: apiVersion "apps/v1", kind "Deployment" → V1Deployment. */
function coreType(apiVersion: string, kind: string): string {
  const version = apiVersion.split('/').pop() ?? '';
  return `${version.charAt(0).toUpperCase()}${version.slice(1)}${kind}`;
}

/** What is wrong with one object; empty when the API server would take it as it is. */
export function kubeProblems(object: { apiVersion?: string; kind?: string; metadata?: unknown; [field: string]: unknown }): string[] {
  const problems: string[] = [];
  const name = `${object.kind ?? '?'} ${(object.metadata as { name?: string } | undefined)?.name ?? '?'}`;
  if (!object.apiVersion || !object.kind) return [`${name}: apiVersion and kind are required`];
  if (!(object.metadata as { name?: string } | undefined)?.name) problems.push(`${name}: metadata.name is required`);
  checkType(object.metadata, 'V1ObjectMeta', `${name} metadata`, problems);
  const crd = crds.get(`${object.apiVersion}/${object.kind}`);
  if (crd) {
    if (!crd(object)) for (const e of crd.errors ?? []) problems.push(`${name} ${e.instancePath || '/'}: ${e.message ?? ''}${e.params && 'additionalProperty' in e.params ? ` (${String(e.params.additionalProperty)})` : ''}`);
    return problems;
  }
  const type = coreType(object.apiVersion, object.kind);
  if (!models[type]) return [...problems, `${name}: ${object.apiVersion} ${object.kind} is neither a core type nor a known CRD`];
  const rest: Record<string, unknown> = { ...object };
  delete rest.metadata; // checked above
  checkType(rest, type, name, problems);
  return problems;
}
