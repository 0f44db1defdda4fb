// The waiting room (SPEC 11) against real processes: a gateway process, a pool of instances
// on real sockets, raw HTTP/2 clients. Every outcome with its code, message, headers and
// trailers; deadlines honoured within 50 ms; cancels free the place at once; a waiter that
// left never reaches an instance; bad headers; the queue full; without the header nothing
// changes; GetPosition; the Connect protocol; metrics checked by promtool.
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { after, afterEach, before, beforeEach, describe, it } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { StatusSchema } from "../../gen/google/rpc/status_pb.js";
import { WaitingRoom } from "../../gen/mygateway/queue/v1/waiting_room_pb.js";
import {
  type CallResult,
  echoPath,
  newSession,
  type QueueStack,
  RawClient,
  shutdownPath,
  startQueueStack,
  subscribePath,
  type TestSession,
  tokenFor,
  waitUntil,
} from "./queue-stack.js";

const instances = 2;
const maxLength = 5;
const maxWaitMs = 3000;
/** Slack of a deadline: the answer comes at most this much later than the deadline (issue 13). */
const deadlineSlackMs = 50;
const promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].find((p) => spawnSync(p, ["--version"]).status === 0);

describe("waiting room, one gateway", () => {
  let stack: QueueStack;
  let client: RawClient;
  /** Sessions that may hold a lease: shut down after each test. */
  let holding: TestSession[] = [];
  /** Cancels every call a test left waiting (a failed assertion must not leave waiters behind). */
  let leftovers = new AbortController();

  before(async () => {
    stack = await startQueueStack({
      instances,
      gateways: 1,
      env: { QUEUE_MAX_LENGTH: String(maxLength), QUEUE_MAX_WAIT: `${maxWaitMs}ms`, HEALTH_CHECK_INTERVAL: "100ms" },
    });
    client = new RawClient(stack.gateways[0]?.address as string);
  });
  after(async () => {
    client?.close();
    await stack?.stop();
  });
  beforeEach(() => {
    leftovers = new AbortController();
  });
  afterEach(async () => {
    leftovers.abort();
    for (const s of holding) await client.call(shutdownPath, s.headers);
    holding = [];
    await waitUntil(async () => (await listQueue()).entries.length === 0, 10_000, "queue empty");
    await waitUntil(
      () => stack.snapshot().instances.every((i) => i.session_id === null && i.clean === 1 && i.healthy === 1),
      10_000,
      "every instance free and allocatable",
    );
  });

  const listQueue = () => {
    const { client: admin, headers } = stack.admin();
    return admin.listQueue({}, { headers });
  };
  /** An Echo that must succeed; the session is shut down after the test. */
  async function echoOk(session: TestSession): Promise<CallResult> {
    const result = await client.call(echoPath, session.headers);
    if (result.code === 0) holding.push(session);
    return result;
  }
  /** Fills every instance with a session of its own. */
  async function fill(): Promise<TestSession[]> {
    const holders: TestSession[] = [];
    for (let i = 0; i < instances; i++) {
      const s = await newSession("holder");
      const result = await echoOk(s);
      assert.equal(result.code, 0, `holder ${i}: ${result.code} ${result.message}`);
      holders.push(s);
    }
    return holders;
  }
  function waiting(session: TestSession, wait: string, extra: Record<string, string> = {}, signal?: AbortSignal): Promise<CallResult> {
    const cancel = signal === undefined ? leftovers.signal : AbortSignal.any([signal, leftovers.signal]);
    return client
      .call(echoPath, { ...session.headers, "x-wait-for-instance": wait, ...extra }, "waiting", { signal: cancel })
      .then((result) => {
        if (result.code === 0) holding.push(session);
        return result;
      });
  }
  async function queued(n: number): Promise<string[]> {
    let ids: string[] = [];
    await waitUntil(
      async () => {
        ids = (await listQueue()).entries.map((e) => e.sessionId);
        return ids.length === n;
      },
      5000,
      `${n} in the queue`,
    );
    return ids;
  }
  const boundSessions = () => new Set(stack.pool.binds().map((b) => b.bound));
  const shutdown = async (s: TestSession) => {
    const result = await client.call(shutdownPath, s.headers);
    assert.equal(result.code, 0, `Shutdown ${s.id}: ${result.code} ${result.message}`);
    holding = holding.filter((h) => h !== s);
  };

  it("grants the instance a Shutdown frees to the longest waiter, with x-queue-wait-ms and x-queue-position", async () => {
    const [h1, h2] = await fill();
    const w1 = await newSession("w1");
    const w2 = await newSession("w2");
    const first = waiting(w1, "10s");
    await queued(1);
    const second = waiting(w2, "10s");
    assert.deepEqual(await queued(2), [w1.id, w2.id]);
    await new Promise((r) => setTimeout(r, 200));
    await shutdown(h1 as TestSession);
    const r1 = await first;
    assert.equal(r1.code, 0, r1.message);
    assert.equal(r1.reply?.serverSessionId, w1.id);
    assert.equal(r1.headers["x-queue-position"], "1");
    const waitedMs = Number(r1.headers["x-queue-wait-ms"]);
    assert.ok(waitedMs >= 200 && waitedMs <= r1.endedAt - r1.sentAt + 1, `x-queue-wait-ms ${waitedMs}`);
    assert.equal((await listQueue()).entries.map((e) => e.sessionId).join(), w2.id, "w2 still waits");
    await shutdown(h2 as TestSession);
    const r2 = await second;
    assert.equal(r2.code, 0, r2.message);
    assert.equal(r2.headers["x-queue-position"], "2");
    assert.ok(r2.endedAt > r1.endedAt, "grants in arrival order");
    assert.notEqual(r1.reply?.podName, r2.reply?.podName);
    // Later calls of a granted session are ordinary leased calls: no queue headers.
    const again = await client.call(echoPath, { ...w1.headers, "x-wait-for-instance": "10s" });
    assert.equal(again.reply?.podName, r1.reply?.podName);
    assert.equal(again.headers["x-queue-position"], undefined);
  });

  it("answers a waiter that waited its full time RESOURCE_EXHAUSTED with the estimated wait as retry hint, and never gives it an instance", async () => {
    await fill();
    const w = await newSession("waited-out");
    const result = await waiting(w, "600ms");
    const elapsed = result.endedAt - result.sentAt;
    assert.equal(result.code, Code.ResourceExhausted);
    assert.equal(result.message, "all instances are busy");
    assert.ok(elapsed >= 600 && elapsed <= 600 + deadlineSlackMs, `answered after ${elapsed.toFixed(1)} ms`);
    const retry = Number(result.trailers["retry-after-ms"] ?? result.headers["retry-after-ms"]);
    assert.ok(retry > 0, "a retry hint");
    const details = fromBinary(
      StatusSchema,
      Buffer.from(String(result.trailers["grpc-status-details-bin"] ?? result.headers["grpc-status-details-bin"]), "base64"),
    );
    assert.equal(details.details[0]?.typeUrl, "type.googleapis.com/google.rpc.RetryInfo");
    // The estimate comes from the grants this suite made: position 1 × their mean interval.
    const { meanGrantInterval } = await listQueue();
    if (meanGrantInterval !== undefined) assert.ok(Math.abs(retry - durationMs(meanGrantInterval)) <= 1, `retry hint ${retry} ms`);
    assert.equal((await listQueue()).entries.length, 0, "its entry is gone");
    assert.ok(!boundSessions().has(w.id));
  });

  it("caps the wait at QUEUE_MAX_WAIT", async () => {
    await fill();
    const result = await waiting(await newSession("capped"), "1m");
    const elapsed = result.endedAt - result.sentAt;
    assert.equal(result.code, Code.ResourceExhausted);
    assert.ok(elapsed >= maxWaitMs && elapsed <= maxWaitMs + deadlineSlackMs, `answered after ${elapsed.toFixed(1)} ms`);
  });

  it("answers DEADLINE_EXCEEDED within 50 ms of each waiter's deadline, and never gives it an instance", async () => {
    const [h1] = await fill();
    const sessions = await Promise.all([300, 500, 700].map(async (ms) => ({ ms, s: await newSession(`deadline-${ms}`) })));
    const results = await Promise.all(sessions.map(({ ms, s }) => waiting(s, "10s", { "grpc-timeout": `${ms}m` })));
    for (const [i, result] of results.entries()) {
      const { ms } = sessions[i] as { ms: number };
      const elapsed = result.endedAt - result.sentAt;
      assert.equal(result.code, Code.DeadlineExceeded, `${ms} ms: ${result.code} ${result.message}`);
      assert.ok(elapsed >= ms && elapsed <= ms + deadlineSlackMs, `deadline ${ms} ms answered after ${elapsed.toFixed(1)} ms`);
    }
    assert.equal((await listQueue()).entries.length, 0);
    // An instance frees now: nobody of them may get it.
    await shutdown(h1 as TestSession);
    await new Promise((r) => setTimeout(r, 500));
    for (const { s } of sessions) assert.ok(!boundSessions().has(s.id), `${s.id} never reached an instance`);
    assert.ok(stack.snapshot().leases.every((l) => !sessions.some(({ s }) => s.id === l.session_id)));
  });

  it("takes a cancelled waiter out of the queue at once; the instance goes to the next", async () => {
    const [h1] = await fill();
    const gone = await newSession("cancelled");
    const next = await newSession("next");
    const abort = new AbortController();
    const cancelled = waiting(gone, "10s", {}, abort.signal);
    await queued(1);
    const after = waiting(next, "10s");
    await queued(2);
    abort.abort();
    const aborted = performance.now();
    assert.equal((await cancelled).code, -1);
    await waitUntil(async () => (await listQueue()).entries.length === 1, 1000, "the entry gone");
    const left = performance.now() - aborted;
    await shutdown(h1 as TestSession);
    const granted = await after;
    assert.equal(granted.code, 0);
    assert.equal(granted.headers["x-queue-position"], "2");
    assert.ok(!boundSessions().has(gone.id));
    assert.ok(left < 500, `entry removed ${left.toFixed(0)} ms after the cancel`);
  });

  it("refuses at once with x-queue-full: true when QUEUE_MAX_LENGTH entries wait", async () => {
    await fill();
    const abort = new AbortController();
    const waiters = await Promise.all(Array.from({ length: maxLength }, (_, i) => newSession(`full-${i}`)));
    const pending = waiters.map((w) => waiting(w, "10s", {}, abort.signal));
    await queued(maxLength);
    const extra = await newSession("one-too-many");
    const refused = await waiting(extra, "10s");
    assert.equal(refused.code, Code.ResourceExhausted);
    assert.equal(refused.message, "all instances are busy");
    const trailers = { ...refused.headers, ...refused.trailers };
    assert.equal(trailers["x-queue-full"], "true");
    assert.ok(Number(trailers["retry-after-ms"]) > 0);
    assert.ok(refused.endedAt - refused.sentAt < 1000, "at once");
    assert.equal((await listQueue()).entries.length, maxLength, "not queued");
    abort.abort();
    await Promise.all(pending);
  });

  it("refuses bad x-wait-for-instance values with INVALID_ARGUMENT and a clear message; nothing is queued", async () => {
    await fill();
    const cases: [string, RegExp][] = [
      ["abc", /x-wait-for-instance: "abc" is not a duration/],
      ["-1s", /x-wait-for-instance: "-1s" is not a duration/],
      ["", /x-wait-for-instance: "" is not a duration/],
      ["0s", /is not a duration: expected a positive duration/],
      ["1".repeat(10_000), /x-wait-for-instance is too long \(10000 characters\)/],
    ];
    for (const [value, message] of cases) {
      for (const path of [echoPath, subscribePath]) {
        const s = await newSession("bad-header");
        const result = await client.call(path, { ...s.headers, "x-wait-for-instance": value });
        assert.equal(result.code, Code.InvalidArgument, `${JSON.stringify(value.slice(0, 20))} on ${path}`);
        assert.match(result.message, message);
      }
    }
    assert.equal((await listQueue()).entries.length, 0);
  });

  it("leaves a call without the header unchanged: busy at once while others wait, with exactly the trailers it always had", async () => {
    const [h1] = await fill();
    const before = await client.call(echoPath, (await newSession("plain-before")).headers);
    const w = await newSession("w");
    const pending = waiting(w, "10s");
    await queued(1);
    const plain = await newSession("plain");
    const during = await client.call(echoPath, plain.headers);
    for (const result of [before, during]) {
      assert.equal(result.code, Code.ResourceExhausted);
      assert.equal(result.message, "all instances are busy");
      assert.ok(result.endedAt - result.sentAt < 1000);
    }
    const names = (r: CallResult) => Object.keys({ ...r.headers, ...r.trailers }).sort();
    assert.deepEqual(names(during), names(before));
    assert.deepEqual(names(during), [
      ":status",
      "content-type",
      "date",
      "grpc-message",
      "grpc-status",
      "grpc-status-details-bin",
      "retry-after-ms",
    ]);
    assert.equal(during.headers["retry-after-ms"], "1000");
    // The freed instance belongs to the head of the queue: the newcomer keeps getting busy.
    await shutdown(h1 as TestSession);
    let granted: CallResult | undefined;
    void pending.then((r) => {
      granted = r;
    });
    while (granted === undefined) {
      const attempt = await client.call(echoPath, plain.headers);
      assert.equal(attempt.code, Code.ResourceExhausted, "a newcomer without the header never passes the waiter");
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(granted.code, 0);
    assert.equal(granted.reply?.serverSessionId, w.id);
  });

  it("lets a second waiting call of the same session join its place", async () => {
    const [h1] = await fill();
    const w = await newSession("twice");
    const one = waiting(w, "10s");
    await queued(1);
    const two = waiting(w, "10s");
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await listQueue()).entries.length, 1, "one entry");
    await shutdown(h1 as TestSession);
    const [a, b] = await Promise.all([one, two]);
    assert.equal(a.code, 0);
    assert.equal(b.code, 0);
    assert.equal(a.reply?.podName, b.reply?.podName);
    assert.equal(a.headers["x-queue-position"], "1");
    assert.equal(b.headers["x-queue-position"], "1");
  });

  it("waits on Subscribe too: the first message comes from the granted instance", async () => {
    const [h1] = await fill();
    const w = await newSession("subscribe");
    const abort = new AbortController();
    const sub = client.call(subscribePath, { ...w.headers, "x-wait-for-instance": "10s" }, "s", { signal: abort.signal });
    await queued(1);
    await shutdown(h1 as TestSession);
    // The lean instance answers Subscribe UNIMPLEMENTED: the answer shows the call reached it.
    const result = await sub;
    assert.equal(result.code, Code.Unimplemented, `${result.code} ${result.message}`);
    assert.match(result.message, /not implemented by the lean bench instance/);
    assert.equal(result.headers["x-queue-position"], "1");
    holding.push(w);
  });

  it("answers GetPosition with the caller's own token and session-id: position, length, estimate", async () => {
    await fill();
    const api = createClient(WaitingRoom, createGrpcTransport({ baseUrl: `http://${stack.gateways[0]?.address}` }));
    const abort = new AbortController();
    const abortFirst = new AbortController();
    const w1 = await newSession("pos-1");
    const w2 = await newSession("pos-2");
    const p1 = waiting(w1, "10s", {}, AbortSignal.any([abort.signal, abortFirst.signal]));
    await queued(1);
    const p2 = waiting(w2, "10s", {}, abort.signal);
    await queued(2);
    await new Promise((r) => setTimeout(r, 50));
    const pos = await api.getPosition({}, { headers: w2.headers });
    assert.equal(pos.waiting, true);
    assert.equal(pos.position, 2);
    assert.equal(pos.entryPosition, 2);
    assert.equal(pos.queueLength, 2);
    assert.ok(pos.waited !== undefined && durationMs(pos.waited) >= 50);
    assert.equal(pos.hasInstance, false);
    // Earlier tests granted: an estimate exists, twice the mean interval for position 2.
    const { meanGrantInterval } = await listQueue();
    assert.ok(meanGrantInterval !== undefined && pos.estimatedWait !== undefined);
    // ListQueue rounds the mean to whole milliseconds: the estimate may differ by a rounding.
    assert.ok(
      Math.abs(durationMs(pos.estimatedWait) - 2 * durationMs(meanGrantInterval)) <= 2,
      `estimate ${durationMs(pos.estimatedWait)} ms`,
    );
    const outsider = await newSession("outsider");
    const notWaiting = await api.getPosition({}, { headers: outsider.headers });
    assert.equal(notWaiting.waiting, false);
    assert.equal(notWaiting.position, 0);
    assert.equal(notWaiting.queueLength, 2);
    // Authenticated exactly as MyService calls: session-id first, then the token.
    const refusal = async (headers: Record<string, string>) => {
      try {
        await api.getPosition({}, { headers });
      } catch (error) {
        assert.ok(error instanceof ConnectError);
        return [error.code, error.rawMessage];
      }
      assert.fail("expected a refusal");
    };
    assert.deepEqual(await refusal({ authorization: w1.token }), [Code.Unauthenticated, "missing session-id"]);
    assert.deepEqual(await refusal({ "session-id": w1.id, authorization: "garbage" }), [Code.Unauthenticated, "missing or invalid token"]);
    assert.deepEqual(await refusal({ "session-id": w1.id, authorization: w2.token }), [Code.Unauthenticated, "missing or invalid token"]);
    const foreign = { "session-id": w1.id, authorization: await tokenFor(w1.id, "OtherUser") };
    assert.deepEqual(await refusal(foreign), [Code.PermissionDenied, `session ${w1.id} belongs to another user`]);
    // The one ahead leaves: w2 moves up; its position at entry stays.
    abortFirst.abort();
    await p1;
    await waitUntil(async () => (await api.getPosition({}, { headers: w2.headers })).position === 1, 2000, "w2 first");
    const moved = await api.getPosition({}, { headers: w2.headers });
    assert.equal(moved.entryPosition, 2);
    assert.equal(moved.queueLength, 1);
    abort.abort();
    await p2;
  });

  it("waits the same way over the Connect protocol (JSON over HTTP/1.1), deadline and queue headers included", async () => {
    const [h1] = await fill();
    const base = `http://${stack.gateways[0]?.address}`;
    const post = (s: TestSession, headers: Record<string, string>) =>
      fetch(`${base}/my_service.MyServiceAPI/MyServiceEcho`, {
        method: "POST",
        headers: { "content-type": "application/json", "connect-protocol-version": "1", ...s.headers, ...headers },
        body: JSON.stringify({ value: "connect" }),
      });
    const late = await newSession("connect-deadline");
    const started = performance.now();
    const timedOut = await post(late, { "x-wait-for-instance": "10s", "connect-timeout-ms": "300" });
    const elapsed = performance.now() - started;
    assert.equal(timedOut.status, 504);
    assert.equal(((await timedOut.json()) as { code: string }).code, "deadline_exceeded");
    assert.ok(elapsed >= 300 && elapsed <= 300 + deadlineSlackMs + 50, `answered after ${elapsed.toFixed(1)} ms`);
    const w = await newSession("connect");
    const pending = post(w, { "x-wait-for-instance": "10s" });
    await queued(1);
    await shutdown(h1 as TestSession);
    const granted = await pending;
    assert.equal(granted.status, 200);
    assert.equal(granted.headers.get("x-queue-position"), "1");
    assert.ok(Number(granted.headers.get("x-queue-wait-ms")) >= 0);
    assert.equal(((await granted.json()) as { serverSessionId: string }).serverSessionId, w.id);
    holding.push(w);
    assert.ok(!boundSessions().has(late.id));
  });

  it("exposes mygateway_queue_length and mygateway_queue_wait_seconds by result, passing promtool check metrics", async () => {
    await fill();
    const abort = new AbortController();
    const w = await newSession("metrics");
    const pending = waiting(w, "10s", {}, abort.signal);
    await queued(1);
    const text = await (await fetch(`http://${stack.gateways[0]?.address}/metrics`)).text();
    assert.match(text, /^mygateway_queue_length 1$/m);
    for (const result of ["granted", "timeout", "deadline", "cancelled", "full"]) {
      assert.match(text, new RegExp(`^mygateway_queue_wait_seconds_count\\{result="${result}"\\} [1-9]`, "m"), `result ${result}`);
    }
    abort.abort();
    await pending;
    if (promtool !== undefined) {
      const out = await new Promise<{ code: number | null; text: string }>((resolve) => {
        const child = execFile(promtool, ["check", "metrics"], (error, stdout, stderr) =>
          resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, text: stdout + stderr }),
        );
        child.stdin?.end(text);
      });
      assert.equal(out.code, 0, out.text);
    } else if (process.env.CI) assert.fail("CI needs promtool");
  });
});
