// The waiting room on the PostgreSQL lease store (SPEC 10, 11): two gateway processes sharing a
// temporary PostgreSQL server, lean instances (decision 0046), raw HTTP/2 clients. Waiters on
// both gateways are granted in arrival order as instances free one by one (the grant runs under
// the queue's advisory lock, the other gateway's waiters are woken by LISTEN/NOTIFY); deadlines
// and waits end on time and never get an instance; a gateway killed with SIGKILL leaves the
// queue (its entries purged, a grant reserved for its head passed on), the others keep their order.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import pg from "pg";
import { postgresSkipReason, stopTempPostgres, tempPostgres } from "../lease-store-engines.js";
import {
  type CallResult,
  echoPath,
  holdEveryInstance,
  newSession,
  type QueueStack,
  RawClient,
  shutdownPath,
  startQueueStack,
  type TestSession,
  waitUntil,
} from "./queue-stack.js";

const skip = postgresSkipReason();
if (skip !== undefined && process.env.CI) throw new Error(`CI needs the waiting room's PostgreSQL test: ${skip}`);

const instances = 3;
const waiters = 200;
/** A deadline is answered at most this much after it passed (issue 13). */
const deadlineSlackMs = 50;
/** The gateways' purge window: the membership's (2 × 50 ms + 500 ms) but never less than 2 s. */
const purgeWindowMs = 2000;

