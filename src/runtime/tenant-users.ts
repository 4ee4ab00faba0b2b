import { randomInt } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';

/**
 * One OS user per tenant, when pgs runs as root. A tenant's uid is the owner
 * of its data folder: its server, and every command pgs runs on its files
 * (tar, cp, rm), run as that uid, with a group of the same number and no
 * supplementary groups. The uids come from a range no distribution hands out
 * (above the 524288–1879048191 that systemd gives containers, below 2^31,
 * which some tools read as negative) and get no /etc/passwd entry: PostgreSQL
 * needs one only for initdb, which runs once, for the template, as the
 * server user. Without a name a uid also cannot log in by peer authentication
 * anywhere, its own server included.
 */
export const TENANT_UID_FIRST = 1_900_000_000;
/** 2^27 uids: picked at random, two pgs processes allocating at once do not meet. */
export const TENANT_UID_COUNT = 1 << 27;

export interface Identity {
  uid: number;
  gid: number;
}

export function isTenantUid(uid: number): boolean {
  return uid >= TENANT_UID_FIRST && uid < TENANT_UID_FIRST + TENANT_UID_COUNT;
}

/**
 * Hands out uids that no folder of the data root is owned by: tenants, spares,
 * backups (a removed tenant's stay, and a new tenant must not read them) and
 * the trash (deleted in the background). The folders are read once; what this
 * process hands out afterwards is remembered.
 */
export class UidAllocator {
  private used: Set<number> | undefined;

  constructor(private readonly dataRoot: string) {}

  async next(): Promise<Identity> {
    this.used ??= await this.scan();
    for (;;) {
      const uid = TENANT_UID_FIRST + randomInt(TENANT_UID_COUNT);
      if (this.used.has(uid)) continue;
      this.used.add(uid);
      return { uid, gid: uid };
    }
  }

  private async scan(): Promise<Set<number>> {
    const used = new Set<number>();
    for (const area of ['tenants', 'spares', 'backups', 'trash']) {
      const dir = path.join(this.dataRoot, area);
      const names = await fs.readdir(dir).catch(() => [] as string[]);
      await Promise.all(names.map(async (name) => {
        const stat = await fs.lstat(path.join(dir, name)).catch(() => undefined);
        if (stat && isTenantUid(stat.uid)) used.add(stat.uid);
      }));
    }
    return used;
  }
}
