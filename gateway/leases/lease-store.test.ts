import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import { AcquireQueue } from "./acquire-queue.js";
import { type InstanceStatus, LeaseStore } from "./lease-store.js";

const ttl = 60_000;

function tempDbPath(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), "lease-store-test-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, "leases.db");
}

/** A store on a temp file with a clock the test moves by hand. */
function openStore(t: TestContext, start = 1_000) {
  const path = tempDbPath(t);
  const clock = { now: start };
  const store = new LeaseStore({ path, now: () => clock.now });
  t.after(() => store.close());
  return { store, clock, path };
}

function cleanStatus(address: string, bootId = `boot-${address}`): InstanceStatus {
  return { podName: `pod-${address}`, bootId, sessionId: "", shuttingDown: false };
}

/** Registers instances and records one clean probe each: healthy, clean, allocatable. */
function ready(store: LeaseStore, addresses: readonly string[]): void {
  store.register(addresses);
  for (const address of addresses) store.recordStatus(address, cleanStatus(address));
}

function acquiredAddress(store: LeaseStore, sessionId: string, owner = "alice", avoid?: string): string {
  const result = store.acquire(sessionId, owner, ttl, avoid);
  assert.equal(result.kind, "acquired", `acquire(${sessionId}) gave ${result.kind}`);
  assert.ok(result.kind === "acquired");
  return result.lease.instanceAddress;
}

