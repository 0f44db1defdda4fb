// Never leak (SPEC 11, issue 13): 500 waiters on two gateway processes, half of them cancelled
// at random moments while the instances keep freeing up, and the waiter at the head cancelled
// right after each release (the grant racing the cancel). Afterwards no instance is held for a
// waiter that left, the queue is empty, and the store and the instances agree.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type CallResult,
  echoPath,
  holdEveryInstance,
  instanceStatus,
  newSession,
  type RawClient,
  shutdownPath,
  type TestSession,
  useQueueStack,
  waitUntil,
} from "./queue-stack.js";

const waiters = 500;
const instances = 3;

/** A small deterministic generator (mulberry32), so a failure can be replayed with its seed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("waiting room: a cancel storm leaks nothing", () => {
  const suite = useQueueStack({ instances, gateways: 2, env: { HEALTH_CHECK_INTERVAL: "50ms", QUEUE_MAX_WAIT: "10m" } });

  it(
    `${waiters} waiters, half cancelled at random as instances free up: no instance held for a waiter that left`,
    { timeout: 180_000 },
    async (t) => {
      const seed = Number(process.env.QUEUE_STORM_SEED ?? Date.now() % 1_000_000);
      t.diagnostic(`seed ${seed} (QUEUE_STORM_SEED=${seed} replays it)`);
      const rand = random(seed);
      const stack = suite.stack();
      const clients = suite.clients();
      const [gw1] = clients as [RawClient, RawClient];
      const holders = await holdEveryInstance(gw1, instances);
      const sessions = await Promise.all(Array.from({ length: waiters }, (_, i) => newSession(`storm-${i}`)));
      const aborts = new Map<string, AbortController>();
      const clientOf = new Map<string, RawClient>();
      const results = new Map<string, Promise<CallResult>>();
      for (const [i, s] of sessions.entries()) {
        const client = clients[i % 2] as RawClient;
        const abort = new AbortController();
        aborts.set(s.id, abort);
        clientOf.set(s.id, client);
        results.set(s.id, client.call(echoPath, { ...s.headers, "x-wait-for-instance": "10m" }, "storm", { signal: abort.signal }));
      }
      const { client: admin, headers: adminHeaders } = stack.admin();
      await waitUntil(async () => (await admin.listQueue({}, { headers: adminHeaders })).length === waiters, 30_000, "all queued");

      const cancelled = new Set<string>();
      const cancel = (id: string) => {
        if (cancelled.has(id)) return;
        cancelled.add(id);
        aborts.get(id)?.abort();
      };
      const cancelLater = (id: string, ms: number) =>
        new Promise<void>((resolve) =>
          setTimeout(() => {
            cancel(id);
            resolve();
          }, ms),
        );
      // Random cancels over the next seconds, while grants flow.
      const chosen = sessions.filter(() => rand() < 0.4);
      const randomCancels = Promise.all(chosen.map((s) => cancelLater(s.id, rand() * 6000)));
      // Serve: each granted waiter is shut down at once (its instance frees up); right after
      // each release, the oldest waiter still waiting is cancelled with some luck, a few ms later:
      // its grant and its cancel race.
      const served: string[] = [];
      const headCancels: Promise<void>[] = [];
      const cancelHeadSoon = () => {
        if (rand() >= 0.3) return;
        const head = sessions.find((s) => !cancelled.has(s.id) && !served.includes(s.id));
        if (head === undefined) return;
        headCancels.push(cancelLater(head.id, rand() * 60));
      };
      const follow = async (s: TestSession) => {
        const result = await (results.get(s.id) as Promise<CallResult>);
        if (result.code !== 0) {
          assert.ok(cancelled.has(s.id), `${s.id} ended ${result.code} ${result.message} without being cancelled\n${stack.warnings()}`);
          return;
        }
        served.push(s.id);
        assert.equal(result.reply?.serverSessionId, s.id);
        const down = await (clientOf.get(s.id) as RawClient).call(shutdownPath, s.headers);
        assert.equal(down.code, 0, `Shutdown ${s.id}: ${down.code} ${down.message}`);
        cancelHeadSoon();
      };
      const followed = Promise.all(sessions.map(follow));
      for (const h of holders) {
        assert.equal((await gw1.call(shutdownPath, h.headers)).code, 0);
        cancelHeadSoon();
      }
      await randomCancels;
      await followed;
      await Promise.all(headCancels);
      t.diagnostic(`${served.length} served, ${cancelled.size} cancelled (some after their grant: those were served first)`);

      // A cancel can cross the gateway's whole answer (the RST was on its way while the answer went
      // out): the gateway completed the call, the session was served. Such sessions are exactly the
      // cancelled ones still holding a lease, and each must be an Echo the gateways completed OK
      // (their own count): a lease held after a cancel the gateway saw in time is a leak.
      await waitUntil(async () => (await admin.listQueue({}, { headers: adminHeaders })).entries.length === 0, 10_000, "queue empty");
      await new Promise((r) => setTimeout(r, 300));
      const crossed = stack.snapshot().leases.filter((l) => cancelled.has(l.session_id));
      let completedOk = 0;
      for (const g of stack.gateways) {
        const text = await (await fetch(`http://${g.address}/metrics`)).text();
        completedOk += Number(/^mygateway_proxied_calls_total\{method="MyServiceEcho",code="OK"\} (\d+)$/m.exec(text)?.[1] ?? 0);
      }
      const answeredOk = served.length + instances; // the holders' first Echo, and every served waiter
      t.diagnostic(`cancels that crossed a complete answer: ${crossed.length}; Echo calls completed OK: ${completedOk}`);
      assert.equal(completedOk - answeredOk, crossed.length, "every lease a cancelled waiter holds is an answer the gateway completed");
      for (const l of crossed) {
        const s = sessions.find((x) => x.id === l.session_id) as TestSession;
        assert.equal((await (clientOf.get(s.id) as RawClient).call(shutdownPath, s.headers)).code, 0);
      }

      // Settled: the queue is empty; no lease, no instance row, no instance holds a session that left.
      const gone = new Set([...cancelled].filter((id) => !served.includes(id) && !crossed.some((l) => l.session_id === id)));
      try {
        await waitUntil(
          () => stack.snapshot().instances.every((i) => i.session_id === null && i.clean === 1 && i.healthy === 1),
          15_000,
          "every instance free and clean again",
        );
      } catch (error) {
        const statuses = await Promise.all(
          stack
            .snapshot()
            .instances.map((i) =>
              instanceStatus(i.address).then(
                (st) => `${i.address}: boot ${st.bootId} session "${st.sessionId}" shuttingDown ${st.shuttingDown}`,
                String,
              ),
            ),
        );
        throw new Error(
          `${(error as Error).message}\n${JSON.stringify(stack.snapshot())}\n${JSON.stringify(statuses)}\n${stack.warnings()}`,
        );
      }
      const { leases, instances: rows } = stack.snapshot();
      assert.deepEqual(leases, [], "no lease left");
      for (const row of rows) {
        const status = await instanceStatus(row.address);
        assert.equal(status.sessionId, "", `${row.address} holds ${status.sessionId} while the store says free: they disagree`);
      }
      // Waiters that left before their call reached an instance never reached one; the few whose
      // cancel raced a grant that had already sent their call were recycled (checked just above).
      const reached = stack.pool.binds().filter((b) => gone.has(b.bound));
      t.diagnostic(`cancelled waiters whose call had already reached an instance (then recycled): ${reached.length}`);
      assert.equal(served.length + crossed.length + gone.size, waiters, "every waiter was served or left");
      // The safety net (a grant claimed after every call of its session left is released) must not
      // be what kept the books clean: on SQLite a cancel removes the entry before any claim can.
      const netCatches = stack.gateways
        .flatMap((g) => g.output().split("\n"))
        .filter((l) => l.includes("grant claimed after its calls left"));
      assert.deepEqual(netCatches, [], "every cancelled waiter left the queue at its cancel");
    },
  );
});
