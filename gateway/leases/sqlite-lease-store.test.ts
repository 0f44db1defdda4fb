// What only the SQLite engine has: WAL, its checkpoint timer, the schema version in
// user_version, and real concurrency of several connections on one file (worker threads).
// The engine's behaviour as a lease store is proven by lease-store.contract.test.ts.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import type { InstanceStatus } from "./lease-store.js";
import { SqliteLeaseStore as LeaseStore, sqliteSchemaVersion } from "./sqlite-lease-store.js";

const ttl = 60_000;

function tempDbPath(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), "lease-store-test-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, "leases.db");
}

function cleanStatus(address: string, bootId = `boot-${address}`): InstanceStatus {
  return { podName: `pod-${address}`, bootId, sessionId: "", shuttingDown: false };
}

async function ready(store: LeaseStore, addresses: readonly string[]): Promise<void> {
  await store.register(addresses);
  for (const address of addresses) await store.recordStatus(address, cleanStatus(address));
}

async function acquiredAddress(store: LeaseStore, sessionId: string): Promise<string> {
  const result = await store.acquire(sessionId, "alice", ttl);
  assert.ok(result.kind === "acquired", `acquire(${sessionId}) gave ${result.kind}`);
  return result.lease.instanceAddress;
}

describe("SqliteLeaseStore file", () => {
  it("uses WAL and records the schema version", async (t) => {
    const path = tempDbPath(t);
    const store = new LeaseStore({ path });
    await store.close();
    const db = new Database(path, { readonly: true });
    t.after(() => db.close());
    assert.equal(db.pragma("journal_mode", { simple: true }), "wal");
    assert.equal(db.pragma("user_version", { simple: true }), sqliteSchemaVersion);
    // Reopening does not run the migration again.
    const again = new LeaseStore({ path });
    await again.close();
  });
});

describe("SqliteLeaseStore WAL checkpoints", () => {
  it("checkpoints on its timer, outside commits, so the WAL stays small", async (t) => {
    const path = tempDbPath(t);
    const store = new LeaseStore({ path, synchronous: "NORMAL", checkpointIntervalMs: 20 });
    t.after(() => store.close());
    const addresses = Array.from({ length: 200 }, (_, i) => `10.0.${i >> 8}.${i & 255}:1`);
    await ready(store, addresses);
    const db = new Database(path, { readonly: true });
    t.after(() => db.close());
    // SQLite's automatic checkpoint is off on the store's connection: only the timer copies the WAL.
    for (let i = 0; i < 1500; i++) {
      const address = await acquiredAddress(store, `s-${i}`);
      await store.release(`s-${i}`, address);
      await store.recordStatus(address, cleanStatus(address, `boot-${i}`), Date.now() + 1);
      // Wait longer than one checkpoint period: the interval timer, due earlier, fires first, so
      // every 25 cycles are followed by a checkpoint however slow a loaded machine runs the loop.
      if (i % 25 === 0) await new Promise((resolve) => setTimeout(resolve, 25));
    }
    // 4,500 commits of several pages each would make a WAL of tens of MB without checkpoints;
    // PASSIVE checkpoints reuse the file from its start once the database has caught up.
    const walBytes = statSync(`${path}-wal`).size;
    assert.ok(walBytes < 8 * 1024 * 1024, `WAL is ${walBytes} bytes`);
    assert.deepEqual(db.prepare("SELECT COUNT(*) AS n FROM leases").get(), { n: 0 });
  });
});

describe("SqliteLeaseStore with several connections (worker threads)", () => {
  it("several connections opening a fresh file at the same moment all start (one migration)", async (t) => {
    const path = tempDbPath(t);
    // Worker threads open their own connection on a file that does not exist yet, as several
    // gateway processes starting together would; each must find the schema exactly once.
    const results = await runWorkers(path, [], 4, { mode: "hold", rounds: 0 });
    assert.deepEqual(
      results.flatMap((r) => r.errors),
      [],
    );
    const store = new LeaseStore({ path });
    t.after(() => store.close());
    assert.deepEqual(await store.instances(), []);
  });

  it("never gives one instance to two sessions when worker threads race for the last free instances", async (t) => {
    const path = tempDbPath(t);
    const addresses = ["a:1", "b:1", "c:1"];
    const setup = new LeaseStore({ path });
    t.after(() => setup.close());
    await ready(setup, addresses);

    const workers = 4;
    const sessionsPerWorker = 40;
    const results = await runWorkers(path, addresses, workers, { mode: "hold", rounds: sessionsPerWorker });
    assert.deepEqual(
      results.flatMap((r) => r.errors),
      [],
    );
    const won = results.flatMap((r) => r.acquired);
    assert.equal(won.length, addresses.length, "exactly one session per instance");
    assert.deepEqual(won.map((w) => w.instance).sort(), addresses);
    const kinds = results.reduce((n, r) => n + r.busy, 0);
    assert.equal(kinds, workers * sessionsPerWorker - addresses.length, "every other attempt was busy");

    const leases = await setup.leases();
    assert.equal(leases.length, addresses.length);
    assert.equal(new Set(leases.map((l) => l.instanceAddress)).size, addresses.length);
    assert.deepEqual(leases.map((l) => [l.sessionId, l.instanceAddress]).sort(), won.map((w) => [w.session, w.instance]).sort());
    for (const instance of await setup.instances()) {
      assert.equal(instance.sessionId, (await setup.leaseOfInstance(instance.address))?.sessionId);
    }
  });

  it("never gives one instance to two sessions while worker threads acquire and release concurrently", async (t) => {
    const path = tempDbPath(t);
    const addresses = ["a:1", "b:1", "c:1"];
    const setup = new LeaseStore({ path });
    t.after(() => setup.close());
    await ready(setup, addresses);

    const results = await runWorkers(path, addresses, 4, { mode: "cycle", rounds: 80 });
    assert.deepEqual(
      results.flatMap((r) => r.errors),
      [],
    );
    assert.ok(results.reduce((n, r) => n + r.acquired.length, 0) > 0);
    assert.deepEqual(await setup.leases(), []);
    for (const instance of await setup.instances()) {
      assert.equal(instance.sessionId, null);
      assert.equal(instance.clean, true);
    }
  });
});

