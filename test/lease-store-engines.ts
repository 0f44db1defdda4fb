// The contract suite's fixture (STYLE "One port, several engines"): every engine of the lease
// store, each able to open stores on a fresh database of its own, so that one test file proves
// a behaviour on all of them.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";
import type { LeaseStoreConfig } from "../gateway/leases/create-lease-store.js";
import type { LeaseStore } from "../gateway/leases/lease-store.js";
import { SqliteLeaseStore } from "../gateway/leases/sqlite-lease-store.js";

/** A fresh database of one engine, for one test. */
export interface EngineDatabase {
  /** The configuration `createLeaseStore` takes for this database (for child processes). */
  readonly config: LeaseStoreConfig;
  /** Opens a store (its own connection) on this database; closed after the test. */
  open(options?: { now?: () => number }): Promise<LeaseStore>;
}

/** One engine of the lease store. */
export interface Engine {
  readonly name: "sqlite" | "postgres";
  /** A fresh, empty database (the schema is created by the first store opened on it). */
  database(t: TestContext): Promise<EngineDatabase>;
}

const sqlite: Engine = {
  name: "sqlite",
  async database(t) {
    const dir = mkdtempSync(join(tmpdir(), "lease-store-test-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, "leases.db");
    return {
      config: { leaseDbPath: path, leaseDbSynchronous: "NORMAL" },
      async open(options = {}) {
        const store = new SqliteLeaseStore({ path, now: options.now });
        t.after(() => store.close());
        return store;
      },
    };
  },
};

/** The engines this run can test. */
export function engines(): Engine[] {
  return [sqlite];
}

/** Runs `suite` once per engine (`describe` inside it names the engine). */
export function forEachEngine(suite: (engine: Engine) => void): void {
  for (const engine of engines()) suite(engine);
}
