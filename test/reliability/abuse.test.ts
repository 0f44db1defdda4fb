// Abuse (issue 7): login throttling per user and per peer, the same scrypt work for unknown
// users and wrong passwords, a per-user cap on concurrent sessions, and a production mode that
// refuses the development secret and users.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import { syncBuiltinESMExports } from "node:module";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { devJwtSecret } from "../../common/dev-defaults.js";
import { createLogger } from "../../common/logger.js";
import { hmacSigningKey } from "../../common/token-keys.js";
import { createLogin } from "../../gateway/auth/login-service.js";
import { LoginThrottle } from "../../gateway/auth/login-throttle.js";
import { loadUserStore } from "../../gateway/auth/user-store.js";
import { LoginRequestSchema } from "../../gen/my_service/my_service_pb.js";
import { repoRoot } from "../../scripts/up-control-client.js";
import { errorOf, type GatewayClient, gatewayClient, retryHintOf } from "../e2e-client.js";
import { type Stack, startStack } from "../stack.js";
import { figure, mintHeaders, outcome, settle, usersFile } from "./helpers.js";

const logger = createLogger({ name: "test", level: "silent", format: "json" });

describe("LoginThrottle", () => {
  it("refuses a user after N failures within the window, with a retry hint, and forgets them after it", () => {
    let now = 1_000_000;
    const t = new LoginThrottle({
      perUser: { maxFailures: 3, windowMs: 60_000 },
      perPeer: { maxFailures: 0, windowMs: 1000 },
      now: () => now,
    });
    for (let i = 0; i < 3; i++) {
      const d = t.begin("alice", "1.2.3.4");
      assert.ok(d.allowed);
      d.attempt.failed();
      now += 1000;
    }
    const refused = t.begin("alice", "5.6.7.8");
    assert.deepEqual(refused, { allowed: false, retryAfterMs: 57_000, by: "user" });
    assert.ok(t.begin("bob", "1.2.3.4").allowed, "other users are not affected");
    now += 57_000;
    assert.ok(t.begin("alice", "1.2.3.4").allowed, "the oldest failure left the window");
  });

  it("refuses a peer after N failures across usernames; a success does not reset the peer", () => {
    let now = 0;
    const t = new LoginThrottle({
      perUser: { maxFailures: 100, windowMs: 60_000 },
      perPeer: { maxFailures: 5, windowMs: 10_000 },
      now: () => now,
    });
    for (let i = 0; i < 5; i++) {
      const d = t.begin(`user-${i}`, "9.9.9.9");
      assert.ok(d.allowed);
      d.attempt.failed();
    }
    const refused = t.begin("anyone", "9.9.9.9");
    assert.equal(refused.allowed, false);
    assert.equal(!refused.allowed && refused.by, "peer");
    assert.ok(t.begin("anyone", "8.8.8.8").allowed, "another peer is fine");
    now += 10_001;
    assert.ok(t.begin("anyone", "9.9.9.9").allowed);
  });

  it("bounds attempts in flight, so a concurrent burst cannot overrun the limit; a success clears the user", () => {
    const t = new LoginThrottle({ perUser: { maxFailures: 5, windowMs: 60_000 }, perPeer: { maxFailures: 0, windowMs: 1000 } });
    const burst = Array.from({ length: 50 }, () => t.begin("carol", "1.1.1.1"));
    const admitted = burst.filter((d): d is Extract<typeof d, { allowed: true }> => d.allowed);
    assert.equal(admitted.length, 16, "at most 16 concurrent attempts of one user reach the password check");
    // Once failures come in, failures plus attempts in flight stay under the limit.
    for (const d of admitted.slice(0, 3)) d.attempt.failed();
    assert.equal(t.begin("carol", "1.1.1.1").allowed, false, "3 failures + 13 in flight ≥ 5");
    for (const d of admitted.slice(3, 5)) d.attempt.failed();
    for (const d of admitted.slice(6)) d.attempt.failed();
    const refused = t.begin("carol", "1.1.1.1");
    assert.ok(!refused.allowed && refused.retryAfterMs > 1000, "5 failures: refused for the window");
    admitted[5]!.attempt.succeeded();
    assert.ok(t.begin("carol", "1.1.1.1").allowed, "the right password clears the user's failures");
  });

  it("lets a user with no failures log in many sessions in parallel", () => {
    const t = new LoginThrottle({ perUser: { maxFailures: 5, windowMs: 60_000 }, perPeer: { maxFailures: 20, windowMs: 60_000 } });
    const parallel = Array.from({ length: 12 }, () => t.begin("TestUser", "127.0.0.1"));
    assert.ok(
      parallel.every((d) => d.allowed),
      "12 parallel logins with no failure are all admitted",
    );
    for (const d of parallel) if (d.allowed) d.attempt.succeeded();
    assert.ok(t.begin("TestUser", "127.0.0.1").allowed);
  });

  it("keeps memory bounded under a flood of distinct usernames and peers", () => {
    const t = new LoginThrottle({ maxKeys: 1000 });
    for (let i = 0; i < 20_000; i++) {
      const d = t.begin(`u${i}-${"x".repeat(i % 3 === 0 ? 10_000 : 1)}`, `10.0.${i >> 8}.${i & 255}`);
      if (d.allowed) d.attempt.failed();
    }
    assert.deepEqual(t.size(), { users: 1000, peers: 1000 });
  });
});

