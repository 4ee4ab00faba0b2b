import assert from 'node:assert/strict';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import type { ApiResult } from './pgs.js';

/**
 * Checks answers against the OpenAPI document the daemon serves: each
 * response body must match the schema of its route, method and status, and
 * every error must be application/problem+json. Remembers which routes were
 * exercised, so that a test can insist on all of them.
 */
type Schema = Record<string, unknown>;
interface OpenApi { paths: Record<string, Record<string, { responses?: Record<string, { content?: Record<string, { schema?: Schema }> }> }>> }

const addFormats = (addFormatsModule as unknown as { default?: typeof addFormatsModule }).default ?? addFormatsModule;

export class OpenApiChecker {
  readonly doc: OpenApi;
  private readonly ajv = new Ajv2020({ strict: false, allErrors: true });
  readonly seen = new Set<string>();

  constructor(doc: unknown) {
    this.doc = doc as OpenApi;
    (addFormats as unknown as (ajv: Ajv2020) => void)(this.ajv);
  }

  /** Every `METHOD /path/{template}` the document lists. */
  routes(): string[] {
    return Object.entries(this.doc.paths).flatMap(([p, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${p}`));
  }

  check<T>(method: string, template: string, result: ApiResult<T>): ApiResult<T> {
    const operation = this.doc.paths[template]?.[method.toLowerCase()];
    assert.ok(operation, `the document has no ${method} ${template}`);
    this.seen.add(`${method.toUpperCase()} ${template}`);
    const status = String(result.status);
    const responses = operation.responses ?? {};
    const response = responses[status] ?? responses[`${status[0]}XX`] ?? responses.default;
    assert.ok(response, `${method} ${template} answered ${status}, which the document does not list (${Object.keys(responses).join(', ')}): ${result.text}`);
    const type = String(result.headers['content-type'] ?? '');
    if (result.status >= 400) assert.match(type, /^application\/problem\+json/, `${method} ${template} ${status}: an error is problem+json`);
    const content = response.content;
    if (!content || result.status === 204) return result;
    const media = Object.keys(content).find((k) => k === 'application/json' || k === 'application/problem+json') ?? Object.keys(content)[0];
    const schema = media ? content[media]?.schema : undefined;
    if (!schema || typeof result.body !== 'object') return result;
    const validate = this.ajv.compile(schema);
    assert.ok(validate(result.body), `${method} ${template} ${status}: the body does not match the document: ${this.ajv.errorsText(validate.errors)}\n${result.text}`);
    return result;
  }
}
