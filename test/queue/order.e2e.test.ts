// Strict FIFO across gateways (SPEC 11, issue 13): 1,000 waiters on 3 instances, half on each
// of two gateway processes sharing one SQLite lease database. The instances are released one by
// one (each granted waiter is shut down as soon as its reply arrives, which frees its instance
// for the next), and every grant must go to the oldest waiter still waiting.
//
// Speed, without changing what is proven: the instances are lean ones that restart at once
// with a new boot id after their Shutdown, and the gateways probe every 50 ms, so a
// release-and-regrant cycle takes tens of milliseconds instead of a process start plus a second.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import Database from "better-sqlite3";
import {
  type CallResult,
  echoPath,
  holdEveryInstance,
  newSession,
  type RawClient,
  shutdownPath,
  type TestSession,
  useQueueStack,
  waitUntil,
} from "./queue-stack.js";

const waiters = 1000;
const instances = 3;

describe("waiting room: strict FIFO across two gateway processes", () => {
  const suite = useQueueStack({
    instances,
    gateways: 2,
    env: { HEALTH_CHECK_INTERVAL: "50ms", QUEUE_MAX_WAIT: "10m", QUEUE_MAX_LENGTH: String(waiters) },
  });

  it(`grants ${waiters} waiters in arrival order as instances are released one by one: 0 violations`, { timeout: 180_000 }, async (t) => {
    const stack = suite.stack();
    const [gw1, gw2] = suite.clients() as [RawClient, RawClient];
    const holders = await holdEveryInstance(gw1, instances);

    // Arrivals: alternately on each gateway, in bursts, so both write the queue at once.
    const sessions = await Promise.all(Array.from({ length: waiters }, (_, i) => newSession(`fifo-${i}`)));
    const clientOf = new Map<string, RawClient>();
    const replies = new Map<string, Promise<CallResult>>();
    const started = performance.now();
    for (let i = 0; i < waiters; i += 100) {
      for (const [k, s] of sessions.slice(i, i + 100).entries()) {
        const client = (i + k) % 2 === 0 ? gw1 : gw2;
        clientOf.set(s.id, client);
        replies.set(s.id, client.call(echoPath, { ...s.headers, "x-wait-for-instance": "10m" }));
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    const db = new Database(stack.dbPath, { readonly: true, fileMustExist: true });
    t.after(() => db.close());
    const count = db.prepare("SELECT COUNT(*) AS n FROM waiters").pluck();
    await waitUntil(() => count.get() === waiters, 30_000, `${waiters} waiters queued`);
    t.diagnostic(`${waiters} waiters queued in ${(performance.now() - started).toFixed(0)} ms`);

    // The arrival order is the store's: seq, across both gateways.
    const rows = db.prepare("SELECT session_id, seq, gateway_id, entry_position FROM waiters ORDER BY seq").all() as {
      session_id: string;
      seq: number;
      gateway_id: string;
      entry_position: number;
    }[];
    const arrival = rows.map((r) => r.session_id);
    const seqOf = new Map(rows.map((r) => [r.session_id, r.seq] as const));
    assert.deepEqual(
      rows.map((r) => r.entry_position),
      rows.map((_, i) => i + 1),
      "positions at entry are 1..n in seq order",
    );
    assert.deepEqual(new Set(rows.map((r) => r.gateway_id)), new Set(["gw-1", "gw-2"]));
    const oldestWaiting = db.prepare("SELECT MIN(seq) FROM waiters WHERE granted_address IS NULL").pluck();

    // Release: each reply is checked as it arrives, then its session is shut down, which frees
    // its instance for the next grant. Three instances: at most three grants in flight.
    let violations = 0;
    const grantOrder: string[] = [];
    const examples: string[] = [];
    const byId = new Map(sessions.map((s) => [s.id, s] as const));
    const releaseStarted = performance.now();
    const warnings = () => stack.warnings();
    const follow = async (session: string, result: CallResult): Promise<void> => {
      assert.equal(result.code, 0, `${session}: ${result.code} ${result.message} ${JSON.stringify(result.trailers)}\n${warnings()}`);
      assert.equal(result.reply?.serverSessionId, session);
      // The store at this moment: no entry that arrived before this one may still be waiting.
      const oldest = oldestWaiting.get() as number | null;
      if (oldest !== null && oldest < (seqOf.get(session) as number)) {
        violations++;
        if (examples.length < 5) examples.push(`${session} (seq ${seqOf.get(session)}) granted while seq ${oldest} waits`);
      }
      assert.equal(result.headers["x-queue-position"], String(arrival.indexOf(session) + 1));
      grantOrder.push(session);
      const down = await (clientOf.get(session) as RawClient).call(shutdownPath, (byId.get(session) as TestSession).headers);
      if (down.code !== 0 && process.env.QU_LOG) {
        const lines = stack.gateways.flatMap((g) =>
          g
            .output()
            .split("\n")
            .filter((l) => l.includes(session)),
        );
        const binds = stack.pool.binds().filter((b) => b.bound === session);
        console.error(JSON.stringify({ session, reply: result.reply, headers: result.headers, lines, binds }, null, 1));
      }
      assert.equal(down.code, 0, `Shutdown ${session}: ${down.code} ${down.message}`);
    };
    const followed = arrival.map((session) => (replies.get(session) as Promise<CallResult>).then((result) => follow(session, result)));
    // Each holder's Shutdown frees one instance; from then on each instance cycles through waiters.
    for (const h of holders) assert.equal((await gw1.call(shutdownPath, h.headers)).code, 0);
    await Promise.all(followed);
    const seconds = (performance.now() - releaseStarted) / 1000;
    t.diagnostic(`${waiters} grants in ${seconds.toFixed(1)} s (${(waiters / seconds).toFixed(0)} release-and-regrant cycles/s)`);

    let inversions = 0;
    for (let i = 1; i < grantOrder.length; i++) {
      if ((seqOf.get(grantOrder[i] as string) as number) < (seqOf.get(grantOrder[i - 1] as string) as number)) inversions++;
    }
    t.diagnostic(`replies seen out of arrival order (three instances in flight, not a violation by itself): ${inversions}`);
    assert.equal(violations, 0, `FIFO violations:\n${examples.join("\n")}\n${warnings()}`);
    assert.equal(grantOrder.length, waiters);
    // Each waiter reached an instance exactly once, and nobody else did.
    const bound = stack.pool.binds().map((b) => b.bound);
    const waiterSet = new Set(arrival);
    assert.equal(bound.filter((b) => waiterSet.has(b)).length, waiters);
    assert.equal(new Set(bound).size, bound.length, "no session bound twice");
    assert.equal(count.get(), 0, "the queue is empty");
  });
});
