// Whole-system tests (tier 4): real gateway and myservice processes under the launcher, a real
// SQLite file, real signals. SPEC 4.3–4.8.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import Database from "better-sqlite3";
import { transferHeaders } from "../gateway/routing/session-router.js";
import { MyServiceAPI } from "../gen/my_service/my_service_pb.js";
import { echo, errorOf, type GatewayClient, gatewayClient, login, retryHintOf, retryWhile, sleep } from "./e2e-client.js";
import { type Stack, startStack } from "./stack.js";

const usersFile = join(import.meta.dirname, "fixtures", "users.json");
const busy = { code: Code.ResourceExhausted, message: "all instances are busy" };
const unavailable = { code: Code.Unavailable, message: "backend service unavailable" };
// While instances recycle after a Shutdown (process exit and restart) a new lease may get
// RESOURCE_EXHAUSTED (restarting, not yet clean) or UNAVAILABLE (all declared dead meanwhile).
const capacity = [Code.ResourceExhausted, Code.Unavailable];

async function withStack(env: Record<string, string>, instances = 3): Promise<{ stack: Stack; client: GatewayClient }> {
  const stack = await startStack({
    instances,
    env: { USERS_FILE: usersFile, HEALTH_CHECK_INTERVAL: "250ms", HEALTH_CHECK_TIMEOUT: "500ms", ...env },
  });
  return { stack, client: gatewayClient(stack.gatewayUrl) };
}

async function podProcess(stack: Stack, pod: string) {
  const p = (await stack.processes()).find((x) => x.podName === pod);
  assert.ok(p, `no process for pod ${pod}`);
  return p;
}

/** Waits until every instance is free and allocatable again (recycling done). */
const settle = (stack: Stack) => stack.waitAllFree();

async function waitGatewayRestarted(stack: Stack, restartsBefore: number) {
  await stack.waitFor((ps) => ps.some((p) => p.kind === "gateway" && p.state === "running" && p.restarts > restartsBefore), 15_000);
}

