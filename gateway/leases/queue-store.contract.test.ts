// The waiting queue's contract (SPEC 11), run unchanged against every engine (`forEachEngine`):
// arrival order across stores, grants inside the transactions that free an instance, the
// reservation that passes on without a restart, deadlines, owner limits, purges, wake-ups.
import assert from "node:assert/strict";
import { describe, it, type TestContext } from "node:test";
import { type Engine, forEachEngine } from "../../test/lease-store-engines.js";
import type { AcquireRequest, AcquireResult, InstanceStatus, LeaseStore, QueueEntry } from "./lease-store.js";

const ttl = 60_000;
const gw = "gw-a";

function cleanStatus(address: string, bootId = `boot-${address}`): InstanceStatus {
  return { podName: `pod-${address}`, bootId, sessionId: "", shuttingDown: false };
}

async function ready(store: LeaseStore, addresses: readonly string[]): Promise<void> {
  await store.register(addresses);
  for (const address of addresses) await store.recordStatus(address, cleanStatus(address));
}

function waiting(
  sessionId: string,
  options: { gatewayId?: string; maxWaitMs?: number; maxLength?: number; owner?: string; maxPerOwner?: number } = {},
): AcquireRequest {
  return {
    sessionId,
    owner: options.owner ?? "alice",
    ttlMs: ttl,
    ...(options.maxPerOwner !== undefined ? { maxPerOwner: options.maxPerOwner } : {}),
    wait: { gatewayId: options.gatewayId ?? gw, maxWaitMs: options.maxWaitMs ?? 30_000, maxLength: options.maxLength ?? 1000 },
  };
}

async function one(store: LeaseStore, request: AcquireRequest): Promise<AcquireResult> {
  return (await store.acquireBatch([request]))[0] as AcquireResult;
}

async function enqueue(store: LeaseStore, request: AcquireRequest): Promise<QueueEntry> {
  const result = await one(store, request);
  assert.equal(result.kind, "queued", `${request.sessionId}: ${result.kind}`);
  return (result as Extract<AcquireResult, { kind: "queued" }>).entry;
}

async function hold(store: LeaseStore, sessionId: string, owner = "alice"): Promise<string> {
  const result = await store.acquire(sessionId, owner, ttl);
  assert.equal(result.kind, "acquired", `${sessionId}: ${result.kind}`);
  return (result as Extract<AcquireResult, { kind: "acquired" }>).lease.instanceAddress;
}

/** Releases `sessionId` and lets the instance come back clean on a new boot (what a Shutdown does). */
async function recycle(store: LeaseStore, sessionId: string, boot: string): Promise<string> {
  const released = await store.release(sessionId);
  assert.ok(released, `${sessionId} held a lease`);
  await store.recordStatus(released.instanceAddress, cleanStatus(released.instanceAddress, boot));
  return released.instanceAddress;
}

