import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import { Code } from "@connectrpc/connect";
import { createLogger } from "../../common/logger.js";
import { GatewayError } from "../errors.js";
import type { AcquireRequest } from "../leases/lease-store.js";
import { SqliteLeaseStore } from "../leases/sqlite-lease-store.js";
import { type Admission, WaitingRoom } from "./waiting-room.js";

const gatewayId = "gw-test";
const request: Omit<AcquireRequest, "wait"> = { sessionId: "w1", owner: "alice", ttlMs: 60_000 };

/** A store with one instance, leased by `holder`: every new session would wait. */
async function fullPool(t: TestContext) {
  const dir = mkdtempSync(join(tmpdir(), "waiting-room-test-"));
  const store = new SqliteLeaseStore({ path: join(dir, "leases.db"), synchronous: "NORMAL" });
  t.after(async () => {
    await room.stop();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await store.heartbeat({ id: gatewayId, address: "x:1" });
  await store.register(["a:1"]);
  await store.recordStatus("a:1", { podName: "pod-a", bootId: "b1", sessionId: "", shuttingDown: false });
  assert.equal((await store.acquire("holder", "alice", 60_000)).kind, "acquired");
  const room = new WaitingRoom({
    store,
    gatewayId,
    maxWaitMs: 60_000,
    maxLength: 10,
    liveWithinMs: 2000,
    purgeIntervalMs: 1000,
    defaultRetryAfterMs: 1000,
    logger: createLogger({ name: "test", level: "silent", format: "json" }),
  });
  await room.start();
  return { store, room };
}

describe("WaitingRoom", () => {
  it("ends a wait that its deadline bounds with DEADLINE_EXCEEDED, even before the caller's own deadline fires", async (t) => {
    const { store, room } = await fullPool(t);
    const never = new AbortController(); // the caller's deadline timer has not fired yet
    const started = performance.now();
    const error = await room.acquire(request, { requestedMs: 10_000, deadlineMs: 150, signal: never.signal }).then(
      () => assert.fail("expected a rejection"),
      (e: unknown) => e,
    );
    assert.ok(error instanceof GatewayError && error.code === Code.DeadlineExceeded, `got ${String(error)}`);
    assert.ok(performance.now() - started >= 150);
    assert.equal(await store.queueEntry("w1"), undefined, "its place is gone");
  });

  it("answers waited-out with the default retry hint when the header's wait ends first (no grant yet)", async (t) => {
    const { store, room } = await fullPool(t);
    const admission = await room.acquire(request, { requestedMs: 100, deadlineMs: 5_000, signal: new AbortController().signal });
    assert.deepEqual(admission, { kind: "waited-out", retryAfterMs: 1000 });
    assert.equal(await store.queueEntry("w1"), undefined);
  });

  it("rejects with the caller's reason and frees the place when the call goes away", async (t) => {
    const { store, room } = await fullPool(t);
    const abort = new AbortController();
    const pending = room.acquire(request, { requestedMs: 10_000, signal: abort.signal });
    for (let i = 0; i < 50 && (await store.queueEntry("w1")) === undefined; i++) await new Promise((r) => setTimeout(r, 10));
    assert.notEqual(await store.queueEntry("w1"), undefined);
    const reason = new Error("client went away");
    abort.abort(reason);
    await assert.rejects(pending, (e) => e === reason);
    assert.equal(await store.queueEntry("w1"), undefined);
    assert.equal(room.size, 0);
  });

  it("hands one grant to every waiting call of the session, with its position at entry", async (t) => {
    const { store, room } = await fullPool(t);
    const signal = new AbortController().signal;
    const calls = [room.acquire(request, { requestedMs: 10_000, signal }), room.acquire(request, { requestedMs: 10_000, signal })];
    for (let i = 0; i < 50 && (await store.queueEntry("w1")) === undefined; i++) await new Promise((r) => setTimeout(r, 10));
    await store.release("holder");
    await store.recordStatus("a:1", { podName: "pod-a", bootId: "b2", sessionId: "", shuttingDown: false });
    const admissions = (await Promise.all(calls)) as Extract<Admission, { kind: "acquired" | "existing" }>[];
    for (const a of admissions) {
      assert.equal(a.lease.sessionId, "w1");
      assert.equal(a.lease.instanceBootId, "b2");
      assert.equal(a.queued?.position, 1);
    }
    assert.equal((await store.get("w1"))?.instanceAddress, "a:1");
  });
});
