// The per-gateway lease cache in front of PostgreSQL, with the waiting queue (SPEC 10, 11): the
// queue's operations pass through, a claimed grant is cached like any lease this gateway read,
// and a grant claimed or released through another gateway never leaves a stale entry behind.
import assert from "node:assert/strict";
import { after, describe, it, type TestContext } from "node:test";
import { postgresSkipReason, stopTempPostgres, tempPostgres } from "../../test/lease-store-engines.js";
import { CachedLeaseStore } from "./cached-lease-store.js";
import type { AcquireResult, InstanceStatus } from "./lease-store.js";
import { PostgresLeaseStore } from "./postgres-lease-store.js";

const skip = postgresSkipReason();
if (skip !== undefined && process.env.CI) throw new Error(`CI needs the PostgreSQL tests: ${skip}`);
after(() => stopTempPostgres());

const ttl = 60_000;

function cleanStatus(address: string, bootId: string): InstanceStatus {
  return { podName: `pod-${address}`, bootId, sessionId: "", shuttingDown: false };
}

/** Two gateways' stores (each a cache in front of its own engine) on one fresh database. */
async function twoGateways(t: TestContext): Promise<[CachedLeaseStore, CachedLeaseStore]> {
  const url = await (await tempPostgres()).createDatabase();
  const open = async () => {
    const engine = new PostgresLeaseStore({ url, reconnectMaxMs: 500 });
    await engine.firstConnection;
    const store = new CachedLeaseStore(engine);
    t.after(() => store.close());
    return store;
  };
  return [await open(), await open()];
}

async function until(what: string, predicate: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`${what} not within 5 s`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe("CachedLeaseStore with the waiting queue (PostgreSQL)", { skip }, () => {
  it("caches the lease of a claimed grant on the claiming gateway, and on a gateway whose call joined it", async (t) => {
    const [a, b] = await twoGateways(t);
    await a.heartbeat({ id: "gw-a", address: "x:1" });
    await b.heartbeat({ id: "gw-b", address: "x:2" });
    await a.register(["i:1"]);
    await a.recordStatus("i:1", cleanStatus("i:1", "boot-1"));
    assert.equal((await a.acquire("holder", "alice", ttl)).kind, "acquired");
    const wait = (gatewayId: string) => ({ gatewayId, maxWaitMs: 30_000, maxLength: 100 });
    const entered = (await b.acquireBatch([{ sessionId: "w", owner: "alice", ttlMs: ttl, wait: wait("gw-b") }]))[0] as AcquireResult;
    assert.equal(entered.kind, "queued");
    // A second waiting call of the same session, on gateway a: it joins b's entry.
    const joined = (await a.acquireBatch([{ sessionId: "w", owner: "alice", ttlMs: ttl, wait: wait("gw-a") }]))[0] as AcquireResult;
    assert.ok(joined.kind === "queued" && joined.joined);

    await a.release("holder");
    await b.recordStatus("i:1", cleanStatus("i:1", "boot-2"));
    // Reserved for w: not a lease, nothing for a cache to hold yet.
    assert.equal(a.lookup("w"), undefined);
    assert.deepEqual(await a.claimGranted("gw-a", ["w"]), { claimed: [], leased: [], gone: [] });

    const { claimed } = await b.claimGranted("gw-b");
    assert.equal(claimed[0]?.lease.sessionId, "w");
    assert.deepEqual(b.lookup("w"), claimed[0]?.lease, "the claiming gateway serves w's next calls from its cache");
    const seen = await a.claimGranted("gw-a", ["w"]);
    assert.deepEqual(seen.leased, [claimed[0]?.lease]);
    assert.deepEqual(a.lookup("w"), claimed[0]?.lease, "so does the gateway whose call joined");

    // The session ends through b: a hears of it and drops its entry.
    await b.release("w");
    await until("gateway a dropping w", () => a.lookup("w") === undefined);
    assert.equal(b.lookup("w"), undefined);
  });

  it("keeps no entry for a session whose reservation passed to the next waiter", async (t) => {
    const [a, b] = await twoGateways(t);
    await a.heartbeat({ id: "gw-a", address: "x:1" });
    await a.register(["i:1"]);
    await a.recordStatus("i:1", cleanStatus("i:1", "boot-1"));
    assert.equal((await a.acquire("holder", "alice", ttl)).kind, "acquired");
    const wait = { gatewayId: "gw-a", maxWaitMs: 30_000, maxLength: 100 };
    await a.acquireBatch([
      { sessionId: "w1", owner: "alice", ttlMs: ttl, wait },
      { sessionId: "w2", owner: "alice", ttlMs: ttl, wait },
    ]);
    await b.release("holder");
    await b.recordStatus("i:1", cleanStatus("i:1", "boot-2"));
    assert.equal((await a.leaveQueue("w1"))?.grantedAddress, "i:1");
    const { claimed } = await a.claimGranted("gw-a");
    assert.deepEqual(
      claimed.map((c) => c.lease.sessionId),
      ["w2"],
    );
    assert.equal(a.lookup("w1"), undefined);
    assert.equal(b.lookup("w1"), undefined);
    assert.equal((await b.get("w1")) ?? null, null);
    assert.equal((await b.get("w2"))?.instanceBootId, "boot-2");
  });
});
