import type { Logger } from "../../common/logger.js";
import { CachedLeaseStore } from "./cached-lease-store.js";
import type { LeaseStore } from "./lease-store.js";
import { PostgresLeaseStore } from "./postgres-lease-store.js";
import { SqliteLeaseStore } from "./sqlite-lease-store.js";

/** What `createLeaseStore` needs of the gateway's configuration. */
export interface LeaseStoreConfig {
  /** `LEASE_DB_URL`: a `postgres://` or `postgresql://` URL selects PostgreSQL; absent = SQLite. */
  readonly leaseDbUrl?: string | undefined;
  /** `LEASE_DB_PATH`: the SQLite file (when no URL is set). */
  readonly leaseDbPath: string;
  /** `LEASE_DB_SYNCHRONOUS`: SQLite's `synchronous` pragma. */
  readonly leaseDbSynchronous: "FULL" | "NORMAL";
  /** `LEASE_DB_POOL_SIZE`: most PostgreSQL connections of the query pool. Default 4. */
  readonly leaseDbPoolSize?: number;
  /** `LEASE_DB_STATEMENT_TIMEOUT`: PostgreSQL `statement_timeout`, milliseconds. Default 5000. */
  readonly leaseDbStatementTimeoutMs?: number;
}

/**
 * Opens the lease store the configuration names: SQLite at `leaseDbPath` unless `leaseDbUrl`
 * is set, then PostgreSQL behind the per-gateway lease cache. The only place that chooses an
 * engine; nothing else imports one. PostgreSQL connects in the background (with retries):
 * the store reports `available()` once connected.
 */
export async function createLeaseStore(config: LeaseStoreConfig, logger?: Logger): Promise<LeaseStore> {
  if (config.leaseDbUrl !== undefined) {
    const engine = new PostgresLeaseStore({
      url: config.leaseDbUrl,
      poolSize: config.leaseDbPoolSize,
      statementTimeoutMs: config.leaseDbStatementTimeoutMs,
      logger,
    });
    return new CachedLeaseStore(engine);
  }
  return new SqliteLeaseStore({ path: config.leaseDbPath, synchronous: config.leaseDbSynchronous });
}
