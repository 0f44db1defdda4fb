// The lease store's contract (SPEC 4.3, 4.6, 4.7, 10), run unchanged against every engine
// (`forEachEngine`): a behaviour proven here holds for SQLite and PostgreSQL alike.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import { type Engine, type EngineDatabase, forEachEngine } from "../../test/lease-store-engines.js";
import { AcquireQueue } from "./acquire-queue.js";
import type { InstanceStatus, LeaseChange, LeaseStore } from "./lease-store.js";

const ttl = 60_000;

function cleanStatus(address: string, bootId = `boot-${address}`): InstanceStatus {
  return { podName: `pod-${address}`, bootId, sessionId: "", shuttingDown: false };
}

/** Registers instances and records one clean probe each: healthy, clean, allocatable. */
async function ready(store: LeaseStore, addresses: readonly string[]): Promise<void> {
  await store.register(addresses);
  for (const address of addresses) await store.recordStatus(address, cleanStatus(address));
}

async function acquiredAddress(store: LeaseStore, sessionId: string, owner = "alice", avoid?: string): Promise<string> {
  const result = await store.acquire(sessionId, owner, ttl, avoid);
  assert.equal(result.kind, "acquired", `acquire(${sessionId}) gave ${result.kind}`);
  assert.ok(result.kind === "acquired");
  return result.lease.instanceAddress;
}