forEachEngine((engine: Engine) => {
  async function openStore(t: TestContext, start = 1_000) {
    const db = await engine.database(t);
    const clock = { now: start };
    const store = await db.open({ now: () => clock.now });
    await store.heartbeat({ id: gw, address: "127.0.0.1:1" });
    return { store, clock, db };
  }

  describe(`${engine.name}: the waiting queue, entering`, () => {
    it("queues a waiting request only when every healthy instance is leased, with its position", async (t) => {
      const { store, clock } = await openStore(t);
      await ready(store, ["a:1"]);
      // A free instance: a waiting request is simply acquired.
      assert.equal((await one(store, waiting("s0"))).kind, "acquired");
      clock.now = 2_000;
      const w1 = await enqueue(store, waiting("w1", { maxWaitMs: 5_000 }));
      const w2 = await enqueue(store, waiting("w2"));
      assert.equal(w1.position, 1);
      assert.equal(w1.entryPosition, 1);
      assert.equal(w1.enqueuedAt, 2_000);
      assert.equal(w1.deadlineAt, 7_000);
      assert.equal(w1.gatewayId, gw);
      assert.equal(w1.grantedAddress, null);
      assert.equal(w2.position, 2);
      assert.ok(w2.seq > w1.seq, "seq grows with arrival");
      assert.deepEqual(
        (await store.queue()).map((e) => [e.sessionId, e.position]),
        [
          ["w1", 1],
          ["w2", 2],
        ],
      );
      assert.equal((await store.queueStats()).length, 2);
      assert.deepEqual(await store.queueEntry("w2"), w2);
      assert.equal(await store.queueEntry("nobody"), undefined);
      // Nothing was leased for the waiters.
      assert.equal(await store.get("w1"), undefined);
    });

    it("answers unavailable, not queued, when no instance is healthy", async (t) => {
      const { store } = await openStore(t);
      await store.register(["a:1"]);
      assert.equal((await one(store, waiting("w1"))).kind, "unavailable");
      assert.deepEqual(await store.queue(), []);
    });

    it("refuses a waiter of an owner at the per-owner limit at once", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1"]);
      await hold(store, "s0", "alice");
      assert.equal((await one(store, waiting("w1", { owner: "alice", maxPerOwner: 1 }))).kind, "user-limit");
      assert.deepEqual(await store.queue(), []);
    });

    it("lets a second waiting request of a session join its place, extending its deadline", async (t) => {
      const { store, clock } = await openStore(t);
      await ready(store, ["a:1"]);
      await hold(store, "s0");
      const w1 = await enqueue(store, waiting("w1", { maxWaitMs: 1_000 }));
      await enqueue(store, waiting("w2"));
      clock.now = 1_500;
      const again = await one(store, waiting("w1", { gatewayId: "gw-b", maxWaitMs: 10_000 }));
      assert.equal(again.kind, "queued");
      assert.ok(again.kind === "queued");
      assert.equal(again.joined, true);
      assert.equal(again.entry.seq, w1.seq);
      assert.equal(again.entry.position, 1);
      assert.equal(again.entry.gatewayId, gw, "the entry stays its first gateway's");
      assert.equal(again.entry.deadlineAt, 11_500);
      assert.equal((await store.queue()).length, 2);
    });

    it("answers queue-full at maxLength, counting every gateway's entries", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1"]);
      await hold(store, "s0");
      await enqueue(store, waiting("w1", { maxLength: 2 }));
      await enqueue(store, waiting("w2", { maxLength: 2, gatewayId: "gw-b" }));
      assert.deepEqual(await one(store, waiting("w3", { maxLength: 2 })), { kind: "queue-full", length: 2 });
      assert.equal(await store.queueEntry("w3"), undefined);
    });

    it("keeps a request that does not wait busy while the session itself waits", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1"]);
      await hold(store, "s0");
      await enqueue(store, waiting("w1"));
      assert.equal((await store.acquire("w1", "alice", ttl)).kind, "busy");
    });
  });

  describe(`${engine.name}: the waiting queue, granting`, () => {
    it("reserves an instance that comes back clean for the head of the queue, inside the probe's transaction", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1"]);
      await hold(store, "s0");
      await enqueue(store, waiting("w1"));
      await enqueue(store, waiting("w2"));
      await store.release("s0");
      assert.equal((await store.queueEntry("w1"))?.grantedAddress, null, "not before the instance is seen clean");
      await store.recordStatus("a:1", cleanStatus("a:1", "boot-2"));
      const w1 = await store.queueEntry("w1");
      assert.equal(w1?.grantedAddress, "a:1");
      assert.equal(w1?.position, 0);
      assert.equal((await store.queueEntry("w2"))?.position, 1);
      // Reserved, not leased: out of allocation, and no lease exists for a cache to hold.
      assert.equal((await store.instance("a:1"))?.sessionId, "w1");
      assert.equal(await store.get("w1"), undefined);
      assert.equal(store.lookup("w1") ?? undefined, undefined);
      assert.equal((await store.acquire("late", "alice", ttl)).kind, "busy", "a newcomer cannot take it");
      assert.equal((await store.queueStats()).length, 1);
    });

    it("claims the reservation into a lease on the instance's current boot and removes the entry", async (t) => {
      const { store, clock } = await openStore(t);
      await ready(store, ["a:1"]);
      await hold(store, "s0");
      clock.now = 2_000;
      await enqueue(store, waiting("w1"));
      await recycle(store, "s0", "boot-2");
      clock.now = 2_500;
      const { claimed, leased, gone } = await store.claimGranted(gw);
      assert.deepEqual(leased, []);
      assert.deepEqual(gone, []);
      assert.equal(claimed.length, 1);
      const [grant] = claimed;
      assert.equal(grant?.entry.sessionId, "w1");
      assert.equal(grant?.entry.entryPosition, 1);
      assert.equal(grant?.entry.enqueuedAt, 2_000);
      assert.deepEqual(grant?.lease, {
        sessionId: "w1",
        instanceAddress: "a:1",
        podName: "pod-a:1",
        owner: "alice",
        instanceBootId: "boot-2",
        createdAt: 2_500,
        lastActivity: 2_500,
        expiresAt: 2_500 + ttl,
      });
      assert.deepEqual(await store.get("w1"), grant?.lease);
      assert.equal((await store.instance("a:1"))?.clean, false);
      assert.deepEqual(await store.queue(), []);
      assert.deepEqual((await store.claimGranted(gw)).claimed, [], "claimed once");
    });

    it("claims only the entries of its own gateway", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1"]);
      await hold(store, "s0");
      await enqueue(store, waiting("w1", { gatewayId: "gw-b" }));
      await recycle(store, "s0", "boot-2");
      assert.deepEqual((await store.claimGranted(gw)).claimed, []);
      assert.equal((await store.queueEntry("w1"))?.grantedAddress, "a:1");
      assert.equal((await store.claimGranted("gw-b")).claimed.length, 1);
    });

    it("reports joined sessions of other gateways as leased once claimed, or gone once removed", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1"]);
      await hold(store, "s0");
      await enqueue(store, waiting("w1", { gatewayId: "gw-b" }));
      await enqueue(store, waiting("w2", { gatewayId: "gw-b" }));
      assert.deepEqual(await store.claimGranted(gw, ["w1", "w2"]), { claimed: [], leased: [], gone: [] });
      await recycle(store, "s0", "boot-2");
      await store.claimGranted("gw-b");
      await store.leaveQueue("w2");
      const seen = await store.claimGranted(gw, ["w1", "w2"]);
      assert.deepEqual(
        seen.leased.map((l) => l.sessionId),
        ["w1"],
      );
      assert.deepEqual(seen.gone, ["w2"]);
    });

    it("grants in arrival order, the instance free longest to the oldest waiter", async (t) => {
      const { store, clock } = await openStore(t);
      await ready(store, ["a:1", "b:1", "c:1"]);
      for (const s of ["s1", "s2", "s3"]) await hold(store, s);
      for (const w of ["w1", "w2", "w3", "w4"]) {
        clock.now += 10;
        await enqueue(store, waiting(w));
      }
      // Two instances freed in one probe round: b first, then a.
      const addressOf = async (s: string) => (await store.get(s))?.instanceAddress as string;
      const [a, b] = [await addressOf("s1"), await addressOf("s2")];
      clock.now += 10;
      await store.release("s2");
      clock.now += 10;
      await store.release("s1");
      await store.recordStatus(a, cleanStatus(a, "boot-a2"));
      await store.recordStatus(b, cleanStatus(b, "boot-b2"));
      const granted = (await store.queue()).filter((e) => e.grantedAddress !== null);
      assert.deepEqual(
        granted.map((e) => e.sessionId),
        ["w1", "w2"],
      );
      // a became allocatable first (its probe came first): w1 got a.
      assert.equal(granted[0]?.grantedAddress, a);
      assert.equal(granted[1]?.grantedAddress, b);
      assert.equal((await store.queueEntry("w3"))?.position, 1);
    });

    it("grants when an instance is undrained or healthy again", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1", "b:1", "c:1"]);
      await hold(store, "s0");
      await store.setDraining("b:1", true);
      await store.setHealthy("c:1", false);
      await enqueue(store, waiting("w1"));
      await enqueue(store, waiting("w2"));
      await store.setDraining("b:1", false);
      assert.equal((await store.queueEntry("w1"))?.grantedAddress, "b:1");
      await store.setHealthy("c:1", true);
      assert.equal((await store.queueEntry("w2"))?.grantedAddress, "c:1");
    });

    it("takes a free instance for a request that does not wait only when no waiter can have it", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1", "b:1"]);
      await hold(store, "s0");
      await hold(store, "s1");
      await enqueue(store, waiting("w1"));
      await recycle(store, "s0", "boot-2");
      assert.equal((await store.acquire("late", "alice", ttl)).kind, "busy");
      await recycle(store, "s1", "boot-3");
      assert.equal((await store.acquire("late", "alice", ttl)).kind, "acquired");
    });

    it("never grants past an entry's deadline; the entry behind it gets the instance", async (t) => {
      const { store, clock } = await openStore(t);
      await ready(store, ["a:1"]);
      await hold(store, "s0");
      await enqueue(store, waiting("w1", { maxWaitMs: 500 }));
      await enqueue(store, waiting("w2", { maxWaitMs: 10_000 }));
      clock.now += 500;
      await recycle(store, "s0", "boot-2");
      assert.equal((await store.queueEntry("w1"))?.grantedAddress, null);
      assert.equal((await store.queueEntry("w2"))?.grantedAddress, "a:1");
    });

    it("holds back an entry whose owner is at the per-owner limit until one of their leases ends", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1", "b:1", "c:1"]);
      await hold(store, "bob-1", "bob");
      await hold(store, "bob-2", "bob");
      await hold(store, "carol-1", "carol");
      await enqueue(store, waiting("alice-1", { owner: "alice", maxPerOwner: 1 }));
      await enqueue(store, waiting("alice-2", { owner: "alice", maxPerOwner: 1 }));
      await recycle(store, "bob-1", "boot-2");
      assert.notEqual((await store.queueEntry("alice-1"))?.grantedAddress, null);
      // alice holds one (a reservation counts): alice-2 is passed over and keeps its place.
      const freed = await recycle(store, "bob-2", "boot-3");
      assert.equal((await store.queueEntry("alice-2"))?.grantedAddress, null);
      assert.equal((await store.instance(freed))?.sessionId, null, "free: nobody may have it");
      await store.claimGranted(gw);
      // alice's lease ends: the transaction that releases it grants the free instance to her waiter.
      await store.release("alice-1");
      assert.equal((await store.queueEntry("alice-2"))?.grantedAddress, freed);
    });

    it("gives a reservation back when its instance died before the claim; the entry keeps its place", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1", "b:1"]);
      await hold(store, "s0");
      await hold(store, "s1");
      await enqueue(store, waiting("w1"));
      await enqueue(store, waiting("w2"));
      const freed = await recycle(store, "s0", "boot-2");
      assert.equal((await store.queueEntry("w1"))?.grantedAddress, freed);
      await store.setHealthy(freed, false);
      assert.deepEqual((await store.claimGranted(gw)).claimed, []);
      const w1 = await store.queueEntry("w1");
      assert.equal(w1?.grantedAddress, null);
      assert.equal(w1?.position, 1);
      assert.equal((await store.instance(freed))?.sessionId, null);
      // The next instance to come back is w1's.
      const other = await recycle(store, "s1", "boot-3");
      assert.equal((await store.queueEntry("w1"))?.grantedAddress, other);
    });

    it("keeps the mean time between grants from the time the head waited", async (t) => {
      const { store, clock } = await openStore(t);
      await ready(store, ["a:1"]);
      await hold(store, "s0");
      assert.equal((await store.queueStats()).meanGrantIntervalMs, undefined);
      clock.now = 10_000;
      await enqueue(store, waiting("w1"));
      await enqueue(store, waiting("w2"));
      clock.now = 10_400;
      await recycle(store, "s0", "boot-2");
      await store.claimGranted(gw);
      let stats = await store.queueStats();
      assert.equal(stats.grants, 1);
      assert.equal(stats.lastGrantAt, 10_400);
      assert.equal(stats.meanGrantIntervalMs, 400);
      clock.now = 11_400;
      await recycle(store, "w1", "boot-3");
      stats = await store.queueStats();
      assert.equal(stats.grants, 2);
      assert.ok(Math.abs((stats.meanGrantIntervalMs ?? 0) - (400 + 0.2 * 600)) < 1e-9, `mean ${stats.meanGrantIntervalMs}`);
    });
  });

  describe(`${engine.name}: the waiting queue, leaving`, () => {
    it("hands a reservation whose waiter left to the next waiter, same boot, no restart", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1"]);
      await hold(store, "s0");
      await enqueue(store, waiting("w1"));
      await enqueue(store, waiting("w2"));
      await recycle(store, "s0", "boot-2");
      const left = await store.leaveQueue("w1");
      assert.equal(left?.grantedAddress, "a:1");
      assert.equal((await store.queueEntry("w2"))?.grantedAddress, "a:1");
      const instance = await store.instance("a:1");
      assert.equal(instance?.sessionId, "w2");
      assert.equal(instance?.clean, true, "never touched by w1: still clean");
      const [grant] = (await store.claimGranted(gw)).claimed;
      assert.equal(grant?.lease.instanceBootId, "boot-2");
      assert.equal(await store.get("w1"), undefined);
    });

    it("frees the instance, allocatable at once, when the waiter that left was the last", async (t) => {
      const { store, clock } = await openStore(t);
      await ready(store, ["a:1"]);
      await hold(store, "s0");
      await enqueue(store, waiting("w1"));
      clock.now = 5_000;
      await recycle(store, "s0", "boot-2");
      const freeSince = (await store.instance("a:1"))?.freeSince;
      clock.now = 6_000;
      await store.leaveQueue("w1");
      const instance = await store.instance("a:1");
      assert.equal(instance?.sessionId, null);
      assert.equal(instance?.clean, true);
      assert.equal(instance?.freeSince, freeSince, "free since it came back, not since the waiter left");
      assert.equal((await store.acquire("next", "alice", ttl)).kind, "acquired");
      assert.equal(await store.leaveQueue("w1"), undefined, "left once");
    });

    it("removes every entry of a gateway with leaveQueueOf, passing its reservations on", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1"]);
      await hold(store, "s0");
      await enqueue(store, waiting("w1", { gatewayId: "gw-dead" }));
      await enqueue(store, waiting("w2", { gatewayId: gw }));
      await enqueue(store, waiting("w3", { gatewayId: "gw-dead" }));
      await recycle(store, "s0", "boot-2");
      const removed = await store.leaveQueueOf("gw-dead");
      assert.deepEqual(
        removed.map((e) => e.sessionId),
        ["w1", "w3"],
      );
      assert.equal((await store.queueEntry("w2"))?.grantedAddress, "a:1");
    });

    it("purges entries of gateways without a recent heartbeat and entries long past their deadline", async (t) => {
      const { store, clock } = await openStore(t);
      await ready(store, ["a:1"]);
      await hold(store, "s0");
      await store.heartbeat({ id: "gw-b", address: "127.0.0.1:2" });
      await enqueue(store, waiting("b1", { gatewayId: "gw-b" }));
      await enqueue(store, waiting("a1", { gatewayId: gw, maxWaitMs: 100 }));
      await enqueue(store, waiting("a2", { gatewayId: gw }));
      await enqueue(store, waiting("b2", { gatewayId: "gw-b" }));
      await recycle(store, "s0", "boot-2");
      assert.equal((await store.queueEntry("b1"))?.grantedAddress, "a:1");
      assert.deepEqual(await store.purgeQueue(1_000), [], "everyone is live");
      clock.now += 1_500;
      await store.heartbeat({ id: gw, address: "127.0.0.1:1" });
      const purged = await store.purgeQueue(1_000);
      assert.deepEqual(purged.map((e) => e.sessionId).sort(), ["a1", "b1", "b2"]);
      // b1's reservation went to the oldest entry left.
      assert.equal((await store.queueEntry("a2"))?.grantedAddress, "a:1");
    });
  });

  describe(`${engine.name}: LeaseStore.recordStatus() with several gateways probing`, () => {
    it("ignores a probe that started before the instance's record last changed (a newer probe, a grant)", async (t) => {
      const { store, clock } = await openStore(t);
      await store.register(["a:1"]);
      clock.now = 2_000;
      await store.recordStatus("a:1", cleanStatus("a:1", "boot-new"), 2_000);
      // Another gateway's probe, started before and answered by the process before the restart.
      clock.now = 2_100;
      const stale = await store.recordStatus(
        "a:1",
        { podName: "pod-a:1", bootId: "boot-old", sessionId: "gone", shuttingDown: false },
        1_900,
      );
      assert.deepEqual(stale, {}, "no unknown session reported for a process that is gone");
      const instance = await store.instance("a:1");
      assert.equal(instance?.bootId, "boot-new");
      assert.equal(instance?.clean, true);
    });
  });

  describe(`${engine.name}: the waiting queue across stores`, () => {
    it("serves one queue in arrival order for two stores on one database", async (t) => {
      const db = await engine.database(t);
      const one_ = await db.open();
      const two = await db.open();
      await one_.heartbeat({ id: "gw-1", address: "x:1" });
      await two.heartbeat({ id: "gw-2", address: "x:2" });
      await ready(one_, ["a:1", "b:1"]);
      await hold(one_, "s0");
      await hold(two, "s1");
      const order: string[] = [];
      for (let i = 0; i < 20; i++) {
        const store = i % 2 === 0 ? one_ : two;
        await enqueue(store, waiting(`w${i}`, { gatewayId: i % 2 === 0 ? "gw-1" : "gw-2" }));
        order.push(`w${i}`);
      }
      // Instances come back alternately through either store; each grant goes to the head.
      const granted: string[] = [];
      let holder = ["s0", "s1"];
      for (let round = 0; granted.length < 20; round++) {
        const store = round % 2 === 0 ? two : one_;
        const next: string[] = [];
        for (const s of holder) {
          await recycle(store, s, `boot-${round}-${s}`);
          for (const [gwId, st] of [
            ["gw-1", one_],
            ["gw-2", two],
          ] as const) {
            for (const g of (await st.claimGranted(gwId)).claimed) {
              granted.push(g.lease.sessionId);
              next.push(g.lease.sessionId);
            }
          }
        }
        holder = next;
      }
      assert.deepEqual(granted, order);
    });

    it("wakes a watcher of another store on the same database after a grant", async (t) => {
      const db = await engine.database(t);
      const one_ = await db.open();
      const two = await db.open();
      await one_.heartbeat({ id: "gw-1", address: "x:1" });
      await ready(one_, ["a:1"]);
      await hold(one_, "s0");
      await enqueue(two, waiting("w1", { gatewayId: "gw-2" }));
      let wakes = 0;
      const woken = new Promise<void>((resolve) => {
        const stop = two.watchQueue(() => {
          wakes++;
          stop();
          resolve();
        });
      });
      const started = performance.now();
      await recycle(one_, "s0", "boot-2");
      await Promise.race([woken, new Promise((_, reject) => setTimeout(() => reject(new Error("no wake-up within 2 s")), 2_000))]);
      t.diagnostic(`woken ${(performance.now() - started).toFixed(1)} ms after the grant's commit`);
      assert.equal(wakes, 1);
      assert.equal((await two.claimGranted("gw-2")).claimed[0]?.lease.sessionId, "w1");
    });

    it("wakes its own watchers after a grant in the same store", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1"]);
      await hold(store, "s0");
      await enqueue(store, waiting("w1"));
      let wakes = 0;
      const stop = store.watchQueue(() => wakes++);
      await store.release("s0");
      assert.equal(wakes, 0, "a release alone grants nothing (the instance is not clean yet)");
      await store.recordStatus("a:1", cleanStatus("a:1", "boot-2"));
      assert.equal(wakes, 1);
      stop();
    });

    it("never leaves a waiter entering on one store beside an instance another store makes allocatable at that moment", async (t) => {
      const db = await engine.database(t);
      const [a, b] = [await db.open(), await db.open()];
      await a.heartbeat({ id: "gw-1", address: "x:1" });
      await ready(a, ["a:1"]);
      let holder = "h0";
      await hold(a, holder);
      const stalls: string[] = [];
      const rounds = 150;
      for (let i = 0; i < rounds; i++) {
        // The instance's session ended; its restart is being seen by b while a waiter enters on a.
        await b.release(holder);
        const sessionId = `w${i}`;
        const jitter = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.random() * ms));
        const [entered] = await Promise.all([
          jitter(1.5).then(() => one(a, waiting(sessionId, { gatewayId: "gw-1" }))),
          jitter(1.5).then(() => b.recordStatus("a:1", cleanStatus("a:1", `boot-${i}`))),
        ]);
        if (entered.kind === "queued") {
          const entry = await a.queueEntry(sessionId);
          const instance = await a.instance("a:1");
          if (entry?.grantedAddress !== "a:1") stalls.push(`${sessionId} waits while a:1 is ${JSON.stringify(instance)}`);
          const { claimed } = await a.claimGranted("gw-1");
          if (claimed[0]?.lease.sessionId !== sessionId) stalls.push(`${sessionId} not claimable`);
        } else if (entered.kind !== "acquired") {
          stalls.push(`${sessionId}: ${entered.kind}`);
        }
        if (stalls.length > 0) break;
        holder = sessionId;
      }
      assert.deepEqual(stalls, []);
    });

    it("keeps arrival order while two stores enter, grant, claim and acquire at once: 0 FIFO violations, no instance reserved twice", async (t) => {
      const db = await engine.database(t);
      const stores = [await db.open(), await db.open()] as const;
      const gateways = ["gw-1", "gw-2"] as const;
      for (const [i, store] of stores.entries()) await store.heartbeat({ id: gateways[i] as string, address: `x:${i}` });
      const addresses = ["a:1", "b:1", "c:1", "d:1"];
      await ready(stores[0], addresses);
      const waiters = 80;
      const pick = () => stores[Math.floor(Math.random() * stores.length)] as LeaseStore;
      const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.random() * ms));
      const violations: string[] = [];
      /** Who holds each instance, as the test gave them out: a claim or an acquisition on a held instance is a double grant. */
      const holderOf = new Map<string, string>();
      let boots = 0;
      let served = 0;
      const take = (address: string, sessionId: string, how: string) => {
        const holder = holderOf.get(address);
        if (holder !== undefined) violations.push(`${how} ${sessionId} got ${address}, which ${holder} still holds`);
        holderOf.set(address, sessionId);
      };
      /** Frees an instance as a Shutdown does: release, then a probe finds it back clean on a new boot (each through either store). */
      const free = async (sessionId: string, address: string) => {
        await pause(3);
        await pick().release(sessionId, address);
        holderOf.delete(address);
        await pick().recordStatus(address, cleanStatus(address, `boot-${++boots}`));
      };
      const waitingSeqs = async () => (await pick().queue()).filter((e) => e.grantedAddress === null).map((e) => e.seq);
      const pending: Promise<void>[] = [];

      // Every instance held; the holders go once the waiters are entering.
      const holders: [string, string][] = [];
      for (const [i, address] of addresses.entries()) {
        const sessionId = `holder-${i}`;
        const got = await hold(stores[i % 2] as LeaseStore, sessionId);
        take(got, sessionId, "holder");
        holders.push([sessionId, got]);
        assert.ok(address);
      }

      // Waiters enter in bursts through both stores (each burst is group-committed per store).
      const entering = (async () => {
        for (let i = 0; i < waiters; i += 8) {
          await Promise.all(
            Array.from({ length: 8 }, async (_, k) => {
              const n = i + k;
              const g = n % 2;
              const before = Math.max(0, ...(await waitingSeqs()));
              const result = await one(stores[g] as LeaseStore, waiting(`w${n}`, { gatewayId: gateways[g] }));
              if (result.kind === "acquired") {
                // An instance was free: only right if nobody who was waiting before could have it.
                const older = (await waitingSeqs()).filter((seq) => seq <= before);
                if (older.length > 0) violations.push(`w${n} acquired at once while seq ${older[0]} waited`);
                take(result.lease.instanceAddress, `w${n}`, "waiter");
                served++;
                pending.push(free(`w${n}`, result.lease.instanceAddress));
              } else if (result.kind !== "queued") {
                violations.push(`w${n}: ${result.kind}`);
              }
            }),
          );
          if (i === 16) for (const [sessionId, address] of holders) pending.push(free(sessionId, address));
          await pause(2);
        }
      })();

      // Newcomers that do not wait, on both stores all along: none may pass a waiter.
      let newcomers = 0;
      const newcomer = async (store: LeaseStore) => {
        while (served < waiters) {
          const before = Math.max(0, ...(await waitingSeqs()));
          const sessionId = `n${++newcomers}`;
          const result = await store.acquire(sessionId, "alice", ttl);
          if (result.kind === "acquired") {
            const older = (await waitingSeqs()).filter((seq) => seq <= before);
            if (older.length > 0) violations.push(`${sessionId} (no wait) acquired while seq ${older[0]} waited`);
            take(result.lease.instanceAddress, sessionId, "newcomer");
            await free(sessionId, result.lease.instanceAddress);
          }
          await pause(2);
        }
      };

      // Each store claims what was granted to its gateway's entries, and frees it again.
      const claimer = async (g: 0 | 1) => {
        while (served < waiters) {
          const { claimed } = await (stores[g] as LeaseStore).claimGranted(gateways[g]);
          for (const { lease, entry } of claimed) {
            take(lease.instanceAddress, lease.sessionId, "grant");
            const older = (await waitingSeqs()).filter((seq) => seq < entry.seq);
            if (older.length > 0) violations.push(`${lease.sessionId} (seq ${entry.seq}) granted while seq ${older[0]} waits`);
            served++;
            pending.push(free(lease.sessionId, lease.instanceAddress));
          }
          await pause(claimed.length > 0 ? 0 : 2);
        }
      };

      const deadline = setTimeout(() => violations.push("not every waiter was served within 60 s"), 60_000);
      const stop = setInterval(() => {
        if (violations.length > 0) served = waiters;
      }, 100);
      try {
        await Promise.all([entering, claimer(0), claimer(1), newcomer(stores[0]), newcomer(stores[1])]);
        await Promise.all(pending);
      } finally {
        clearTimeout(deadline);
        clearInterval(stop);
      }
      t.diagnostic(`${waiters} waiters served, ${newcomers} newcomer attempts, ${boots} instance restarts`);
      assert.deepEqual(violations, []);
      assert.deepEqual(await stores[0].queue(), []);
      assert.deepEqual(await stores[0].leases(), []);
    });
  });
});
