// The contract suite's fixture (STYLE "One port, several engines"): every engine of the lease
// store, each able to open stores on a fresh database of its own, so that one test file proves
// a behaviour on all of them.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, type TestContext } from "node:test";
import pg from "pg";
import type { LeaseStoreConfig } from "../gateway/leases/create-lease-store.js";
import type { LeaseStore } from "../gateway/leases/lease-store.js";
import { PostgresLeaseStore } from "../gateway/leases/postgres-lease-store.js";
import { SqliteLeaseStore } from "../gateway/leases/sqlite-lease-store.js";
import { pickFreePorts } from "../scripts/net-util.js";
import { initPostgres, postgresInstalled, postgresUrl, startPostgres, stopPostgres } from "../scripts/postgres-server.js";

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

/** A temporary PostgreSQL server for this test process (one per suite file), started on first use. */
export interface TempPostgres {
  readonly dir: string;
  readonly port: number;
  /** URL of a new, empty database on it. */
  createDatabase(): Promise<string>;
  /** `pg_ctl stop` (`immediate` = as a crash) and `start`: the server keeps its data. */
  stop(mode?: "fast" | "immediate"): Promise<void>;
  start(): Promise<void>;
}

let server: Promise<TempPostgres> | undefined;
let databases = 0;

/**
 * Why PostgreSQL tests cannot run here (not installed), or `undefined`. On CI it must run:
 * `.ci/run` installs it.
 */
export function postgresSkipReason(): string | undefined {
  if (!postgresInstalled()) return "PostgreSQL server programs not installed (apt-get install postgresql)";
  return undefined;
}

/** Stops and removes the test process's PostgreSQL server, if one was started. Call from a top-level `after`. */
export async function stopTempPostgres(): Promise<void> {
  if (server === undefined) return;
  const { dir } = await server;
  server = undefined;
  await stopPostgres(dir, "immediate").catch(() => {});
  rmSync(dir, { recursive: true, force: true });
}

/**
 * The test process's PostgreSQL server: `initdb` into a temp folder, listening on a free
 * loopback port; `forEachEngine` stops and removes it after the file's tests. `fsync=off` keeps
 * tests fast; a stop with `-m immediate` still loses nothing that was committed.
 */
export function tempPostgres(): Promise<TempPostgres> {
  server ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), "pg-test-"));
    const [port] = (await pickFreePorts(1)) as [number];
    const options = { dir, port, settings: { fsync: "off", max_connections: "200" } };
    await initPostgres(dir);
    await startPostgres(options);
    return {
      dir,
      port,
      async createDatabase() {
        const name = `t${process.pid}_${++databases}`;
        const admin = new pg.Client({ connectionString: postgresUrl(port) });
        await admin.connect();
        try {
          await admin.query(`CREATE DATABASE ${name}`);
        } finally {
          await admin.end();
        }
        return postgresUrl(port, "127.0.0.1", name);
      },
      stop: (mode = "fast") => stopPostgres(dir, mode),
      start: () => startPostgres(options),
    };
  })();
  return server;
}

const postgres: Engine = {
  name: "postgres",
  async database(t) {
    const url = await (await tempPostgres()).createDatabase();
    return {
      config: { leaseDbPath: "", leaseDbSynchronous: "FULL", leaseDbUrl: url },
      async open(options = {}) {
        const store = new PostgresLeaseStore({ url, now: options.now, reconnectMaxMs: 500 });
        t.after(() => store.close());
        await store.firstConnection;
        return store;
      },
    };
  },
};

/** The engines this run can test: SQLite always, PostgreSQL where its server is installed. */
export function engines(): Engine[] {
  return postgresSkipReason() === undefined ? [sqlite, postgres] : [sqlite];
}

/** Runs `suite` once per engine (`describe` inside it names the engine). */
export function forEachEngine(suite: (engine: Engine) => void): void {
  for (const engine of engines()) suite(engine);
  after(() => stopTempPostgres());
  const reason = postgresSkipReason();
  if (reason !== undefined) {
    if (process.env.CI) throw new Error(`CI needs the PostgreSQL engine's tests: ${reason}`);
    process.stdout.write(`# postgres engine skipped: ${reason}\n`);
  }
}