interface WorkerResult {
  acquired: { session: string; instance: string }[];
  busy: number;
  errors: string[];
}

/**
 * Each worker opens its own `LeaseStore` (own connection) on `path`, waits at a barrier so that
 * all start together, then acquires many sessions. `hold` keeps what it gets; `cycle` releases
 * each lease and reports the instance clean again, checking through shared memory that no
 * other worker holds the instance meanwhile.
 */
async function runWorkers(
  path: string,
  addresses: readonly string[],
  count: number,
  options: { mode: "hold" | "cycle"; rounds: number },
): Promise<WorkerResult[]> {
  const shared = new SharedArrayBuffer(4 * (addresses.length + 2));
  const code = `
const { parentPort, workerData } = require("node:worker_threads");
(async () => {
  const { register } = await import(workerData.tsxApi);
  register();
  const { SqliteLeaseStore: LeaseStore } = await import(workerData.storeUrl);
  const { path, addresses, id, mode, rounds, shared } = workerData;
  const holders = new Int32Array(shared, 0, addresses.length);
  const gate = new Int32Array(shared, addresses.length * 4, 2);
  const result = { acquired: [], busy: 0, errors: [] };
  let store;
  try {
    store = new LeaseStore({ path, synchronous: "NORMAL", busyTimeoutMs: 20000 });
  } catch (error) {
    result.errors.push("open: " + String(error));
  }
  Atomics.add(gate, 0, 1);
  Atomics.notify(gate, 0);
  Atomics.wait(gate, 1, 0);
  for (let i = 0; store !== undefined && i < rounds; i++) {
    const session = "w" + id + "-s" + i;
    const tag = id * 1000000 + i + 1;
    try {
      const r = await store.acquire(session, "user" + id, 60000);
      if (r.kind === "busy") { result.busy++; continue; }
      if (r.kind !== "acquired") { result.errors.push(session + ": " + r.kind); continue; }
      const address = r.lease.instanceAddress;
      const k = addresses.indexOf(address);
      result.acquired.push({ session, instance: address });
      const before = Atomics.compareExchange(holders, k, 0, tag);
      if (before !== 0) result.errors.push(address + " given to " + session + " while held by tag " + before);
      const seen = await store.leaseOfInstance(address);
      if (seen === undefined || seen.sessionId !== session) {
        result.errors.push(address + " leased to " + session + " but the table says " + (seen && seen.sessionId));
      }
      if (mode === "cycle") {
        if (Atomics.compareExchange(holders, k, tag, 0) !== tag) result.errors.push(address + " holder changed under " + session);
        const released = await store.release(session, address);
        if (released === undefined) result.errors.push(session + ": release found no lease");
        // The instance restarted after its session (a new boot): allocatable again.
        await store.recordStatus(address, { podName: "pod-" + address, bootId: "boot-" + session, sessionId: "", shuttingDown: false }, Date.now());
      }
    } catch (error) {
      result.errors.push(session + ": " + String(error));
    }
  }
  await store?.close();
  parentPort.postMessage(result);
})().catch((error) => parentPort.postMessage({ acquired: [], busy: 0, errors: ["worker: " + String(error)] }));
`;
  const workerData = {
    tsxApi: import.meta.resolve("tsx/esm/api"),
    storeUrl: new URL("./sqlite-lease-store.ts", import.meta.url).href,
    path,
    addresses,
    shared,
    mode: options.mode,
    rounds: options.rounds,
  };
  const gate = new Int32Array(shared, addresses.length * 4, 2);
  let exited = 0;
  const done = Array.from({ length: count }, (_, id) => {
    const worker = new Worker(code, { eval: true, workerData: { ...workerData, id } });
    return new Promise<WorkerResult>((resolve, reject) => {
      let result: WorkerResult | undefined;
      worker.on("message", (m: WorkerResult) => {
        result = m;
      });
      worker.on("error", reject);
      worker.on("exit", (code) => {
        exited++;
        return result !== undefined ? resolve(result) : reject(new Error(`worker ${id} exited with ${code} and no result`));
      });
    });
  });
  // Release every worker at once, after all opened their connection.
  while (Atomics.load(gate, 0) + exited < count) {
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  Atomics.store(gate, 1, 1);
  Atomics.notify(gate, 1);
  return Promise.all(done);
}