describe("LeaseStore.acquire()", () => {
  it("leases a healthy, clean instance with owner, pod, boot id and expiry", (t) => {
    const { store, clock } = openStore(t);
    ready(store, ["a:1"]);
    clock.now = 5_000;
    const result = store.acquire("s1", "alice", ttl);
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
    assert.deepEqual(store.get("s1"), result.kind === "acquired" ? result.lease : undefined);
    assert.deepEqual(store.leaseOfInstance("a:1"), store.get("s1"));
    const instance = store.instance("a:1");
    assert.equal(instance?.sessionId, "s1");
    assert.equal(instance?.clean, false);
    assert.equal(store.countByOwner("alice"), 1);
    assert.equal(store.countByOwner("bob"), 0);
  });

  it("picks the instance free for the longest time", (t) => {
    const { store, clock } = openStore(t);
    ready(store, ["a:1", "b:1", "c:1"]);
    const holder = new Map<string, string>();
    for (const s of ["s1", "s2", "s3"]) holder.set(acquiredAddress(store, s), s);
    // Free them in the order b, c, a.
    clock.now = 100;
    store.release(holder.get("b:1") as string);
    clock.now = 200;
    store.release(holder.get("c:1") as string);
    clock.now = 300;
    store.release(holder.get("a:1") as string);
    clock.now = 400;
    for (const address of ["a:1", "b:1", "c:1"]) store.recordStatus(address, cleanStatus(address));
    assert.deepEqual(
      store.instances().map((i) => [i.address, i.freeSince, i.clean]),
      [
        ["a:1", 300, true],
        ["b:1", 100, true],
        ["c:1", 200, true],
      ],
    );
    assert.equal(acquiredAddress(store, "x1"), "b:1");
    assert.equal(acquiredAddress(store, "x2"), "c:1");
    assert.equal(acquiredAddress(store, "x3"), "a:1");
  });

  it("offers only free instances that are healthy, clean and not draining", (t) => {
    const { store } = openStore(t);
    store.register(["never-probed:1", "stopping:1", "foreign:1", "draining:1", "good:1"]);
    store.recordStatus("stopping:1", { ...cleanStatus("stopping:1"), shuttingDown: true });
    store.recordStatus("foreign:1", { ...cleanStatus("foreign:1"), sessionId: "ghost" });
    store.recordStatus("draining:1", cleanStatus("draining:1"));
    assert.equal(store.setDraining("draining:1", true), true);
    store.recordStatus("good:1", cleanStatus("good:1"));

    assert.equal(acquiredAddress(store, "s1"), "good:1");
    assert.deepEqual(store.acquire("s2", "alice", ttl), { kind: "busy" });
    assert.equal(store.leases().length, 1);
  });

  it("returns the existing lease of a session instead of a second instance", (t) => {
    const { store, clock } = openStore(t);
    ready(store, ["a:1", "b:1"]);
    const first = store.acquire("s1", "alice", ttl);
    assert.equal(first.kind, "acquired");
    clock.now += 10_000;
    const again = store.acquire("s1", "alice", ttl);
    assert.equal(again.kind, "existing");
    assert.deepEqual(again.kind === "existing" && again.lease, first.kind === "acquired" && first.lease);
    // Another owner gets the same answer: the router, not the store, refuses foreign users.
    assert.equal(store.acquire("s1", "bob", ttl).kind, "existing");
    assert.equal(store.leases().length, 1);
    assert.equal(store.instances().filter((i) => i.sessionId === null).length, 1);
  });

  it("says busy when healthy instances exist but all are leased", (t) => {
    const { store } = openStore(t);
    ready(store, ["a:1", "b:1"]);
    acquiredAddress(store, "s1");
    acquiredAddress(store, "s2");
    assert.deepEqual(store.acquire("s3", "alice", ttl), { kind: "busy" });
    assert.equal(store.get("s3"), undefined);
  });

  it("says busy when the only healthy instances are not yet clean", (t) => {
    const { store } = openStore(t);
    ready(store, ["a:1"]);
    acquiredAddress(store, "s1");
    store.release("s1");
    assert.deepEqual(store.acquire("s2", "alice", ttl), { kind: "busy" });
  });

  it("says unavailable when no instance is registered", (t) => {
    const { store } = openStore(t);
    assert.deepEqual(store.acquire("s1", "alice", ttl), { kind: "unavailable" });
  });

  it("says unavailable when instances are registered but never answered a probe", (t) => {
    const { store } = openStore(t);
    store.register(["a:1", "b:1"]);
    assert.deepEqual(store.acquire("s1", "alice", ttl), { kind: "unavailable" });
  });

  it("says unavailable when every instance is unhealthy, leased or not", (t) => {
    const { store } = openStore(t);
    ready(store, ["a:1", "b:1"]);
    acquiredAddress(store, "s1");
    store.setHealthy("a:1", false);
    store.setHealthy("b:1", false);
    assert.deepEqual(store.acquire("s2", "alice", ttl), { kind: "unavailable" });
    // The lease of an unhealthy instance stays (transfer is the router's decision).
    assert.equal(store.acquire("s1", "alice", ttl).kind, "existing");
    store.setHealthy("b:1", true);
    assert.equal(store.instance("b:1")?.healthy, true);
    assert.equal(acquiredAddress(store, "s2"), store.instance("b:1")?.address);
  });

  it("skips avoidAddress even when it is free the longest", (t) => {
    const { store, clock } = openStore(t);
    ready(store, ["a:1", "b:1"]);
    acquiredAddress(store, "s1");
    acquiredAddress(store, "s2");
    clock.now = 100;
    store.release(store.leaseOfInstance("a:1")?.sessionId as string);
    clock.now = 200;
    store.release(store.leaseOfInstance("b:1")?.sessionId as string);
    clock.now = 300;
    store.recordStatus("a:1", cleanStatus("a:1"));
    store.recordStatus("b:1", cleanStatus("b:1"));
    assert.equal(acquiredAddress(store, "x1", "alice", "a:1"), "b:1");
    // Only the avoided instance is left.
    assert.deepEqual(store.acquire("x2", "alice", ttl, "a:1"), { kind: "busy" });
    assert.equal(acquiredAddress(store, "x2"), "a:1");
  });
});

