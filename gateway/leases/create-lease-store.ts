import type { LeaseStore } from "./lease-store.js";
import { SqliteLeaseStore } from "./sqlite-lease-store.js";

/** What `createLeaseStore` needs of the gateway's configuration. */
export interface LeaseStoreConfig {
  /** `LEASE_DB_URL`: a `postgres://` or `postgresql://` URL selects PostgreSQL; absent = SQLite. */
  readonly leaseDbUrl?: string | undefined;
  /** `LEASE_DB_PATH`: the SQLite file (when no URL is set). */
  readonly leaseDbPath: string;
  /** `LEASE_DB_SYNCHRONOUS`: SQLite's `synchronous` pragma. */
  readonly leaseDbSynchronous: "FULL" | "NORMAL";
}

/**
 * Opens the lease store the configuration names: SQLite at `leaseDbPath` unless `leaseDbUrl`
 * is set. The only place that chooses an engine; nothing else imports one.
 */
export async function createLeaseStore(config: LeaseStoreConfig): Promise<LeaseStore> {
  if (config.leaseDbUrl !== undefined) {
    throw new Error("LEASE_DB_URL: the PostgreSQL engine is not part of this build yet");
  }
  return new SqliteLeaseStore({ path: config.leaseDbPath, synchronous: config.leaseDbSynchronous });
}