describe("gateway with 3 instances", () => {
  let stack: Stack;
  let client: GatewayClient;
  before(async () => {
    ({ stack, client } = await withStack({}));
  });
  after(async () => {
    client?.close();
    await stack?.stop();
  });

  it("gives each of 3 sessions its own instance and the 4th RESOURCE_EXHAUSTED 'all instances are busy'", async () => {
    const sessions = await Promise.all([1, 2, 3].map(() => login(client, "busy")));
    const pods = [];
    for (const s of sessions) {
      const reply = await retryWhile(capacity, () => echo(client, s, "x"));
      assert.equal(reply.serverSessionId, s.id);
      assert.equal(reply.clientSessionId, s.id);
      assert.equal(reply.clientValue, "x");
      assert.equal(reply.serverValue, "my_service");
      assert.equal(reply.serverMethod, "MyServiceEcho");
      assert.equal(reply.index, 0);
      pods.push(reply.podName);
    }
    assert.equal(new Set(pods).size, 3, `pods must differ: ${pods}`);
    const fourth = await login(client, "fourth");
    const refused = await errorOf(echo(client, fourth));
    assert.deepEqual(pick(refused), busy);
    retryHintOf(refused);
    // The same refusal over the Connect protocol (HTTP/1.1, served by connect-node, not the relay).
    const viaConnect = await errorOf(
      createClient(MyServiceAPI, createConnectTransport({ baseUrl: stack.gatewayUrl, httpVersion: "1.1" })).myServiceEcho(
        { value: "x" },
        { headers: fourth.headers },
      ),
    );
    assert.deepEqual(pick(viaConnect), busy);
    retryHintOf(viaConnect);
    assert.deepEqual(
      pick(await errorOf(client.api.myServiceSubscribe({ value: "x" }, { headers: fourth.headers })[Symbol.asyncIterator]().next())),
      busy,
    );
    // The fourth session was never leased: its Shutdown is answered by the gateway.
    assert.deepEqual(pick(await errorOf(client.api.myServiceShutdown({}, { headers: fourth.headers }))), {
      code: Code.PermissionDenied,
      message: "Server session is not set",
    });
    for (const [i, s] of sessions.entries()) {
      const reply = await client.api.myServiceShutdown({}, { headers: s.headers });
      assert.equal(reply.podName, pods[i]);
      assert.equal(reply.serverSessionId, s.id);
      assert.equal(reply.serverMethod, "MyServiceShutdown");
    }
  });

  it("keeps each session on its instance (sticky) across interleaved calls", async () => {
    const [a, b] = [await login(client, "sticky"), await login(client, "sticky")];
    const podA = (await retryWhile(capacity, () => echo(client, a))).podName;
    const podB = (await retryWhile(capacity, () => echo(client, b))).podName;
    assert.notEqual(podA, podB);
    for (let round = 0; round < 10; round++) {
      // A fresh connection per round: stickiness comes from the lease, not the connection.
      const c = gatewayClient(stack.gatewayUrl);
      assert.equal((await echo(c, a)).podName, podA);
      assert.equal((await echo(c, b)).podName, podB);
      c.close();
    }
    await client.api.myServiceShutdown({}, { headers: a.headers });
    await client.api.myServiceShutdown({}, { headers: b.headers });
  });

  it("releases the lease on Shutdown; the session continues on a different instance, which is recycled", async () => {
    await settle(stack);
    const s = await login(client, "transfer");
    const first = await echo(client, s);
    const restartsBefore = (await podProcess(stack, first.podName)).restarts;
    const down = await client.api.myServiceShutdown({}, { headers: s.headers });
    assert.equal(down.podName, first.podName);
    const second = await echo(client, s);
    assert.notEqual(second.podName, first.podName, "while other instances are free, it lands elsewhere");
    assert.equal(second.serverSessionId, s.id);
    // The instance exited 0 after its reply and its supervisor restarted it.
    await stack.waitFor((ps) => ps.some((p) => p.podName === first.podName && p.restarts > restartsBefore && p.state === "running"));
    await client.api.myServiceShutdown({}, { headers: s.headers });
  });

  it("relays Subscribe message by message; a cancel ends it and the session stays usable", async () => {
    const s = await login(client, "sub");
    const pod = (await retryWhile(capacity, () => echo(client, s))).podName;
    const controller = new AbortController();
    const got: { index: number; pod: string; method: string }[] = [];
    for await (const m of client.api.myServiceSubscribe({ value: "sv" }, { headers: s.headers, signal: controller.signal })) {
      assert.equal(m.clientValue, "sv");
      got.push({ index: m.index, pod: m.podName, method: m.serverMethod });
      if (got.length === 3) break;
    }
    controller.abort();
    assert.deepEqual(
      got.map((g) => g.index),
      [0, 1, 2],
    );
    assert.ok(got.every((g) => g.pod === pod && g.method === "MyServiceSubscribe"));
    assert.equal((await echo(client, s)).podName, pod);
    await client.api.myServiceShutdown({}, { headers: s.headers });
  });

  it("authenticates in the spec's order with the spec's messages", async () => {
    const s = await login(client, "auth");
    const other = await login(client, "auth-other");
    const cases: [Record<string, string>, { code: Code; message: string }][] = [
      [{}, { code: Code.Unauthenticated, message: "missing session-id" }],
      [{ authorization: "garbage" }, { code: Code.Unauthenticated, message: "missing session-id" }],
      [{ "session-id": s.id }, { code: Code.Unauthenticated, message: "missing or invalid token" }],
      [
        { "session-id": s.id, authorization: "garbage" },
        { code: Code.Unauthenticated, message: "missing or invalid token" },
      ],
      [
        { "session-id": s.id, authorization: other.token },
        { code: Code.Unauthenticated, message: "missing or invalid token" },
      ],
      [
        { "session-id": s.id, authorization: `Bearer ${other.token}` },
        { code: Code.Unauthenticated, message: "missing or invalid token" },
      ],
    ];
    for (const [headers, expected] of cases) {
      assert.deepEqual(
        pick(await errorOf(client.api.myServiceEcho({ value: "x" }, { headers }))),
        expected,
        JSON.stringify(Object.keys(headers)),
      );
    }
    // `Bearer <token>` is accepted too.
    const reply = await retryWhile(capacity, () =>
      client.api.myServiceEcho({ value: "b" }, { headers: { "session-id": s.id, authorization: `Bearer ${s.token}` } }),
    );
    assert.equal(reply.serverSessionId, s.id);
    await client.api.myServiceShutdown({}, { headers: s.headers });
  });

  it("refuses a session leased by another user with PERMISSION_DENIED before it reaches the instance", async () => {
    const mine = await login(client, "owner");
    const pod = (await retryWhile(capacity, () => echo(client, mine))).podName;
    const intruder = await client.api.login({ username: "OtherUser", password: "OtherPassword", sessionId: mine.id });
    assert.equal(intruder.role, "user");
    const headers = { authorization: intruder.token, "session-id": mine.id };
    const err = await errorOf(client.api.myServiceEcho({ value: "x" }, { headers }));
    assert.equal(err.code, Code.PermissionDenied);
    assert.match(err.message, /belongs to another user/);
    assert.equal((await errorOf(client.api.myServiceShutdown({}, { headers }))).code, Code.PermissionDenied);
    assert.equal((await echo(client, mine)).podName, pod, "the owner's session is untouched");
    await client.api.myServiceShutdown({}, { headers: mine.headers });
  });

  it("answers UNIMPLEMENTED for a method it does not serve (grpc-js client)", async () => {
    const grpc = await import("@grpc/grpc-js");
    const raw = new grpc.Client(stack.gatewayAddress, grpc.credentials.createInsecure());
    try {
      for (const path of ["/my_service.MyServiceAPI/NoSuchMethod", "/no.such.Service/Call"]) {
        const code = await new Promise<number>((resolve) => {
          raw.makeUnaryRequest(
            path,
            (b: Buffer) => b,
            (b: Buffer) => b,
            Buffer.alloc(0),
            (error) => resolve(error?.code ?? 0),
          );
        });
        assert.equal(code, Code.Unimplemented, path);
      }
    } finally {
      raw.close();
    }
  });

  it("serves Login and Echo over the Connect protocol on HTTP/1.1 with the same routing", async () => {
    const connect = createClient(MyServiceAPI, createConnectTransport({ baseUrl: stack.gatewayUrl, httpVersion: "1.1" }));
    const reply = await connect.login({ username: "TestUser", password: "TestPassword", sessionId: `connect-${Date.now()}` });
    const decoded = JSON.parse(Buffer.from(reply.token.split(".")[1] as string, "base64url").toString());
    const headers = { authorization: reply.token, "session-id": decoded.session_id };
    const viaConnect = await retryWhile(capacity, () => connect.myServiceEcho({ value: "c" }, { headers }));
    const viaGrpc = await client.api.myServiceEcho({ value: "g" }, { headers });
    assert.equal(viaConnect.podName, viaGrpc.podName);
    assert.equal((await connect.myServiceShutdown({}, { headers })).podName, viaGrpc.podName);
    const login = await errorOf(connect.login({ username: "", password: "", sessionId: "x" }));
    assert.deepEqual(pick(login), { code: Code.InvalidArgument, message: "username is required" });
  });
});

