// Scale-out (issue 12, SPEC 10): real gateway processes sharing a real PostgreSQL server (a
// temporary one per suite, which the tests stop and start), real instances, real kills.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import pg from "pg";
import type { EchoResponse } from "../gen/my_service/my_service_pb.js";
import { type GatewayClient, gatewayClient } from "./e2e-client.js";
import { postgresSkipReason, stopTempPostgres, type TempPostgres, tempPostgres } from "./lease-store-engines.js";
import { codeName, countBy, figure, instanceStatus, mintHeaders, outcome, sleep, usersFile } from "./reliability/helpers.js";
import { type Stack, startStack } from "./stack.js";

const skip = postgresSkipReason();
if (skip !== undefined && process.env.CI) throw new Error(`CI needs the scale-out tests: ${skip}`);

const instances = 6;
const racers = Number(process.env.CONTENTION_SESSIONS ?? 500);

interface PgLease {
  session_id: string;
  instance_address: string;
  pod_name: string;
  instance_boot_id: string;
}

/** Reads the shared store and checks its invariants: no instance leased twice, both sides agree. */
async function checkPostgres(url: string): Promise<{ leases: PgLease[] }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const leases = (await client.query<PgLease>("SELECT session_id, instance_address, pod_name, instance_boot_id FROM leases")).rows;
    const rows = (await client.query<{ address: string; session_id: string | null }>("SELECT address, session_id FROM instances")).rows;
    const problems: string[] = [];
    const byAddress = new Map(rows.map((r) => [r.address, r]));
    if (new Set(leases.map((l) => l.instance_address)).size !== leases.length) problems.push("an instance is leased twice");
    for (const l of leases) {
      if (byAddress.get(l.instance_address)?.session_id !== l.session_id) problems.push(`lease ${l.session_id} not on its instance row`);
    }
    if (rows.filter((r) => r.session_id !== null).length !== leases.length) problems.push("instances with a session but no lease");
    assert.deepEqual(problems, []);
    return { leases };
  } finally {
    await client.end();
  }
}

async function sqlOn(url: string, text: string, values: unknown[] = []): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(text, values);
  } finally {
    await client.end();
  }
}

/** The instance's own word on who it serves; a leased instance must name its lease's session. */
async function agreeWithInstances(stack: Stack, leases: readonly PgLease[]): Promise<void> {
  for (const p of (await stack.processes()).filter((x) => x.kind === "myservice")) {
    const address = `127.0.0.1:${p.port}`;
    const lease = leases.find((l) => l.instance_address === address);
    if (lease === undefined) continue;
    const status = await instanceStatus(address);
    assert.equal(status.sessionId, lease.session_id, `instance ${address} holds exactly the session its lease names`);
  }
}