describe("Login: the same scrypt work for unknown users and wrong passwords", () => {
  it("runs one scrypt of the same cost for both (counted), and prints a loose timing comparison", async () => {
    const calls: { N: number; r: number; p: number; saltBytes: number }[] = [];
    const original = crypto.scrypt;
    // Count every scrypt call of the password check (the module imports it by name: sync the binding).
    (crypto as { scrypt: unknown }).scrypt = (
      password: unknown,
      salt: Buffer,
      keylen: number,
      options: crypto.ScryptOptions,
      cb: unknown,
    ) => {
      calls.push({
        N: options.N ?? options.cost ?? 0,
        r: options.r ?? options.blockSize ?? 0,
        p: options.p ?? options.parallelization ?? 0,
        saltBytes: salt.length,
      });
      return (original as (...a: unknown[]) => void)(password, salt, keylen, options, cb);
    };
    syncBuiltinESMExports();
    try {
      const users = loadUserStore(join(repoRoot, "gateway", "dev-users.json"));
      const login = createLogin({ users, signingKey: hmacSigningKey(devJwtSecret), tokenLifetimeMs: 60_000, logger });
      const attempt = async (username: string) => {
        const before = calls.length;
        const started = performance.now();
        const r = await outcome(login(create(LoginRequestSchema, { username, password: "wrong", sessionId: "s" })));
        assert.deepEqual({ code: r.code, message: r.message }, { code: Code.PermissionDenied, message: "invalid username or password" });
        return { work: calls.slice(before), ms: performance.now() - started };
      };
      const times = { unknown: [] as number[], wrong: [] as number[] };
      for (let i = 0; i < 6; i++) {
        const unknown = await attempt(`nobody-${i}`);
        const wrong = await attempt("TestUser");
        assert.equal(unknown.work.length, 1, "one scrypt for an unknown user");
        assert.equal(wrong.work.length, 1, "one scrypt for a wrong password");
        assert.deepEqual({ ...unknown.work[0] }, { ...wrong.work[0] }, "same cost parameters and salt size");
        times.unknown.push(unknown.ms);
        times.wrong.push(wrong.ms);
      }
      const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!.toFixed(1);
      figure(
        `abuse: scrypt calls per failed Login: unknown user 1, wrong password 1 (N=${calls[0]?.N}, r=${calls[0]?.r}, p=${calls[0]?.p}); median time unknown ${median(times.unknown)} ms vs wrong ${median(times.wrong)} ms (printed, not asserted)`,
      );
    } finally {
      (crypto as { scrypt: unknown }).scrypt = original;
      syncBuiltinESMExports();
    }
  });
});