describe("gateway message size limit", () => {
  let stack: Stack;
  let client: GatewayClient;
  before(async () => {
    ({ stack, client } = await withStack({ MAX_MESSAGE_BYTES: "65536" }, 1));
  });
  after(async () => {
    client?.close();
    await stack?.stop();
  });

  it("refuses a request larger than MAX_MESSAGE_BYTES with RESOURCE_EXHAUSTED and keeps serving", async () => {
    const s = await login(client, "size");
    const err = await errorOf(echo(client, s, "x".repeat(200_000)));
    assert.equal(err.code, Code.ResourceExhausted);
    assert.match(err.message, /larger than max/);
    assert.equal((await echo(client, s, "y".repeat(60_000))).clientValue.length, 60_000);
    await client.api.myServiceShutdown({}, { headers: s.headers });
  });
});

describe("lease expiry (LEASE_IDLE_TTL=2s)", () => {
  let stack: Stack;
  let client: GatewayClient;
  before(async () => {
    ({ stack, client } = await withStack({ LEASE_IDLE_TTL: "2s" }, 2));
  });
  after(async () => {
    client?.close();
    await stack?.stop();
  });

  it("keeps a lease alive while its Subscribe stream is open, longer than the TTL", async () => {
    await settle(stack);
    const s = await login(client, "alive");
    const controller = new AbortController();
    const pods = new Set<string>();
    const started = Date.now();
    for await (const m of client.api.myServiceSubscribe({ value: "x" }, { headers: s.headers, signal: controller.signal })) {
      pods.add(m.podName);
      if (Date.now() - started > 3500) break;
    }
    controller.abort();
    assert.equal(pods.size, 1, "the stream stayed on one instance");
    const reply = await echo(client, s);
    assert.ok(pods.has(reply.podName), "the lease survived the open stream");
    assert.equal(reply.responseHeaders.get(transferHeaders.reason), null);
    await client.api.myServiceShutdown({}, { headers: s.headers });
  });

  it("expires an idle lease, recycles its instance, and moves the session on its next call", async () => {
    const s = await login(client, "idle");
    const first = await retryWhile(capacity, () => echo(client, s));
    const restartsBefore = (await podProcess(stack, first.podName)).restarts;
    // The sweeper (not the next call) expires the lease and shuts the instance down.
    await stack.waitFor((ps) => ps.some((p) => p.podName === first.podName && p.restarts > restartsBefore), 10_000);
    const next = await retryWhile(capacity, () => echo(client, s));
    assert.equal(next.serverSessionId, s.id);
    assert.equal(next.responseHeaders.get(transferHeaders.reason), "expired");
    assert.equal(next.responseHeaders.get(transferHeaders.from), first.podName);
    await client.api.myServiceShutdown({}, { headers: s.headers });
  });
});

