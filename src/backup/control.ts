import { promises as fs } from 'node:fs';
import path from 'node:path';

/**
 * The few fields pgs reads from a stopped server's global/pg_control (no
 * pg_controldata ships with the npm binaries). Layout of ControlFileData on
 * 64-bit little-endian builds, PostgreSQL 18: system_identifier u64 @0,
 * pg_control_version u32 @8, catalog_version_no u32 @12, state u32 @16,
 * time i64 @24, checkPoint u64 @32, checkPointCopy @40 (redo u64 @40,
 * ThisTimeLineID u32 @48). A unit test compares it with pg_control_checkpoint().
 */
export interface ControlData {
  systemIdentifier: bigint;
  /** 1: shut down cleanly (DB_SHUTDOWNED); 6: in production (running, or crashed). */
  state: number;
  checkpoint: bigint;
  redo: bigint;
  timeline: number;
}

export const DB_SHUTDOWNED = 1;
const PG_CONTROL_VERSION_18 = 1800;

export async function readControl(dataDir: string): Promise<ControlData> {
  const bytes = await fs.readFile(path.join(dataDir, 'global', 'pg_control'));
  const version = bytes.readUInt32LE(8);
  if (version !== PG_CONTROL_VERSION_18) throw new Error(`pg_control version ${version} in ${dataDir}: pgs reads PostgreSQL 18's (${PG_CONTROL_VERSION_18})`);
  return {
    systemIdentifier: bytes.readBigUInt64LE(0),
    state: bytes.readUInt32LE(16),
    checkpoint: bytes.readBigUInt64LE(32),
    redo: bytes.readBigUInt64LE(40),
    timeline: bytes.readUInt32LE(48),
  };
}