describe("scale-out: three gateways on one PostgreSQL lease store", { skip }, () => {
  let stack: Stack;
  let db: TempPostgres;
  let url: string;
  const clients: GatewayClient[] = [];
  const client = (i: number) => {
    const c = gatewayClient(stack.gatewayUrls[i] as string);
    clients.push(c);
    return c;
  };

  before(async () => {
    db = await tempPostgres();
    url = await db.createDatabase();
    stack = await startStack({
      instances,
      gateways: 3,
      leaseDbUrl: url,
      startTimeoutMs: 60_000,
      // A probe may take long on a loaded machine: one slow answer must not declare an instance dead.
      env: { USERS_FILE: usersFile, HEALTH_CHECK_INTERVAL: "500ms", HEALTH_CHECK_TIMEOUT: "2s", LOG_LEVEL: "warn" },
    });
  });
  after(async () => {
    for (const c of clients) c.close();
    await stack?.stop();
    await stopTempPostgres();
  });

  /**
   * Every test starts from a free pool: leases a failed test left behind are shut down (with
   * tokens minted for their sessions), so one failure does not fail the tests after it.
   */
  async function freshPool(): Promise<void> {
    const { leases } = await checkPostgres(url);
    const c = client(0);
    for (const l of leases) await outcome(c.api.myServiceShutdown({}, { headers: await mintHeaders(stack.jwtSecret, l.session_id) }));
    await stack.waitAllFree(60_000);
  }

  it("serves a session on every gateway: Login on one, Echo on the others, same pod; Shutdown on a third moves it", async () => {
    const [a, b, c] = [client(0), client(1), client(2)];
    const id = `any-${Date.now()}`;
    const reply = await a.api.login({ username: "TestUser", password: "TestPassword", sessionId: id });
    const headers = { authorization: reply.token, "session-id": id };
    const first = await b.api.myServiceEcho({ value: "1" }, { headers });
    const second = await c.api.myServiceEcho({ value: "2" }, { headers });
    const third = await a.api.myServiceEcho({ value: "3" }, { headers });
    assert.equal(second.podName, first.podName);
    assert.equal(third.podName, first.podName);
    assert.equal(first.serverSessionId, id);
    await c.api.myServiceShutdown({}, { headers });
    // Gateway b served it last from its cache: the release it heard of must send the session on.
    const moved = await b.api.myServiceEcho({ value: "4" }, { headers });
    assert.notEqual(moved.podName, first.podName, "after Shutdown the session lands on another instance");
    await a.api.myServiceShutdown({}, { headers });
  });

  it(`gives ${instances} of ${racers} racing sessions through three gateways an instance each, 0 conflicts`, async () => {
    await freshPool();
    const conns = [0, 1, 2].flatMap((g) => [client(g), client(g)]);
    const sessions = await Promise.all(
      Array.from({ length: racers }, async (_, i) => {
        const id = `race-${i}-${Math.random().toString(36).slice(2, 8)}`;
        return { id, headers: await mintHeaders(stack.jwtSecret, id) };
      }),
    );
    const started = performance.now();
    const results = await Promise.all(
      sessions.map((s, i) =>
        outcome(conns[i % conns.length]!.api.myServiceEcho({ value: s.id }, { headers: s.headers, timeoutMs: 30_000 })).then((r) => ({
          s,
          r,
        })),
      ),
    );
    const counts = countBy(results, ({ r }) => codeName(r.code));
    figure(
      `scale-out: ${racers} sessions raced for ${instances} instances via 3 gateways in ${Math.round(performance.now() - started)} ms: ${JSON.stringify(counts)}`,
    );
    for (const { r } of results) assert.doesNotMatch(r.message, /Session conflict/);
    const winners = results.filter(({ r }) => r.code === 0);
    assert.equal(winners.length, instances, JSON.stringify(counts));
    for (const { r } of results.filter(({ r }) => r.code !== 0)) {
      assert.deepEqual({ code: r.code, message: r.message }, { code: Code.ResourceExhausted, message: "all instances are busy" });
    }
    assert.equal(new Set(winners.map(({ r }) => r.value!.podName)).size, instances, "winners on distinct pods");
    for (const { s, r } of winners) assert.equal(r.value!.serverSessionId, s.id);
    const { leases } = await checkPostgres(url);
    assert.deepEqual(new Set(leases.map((l) => l.session_id)), new Set(winners.map(({ s }) => s.id)));
    await agreeWithInstances(stack, leases);
    for (const [i, { s }] of winners.entries()) await conns[i % conns.length]!.api.myServiceShutdown({}, { headers: s.headers });
  });

  it("loses no lease and leases nothing twice when one gateway is killed (-9) during a burst of new sessions", async () => {
    await freshPool();
    const [survivor, victim] = [client(0), client(2)];
    const sessions = await Promise.all(
      Array.from({ length: 60 }, async (_, i) => {
        const id = `burst-${i}-${Math.random().toString(36).slice(2, 8)}`;
        return { id, headers: await mintHeaders(stack.jwtSecret, id) };
      }),
    );
    // New sessions arrive one every few milliseconds, alternating gateways, so both win some;
    // the kill lands in the middle of the burst.
    const calls: Promise<{ s: (typeof sessions)[number]; r: Awaited<ReturnType<typeof outcome<EchoResponse>>> }>[] = [];
    let killed: Promise<unknown> = Promise.resolve();
    for (const [i, s] of sessions.entries()) {
      const via = i % 2 ? victim : survivor;
      calls.push(outcome(via.api.myServiceEcho({ value: s.id }, { headers: s.headers, timeoutMs: 20_000 })).then((r) => ({ s, r })));
      if (i === 5) killed = stack.control("gateway-3", "kill");
      await sleep(3);
    }
    await killed;
    const results = await Promise.all(calls);
    figure(`scale-out: burst with gateway-3 killed: ${JSON.stringify(countBy(results, ({ r }) => codeName(r.code)))}`);
    const { leases } = await checkPostgres(url);
    // Every session told it has an instance still has it, and reaches it through the survivor.
    for (const { s, r } of results.filter(({ r }) => r.code === 0)) {
      assert.ok(
        leases.some((l) => l.session_id === s.id),
        `lease of ${s.id} lost`,
      );
      const again = await survivor.api.myServiceEcho({ value: "again" }, { headers: s.headers });
      assert.equal(again.podName, r.value!.podName);
    }
    // A lease whose reply never arrived (the gateway died first) is still served by the survivor.
    for (const lease of leases) {
      const s = sessions.find((x) => x.id === lease.session_id);
      if (s === undefined) continue;
      const again = await survivor.api.myServiceEcho({ value: "orphan" }, { headers: s.headers });
      assert.equal(again.podName, lease.pod_name);
    }
    await agreeWithInstances(stack, leases);
    for (const lease of leases) {
      const s = sessions.find((x) => x.id === lease.session_id);
      if (s !== undefined) await survivor.api.myServiceShutdown({}, { headers: s.headers });
    }
    await stack.waitFor((ps) => ps.some((p) => p.name === "gateway-3" && p.state === "running"), 30_000);
  });

  it("never delivers a call through a stale cache entry to an instance that now serves another session", async () => {
    await freshPool();
    const [a, b] = [client(0), client(1)];
    const s = { id: `stale-${Date.now()}`, headers: {} as Record<string, string> };
    s.headers = await mintHeaders(stack.jwtSecret, s.id);
    const first = await b.api.myServiceEcho({ value: "cache me" }, { headers: s.headers });
    const address = (await checkPostgres(url)).leases.find((l) => l.session_id === s.id)!.instance_address;
    // Gateway b's cache must not hear of what follows: no notifications for a while.
    await sqlOn(url, "ALTER TABLE leases DISABLE TRIGGER leases_notify");
    try {
      await a.api.myServiceShutdown({}, { headers: s.headers });
      // The instance restarts; only it may be allocated now, to another session, through a.
      await sqlOn(url, "UPDATE instances SET draining = (address <> $1)", [address]);
      const t = { id: `other-${Date.now()}`, headers: await mintHeaders(stack.jwtSecret, `other-${Date.now()}`) };
      t.headers = await mintHeaders(stack.jwtSecret, t.id);
      let other: Awaited<ReturnType<typeof outcome>> = { code: -1, message: "" };
      for (let i = 0; i < 100 && other.code !== 0; i++) {
        other = await outcome(a.api.myServiceEcho({ value: "mine" }, { headers: t.headers }));
        if (other.code !== 0) await sleep(100);
      }
      assert.equal(other.code, 0, `the other session got the instance: ${other.message}`);
      assert.equal((other.value as { podName: string }).podName, first.podName);
      // Gateway b still believes s leases that instance; s's call must not reach it.
      await sqlOn(url, "UPDATE instances SET draining = false");
      const stale = await outcome(b.api.myServiceEcho({ value: "stale" }, { headers: s.headers }));
      assert.doesNotMatch(stale.message, /Session conflict/);
      if (stale.code === 0) assert.notEqual((stale.value as { podName: string }).podName, first.podName);
      const status = await instanceStatus(address);
      assert.equal(status.sessionId, t.id, "the instance still serves only the other session");
      figure(`scale-out: stale cache entry: the call ended ${codeName(stale.code)}, never on ${first.podName}`);
      await a.api.myServiceShutdown({}, { headers: t.headers });
      if (stale.code === 0) await b.api.myServiceShutdown({}, { headers: s.headers });
    } finally {
      await sqlOn(url, "ALTER TABLE leases ENABLE TRIGGER leases_notify");
      await sqlOn(url, "UPDATE instances SET draining = false");
    }
  });

  it("keeps leased sessions working while PostgreSQL is down for 5 s; new sessions get UNAVAILABLE, then are served", async () => {
    await freshPool();
    const [a, b] = [client(0), client(1)];
    const leased = await Promise.all(
      [0, 1, 2].map(async (i) => {
        const id = `steady-${i}-${Date.now()}`;
        const headers = await mintHeaders(stack.jwtSecret, id);
        const via = i % 2 ? b : a;
        const r = await via.api.myServiceEcho({ value: "warm" }, { headers });
        await via.api.myServiceEcho({ value: "cached" }, { headers });
        return { id, headers, via, pod: r.podName };
      }),
    );
    let stop = false;
    const failures: string[] = [];
    let served = 0;
    const traffic = leased.map(async (s) => {
      while (!stop) {
        const r = await outcome(s.via.api.myServiceEcho({ value: "during" }, { headers: s.headers, timeoutMs: 5000 }));
        if (r.code !== 0) failures.push(`${s.id}: ${codeName(r.code)} ${r.message}`);
        else if ((r.value as { podName: string }).podName !== s.pod) failures.push(`${s.id} moved`);
        else served++;
        await sleep(20);
      }
    });
    await db.stop("immediate");
    const downAt = Date.now();
    const fresh = await mintHeaders(stack.jwtSecret, `new-while-down-${Date.now()}`);
    await sleep(500);
    const refused = await outcome(a.api.myServiceEcho({ value: "new" }, { headers: fresh, timeoutMs: 5000 }));
    assert.deepEqual({ code: refused.code, message: refused.message }, { code: Code.Unavailable, message: "backend service unavailable" });
    await sleep(Math.max(0, 5000 - (Date.now() - downAt)));
    await db.start();
    let after: Awaited<ReturnType<typeof outcome>> = { code: -1, message: "" };
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      after = await outcome(b.api.myServiceEcho({ value: "new" }, { headers: fresh, timeoutMs: 5000 }));
      if (after.code === 0) break;
      await sleep(200);
    }
    stop = true;
    await Promise.all(traffic);
    figure(
      `scale-out: PostgreSQL down ${Math.round((Date.now() - downAt) / 1000)} s: ${served} leased calls served, ${failures.length} failed; a new session served after the restart: ${after.code === 0}`,
    );
    assert.deepEqual(failures, []);
    assert.equal(after.code, 0, `new sessions are served again: ${after.message}`);
    for (const s of leased) await s.via.api.myServiceShutdown({}, { headers: s.headers });
    await b.api.myServiceShutdown({}, { headers: fresh });
  });
});