describe("token expiry (TOKEN_EXPIRATION=2s)", () => {
  let stack: Stack;
  let client: GatewayClient;
  before(async () => {
    ({ stack, client } = await withStack({ TOKEN_EXPIRATION: "2s" }, 2));
  });
  after(async () => {
    client?.close();
    await stack?.stop();
  });

  it("does not end the lease: after a new Login with the same session id the session continues on its instance", async () => {
    const s = await login(client, "token-expiry");
    const first = await echo(client, s);
    const exp = JSON.parse(Buffer.from(s.token.split(".")[1] as string, "base64url").toString()).exp as number;
    await sleep(Math.max(0, exp * 1000 - Date.now()) + 500);
    assert.deepEqual(pick(await errorOf(echo(client, s))), { code: Code.Unauthenticated, message: "missing or invalid token" });
    const again = await client.api.login({ username: "TestUser", password: "TestPassword", sessionId: s.id });
    const headers = { authorization: again.token, "session-id": s.id };
    const next = await client.api.myServiceEcho({ value: "again" }, { headers });
    assert.equal(next.podName, first.podName);
    assert.equal(next.serverSessionId, s.id);
    await client.api.myServiceShutdown({}, { headers });
  });
});

describe("durability and instance failure", () => {
  let stack: Stack;
  let client: GatewayClient;
  before(async () => {
    ({ stack, client } = await withStack({ HEALTH_CHECK_INTERVAL: "300ms", HEALTH_CHECK_TIMEOUT: "300ms" }));
  });
  beforeEach(() => settle(stack));
  after(async () => {
    client?.close();
    await stack?.stop();
  });

  it("keeps every session on its instance across a graceful restart and a kill -9 of the gateway", async () => {
    const sessions = await Promise.all([1, 2, 3].map(() => login(client, "durable")));
    const pods = new Map<string, string>();
    for (const s of sessions) pods.set(s.id, (await retryWhile(capacity, () => echo(client, s))).podName);
    for (const action of ["graceful", "kill"] as const) {
      const before = (await stack.processes()).find((p) => p.kind === "gateway")?.restarts ?? 0;
      if (action === "kill") await stack.control("gateway", "kill");
      else {
        await stack.control("gateway", "stop");
        await stack.control("gateway", "start");
      }
      await stack.waitFor(
        (ps) => ps.some((p) => p.kind === "gateway" && p.state === "running" && (action === "graceful" || p.restarts > before)),
        15_000,
      );
      const c = gatewayClient(stack.gatewayUrl);
      for (const s of sessions) {
        const reply = await retryWhile([Code.Unavailable], () => echo(c, s), 15_000);
        assert.equal(reply.podName, pods.get(s.id), `${action}: ${s.id} stays on its pod`);
        assert.equal(reply.responseHeaders.get(transferHeaders.reason), null);
      }
      c.close();
    }
    for (const s of sessions) await client.api.myServiceShutdown({}, { headers: s.headers });
  });

  it("releases a lease whose instance restarted while the gateway was down; the session moves and is told", async () => {
    const s = await login(client, "stale");
    const first = await retryWhile(capacity, () => echo(client, s));
    const name = (await podProcess(stack, first.podName)).name;
    await stack.control("gateway", "stop");
    const restarts = (await podProcess(stack, first.podName)).restarts;
    await stack.control(name, "kill");
    await stack.waitFor((ps) => ps.some((p) => p.name === name && p.state === "running" && p.restarts > restarts));
    await stack.control("gateway", "start");
    await stack.waitFor((ps) => ps.some((p) => p.kind === "gateway" && p.state === "running"));
    const c = gatewayClient(stack.gatewayUrl);
    const next = await retryWhile([Code.Unavailable, Code.ResourceExhausted], () => echo(c, s), 15_000);
    assert.notEqual(next.podName, first.podName, "lands on another instance");
    assert.equal(next.responseHeaders.get(transferHeaders.from), first.podName);
    assert.equal(next.responseHeaders.get(transferHeaders.reason), "instance-restarted");
    await c.api.myServiceShutdown({}, { headers: s.headers });
    c.close();
  });

  it("continues an open Subscribe from another instance when its instance is killed", async () => {
    const s = await login(client, "stream-kill");
    const pod = (await retryWhile(capacity, () => echo(client, s))).podName;
    const name = (await podProcess(stack, pod)).name;
    const controller = new AbortController();
    const seen: { index: number; pod: string }[] = [];
    let killed = false;
    for await (const m of client.api.myServiceSubscribe(
      { value: "k" },
      { headers: s.headers, signal: controller.signal, timeoutMs: 20_000 },
    )) {
      seen.push({ index: m.index, pod: m.podName });
      if (!killed && seen.length === 3) {
        killed = true;
        await stack.control(name, "kill");
      }
      if (m.podName !== pod && m.index >= 2) break;
    }
    controller.abort();
    const after = seen.filter((m) => m.pod !== pod);
    assert.ok(after.length >= 3, `the stream continued on another pod: ${JSON.stringify(seen)}`);
    assert.equal(after[0]?.index, 0, "its index restarts at 0");
    const reply = await echo(client, s);
    assert.equal(reply.podName, after[0]?.pod, "the session now lives on the new instance");
    await client.api.myServiceShutdown({}, { headers: s.headers });
  });

  it("moves an idle session whose instance was killed, and says so on its next call", async () => {
    const s = await login(client, "idle-kill");
    const first = await echo(client, s);
    const proc = await podProcess(stack, first.podName);
    await stack.control(proc.name, "kill");
    await stack.waitFor((ps) => ps.some((p) => p.name === proc.name && p.state === "running" && p.restarts > proc.restarts));
    const next = await retryWhile(capacity, () => echo(client, s), 15_000);
    assert.notEqual(next.podName, first.podName);
    assert.equal(next.serverSessionId, s.id);
    assert.equal(next.responseHeaders.get(transferHeaders.from), first.podName);
    assert.equal(next.responseHeaders.get(transferHeaders.to), next.podName);
    assert.match(next.responseHeaders.get(transferHeaders.reason) ?? "", /^instance-(restarted|lost)$/);
    await client.api.myServiceShutdown({}, { headers: s.headers });
  });

  it("bounds a call to a hung instance: the client's deadline holds, and without one the session moves", async () => {
    const s = await login(client, "hung");
    const first = await echo(client, s);
    const proc = await podProcess(stack, first.podName);
    await stack.signal(proc.name, "SIGSTOP");
    try {
      const started = Date.now();
      const err = await errorOf(client.api.myServiceEcho({ value: "x" }, { headers: s.headers, timeoutMs: 400 }));
      assert.equal(err.code, Code.DeadlineExceeded);
      assert.ok(Date.now() - started < 2000, `the deadline held (${Date.now() - started} ms)`);
      // No deadline: the gateway declares the instance dead (3 failed probes) and moves the call.
      const moved = Date.now();
      const next = await echo(client, s);
      process.stdout.write(`# hung instance: call moved after ${Date.now() - moved} ms\n`);
      assert.notEqual(next.podName, first.podName);
      assert.equal(next.responseHeaders.get(transferHeaders.reason), "instance-lost");
      assert.equal(next.responseHeaders.get(transferHeaders.from), first.podName);
    } finally {
      await stack.signal(proc.name, "SIGCONT");
    }
    // The hung instance comes back holding a session no lease knows: it is recycled.
    await stack.waitFor((ps) => ps.some((p) => p.name === proc.name && p.restarts > proc.restarts), 15_000);
    await client.api.myServiceShutdown({}, { headers: s.headers });
  });

  it("answers UNAVAILABLE within seconds when every instance hangs, and recovers by itself", async () => {
    // Every instance healthy and free first.
    const warm = await Promise.all([1, 2, 3].map(() => login(client, "warm")));
    for (const s of warm) await retryWhile(capacity, () => echo(client, s), 20_000);
    for (const s of warm) await client.api.myServiceShutdown({}, { headers: s.headers });
    await sleep(500);
    await settle(stack);
    await stack.signal("instances", "SIGSTOP");
    try {
      const started = Date.now();
      const s = await login(client, "hang");
      let last: { code: number; message: string } | undefined;
      while (Date.now() - started < 15_000) {
        last = pick(
          await errorOf(client.api.myServiceEcho({ value: "x" }, { headers: s.headers, timeoutMs: 3000 })).catch(() => ({
            code: -1,
            message: "ok",
            metadata: new Headers(),
          })),
        );
        if (last.code === Code.Unavailable) break;
      }
      assert.deepEqual(last, unavailable);
      process.stdout.write(`# UNAVAILABLE after ${Date.now() - started} ms with every instance stopped\n`);
    } finally {
      await stack.signal("instances", "SIGCONT");
    }
    const resumed = Date.now();
    const s = await login(client, "resume");
    const reply = await retryWhile([Code.Unavailable, Code.ResourceExhausted], () => echo(client, s), 20_000);
    assert.equal(reply.serverSessionId, s.id);
    process.stdout.write(`# service resumed ${Date.now() - resumed} ms after SIGCONT\n`);
    await client.api.myServiceShutdown({}, { headers: s.headers });
  });
});

