/**
 * The native runtime: each tenant's server a PostgreSQL process that pgs
 * starts from the npm binaries, as a child of its own (local/native-host.ts),
 * its files managed by the local runtimes' shared parts (local/parts.ts).
 */
import { LocalRuntime } from './local/local-runtime.js';
import { NativeHost } from './local/native-host.js';
import type { LocalRuntimeOptions } from './local/parts.js';

export type NativeRuntimeOptions = LocalRuntimeOptions;

export class NativeRuntime extends LocalRuntime {
  constructor(options: NativeRuntimeOptions) {
    super(options, (parts, context) => new NativeHost(parts, context));
  }
}