describe("npm run up -- --store postgres --gateways 2 (the launcher's PostgreSQL shape)", { skip }, () => {
  let stack: Stack;
  const clients: GatewayClient[] = [];
  before(async () => {
    stack = await startStack({ instances: 2, store: "postgres", gateways: 2, startTimeoutMs: 60_000, env: { USERS_FILE: usersFile } });
  });
  after(async () => {
    for (const c of clients) c.close();
    await stack?.stop();
  });

  it("names gateway-1, gateway-2 and postgres in the control API; one session is served by both gateways", async () => {
    const names = (await stack.processes()).map((p) => `${p.name}:${p.kind}`);
    assert.deepEqual(names.slice(0, 3), ["postgres:postgres", "gateway-1:gateway", "gateway-2:gateway"]);
    const [a, b] = stack.gatewayUrls.map((u) => gatewayClient(u)) as [GatewayClient, GatewayClient];
    clients.push(a, b);
    const headers = await mintHeaders(stack.jwtSecret, `shape-${Date.now()}`);
    const first = await a.api.myServiceEcho({ value: "1" }, { headers });
    assert.equal((await b.api.myServiceEcho({ value: "2" }, { headers })).podName, first.podName);
  });

  it("restarts PostgreSQL killed through the control API (immediate shutdown), and new sessions are served again", async () => {
    const [a] = stack.gatewayUrls.map((u) => gatewayClient(u)) as [GatewayClient];
    clients.push(a);
    const before = (await stack.processes()).find((p) => p.name === "postgres")!.restarts;
    await stack.control("postgres", "kill");
    await stack.waitFor((ps) => ps.some((p) => p.name === "postgres" && p.state === "running" && p.restarts > before), 30_000);
    const headers = await mintHeaders(stack.jwtSecret, `after-kill-${Date.now()}`);
    let r: Awaited<ReturnType<typeof outcome>> = { code: -1, message: "" };
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && r.code !== 0) {
      r = await outcome(a.api.myServiceEcho({ value: "x" }, { headers, timeoutMs: 5000 }));
      if (r.code !== 0) await sleep(200);
    }
    assert.equal(r.code, 0, r.message);
  });
});
