// A gateway that dies takes its waiters out of the queue (SPEC 11): two gateway processes on
// one lease database, waiters on both, one gateway killed with SIGKILL. The other gateway's
// waiters keep their order; the dead one's entries are purged once it stops beating (and a
// grant reserved for one of them passes on); a restarted gateway with the same GATEWAY_ID
// removes its previous process's entries at once.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type CallResult,
  echoPath,
  holdEveryInstance,
  newSession,
  RawClient,
  shutdownPath,
  type TestSession,
  useQueueStack,
  waitUntil,
} from "./queue-stack.js";

const instances = 3;
/** The gateways' purge window: the membership's (2 × 100 ms + 500 ms) but never less than 2 s. */
const purgeWindowMs = 2000;

describe("waiting room: a gateway killed with waiters", () => {
  const suite = useQueueStack({ instances, gateways: 2, env: { HEALTH_CHECK_INTERVAL: "100ms", QUEUE_MAX_WAIT: "1m" } }, 2);

  it("purges the dead gateway's entries, passes on their grant, and serves the others in order", { timeout: 120_000 }, async (t) => {
    const stack = suite.stack();
    const [g1] = stack.gateways;
    const [c1, c2] = suite.clients() as [RawClient, RawClient];
    const { client: admin, headers } = stack.admin(1);
    const queue = async () => (await admin.listQueue({}, { headers })).entries;
    const holders = await holdEveryInstance(c2, instances);
    // Arrivals alternate, the dead-to-be gateway first: its entry is at the head.
    const doomed: TestSession[] = [];
    const survivors: TestSession[] = [];
    const replies = new Map<string, Promise<CallResult>>();
    for (let i = 0; i < 12; i++) {
      const s = await newSession(i % 2 === 0 ? "on-gw1" : "on-gw2");
      (i % 2 === 0 ? doomed : survivors).push(s);
      replies.set(s.id, (i % 2 === 0 ? c1 : c2).call(echoPath, { ...s.headers, "x-wait-for-instance": "1m" }));
      await waitUntil(async () => (await queue()).length === i + 1, 5000, `${i + 1} queued`);
    }
    assert.deepEqual(
      (await queue()).map((e) => e.gatewayId),
      Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? "gw-1" : "gw-2")),
    );

    g1?.child.kill("SIGKILL");
    const killedAt = performance.now();
    for (const s of doomed) assert.equal((await replies.get(s.id))?.code, -1, "its calls end with it");
    // One instance frees at once: the head of the queue is a dead gateway's entry.
    assert.equal((await c2.call(shutdownPath, (holders[0] as TestSession).headers)).code, 0);
    await waitUntil(
      async () => (await queue()).some((e) => e.gatewayId === "gw-1" && e.grantedInstance !== ""),
      purgeWindowMs - 500,
      "the freed instance reserved for the dead head",
    );
    assert.equal((await queue())[0]?.sessionId, doomed[0]?.id);
    await waitUntil(async () => (await queue()).every((e) => e.gatewayId === "gw-2"), purgeWindowMs + 3000, "dead entries purged");
    const purgedAfter = performance.now() - killedAt;
    t.diagnostic(`the dead gateway's entries were purged ${purgedAfter.toFixed(0)} ms after the kill`);
    assert.ok(purgedAfter >= purgeWindowMs - 500, `not before its heartbeat is ${purgeWindowMs} ms old (${purgedAfter.toFixed(0)} ms)`);

    // The survivors are served in their arrival order, the first by the grant the dead entry held.
    const order: string[] = [];
    for (const [i, s] of survivors.entries()) {
      const result = await (replies.get(s.id) as Promise<CallResult>);
      assert.equal(result.code, 0, `${s.id}: ${result.code} ${result.message}\n${stack.warnings()}`);
      assert.equal(result.reply?.serverSessionId, s.id);
      order.push(s.id);
      const still = await queue();
      assert.deepEqual(
        still.map((e) => e.sessionId),
        survivors.slice(i + 1).map((x) => x.id),
        "the next ones still wait, in order",
      );
      // Free one more instance: this waiter's own (then the holders' as they run out).
      assert.equal((await c2.call(shutdownPath, s.headers)).code, 0);
    }
    assert.deepEqual(
      order,
      survivors.map((s) => s.id),
    );
    const bound = new Set(stack.pool.binds().map((b) => b.bound));
    for (const s of doomed) assert.ok(!bound.has(s.id), `${s.id} (on the dead gateway) never reached an instance`);
    assert.ok(stack.snapshot().leases.every((l) => !doomed.some((s) => s.id === l.session_id)));
    for (const h of holders.slice(1)) await c2.call(shutdownPath, h.headers);
  });

  it("a gateway restarted with the same GATEWAY_ID removes its previous process's entries at once", { timeout: 60_000 }, async () => {
    const stack = suite.stack();
    const [, c2] = suite.clients() as [RawClient, RawClient];
    const { client: admin, headers } = stack.admin(1);
    await waitUntil(() => stack.snapshot().instances.every((i) => i.session_id === null && i.clean === 1), 10_000, "pool free");
    const holders = await holdEveryInstance(c2, instances);
    const g3 = await stack.addGateway("gw-3");
    const c3 = new RawClient(g3.address, 1);
    const w = await newSession("on-gw3");
    const pending = c3.call(echoPath, { ...w.headers, "x-wait-for-instance": "1m" });
    await waitUntil(async () => (await admin.listQueue({}, { headers })).entries.length === 1, 5000, "queued");
    g3.child.kill("SIGKILL");
    assert.equal((await pending).code, -1);
    c3.close();
    const restartedAt = performance.now();
    const again = await stack.addGateway("gw-3");
    const entries = (await admin.listQueue({}, { headers })).entries;
    assert.deepEqual(entries, [], "gone before the restarted gateway listens");
    assert.ok(performance.now() - restartedAt < purgeWindowMs + 5000);
    await again.stop();
    for (const h of holders) await c2.call(shutdownPath, h.headers);
  });
});