describe("waiting room on PostgreSQL: two gateway processes", { skip }, () => {
  let stack: QueueStack;
  let db: pg.Pool;
  let gw1: RawClient;
  let gw2: RawClient;

  before(async () => {
    const url = await (await tempPostgres()).createDatabase();
    stack = await startQueueStack({
      instances,
      gateways: 2,
      leaseDbUrl: url,
      env: { HEALTH_CHECK_INTERVAL: "50ms", QUEUE_MAX_WAIT: "10m", QUEUE_MAX_LENGTH: String(waiters) },
    });
    db = new pg.Pool({ connectionString: url, max: 2 });
    gw1 = new RawClient(stack.gateways[0]?.address as string, 8);
    gw2 = new RawClient(stack.gateways[1]?.address as string, 8);
  });
  after(async () => {
    gw1?.close();
    gw2?.close();
    await db?.end();
    await stack?.stop();
    await stopTempPostgres();
  });

  const one = async <T>(text: string): Promise<T> => (await db.query(text)).rows[0] as T;
  const queueLength = async () => Number((await one<{ n: string }>("SELECT count(*) AS n FROM waiters")).n);
  const bound = () => new Set(stack.pool.binds().map((b) => b.bound));
  async function poolFree(): Promise<void> {
    await waitUntil(
      async () => (await stack.rows()).instances.every((i) => i.session_id === null && i.clean === 1 && i.healthy === 1),
      15_000,
      "every instance free and allocatable",
    );
  }

  it(
    `grants ${waiters} waiters on two gateways in arrival order as instances free one by one: 0 violations`,
    { timeout: 120_000 },
    async (t) => {
      const holders = await holdEveryInstance(gw1, instances);
      const sessions = await Promise.all(Array.from({ length: waiters }, (_, i) => newSession(`pg-fifo-${i}`)));
      const clientOf = new Map<string, RawClient>();
      const replies = new Map<string, Promise<CallResult>>();
      // Arrivals alternate between the gateways, in bursts, so both enter the queue at once.
      for (let i = 0; i < waiters; i += 50) {
        for (const [k, s] of sessions.slice(i, i + 50).entries()) {
          const client = (i + k) % 2 === 0 ? gw1 : gw2;
          clientOf.set(s.id, client);
          replies.set(s.id, client.call(echoPath, { ...s.headers, "x-wait-for-instance": "10m" }));
        }
        await new Promise((r) => setTimeout(r, 5));
      }
      await waitUntil(async () => (await queueLength()) === waiters, 30_000, `${waiters} waiters queued`);

      // Arrival order is the store's: seq, across both gateways.
      const rows = (
        await db.query<{ session_id: string; seq: string; gateway_id: string; entry_position: number }>(
          "SELECT session_id, seq, gateway_id, entry_position FROM waiters ORDER BY seq",
        )
      ).rows;
      const arrival = rows.map((r) => r.session_id);
      const seqOf = new Map(rows.map((r) => [r.session_id, Number(r.seq)] as const));
      assert.deepEqual(
        rows.map((r) => r.entry_position),
        rows.map((_, i) => i + 1),
        "positions at entry are 1..n in seq order",
      );
      assert.deepEqual(new Set(rows.map((r) => r.gateway_id)), new Set(["gw-1", "gw-2"]));

      let violations = 0;
      const examples: string[] = [];
      const granted: string[] = [];
      const byId = new Map(sessions.map((s) => [s.id, s] as const));
      const started = performance.now();
      const follow = async (session: string, result: CallResult): Promise<void> => {
        assert.equal(result.code, 0, `${session}: ${result.code} ${result.message}\n${stack.warnings()}`);
        assert.equal(result.reply?.serverSessionId, session);
        // No entry that arrived before this one may still be waiting (granted ones are not).
        const oldest = (await one<{ s: string | null }>("SELECT min(seq) AS s FROM waiters WHERE granted_address IS NULL")).s;
        if (oldest !== null && Number(oldest) < (seqOf.get(session) as number)) {
          violations++;
          if (examples.length < 5) examples.push(`${session} (seq ${seqOf.get(session)}) granted while seq ${oldest} waits`);
        }
        assert.equal(result.headers["x-queue-position"], String(arrival.indexOf(session) + 1));
        granted.push(session);
        // Its Shutdown frees its instance for the next grant (the lean instance restarts at once).
        const down = await (clientOf.get(session) as RawClient).call(shutdownPath, (byId.get(session) as TestSession).headers);
        assert.equal(down.code, 0, `Shutdown ${session}: ${down.code} ${down.message}`);
      };
      const followed = arrival.map((session) => (replies.get(session) as Promise<CallResult>).then((result) => follow(session, result)));
      for (const h of holders) assert.equal((await gw1.call(shutdownPath, h.headers)).code, 0);
      await Promise.all(followed);
      const seconds = (performance.now() - started) / 1000;
      t.diagnostic(`${waiters} grants in ${seconds.toFixed(1)} s (${(waiters / seconds).toFixed(0)} release-and-regrant cycles/s)`);
      assert.equal(violations, 0, `FIFO violations:\n${examples.join("\n")}\n${stack.warnings()}`);
      assert.equal(granted.length, waiters);
      const binds = stack.pool.binds().map((b) => b.bound);
      assert.equal(binds.filter((b) => seqOf.has(b)).length, waiters, "each waiter reached an instance once");
      assert.equal(new Set(binds).size, binds.length, "no session bound twice");
      assert.equal(await queueLength(), 0);
      await poolFree();
    },
  );

  it("answers each waiter at its deadline (DEADLINE_EXCEEDED) or at the end of its wait (RESOURCE_EXHAUSTED); none gets an instance", async () => {
    const holders = await holdEveryInstance(gw2, instances);
    const byDeadline = await Promise.all([300, 600].map(async (ms) => ({ ms, s: await newSession(`pg-deadline-${ms}`) })));
    const outOfTime = await newSession("pg-wait-400");
    const [results, waitedOut] = await Promise.all([
      Promise.all(
        byDeadline.map(({ ms, s }, i) =>
          (i % 2 === 0 ? gw1 : gw2).call(echoPath, { ...s.headers, "x-wait-for-instance": "10s", "grpc-timeout": `${ms}m` }),
        ),
      ),
      gw1.call(echoPath, { ...outOfTime.headers, "x-wait-for-instance": "400ms" }),
    ]);
    for (const [i, result] of results.entries()) {
      const { ms } = byDeadline[i] as { ms: number };
      const elapsed = result.endedAt - result.sentAt;
      assert.equal(result.code, Code.DeadlineExceeded, `${ms} ms: ${result.code} ${result.message}`);
      assert.ok(elapsed >= ms && elapsed <= ms + deadlineSlackMs, `deadline ${ms} ms answered after ${elapsed.toFixed(1)} ms`);
    }
    const waited = waitedOut.endedAt - waitedOut.sentAt;
    assert.equal(waitedOut.code, Code.ResourceExhausted);
    assert.equal(waitedOut.message, "all instances are busy");
    assert.ok(waited >= 400 && waited <= 400 + deadlineSlackMs, `a 400 ms wait answered after ${waited.toFixed(1)} ms`);
    // The reply goes out first (on time); the entry leaves in the round trip after it.
    await waitUntil(async () => (await queueLength()) === 0, 1000, "their entries left with them");
    // Instances free now: none of them may get one.
    for (const h of holders) assert.equal((await gw2.call(shutdownPath, h.headers)).code, 0);
    await poolFree();
    for (const s of [...byDeadline.map((d) => d.s), outOfTime]) assert.ok(!bound().has(s.id), `${s.id} never reached an instance`);
    assert.ok((await stack.rows()).leases.length === 0);
  });

  it(
    "purges the entries of a gateway killed with SIGKILL, passes on the grant its head held, serves the others in order",
    { timeout: 60_000 },
    async (t) => {
      const holders = await holdEveryInstance(gw2, instances);
      const doomed: TestSession[] = [];
      const survivors: TestSession[] = [];
      const replies = new Map<string, Promise<CallResult>>();
      // Arrivals alternate, the dead-to-be gateway first: its entry is at the head.
      for (let i = 0; i < 8; i++) {
        const s = await newSession(i % 2 === 0 ? "pg-on-gw1" : "pg-on-gw2");
        (i % 2 === 0 ? doomed : survivors).push(s);
        replies.set(s.id, (i % 2 === 0 ? gw1 : gw2).call(echoPath, { ...s.headers, "x-wait-for-instance": "1m" }));
        await waitUntil(async () => (await queueLength()) === i + 1, 5000, `${i + 1} queued`);
      }
      const gatewayOfHead = async () => (await one<{ g: string }>("SELECT gateway_id AS g FROM waiters ORDER BY seq LIMIT 1")).g;
      assert.equal(await gatewayOfHead(), "gw-1");

      stack.gateways[0]?.child.kill("SIGKILL");
      const killedAt = performance.now();
      for (const s of doomed) assert.equal((await replies.get(s.id))?.code, -1, "its calls end with it");
      // One instance frees at once: it is reserved for the head, a dead gateway's entry.
      assert.equal((await gw2.call(shutdownPath, (holders[0] as TestSession).headers)).code, 0);
      await waitUntil(
        async () =>
          (await one<{ n: string }>("SELECT count(*) AS n FROM waiters WHERE gateway_id = 'gw-1' AND granted_address IS NOT NULL")).n ===
          "1",
        purgeWindowMs - 500,
        "the freed instance reserved for the dead head",
      );
      await waitUntil(
        async () => (await one<{ n: string }>("SELECT count(*) AS n FROM waiters WHERE gateway_id = 'gw-1'")).n === "0",
        purgeWindowMs + 3000,
        "the dead gateway's entries purged",
      );
      const purgedAfter = performance.now() - killedAt;
      t.diagnostic(`the dead gateway's entries were purged ${purgedAfter.toFixed(0)} ms after the kill`);
      assert.ok(purgedAfter >= purgeWindowMs - 500, `not before its heartbeat is ${purgeWindowMs} ms old (${purgedAfter.toFixed(0)} ms)`);

      // The survivors are served in arrival order, the first by the grant the dead head held.
      for (const [i, s] of survivors.entries()) {
        const result = await (replies.get(s.id) as Promise<CallResult>);
        assert.equal(result.code, 0, `${s.id}: ${result.code} ${result.message}\n${stack.warnings()}`);
        assert.equal(result.reply?.serverSessionId, s.id);
        const still = (await db.query<{ session_id: string }>("SELECT session_id FROM waiters ORDER BY seq")).rows.map((r) => r.session_id);
        assert.deepEqual(
          still,
          survivors.slice(i + 1).map((x) => x.id),
          "the next ones still wait, in order",
        );
        assert.equal((await gw2.call(shutdownPath, s.headers)).code, 0);
      }
      for (const s of doomed) assert.ok(!bound().has(s.id), `${s.id} (on the dead gateway) never reached an instance`);
      for (const h of holders.slice(1)) assert.equal((await gw2.call(shutdownPath, h.headers)).code, 0);
      assert.deepEqual((await stack.rows()).leases, []);
    },
  );
});