describe("abuse against the real gateway", () => {
  let stack: Stack;
  let client: GatewayClient;
  before(async () => {
    stack = await startStack({
      instances: 3,
      env: {
        USERS_FILE: usersFile,
        HEALTH_CHECK_INTERVAL: "250ms",
        HEALTH_CHECK_TIMEOUT: "500ms",
        LOGIN_MAX_FAILURES_PER_USER: "3",
        LOGIN_USER_FAILURE_WINDOW: "1m",
        LOGIN_MAX_FAILURES_PER_PEER: "8",
        LOGIN_PEER_FAILURE_WINDOW: "1m",
        MAX_SESSIONS_PER_USER: "2",
      },
    });
    client = gatewayClient(stack.gatewayUrl);
  });
  after(async () => {
    client?.close();
    await stack?.stop();
  });

  it("throttles Login per user, then per peer, with RESOURCE_EXHAUSTED and a retry-after-ms hint; a spoofed x-gateway-peer does not help", async () => {
    const bad = (username: string, spoof?: string) =>
      outcome(client.api.login({ username, password: "nope", sessionId: "t" }, spoof ? { headers: { "x-gateway-peer": spoof } } : {}));
    for (let i = 0; i < 3; i++) assert.equal((await bad("TestUser")).code, Code.PermissionDenied);
    const locked = await errorOf(client.api.login({ username: "TestUser", password: "nope", sessionId: "t" }));
    assert.equal(locked.code, Code.ResourceExhausted);
    assert.match(locked.message, /^too many failed logins; retry in \d+ s$/);
    const hint = retryHintOf(locked);
    assert.ok(hint > 50_000 && hint <= 60_000, `retry-after-ms ${hint}`);
    // Even the right password waits: that is what stops guessing.
    const right = await outcome(client.api.login({ username: "TestUser", password: "TestPassword", sessionId: "t" }));
    assert.equal(right.code, Code.ResourceExhausted);
    // Another user is unaffected until the peer's own limit (8 failures from 127.0.0.1) is reached.
    assert.equal((await outcome(client.api.login({ username: "OtherUser", password: "OtherPassword", sessionId: "o" }))).code, 0);
    const peerCodes: number[] = [];
    for (let i = 0; i < 8; i++) peerCodes.push((await bad(`guess-${i}`, `10.0.0.${i}`)).code);
    // 3 failures so far from this peer (TestUser) + 5 = 8: the 6th spoofed guess is already refused.
    assert.deepEqual(peerCodes, [7, 7, 7, 7, 7, 8, 8, 8], "x-gateway-peer from the client is overwritten by the socket address");
    const peerLocked = await outcome(client.api.login({ username: "OtherUser", password: "OtherPassword", sessionId: "o2" }));
    assert.equal(peerLocked.code, Code.ResourceExhausted, "the peer is throttled for every user");
    figure(`abuse: Login throttled after 3 failures per user (retry-after-ms ${hint}) and 8 per peer; spoofed x-gateway-peer ignored`);
  });

  it("caps concurrent sessions per user (MAX_SESSIONS_PER_USER=2)", async () => {
    await settle(stack);
    const mine = await Promise.all([1, 2, 3].map((i) => mintHeaders(stack.jwtSecret, `cap-${i}-${Date.now()}`)));
    const other = await mintHeaders(stack.jwtSecret, `cap-other-${Date.now()}`, "OtherUser", "user");
    assert.equal((await outcome(client.api.myServiceEcho({ value: "1" }, { headers: mine[0]! }))).code, 0);
    assert.equal((await outcome(client.api.myServiceEcho({ value: "2" }, { headers: mine[1]! }))).code, 0);
    const third = await outcome(client.api.myServiceEcho({ value: "3" }, { headers: mine[2]! }));
    assert.equal(third.code, Code.ResourceExhausted);
    assert.equal(third.message, "user TestUser already holds 2 sessions (the per-user limit)");
    assert.equal(
      (await outcome(client.api.myServiceEcho({ value: "o" }, { headers: other }))).code,
      0,
      "another user still gets the free instance",
    );
    assert.equal(
      (await outcome(client.api.myServiceEcho({ value: "1" }, { headers: mine[0]! }))).code,
      0,
      "existing sessions keep working",
    );
    for (const h of [mine[0]!, mine[1]!, other]) await client.api.myServiceShutdown({}, { headers: h });
    figure("abuse: MAX_SESSIONS_PER_USER=2: 3rd session of one user RESOURCE_EXHAUSTED, other user unaffected");
  });
});

describe("production mode", () => {
  function startGateway(env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
    return new Promise((resolve) => {
      const childEnv: Record<string, string | undefined> = {
        ...process.env,
        MYSERVICE_ADDRESSES: "127.0.0.1:1",
        SERVICE_PORT_GRPC: "0",
        LEASE_DB_PATH: ":memory:",
        ...env,
      };
      delete childEnv.NODE_TEST_CONTEXT;
      const child = spawn(process.execPath, ["--import", "tsx", join(repoRoot, "gateway", "main.ts")], { cwd: repoRoot, env: childEnv });
      let stderr = "";
      child.stderr.on("data", (c) => {
        stderr += c;
      });
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      child.on("exit", (code) => {
        clearTimeout(timer);
        resolve({ code, stderr });
      });
    });
  }

  it("refuses to start with the development secret and users file: exit code 2 and a clear message", async () => {
    const devUsers = join(repoRoot, "gateway", "dev-users.json");
    const [both, secretOnly, badCap] = await Promise.all([
      startGateway({ NODE_ENV: "production", JWT_SECRET: devJwtSecret, USERS_FILE: devUsers }),
      startGateway({ NODE_ENV: "production", JWT_SECRET: devJwtSecret, USERS_FILE: usersFile }),
      startGateway({ JWT_SECRET: "x".repeat(40), USERS_FILE: usersFile, MAX_SESSIONS_PER_USER: "-1", LOGIN_MAX_FAILURES_PER_USER: "many" }),
    ]);
    assert.equal(both.code, 2, both.stderr);
    assert.match(both.stderr, /JWT_SECRET is the development secret, refused with NODE_ENV=production/);
    assert.match(both.stderr, /USERS_FILE is the development users file, refused with NODE_ENV=production/);
    assert.equal(secretOnly.code, 2, secretOnly.stderr);
    assert.match(secretOnly.stderr, /JWT_SECRET is the development secret/);
    assert.equal(badCap.code, 2, badCap.stderr);
    assert.match(badCap.stderr, /MAX_SESSIONS_PER_USER="-1"/);
    assert.match(badCap.stderr, /LOGIN_MAX_FAILURES_PER_USER="many"/);
    figure(
      "abuse: NODE_ENV=production with the development secret/users: exit 2 with both problems named; invalid MAX_SESSIONS_PER_USER / LOGIN_MAX_FAILURES_PER_USER: exit 2",
    );
  });
});