describe("gateway kill -9 during a burst of new sessions", () => {
  let stack: Stack;
  let client: GatewayClient;
  before(async () => {
    ({ stack, client } = await withStack({}, 6));
  });
  after(async () => {
    client?.close();
    await stack?.stop();
  });

  it("loses no lease and never leases an instance twice", async () => {
    const sessions = await Promise.all(Array.from({ length: 12 }, () => login(client, "burst")));
    const restarts = (await stack.processes()).find((p) => p.kind === "gateway")?.restarts ?? 0;
    const results = new Map<string, string>();
    const calls = sessions.map(async (s, i) => {
      await sleep(i * 15);
      try {
        results.set(s.id, (await echo(client, s)).podName);
      } catch {}
    });
    await sleep(60);
    await stack.control("gateway", "kill");
    await Promise.all(calls);
    await waitGatewayRestarted(stack, restarts);
    const c = gatewayClient(stack.gatewayUrl);
    // Every session that got an answer before the kill is still on its instance.
    for (const [id, pod] of results) {
      const s = sessions.find((x) => x.id === id)!;
      assert.equal((await retryWhile([Code.Unavailable], () => echo(c, s), 15_000)).podName, pod);
    }
    const db = new Database(join(stack.dataDir, "leases.db"), { readonly: true });
    const leases = db.prepare("SELECT session_id, instance_address, pod_name FROM leases").all() as {
      session_id: string;
      instance_address: string;
      pod_name: string;
    }[];
    const instances = db.prepare("SELECT address, session_id FROM instances WHERE session_id IS NOT NULL").all() as {
      address: string;
      session_id: string;
    }[];
    db.close();
    assert.ok(leases.length <= 6, `at most one lease per instance: ${leases.length}`);
    assert.equal(new Set(leases.map((l) => l.instance_address)).size, leases.length, "no instance leased twice");
    for (const l of leases) assert.ok(instances.some((i) => i.address === l.instance_address && i.session_id === l.session_id));
    // Every lease still routes to an instance bound to that very session (no Session conflict).
    for (const l of leases) {
      const s = sessions.find((x) => x.id === l.session_id)!;
      const reply = await echo(c, s);
      assert.equal(reply.serverSessionId, s.id);
      assert.equal(reply.podName, l.pod_name);
    }
    c.close();
  });
});

function pick(e: { code: number; message: string }) {
  return { code: e.code, message: e.message };
}