forEachEngine((engine: Engine) => {
  /** A store on a fresh database with a clock the test moves by hand. */
  async function openStore(t: TestContext, start = 1_000) {
    const db = await engine.database(t);
    const clock = { now: start };
    const store = await db.open({ now: () => clock.now });
    return { store, clock, db };
  }

  describe(`${engine.name}: LeaseStore.acquire()`, () => {
    it("leases a healthy, clean instance with owner, pod, boot id and expiry", async (t) => {
      const { store, clock } = await openStore(t);
      await ready(store, ["a:1"]);
      clock.now = 5_000;
      const result = await store.acquire("s1", "alice", ttl);
      assert.deepEqual(result, {
        kind: "acquired",
        lease: {
          sessionId: "s1",
          instanceAddress: "a:1",
          podName: "pod-a:1",
          owner: "alice",
          instanceBootId: "boot-a:1",
          createdAt: 5_000,
          lastActivity: 5_000,
          expiresAt: 5_000 + ttl,
        },
      });
      assert.deepEqual(await store.get("s1"), result.kind === "acquired" ? result.lease : undefined);
      assert.deepEqual(await store.leaseOfInstance("a:1"), await store.get("s1"));
      const instance = await store.instance("a:1");
      assert.equal(instance?.sessionId, "s1");
      assert.equal(instance?.clean, false);
      assert.equal(await store.countByOwner("alice"), 1);
      assert.equal(await store.countByOwner("bob"), 0);
    });

    it("picks the instance free for the longest time", async (t) => {
      const { store, clock } = await openStore(t);
      await ready(store, ["a:1", "b:1", "c:1"]);
      const holder = new Map<string, string>();
      for (const s of ["s1", "s2", "s3"]) holder.set(await acquiredAddress(store, s), s);
      // Free them in the order b, c, a.
      clock.now = 100;
      await store.release(holder.get("b:1") as string);
      clock.now = 200;
      await store.release(holder.get("c:1") as string);
      clock.now = 300;
      await store.release(holder.get("a:1") as string);
      clock.now = 400;
      // Each restarted after its session (a new boot): allocatable again.
      for (const address of ["a:1", "b:1", "c:1"]) await store.recordStatus(address, cleanStatus(address, "boot-2"));
      assert.deepEqual(
        (await store.instances()).map((i) => [i.address, i.freeSince, i.clean]),
        [
          ["a:1", 300, true],
          ["b:1", 100, true],
          ["c:1", 200, true],
        ],
      );
      assert.equal(await acquiredAddress(store, "x1"), "b:1");
      assert.equal(await acquiredAddress(store, "x2"), "c:1");
      assert.equal(await acquiredAddress(store, "x3"), "a:1");
    });

    it("offers only free instances that are healthy, clean and not draining", async (t) => {
      const { store } = await openStore(t);
      await store.register(["never-probed:1", "stopping:1", "foreign:1", "draining:1", "good:1"]);
      await store.recordStatus("stopping:1", { ...cleanStatus("stopping:1"), shuttingDown: true });
      await store.recordStatus("foreign:1", { ...cleanStatus("foreign:1"), sessionId: "ghost" });
      await store.recordStatus("draining:1", cleanStatus("draining:1"));
      assert.equal(await store.setDraining("draining:1", true), true);
      await store.recordStatus("good:1", cleanStatus("good:1"));

      assert.equal(await acquiredAddress(store, "s1"), "good:1");
      assert.deepEqual(await store.acquire("s2", "alice", ttl), { kind: "busy" });
      assert.equal((await store.leases()).length, 1);
    });

    it("returns the existing lease of a session instead of a second instance", async (t) => {
      const { store, clock } = await openStore(t);
      await ready(store, ["a:1", "b:1"]);
      const first = await store.acquire("s1", "alice", ttl);
      assert.equal(first.kind, "acquired");
      clock.now += 10_000;
      const again = await store.acquire("s1", "alice", ttl);
      assert.equal(again.kind, "existing");
      assert.deepEqual(again.kind === "existing" && again.lease, first.kind === "acquired" && first.lease);
      // Another owner gets the same answer: the router, not the store, refuses foreign users.
      assert.equal((await store.acquire("s1", "bob", ttl)).kind, "existing");
      assert.equal((await store.leases()).length, 1);
      assert.equal((await store.instances()).filter((i) => i.sessionId === null).length, 1);
    });

    it("says busy when healthy instances exist but all are leased", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1", "b:1"]);
      await acquiredAddress(store, "s1");
      await acquiredAddress(store, "s2");
      assert.deepEqual(await store.acquire("s3", "alice", ttl), { kind: "busy" });
      assert.equal(await store.get("s3"), undefined);
    });

    it("says busy when the only healthy instances are not yet clean", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1"]);
      await acquiredAddress(store, "s1");
      await store.release("s1");
      assert.deepEqual(await store.acquire("s2", "alice", ttl), { kind: "busy" });
    });

    it("says unavailable when no instance is registered", async (t) => {
      const { store } = await openStore(t);
      assert.deepEqual(await store.acquire("s1", "alice", ttl), { kind: "unavailable" });
    });

    it("says unavailable when instances are registered but never answered a probe", async (t) => {
      const { store } = await openStore(t);
      await store.register(["a:1", "b:1"]);
      assert.deepEqual(await store.acquire("s1", "alice", ttl), { kind: "unavailable" });
    });

    it("says unavailable when every instance is unhealthy, leased or not", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1", "b:1"]);
      await acquiredAddress(store, "s1");
      await store.setHealthy("a:1", false);
      await store.setHealthy("b:1", false);
      assert.deepEqual(await store.acquire("s2", "alice", ttl), { kind: "unavailable" });
      // The lease of an unhealthy instance stays (transfer is the router's decision).
      assert.equal((await store.acquire("s1", "alice", ttl)).kind, "existing");
      await store.setHealthy("b:1", true);
      assert.equal((await store.instance("b:1"))?.healthy, true);
      assert.equal(await acquiredAddress(store, "s2"), (await store.instance("b:1"))?.address);
    });

    it("skips avoidAddress even when it is free the longest", async (t) => {
      const { store, clock } = await openStore(t);
      await ready(store, ["a:1", "b:1"]);
      await acquiredAddress(store, "s1");
      await acquiredAddress(store, "s2");
      clock.now = 100;
      await store.release((await store.leaseOfInstance("a:1"))?.sessionId as string);
      clock.now = 200;
      await store.release((await store.leaseOfInstance("b:1"))?.sessionId as string);
      clock.now = 300;
      await store.recordStatus("a:1", cleanStatus("a:1", "boot-2"));
      await store.recordStatus("b:1", cleanStatus("b:1", "boot-2"));
      assert.equal(await acquiredAddress(store, "x1", "alice", "a:1"), "b:1");
      // Only the avoided instance is left.
      assert.deepEqual(await store.acquire("x2", "alice", ttl, "a:1"), { kind: "busy" });
      assert.equal(await acquiredAddress(store, "x2"), "a:1");
    });
  });

  describe(`${engine.name}: LeaseStore.acquireBatch()`, () => {
    it("acquires in order in one transaction: distinct instances, then busy; a repeated session gets its lease", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1", "b:1"]);
      const results = await store.acquireBatch([
        { sessionId: "s1", owner: "alice", ttlMs: ttl },
        { sessionId: "s2", owner: "bob", ttlMs: ttl },
        { sessionId: "s1", owner: "alice", ttlMs: ttl },
        { sessionId: "s3", owner: "carol", ttlMs: ttl },
      ]);
      assert.deepEqual(
        results.map((r) => r.kind),
        ["acquired", "acquired", "existing", "busy"],
      );
      const [first, second, again] = results as [
        Extract<(typeof results)[0], { lease: unknown }>,
        Extract<(typeof results)[0], { lease: unknown }>,
        Extract<(typeof results)[0], { lease: unknown }>,
      ];
      assert.notEqual(first.lease.instanceAddress, second.lease.instanceAddress);
      assert.equal(again.lease.instanceAddress, first.lease.instanceAddress);
      assert.equal((await store.leases()).length, 2);
    });

    it("applies the per-owner limit inside the transaction, counting leases of the same batch", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1", "b:1", "c:1"]);
      const results = await store.acquireBatch([
        { sessionId: "s1", owner: "alice", ttlMs: ttl, maxPerOwner: 2 },
        { sessionId: "s2", owner: "alice", ttlMs: ttl, maxPerOwner: 2 },
        { sessionId: "s3", owner: "alice", ttlMs: ttl, maxPerOwner: 2 },
        { sessionId: "s4", owner: "bob", ttlMs: ttl, maxPerOwner: 2 },
      ]);
      assert.deepEqual(
        results.map((r) => r.kind),
        ["acquired", "acquired", "user-limit", "acquired"],
      );
    });
  });

  describe(`${engine.name}: AcquireQueue`, () => {
    it("commits the acquisitions of one event-loop turn together and resolves each with its own result", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1", "b:1"]);
      let batches = 0;
      const original = store.acquireBatch.bind(store);
      store.acquireBatch = (requests) => {
        batches++;
        return original(requests);
      };
      const queue = new AcquireQueue(store);
      const results = await Promise.all(["s1", "s2", "s3"].map((sessionId) => queue.acquire({ sessionId, owner: "alice", ttlMs: ttl })));
      assert.equal(batches, 1, "one transaction for the three");
      assert.deepEqual(
        results.map((r) => r.kind),
        ["acquired", "acquired", "busy"],
      );
      assert.equal((await queue.acquire({ sessionId: "s1", owner: "alice", ttlMs: ttl })).kind, "existing");
      assert.equal(batches, 2);
    });

    it("rejects every waiter of a batch whose transaction fails", async (t) => {
      const { store } = await openStore(t);
      store.acquireBatch = () => {
        throw new Error("disk full");
      };
      const queue = new AcquireQueue(store);
      const outcomes = await Promise.allSettled([1, 2].map((i) => queue.acquire({ sessionId: `s${i}`, owner: "a", ttlMs: ttl })));
      assert.deepEqual(
        outcomes.map((o) => o.status),
        ["rejected", "rejected"],
      );
    });
  });

  describe(`${engine.name}: LeaseStore.setDraining()`, () => {
    it("takes an instance out of allocation but keeps its lease", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1", "b:1"]);
      const leased = await acquiredAddress(store, "s1");
      const free = leased === "a:1" ? "b:1" : "a:1";
      assert.equal(await store.setDraining(leased, true), true);
      assert.equal(await store.setDraining(free, true), true);
      assert.deepEqual(await store.acquire("s2", "alice", ttl), { kind: "busy" });
      assert.equal((await store.get("s1"))?.instanceAddress, leased);
      assert.equal((await store.acquire("s1", "alice", ttl)).kind, "existing");
      assert.equal((await store.instance(free))?.draining, true);
      assert.equal(await store.setDraining(free, false), true);
      assert.equal(await acquiredAddress(store, "s2"), free);
    });

    it("returns false for an unknown address", async (t) => {
      const { store } = await openStore(t);
      assert.equal(await store.setDraining("nowhere:1", true), false);
    });
  });

  describe(`${engine.name}: LeaseStore.release()`, () => {
    it("frees the instance, allocatable again only after a later probe reports it clean", async (t) => {
      const { store, clock } = await openStore(t);
      await ready(store, ["a:1"]);
      const lease = await store.acquire("s1", "alice", ttl);
      clock.now = 2_000;
      const released = await store.release("s1");
      assert.deepEqual(released, lease.kind === "acquired" ? lease.lease : undefined);
      assert.equal(await store.get("s1"), undefined);
      assert.equal(await store.leaseOfInstance("a:1"), undefined);
      const instance = await store.instance("a:1");
      assert.equal(instance?.sessionId, null);
      assert.equal(instance?.clean, false);
      assert.equal(instance?.freeSince, 2_000);
      assert.deepEqual(await store.acquire("s2", "alice", ttl), { kind: "busy" });

      // A probe that started before the release may describe the instance before it was released:
      // it is ignored altogether, as any probe older than the row's last change (decision 0044).
      clock.now = 2_500;
      assert.deepEqual(await store.recordStatus("a:1", cleanStatus("a:1"), 1_999), {});
      assert.equal((await store.instance("a:1"))?.clean, false);
      assert.deepEqual(await store.acquire("s2", "alice", ttl), { kind: "busy" });

      // The instance still holds the old session until it is recycled.
      assert.deepEqual(await store.recordStatus("a:1", { ...cleanStatus("a:1"), sessionId: "s1" }, 2_400), {
        unknownSession: "s1",
      });
      assert.deepEqual(await store.acquire("s2", "alice", ttl), { kind: "busy" });

      clock.now = 3_000;
      assert.deepEqual(await store.recordStatus("a:1", cleanStatus("a:1", "boot-2"), 2_900), {});
      assert.equal((await store.instance("a:1"))?.clean, true);
      assert.equal(await acquiredAddress(store, "s2"), "a:1");
      assert.equal((await store.get("s2"))?.instanceBootId, "boot-2");
    });

    it("leases an instance to another session only after a new boot (the fence), and says it needs recycling", async (t) => {
      const { store, clock } = await openStore(t);
      await ready(store, ["a:1"]);
      await acquiredAddress(store, "s1");
      clock.now = 2_000;
      await store.release("s1");
      // Probed after the release, no session, same boot: the session may never have reached
      // it (Shutdown refused with "Server session is not set"); a stale route could still
      // deliver that session's call to it. Not clean, and the prober must recycle it.
      clock.now = 3_000;
      assert.deepEqual(await store.recordStatus("a:1", cleanStatus("a:1"), 2_500), { fenced: true });
      assert.equal((await store.instance("a:1"))?.clean, false);
      assert.deepEqual(await store.acquire("s2", "alice", ttl), { kind: "busy" });
      // The same holds after an expiry and after an admin release.
      assert.deepEqual(await store.recordStatus("a:1", cleanStatus("a:1", "boot-2"), 3_000), {});
      assert.equal(await acquiredAddress(store, "s2"), "a:1");
      assert.deepEqual(
        (await store.expire(3_000 + ttl)).map((l) => l.sessionId),
        ["s2"],
      );
      assert.deepEqual(await store.recordStatus("a:1", cleanStatus("a:1", "boot-2"), 4_000 + ttl), { fenced: true });
      assert.deepEqual(await store.acquire("s3", "alice", ttl), { kind: "busy" });
      assert.deepEqual(await store.recordStatus("a:1", cleanStatus("a:1", "boot-3"), 5_000 + ttl), {});
      assert.equal(await acquiredAddress(store, "s3"), "a:1");
      assert.equal((await store.get("s3"))?.instanceBootId, "boot-3");
    });

    it("does nothing when the lease is on another instance than expectAddress", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1", "b:1"]);
      const address = await acquiredAddress(store, "s1");
      const other = address === "a:1" ? "b:1" : "a:1";
      assert.equal(await store.release("s1", other), undefined);
      assert.equal((await store.get("s1"))?.instanceAddress, address);
      assert.equal((await store.instance(address))?.sessionId, "s1");
      assert.equal((await store.instance(other))?.clean, true);
      assert.equal((await store.release("s1", address))?.sessionId, "s1");
      assert.equal(await store.get("s1"), undefined);
    });

    it("returns undefined for a session without a lease", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1"]);
      assert.equal(await store.release("nobody"), undefined);
      assert.equal((await store.instance("a:1"))?.clean, true);
    });
  });

  describe(`${engine.name}: LeaseStore.touch()`, () => {
    it("extends expiresAt to last activity plus ttl, and never shortens it", async (t) => {
      const { store } = await openStore(t, 1_000);
      await ready(store, ["a:1", "b:1"]);
      await acquiredAddress(store, "s1");
      await acquiredAddress(store, "s2");
      assert.equal((await store.get("s1"))?.expiresAt, 1_000 + ttl);

      await store.touch(new Map([["s1", 5_000]]), ttl);
      assert.equal((await store.get("s1"))?.lastActivity, 5_000);
      assert.equal((await store.get("s1"))?.expiresAt, 5_000 + ttl);
      assert.equal((await store.get("s2"))?.expiresAt, 1_000 + ttl, "other sessions untouched");

      await store.touch(new Map([["s1", 3_000]]), ttl);
      assert.equal((await store.get("s1"))?.lastActivity, 5_000);
      assert.equal((await store.get("s1"))?.expiresAt, 5_000 + ttl);

      await store.touch(
        new Map([
          ["s1", 9_000],
          ["s2", 8_000],
          ["unknown", 9_000],
        ]),
        ttl,
      );
      assert.equal((await store.get("s1"))?.expiresAt, 9_000 + ttl);
      assert.equal((await store.get("s2"))?.expiresAt, 8_000 + ttl);
      assert.equal(await store.get("unknown"), undefined);
      await store.touch(new Map(), ttl);
    });
  });

  describe(`${engine.name}: LeaseStore.expire()`, () => {
    it("releases exactly the leases whose expiry has passed and returns them", async (t) => {
      const { store, clock } = await openStore(t, 1_000);
      await ready(store, ["a:1", "b:1", "c:1"]);
      const a1 = await acquiredAddress(store, "s1");
      clock.now = 2_000;
      await acquiredAddress(store, "s2");
      await acquiredAddress(store, "s3");
      await store.touch(new Map([["s3", 50_000]]), ttl);

      assert.deepEqual(await store.expire(1_000 + ttl - 1), []);
      const first = await store.expire(1_000 + ttl);
      assert.deepEqual(
        first.map((l) => l.sessionId),
        ["s1"],
      );
      assert.equal(first[0]?.instanceAddress, a1);
      assert.equal(await store.get("s1"), undefined);
      assert.equal((await store.instance(a1))?.sessionId, null);
      assert.equal((await store.instance(a1))?.clean, false, "an expired instance must be recycled before reuse");
      assert.equal((await store.instance(a1))?.freeSince, 1_000 + ttl);

      clock.now = 2_000 + ttl;
      assert.deepEqual(
        (await store.expire()).map((l) => l.sessionId),
        ["s2"],
      );
      assert.deepEqual(
        (await store.leases()).map((l) => l.sessionId),
        ["s3"],
      );
      assert.deepEqual(
        (await store.expire(10 * ttl)).map((l) => l.sessionId),
        ["s3"],
      );
      assert.deepEqual(await store.leases(), []);
    });
  });

  describe(`${engine.name}: LeaseStore.recordStatus()`, () => {
    it("makes a registered instance healthy and clean, with its pod name and boot id", async (t) => {
      const { store } = await openStore(t);
      await store.register(["a:1"]);
      assert.deepEqual(
        { ...(await store.instance("a:1")), updatedAt: 0 },
        {
          address: "a:1",
          podName: "",
          bootId: "",
          healthy: false,
          draining: false,
          clean: false,
          sessionId: null,
          freeSince: 0,
          updatedAt: 0,
        },
      );
      assert.deepEqual(await store.recordStatus("a:1", cleanStatus("a:1")), {});
      const instance = await store.instance("a:1");
      assert.equal(instance?.healthy, true);
      assert.equal(instance?.clean, true);
      assert.equal(instance?.podName, "pod-a:1");
      assert.equal(instance?.bootId, "boot-a:1");
    });

    it("releases the lease of an instance that restarted (another boot id)", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1"]);
      await acquiredAddress(store, "s1");
      const outcome = await store.recordStatus("a:1", cleanStatus("a:1", "boot-2"));
      assert.equal(outcome.released?.sessionId, "s1");
      assert.equal(outcome.released?.instanceBootId, "boot-a:1");
      assert.equal(outcome.unknownSession, undefined);
      assert.equal(await store.get("s1"), undefined);
      assert.equal((await store.instance("a:1"))?.sessionId, null);
      assert.equal((await store.instance("a:1"))?.bootId, "boot-2");
    });

    it("releases the lease of an instance that holds another session, and names that session", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1"]);
      await acquiredAddress(store, "s1");
      const outcome = await store.recordStatus("a:1", { ...cleanStatus("a:1"), sessionId: "other" });
      assert.equal(outcome.released?.sessionId, "s1");
      assert.equal(outcome.unknownSession, "other");
      assert.equal(await store.get("s1"), undefined);
      assert.equal((await store.instance("a:1"))?.clean, false);
      assert.deepEqual(await store.acquire("s2", "alice", ttl), { kind: "busy" });
    });

    it("keeps a lease while the instance reports its session, or none yet, on the same boot", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1"]);
      await acquiredAddress(store, "s1");
      assert.deepEqual(await store.recordStatus("a:1", cleanStatus("a:1")), {});
      assert.deepEqual(await store.recordStatus("a:1", { ...cleanStatus("a:1"), sessionId: "s1" }), {});
      assert.deepEqual(await store.recordStatus("a:1", { ...cleanStatus("a:1"), sessionId: "s1", shuttingDown: true }), {});
      assert.equal((await store.get("s1"))?.instanceAddress, "a:1");
      assert.equal((await store.instance("a:1"))?.clean, false);
    });

    it("reports an unknown session on a free instance and keeps it unallocatable", async (t) => {
      const { store } = await openStore(t);
      await store.register(["a:1"]);
      const ghost = { ...cleanStatus("a:1"), sessionId: "ghost" };
      assert.deepEqual(await store.recordStatus("a:1", ghost), { unknownSession: "ghost" });
      assert.equal((await store.instance("a:1"))?.healthy, true);
      assert.equal((await store.instance("a:1"))?.clean, false);
      assert.deepEqual(await store.acquire("s1", "alice", ttl), { kind: "busy" });
      // Nothing changed since: the answer is the same.
      assert.deepEqual(await store.recordStatus("a:1", ghost), { unknownSession: "ghost" });
      assert.deepEqual(await store.acquire("s1", "alice", ttl), { kind: "busy" });
      // Recycled: new boot, no session.
      assert.deepEqual(await store.recordStatus("a:1", cleanStatus("a:1", "boot-2")), {});
      assert.equal(await acquiredAddress(store, "s1"), "a:1");
    });

    it("does not make a free instance clean while it is shutting down", async (t) => {
      const { store } = await openStore(t);
      await store.register(["a:1"]);
      await store.recordStatus("a:1", { ...cleanStatus("a:1"), shuttingDown: true });
      assert.equal((await store.instance("a:1"))?.clean, false);
      assert.deepEqual(await store.acquire("s1", "alice", ttl), { kind: "busy" });
      await store.recordStatus("a:1", cleanStatus("a:1"));
      assert.equal((await store.instance("a:1"))?.clean, true);
    });

    it("ignores an address it does not know", async (t) => {
      const { store } = await openStore(t);
      assert.deepEqual(await store.recordStatus("nowhere:1", cleanStatus("nowhere:1")), {});
      assert.equal(await store.instance("nowhere:1"), undefined);
    });

    it("does not release a lease because of a probe that started before the lease was created", async (t) => {
      // With two gateways sharing the file, gateway 1's probe can carry the old boot's status
      // after gateway 2 has already seen the new boot and leased the instance.
      const { store, clock } = await openStore(t);
      await ready(store, ["a:1"]);
      await acquiredAddress(store, "old");
      clock.now = 2_000;
      await store.release("old");
      clock.now = 3_000;
      await store.recordStatus("a:1", cleanStatus("a:1", "boot-2"), 3_000);
      clock.now = 3_500;
      assert.equal(await acquiredAddress(store, "new"), "a:1");
      clock.now = 4_000;
      const stale = await store.recordStatus("a:1", { ...cleanStatus("a:1", "boot-a:1"), sessionId: "old" }, 1_500);
      assert.equal(stale.released, undefined);
      assert.equal((await store.get("new"))?.instanceAddress, "a:1");
    });
  });

  describe(`${engine.name}: LeaseStore durability`, () => {
    it("keeps leases and instances across close and reopen of the database", async (t) => {
      const db = await engine.database(t);
      const first = await db.open({ now: () => 1_000 });
      await ready(first, ["a:1", "b:1"]);
      const lease = await first.acquire("s1", "alice", ttl);
      assert.equal(lease.kind, "acquired");
      await first.setDraining("b:1", true);
      const instances = await first.instances();
      await first.close();

      const second = await db.open({ now: () => 2_000 });
      assert.deepEqual(await second.get("s1"), lease.kind === "acquired" ? lease.lease : undefined);
      assert.deepEqual(await second.instances(), instances);
      assert.equal((await second.acquire("s1", "alice", ttl)).kind, "existing");
    });

    it("migrates a fresh database once when two gateway processes start on it at the same moment", async (t) => {
      const db = await engine.database(t);
      // Real processes, as two gateways starting together: each opens the store (running the
      // migrations if needed), registers an instance and reports the schema it found.
      const outputs = await Promise.all(["p1:1", "p2:1"].map((address) => openInChild(db, address)));
      for (const out of outputs) assert.match(out, /^opened /m, out);
      const store = await db.open();
      assert.deepEqual(
        (await store.instances()).map((i) => i.address),
        ["p1:1", "p2:1"],
      );
    });
  });

  describe(`${engine.name}: LeaseStore with several connections`, () => {
    async function twoStores(t: TestContext): Promise<[LeaseStore, LeaseStore, EngineDatabase]> {
      const db = await engine.database(t);
      const a = await db.open({ now: () => 1_000 });
      const b = await db.open({ now: () => 1_000 });
      return [a, b, db];
    }

    it("two stores on one database see each other's leases at once", async (t) => {
      const [a, b] = await twoStores(t);
      await ready(a, ["x:1", "y:1"]);
      const first = await acquiredAddress(a, "s1");
      assert.equal((await b.acquire("s1", "alice", ttl)).kind, "existing");
      const second = await acquiredAddress(b, "s2");
      assert.notEqual(second, first);
      assert.deepEqual(await a.acquire("s3", "alice", ttl), { kind: "busy" });
      assert.equal((await a.release("s2"))?.instanceAddress, second);
      assert.equal(await b.get("s2"), undefined);
      assert.deepEqual(await b.acquire("s3", "alice", ttl), { kind: "busy" }, "released but not yet probed clean");
    });

    it("never gives one instance to two sessions when several stores race for the last free instances", async (t) => {
      const db = await engine.database(t);
      const stores = await Promise.all([1, 2, 3, 4].map(() => db.open()));
      const addresses = ["a:1", "b:1", "c:1"];
      await ready(stores[0]!, addresses);
      // Every store asks for 40 sessions at once, in batches and one by one, all concurrently.
      const attempts = stores.flatMap((store, k) => [
        store.acquireBatch(Array.from({ length: 20 }, (_, i) => ({ sessionId: `b${k}-${i}`, owner: `u${k}`, ttlMs: ttl }))),
        ...Array.from({ length: 20 }, (_, i) => store.acquire(`o${k}-${i}`, `u${k}`, ttl).then((r) => [r])),
      ]);
      const results = (await Promise.all(attempts)).flat();
      const won = results.flatMap((r) => (r.kind === "acquired" ? [r.lease] : []));
      assert.equal(won.length, addresses.length, "exactly one session per instance");
      assert.deepEqual(won.map((l) => l.instanceAddress).sort(), addresses);
      assert.equal(results.filter((r) => r.kind === "busy").length, 160 - addresses.length, "every other attempt was busy");
      const leases = await stores[1]!.leases();
      assert.deepEqual(leases.map((l) => [l.sessionId, l.instanceAddress]).sort(), won.map((l) => [l.sessionId, l.instanceAddress]).sort());
      for (const instance of await stores[2]!.instances()) {
        assert.equal(instance.sessionId, (await stores[3]!.leaseOfInstance(instance.address))?.sessionId);
      }
    });

    it("expires each lease exactly once when two stores sweep at the same moment", async (t) => {
      const db = await engine.database(t);
      const [a, b, c] = await Promise.all([1, 2, 3].map(() => db.open({ now: () => 1_000 })));
      const addresses = Array.from({ length: 300 }, (_, i) => `e${i}:1`);
      await ready(a!, addresses);
      await a!.acquireBatch(addresses.map((_, i) => ({ sessionId: `s${i}`, owner: "alice", ttlMs: ttl })));
      const sweeps = await Promise.all([a, b, c, a, b, c].map((store) => store!.expire(1_000 + ttl)));
      const expired = sweeps.flat().map((l) => l.sessionId);
      assert.equal(expired.length, addresses.length, `each lease reported once: ${sweeps.map((s) => s.length)}`);
      assert.equal(new Set(expired).size, addresses.length);
      assert.deepEqual(await b!.leases(), []);
    });

    it("releases a lease to one caller only when two stores release it at once", async (t) => {
      const [a, b] = await twoStores(t);
      await ready(a, ["x:1"]);
      const address = await acquiredAddress(a, "s1");
      const outcomes = await Promise.all([a.release("s1", address), b.release("s1", address), b.release("s1")]);
      assert.equal(outcomes.filter((o) => o !== undefined).length, 1);
    });
  });

  describe(`${engine.name}: LeaseStore membership`, () => {
    it("lists gateways that beat within the window, by id, and forgets one that left or went quiet", async (t) => {
      const db = await engine.database(t);
      const clock = { now: 10_000 };
      const a = await db.open({ now: () => clock.now });
      const b = await db.open({ now: () => clock.now });
      await a.heartbeat({ id: "gw-b", address: "10.0.0.2:10000" });
      await b.heartbeat({ id: "gw-a", address: "10.0.0.1:10000" });
      assert.deepEqual(
        (await a.members(1_000)).map((m) => [m.id, m.address, m.heartbeatAt]),
        [
          ["gw-a", "10.0.0.1:10000", 10_000],
          ["gw-b", "10.0.0.2:10000", 10_000],
        ],
      );
      clock.now = 10_800;
      await b.heartbeat({ id: "gw-a", address: "10.0.0.1:10000" });
      clock.now = 11_500;
      // gw-b's last beat is 1,500 ms old: dead for a 1 s window, alive for a 2 s one.
      assert.deepEqual(
        (await b.members(1_000)).map((m) => m.id),
        ["gw-a"],
      );
      assert.deepEqual(
        (await b.members(2_000)).map((m) => m.id),
        ["gw-a", "gw-b"],
      );
      await a.leave("gw-a");
      assert.deepEqual(
        (await b.members(2_000)).map((m) => m.id),
        ["gw-b"],
      );
      const first = (await a.members(10_000)).find((m) => m.id === "gw-b");
      assert.equal(first?.startedAt, 10_000, "a heartbeat keeps the registration time");
    });
  });

  describe(`${engine.name}: LeaseStore.watch()`, () => {
    it("reports committed lease and instance changes to its subscribers", async (t) => {
      const { store } = await openStore(t);
      const seen: LeaseChange[] = [];
      const stop = store.watch((change) => seen.push(change));
      await ready(store, ["a:1"]);
      const address = await acquiredAddress(store, "s1");
      await store.release("s1", address);
      await store.setDraining("a:1", true);
      await until(() => seen.filter((c) => c.kind === "lease").length >= 2 && seen.some((c) => c.kind === "instance"));
      assert.deepEqual(
        seen.filter((c) => c.kind === "lease"),
        [
          { kind: "lease", sessionId: "s1", instanceAddress: "a:1", op: "acquired" },
          { kind: "lease", sessionId: "s1", instanceAddress: "a:1", op: "released" },
        ],
      );
      assert.ok(seen.some((c) => c.kind === "instance" && c.address === "a:1"));
      stop();
      const before = seen.length;
      await acquiredAddress(store, "s2").catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(seen.length, before, "no events after unsubscribing");
    });

    it("reports expiries and reconciliation releases", async (t) => {
      const { store } = await openStore(t);
      await ready(store, ["a:1", "b:1"]);
      const seen: LeaseChange[] = [];
      store.watch((change) => seen.push(change));
      await acquiredAddress(store, "s1");
      const b = await acquiredAddress(store, "s2");
      await store.recordStatus(b, cleanStatus(b, "boot-new"));
      await store.expire(1_000 + ttl);
      await until(() => seen.filter((c) => c.kind === "lease" && c.op === "released").length >= 2);
      assert.deepEqual(
        seen
          .filter((c) => c.kind === "lease" && c.op === "released")
          .map((c) => (c.kind === "lease" ? c.sessionId : ""))
          .sort(),
        ["s1", "s2"],
      );
    });
  });
});

async function until(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Opens the store in a child process (as a gateway would), registers `address`, prints `opened`. */
function openInChild(db: EngineDatabase, address: string): Promise<string> {
  const script = join(import.meta.dirname, "..", "..", "test", "open-lease-store.ts");
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", script, JSON.stringify(db.config), address], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString();
    });
    child.stderr.on("data", (c: Buffer) => {
      out += c.toString();
    });
    child.on("error", reject);
    child.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`child exited ${code}: ${out}`))));
  });
}