describe("LeaseStore.acquireBatch()", () => {
  it("acquires in order in one transaction: distinct instances, then busy; a repeated session gets its lease", (t) => {
    const { store } = openStore(t);
    ready(store, ["a:1", "b:1"]);
    const results = store.acquireBatch([
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
    assert.equal(store.leases().length, 2);
  });

  it("applies the per-owner limit inside the transaction, counting leases of the same batch", (t) => {
    const { store } = openStore(t);
    ready(store, ["a:1", "b:1", "c:1"]);
    const results = store.acquireBatch([
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

describe("AcquireQueue", () => {
  it("commits the acquisitions of one event-loop turn together and resolves each with its own result", async (t) => {
    const { store } = openStore(t);
    ready(store, ["a:1", "b:1"]);
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
    const { store } = openStore(t);
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

describe("LeaseStore.setDraining()", () => {
  it("takes an instance out of allocation but keeps its lease", (t) => {
    const { store } = openStore(t);
    ready(store, ["a:1", "b:1"]);
    const leased = acquiredAddress(store, "s1");
    const free = leased === "a:1" ? "b:1" : "a:1";
    assert.equal(store.setDraining(leased, true), true);
    assert.equal(store.setDraining(free, true), true);
    assert.deepEqual(store.acquire("s2", "alice", ttl), { kind: "busy" });
    assert.equal(store.get("s1")?.instanceAddress, leased);
    assert.equal(store.acquire("s1", "alice", ttl).kind, "existing");
    assert.equal(store.instance(free)?.draining, true);
    assert.equal(store.setDraining(free, false), true);
    assert.equal(acquiredAddress(store, "s2"), free);
  });

  it("returns false for an unknown address", (t) => {
    const { store } = openStore(t);
    assert.equal(store.setDraining("nowhere:1", true), false);
  });
});

describe("LeaseStore.release()", () => {
  it("frees the instance, allocatable again only after a later probe reports it clean", (t) => {
    const { store, clock } = openStore(t);
    ready(store, ["a:1"]);
    const lease = store.acquire("s1", "alice", ttl);
    clock.now = 2_000;
    const released = store.release("s1");
    assert.deepEqual(released, lease.kind === "acquired" ? lease.lease : undefined);
    assert.equal(store.get("s1"), undefined);
    assert.equal(store.leaseOfInstance("a:1"), undefined);
    const instance = store.instance("a:1");
    assert.equal(instance?.sessionId, null);
    assert.equal(instance?.clean, false);
    assert.equal(instance?.freeSince, 2_000);
    assert.deepEqual(store.acquire("s2", "alice", ttl), { kind: "busy" });

    // A probe that started before the release may describe the instance before it was released.
    clock.now = 2_500;
    assert.deepEqual(store.recordStatus("a:1", cleanStatus("a:1"), 1_999), {});
    assert.equal(store.instance("a:1")?.clean, false);
    assert.deepEqual(store.acquire("s2", "alice", ttl), { kind: "busy" });

    // The instance still holds the old session until it is recycled.
    assert.deepEqual(store.recordStatus("a:1", { ...cleanStatus("a:1"), sessionId: "s1" }, 2_400), {
      unknownSession: "s1",
    });
    assert.deepEqual(store.acquire("s2", "alice", ttl), { kind: "busy" });

    clock.now = 3_000;
    assert.deepEqual(store.recordStatus("a:1", cleanStatus("a:1", "boot-2"), 2_900), {});
    assert.equal(store.instance("a:1")?.clean, true);
    assert.equal(acquiredAddress(store, "s2"), "a:1");
    assert.equal(store.get("s2")?.instanceBootId, "boot-2");
  });

  it("does nothing when the lease is on another instance than expectAddress", (t) => {
    const { store } = openStore(t);
    ready(store, ["a:1", "b:1"]);
    const address = acquiredAddress(store, "s1");
    const other = address === "a:1" ? "b:1" : "a:1";
    assert.equal(store.release("s1", other), undefined);
    assert.equal(store.get("s1")?.instanceAddress, address);
    assert.equal(store.instance(address)?.sessionId, "s1");
    assert.equal(store.instance(other)?.clean, true);
    assert.equal(store.release("s1", address)?.sessionId, "s1");
    assert.equal(store.get("s1"), undefined);
  });

  it("returns undefined for a session without a lease", (t) => {
    const { store } = openStore(t);
    ready(store, ["a:1"]);
    assert.equal(store.release("nobody"), undefined);
    assert.equal(store.instance("a:1")?.clean, true);
  });
});

describe("LeaseStore.touch()", () => {
  it("extends expiresAt to last activity plus ttl, and never shortens it", (t) => {
    const { store } = openStore(t, 1_000);
    ready(store, ["a:1", "b:1"]);
    acquiredAddress(store, "s1");
    acquiredAddress(store, "s2");
    assert.equal(store.get("s1")?.expiresAt, 1_000 + ttl);

    store.touch(new Map([["s1", 5_000]]), ttl);
    assert.equal(store.get("s1")?.lastActivity, 5_000);
    assert.equal(store.get("s1")?.expiresAt, 5_000 + ttl);
    assert.equal(store.get("s2")?.expiresAt, 1_000 + ttl, "other sessions untouched");

    store.touch(new Map([["s1", 3_000]]), ttl);
    assert.equal(store.get("s1")?.lastActivity, 5_000);
    assert.equal(store.get("s1")?.expiresAt, 5_000 + ttl);

    store.touch(
      new Map([
        ["s1", 9_000],
        ["s2", 8_000],
        ["unknown", 9_000],
      ]),
      ttl,
    );
    assert.equal(store.get("s1")?.expiresAt, 9_000 + ttl);
    assert.equal(store.get("s2")?.expiresAt, 8_000 + ttl);
    assert.equal(store.get("unknown"), undefined);
    store.touch(new Map(), ttl);
  });
});

describe("LeaseStore.expire()", () => {
  it("releases exactly the leases whose expiry has passed and returns them", (t) => {
    const { store, clock } = openStore(t, 1_000);
    ready(store, ["a:1", "b:1", "c:1"]);
    const a1 = acquiredAddress(store, "s1");
    clock.now = 2_000;
    acquiredAddress(store, "s2");
    acquiredAddress(store, "s3");
    store.touch(new Map([["s3", 50_000]]), ttl);

    assert.deepEqual(store.expire(1_000 + ttl - 1), []);
    const first = store.expire(1_000 + ttl);
    assert.deepEqual(
      first.map((l) => l.sessionId),
      ["s1"],
    );
    assert.equal(first[0]?.instanceAddress, a1);
    assert.equal(store.get("s1"), undefined);
    assert.equal(store.instance(a1)?.sessionId, null);
    assert.equal(store.instance(a1)?.clean, false, "an expired instance must be recycled before reuse");
    assert.equal(store.instance(a1)?.freeSince, 1_000 + ttl);

    clock.now = 2_000 + ttl;
    assert.deepEqual(
      store.expire().map((l) => l.sessionId),
      ["s2"],
    );
    assert.deepEqual(
      store.leases().map((l) => l.sessionId),
      ["s3"],
    );
    assert.deepEqual(
      store.expire(10 * ttl).map((l) => l.sessionId),
      ["s3"],
    );
    assert.deepEqual(store.leases(), []);
  });
});

describe("LeaseStore.recordStatus()", () => {
  it("makes a registered instance healthy and clean, with its pod name and boot id", (t) => {
    const { store } = openStore(t);
    store.register(["a:1"]);
    assert.deepEqual(
      { ...store.instance("a:1"), updatedAt: 0 },
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
    assert.deepEqual(store.recordStatus("a:1", cleanStatus("a:1")), {});
    const instance = store.instance("a:1");
    assert.equal(instance?.healthy, true);
    assert.equal(instance?.clean, true);
    assert.equal(instance?.podName, "pod-a:1");
    assert.equal(instance?.bootId, "boot-a:1");
  });

  it("releases the lease of an instance that restarted (another boot id)", (t) => {
    const { store } = openStore(t);
    ready(store, ["a:1"]);
    acquiredAddress(store, "s1");
    const outcome = store.recordStatus("a:1", cleanStatus("a:1", "boot-2"));
    assert.equal(outcome.released?.sessionId, "s1");
    assert.equal(outcome.released?.instanceBootId, "boot-a:1");
    assert.equal(outcome.unknownSession, undefined);
    assert.equal(store.get("s1"), undefined);
    assert.equal(store.instance("a:1")?.sessionId, null);
    assert.equal(store.instance("a:1")?.bootId, "boot-2");
  });

  it("releases the lease of an instance that holds another session, and names that session", (t) => {
    const { store } = openStore(t);
    ready(store, ["a:1"]);
    acquiredAddress(store, "s1");
    const outcome = store.recordStatus("a:1", { ...cleanStatus("a:1"), sessionId: "other" });
    assert.equal(outcome.released?.sessionId, "s1");
    assert.equal(outcome.unknownSession, "other");
    assert.equal(store.get("s1"), undefined);
    assert.equal(store.instance("a:1")?.clean, false);
    assert.deepEqual(store.acquire("s2", "alice", ttl), { kind: "busy" });
  });

  it("keeps a lease while the instance reports its session, or none yet, on the same boot", (t) => {
    const { store } = openStore(t);
    ready(store, ["a:1"]);
    acquiredAddress(store, "s1");
    assert.deepEqual(store.recordStatus("a:1", cleanStatus("a:1")), {});
    assert.deepEqual(store.recordStatus("a:1", { ...cleanStatus("a:1"), sessionId: "s1" }), {});
    assert.deepEqual(store.recordStatus("a:1", { ...cleanStatus("a:1"), sessionId: "s1", shuttingDown: true }), {});
    assert.equal(store.get("s1")?.instanceAddress, "a:1");
    assert.equal(store.instance("a:1")?.clean, false);
  });

  it("reports an unknown session on a free instance and keeps it unallocatable", (t) => {
    const { store } = openStore(t);
    store.register(["a:1"]);
    const ghost = { ...cleanStatus("a:1"), sessionId: "ghost" };
    assert.deepEqual(store.recordStatus("a:1", ghost), { unknownSession: "ghost" });
    assert.equal(store.instance("a:1")?.healthy, true);
    assert.equal(store.instance("a:1")?.clean, false);
    assert.deepEqual(store.acquire("s1", "alice", ttl), { kind: "busy" });
    // Nothing changed since: the answer is the same.
    assert.deepEqual(store.recordStatus("a:1", ghost), { unknownSession: "ghost" });
    assert.deepEqual(store.acquire("s1", "alice", ttl), { kind: "busy" });
    // Recycled: new boot, no session.
    assert.deepEqual(store.recordStatus("a:1", cleanStatus("a:1", "boot-2")), {});
    assert.equal(acquiredAddress(store, "s1"), "a:1");
  });

  it("does not make a free instance clean while it is shutting down", (t) => {
    const { store } = openStore(t);
    store.register(["a:1"]);
    store.recordStatus("a:1", { ...cleanStatus("a:1"), shuttingDown: true });
    assert.equal(store.instance("a:1")?.clean, false);
    assert.deepEqual(store.acquire("s1", "alice", ttl), { kind: "busy" });
    store.recordStatus("a:1", cleanStatus("a:1"));
    assert.equal(store.instance("a:1")?.clean, true);
  });

  it("ignores an address it does not know", (t) => {
    const { store } = openStore(t);
    assert.deepEqual(store.recordStatus("nowhere:1", cleanStatus("nowhere:1")), {});
    assert.equal(store.instance("nowhere:1"), undefined);
  });

  it("does not release a lease because of a probe that started before the lease was created", (t) => {
    // With two gateways sharing the file, gateway 1's probe can carry the old boot's status
    // after gateway 2 has already seen the new boot and leased the instance.
    const { store, clock } = openStore(t);
    ready(store, ["a:1"]);
    acquiredAddress(store, "old");
    clock.now = 2_000;
    store.release("old");
    clock.now = 3_000;
    store.recordStatus("a:1", cleanStatus("a:1", "boot-2"), 3_000);
    clock.now = 3_500;
    assert.equal(acquiredAddress(store, "new"), "a:1");
    clock.now = 4_000;
    const stale = store.recordStatus("a:1", { ...cleanStatus("a:1", "boot-a:1"), sessionId: "old" }, 1_500);
    assert.equal(stale.released, undefined);
    assert.equal(store.get("new")?.instanceAddress, "a:1");
  });
});

describe("LeaseStore durability", () => {
  it("keeps leases and instances across close and reopen of the file", (t) => {
    const path = tempDbPath(t);
    const first = new LeaseStore({ path, now: () => 1_000 });
    ready(first, ["a:1", "b:1"]);
    const lease = first.acquire("s1", "alice", ttl);
    assert.equal(lease.kind, "acquired");
    first.setDraining("b:1", true);
    const instances = first.instances();
    first.close();

    const second = new LeaseStore({ path, now: () => 2_000 });
    t.after(() => second.close());
    assert.deepEqual(second.get("s1"), lease.kind === "acquired" ? lease.lease : undefined);
    assert.deepEqual(second.instances(), instances);
    assert.equal(second.acquire("s1", "alice", ttl).kind, "existing");
  });

  it("uses WAL and records the schema version", (t) => {
    const { store, path } = openStore(t);
    store.close();
    const db = new Database(path, { readonly: true });
    t.after(() => db.close());
    assert.equal(db.pragma("journal_mode", { simple: true }), "wal");
    assert.equal(db.pragma("user_version", { simple: true }), 1);
    // Reopening does not run the migration again.
    const again = new LeaseStore({ path });
    again.close();
  });
});

describe("LeaseStore WAL checkpoints", () => {
  it("checkpoints on its timer, outside commits, so the WAL stays small", async (t) => {
    const path = tempDbPath(t);
    const store = new LeaseStore({ path, synchronous: "NORMAL", checkpointIntervalMs: 20 });
    t.after(() => store.close());
    const addresses = Array.from({ length: 200 }, (_, i) => `10.0.${i >> 8}.${i & 255}:1`);
    ready(store, addresses);
    const db = new Database(path, { readonly: true });
    t.after(() => db.close());
    // SQLite's automatic checkpoint is off on the store's connection: only the timer copies the WAL.
    for (let i = 0; i < 1500; i++) {
      const address = acquiredAddress(store, `s-${i}`);
      store.release(`s-${i}`, address);
      store.recordStatus(address, cleanStatus(address), Date.now() + 1);
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

describe("LeaseStore with several connections", () => {
  it("two stores on one file see each other's leases at once", (t) => {
    const path = tempDbPath(t);
    const a = new LeaseStore({ path, now: () => 1_000 });
    const b = new LeaseStore({ path, now: () => 1_000 });
    t.after(() => {
      a.close();
      b.close();
    });
    ready(a, ["x:1", "y:1"]);
    const first = acquiredAddress(a, "s1");
    assert.equal(b.acquire("s1", "alice", ttl).kind, "existing");
    const second = acquiredAddress(b, "s2");
    assert.notEqual(second, first);
    assert.deepEqual(a.acquire("s3", "alice", ttl), { kind: "busy" });
    assert.equal(a.release("s2")?.instanceAddress, second);
    assert.equal(b.get("s2"), undefined);
    assert.deepEqual(b.acquire("s3", "alice", ttl), { kind: "busy" }, "released but not yet probed clean");
  });

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
    assert.deepEqual(store.instances(), []);
  });

  it("never gives one instance to two sessions when worker threads race for the last free instances", async (t) => {
    const path = tempDbPath(t);
    const addresses = ["a:1", "b:1", "c:1"];
    const setup = new LeaseStore({ path });
    t.after(() => setup.close());
    ready(setup, addresses);

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

    const leases = setup.leases();
    assert.equal(leases.length, addresses.length);
    assert.equal(new Set(leases.map((l) => l.instanceAddress)).size, addresses.length);
    assert.deepEqual(leases.map((l) => [l.sessionId, l.instanceAddress]).sort(), won.map((w) => [w.session, w.instance]).sort());
    for (const instance of setup.instances()) {
      assert.equal(instance.sessionId, setup.leaseOfInstance(instance.address)?.sessionId);
    }
  });

  it("never gives one instance to two sessions while worker threads acquire and release concurrently", async (t) => {
    const path = tempDbPath(t);
    const addresses = ["a:1", "b:1", "c:1"];
    const setup = new LeaseStore({ path });
    t.after(() => setup.close());
    ready(setup, addresses);

    const results = await runWorkers(path, addresses, 4, { mode: "cycle", rounds: 80 });
    assert.deepEqual(
      results.flatMap((r) => r.errors),
      [],
    );
    assert.ok(results.reduce((n, r) => n + r.acquired.length, 0) > 0);
    assert.deepEqual(setup.leases(), []);
    for (const instance of setup.instances()) {
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
  const { LeaseStore } = await import(workerData.storeUrl);
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
      const r = store.acquire(session, "user" + id, 60000);
      if (r.kind === "busy") { result.busy++; continue; }
      if (r.kind !== "acquired") { result.errors.push(session + ": " + r.kind); continue; }
      const address = r.lease.instanceAddress;
      const k = addresses.indexOf(address);
      result.acquired.push({ session, instance: address });
      const before = Atomics.compareExchange(holders, k, 0, tag);
      if (before !== 0) result.errors.push(address + " given to " + session + " while held by tag " + before);
      const seen = store.leaseOfInstance(address);
      if (seen === undefined || seen.sessionId !== session) {
        result.errors.push(address + " leased to " + session + " but the table says " + (seen && seen.sessionId));
      }
      if (mode === "cycle") {
        if (Atomics.compareExchange(holders, k, tag, 0) !== tag) result.errors.push(address + " holder changed under " + session);
        const released = store.release(session, address);
        if (released === undefined) result.errors.push(session + ": release found no lease");
        store.recordStatus(address, { podName: "pod-" + address, bootId: "boot-" + address, sessionId: "", shuttingDown: false }, Date.now());
      }
    } catch (error) {
      result.errors.push(session + ": " + String(error));
    }
  }
  store?.close();
  parentPort.postMessage(result);
})().catch((error) => parentPort.postMessage({ acquired: [], busy: 0, errors: ["worker: " + String(error)] }));
`;
  const workerData = {
    tsxApi: import.meta.resolve("tsx/esm/api"),
    storeUrl: new URL("./lease-store.ts", import.meta.url).href,
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
