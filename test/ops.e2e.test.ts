// Operations surface (SPEC 9) against real processes: reflection from a client that is not
// ours (Python grpcio), Prometheus metrics checked by promtool and by value, the admin API,
// and the gateway's logs free of tokens and passwords.
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { type Client, Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { transferHeaders } from "../gateway/routing/session-router.js";
import { MyServiceAPI } from "../gen/my_service/my_service_pb.js";
import { AdminService, InstanceState } from "../gen/mygateway/admin/v1/admin_pb.js";
import { echo, errorOf, type GatewayClient, gatewayClient, login, retryWhile, type Session, sleep } from "./e2e-client.js";
import { type Stack, startStack } from "./stack.js";

const usersFile = join(import.meta.dirname, "fixtures", "users.json");
const reflectionClient = join(import.meta.dirname, "python", "grpc_reflection_client.py");
const python = "/usr/bin/python3";
const capacity = [Code.ResourceExhausted, Code.Unavailable];
const run = promisify(execFile);

const hasPythonGrpc = spawnSync(python, ["-c", "import grpc, google.protobuf"]).status === 0;
const promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].find((p) => spawnSync(p, ["--version"]).status === 0);

/** Runs the Python reflection client; resolves to its JSON output, or rejects with its stderr. */
async function py(stack: Stack, ...args: string[]): Promise<unknown> {
  const { stdout } = await run(python, [reflectionClient, stack.gatewayAddress, ...args], { timeout: 20_000 });
  return JSON.parse(stdout);
}

/** Parses a Prometheus text exposition into `series → value` (`name{labels}` as exposed). */
function parseMetrics(text: string): Map<string, number> {
  const series = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const cut = line.lastIndexOf(" ");
    series.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return series;
}

async function scrape(stack: Stack): Promise<{ text: string; series: Map<string, number>; contentType: string }> {
  const response = await fetch(`${stack.gatewayUrl}/metrics`);
  assert.equal(response.status, 200);
  const text = await response.text();
  return { text, series: parseMetrics(text), contentType: response.headers.get("content-type") ?? "" };
}

/** `promtool check metrics` (format and naming lint) on an exposition; no-op without promtool. */
async function promtoolCheck(text: string): Promise<void> {
  if (promtool === undefined) return;
  const child = execFile(promtool, ["check", "metrics"]);
  let out = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    out += d;
  });
  child.stdin?.end(text);
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  assert.equal(code, 0, `promtool check metrics:\n${out}`);
}

const value = (series: Map<string, number>, key: string) => series.get(key) ?? 0;

describe("operations surface", () => {
  let stack: Stack;
  let client: GatewayClient;
  let adminManager: Http2SessionManager;
  let admin: Client<typeof AdminService>;
  let adminHeaders: Record<string, string>;
  /** Every token issued in this file, to prove none reaches the logs. */
  const tokens: string[] = [];

  const track = (s: Session) => {
    tokens.push(s.token);
    return s;
  };

  /** Waits until every instance is free, healthy, clean and not draining (recycling done). */
  async function settle(timeoutMs = 20_000) {
    const deadline = Date.now() + timeoutMs;
    let states: string[] = [];
    while (Date.now() < deadline) {
      const { instances } = await admin.listInstances({}, { headers: adminHeaders });
      states = instances.map((i) => `${i.podName}:${InstanceState[i.state]}${i.draining ? "+draining" : ""}`);
      if (instances.length === 3 && instances.every((i) => i.state === InstanceState.FREE && !i.draining)) return;
      await sleep(100);
    }
    assert.fail(`instances did not settle within ${timeoutMs} ms: ${states.join(", ")}`);
  }

  before(async () => {
    stack = await startStack({
      env: { USERS_FILE: usersFile, HEALTH_CHECK_INTERVAL: "250ms", HEALTH_CHECK_TIMEOUT: "500ms", LOG_LEVEL: "debug" },
    });
    client = gatewayClient(stack.gatewayUrl);
    adminManager = new Http2SessionManager(stack.gatewayUrl);
    admin = createClient(AdminService, createGrpcTransport({ baseUrl: stack.gatewayUrl, sessionManager: adminManager }));
    const operator = track(await login(client, "operator"));
    adminHeaders = { authorization: operator.token };
  });
  after(async () => {
    client?.close();
    adminManager?.abort();
    await stack?.stop();
  });

  describe(
    "gRPC server reflection (Python grpcio, no proto files)",
    { skip: hasPythonGrpc || process.env.CI ? false : "needs /usr/bin/python3 with grpc (apt-get install python3-grpcio)" },
    () => {
      const services = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "my_service.MyServiceAPI",
        "mygateway.admin.v1.AdminService",
        "mygateway.queue.v1.WaitingRoom",
      ];

      it("lists every served service over v1 and v1alpha", async () => {
        assert.deepEqual(await py(stack, "list"), services);
        assert.deepEqual(await py(stack, "list", "v1alpha"), services);
      });

      it("describes services, methods and messages with their imports (google/protobuf/timestamp.proto)", async () => {
        const api = (await py(stack, "describe", "my_service.MyServiceAPI")) as {
          files: string[];
          service: { methods: { name: string; input: string; output: string; serverStreaming: boolean }[] };
        };
        assert.deepEqual(api.files, ["google/protobuf/timestamp.proto", "my_service/my_service.proto"]);
        assert.deepEqual(
          api.service.methods.map((m) => [m.name, m.input, m.output, m.serverStreaming]),
          [
            ["Login", "my_service.LoginRequest", "my_service.LoginResponse", false],
            ["MyServiceEcho", "my_service.EchoRequest", "my_service.EchoResponse", false],
            ["MyServiceSubscribe", "my_service.EchoRequest", "my_service.EchoResponse", true],
            ["MyServiceShutdown", "my_service.ShutdownRequest", "my_service.ShutdownResponse", false],
          ],
        );
        const method = (await py(stack, "describe", "mygateway.admin.v1.AdminService.ReleaseSession", "v1alpha")) as {
          method: { input: string };
        };
        assert.equal(method.method.input, "mygateway.admin.v1.ReleaseSessionRequest");
        const message = (await py(stack, "describe", "my_service.LoginResponse")) as {
          message: { fields: { name: string; type: unknown }[] };
        };
        assert.deepEqual(
          message.message.fields.map((f) => [f.name, f.type]),
          [
            ["token", 9],
            ["expires_at", "google.protobuf.Timestamp"],
            ["role", 9],
          ],
        );
        const health = (await py(stack, "describe", "grpc.health.v1.Health")) as { service: { methods: { name: string }[] } };
        assert.deepEqual(
          health.service.methods.map((m) => m.name),
          ["Check", "Watch"],
        );
      });

      it("serves the google.rpc files of the status details it sends (file_containing_symbol, v1 and v1alpha)", async () => {
        for (const version of ["v1", "v1alpha"]) {
          const retry = (await py(stack, "describe", "google.rpc.RetryInfo", version)) as {
            files: string[];
            message: { file: string; fields: { name: string; type: unknown }[] };
          };
          assert.deepEqual(retry.files, ["google/protobuf/duration.proto", "google/rpc/error_details.proto"], version);
          assert.equal(retry.message.file, "google/rpc/error_details.proto");
          assert.deepEqual(
            retry.message.fields.map((f) => [f.name, f.type]),
            [["retry_delay", "google.protobuf.Duration"]],
          );
          const status = (await py(stack, "describe", "google.rpc.Status", version)) as {
            files: string[];
            message: { fields: { name: string; type: unknown }[] };
          };
          assert.deepEqual(status.files, ["google/protobuf/any.proto", "google/rpc/status.proto"], version);
          assert.deepEqual(
            status.message.fields.map((f) => [f.name, f.type]),
            [
              ["code", 5],
              ["message", 9],
              ["details", "google.protobuf.Any"],
            ],
          );
        }
        // Listed services stay the served ones: the google.rpc files declare messages only.
        assert.ok(!((await py(stack, "list")) as string[]).some((s) => s.startsWith("google.")));
      });

      it("calls a server stream (Subscribe) message by message, and says what it cannot call", async () => {
        const sessionId = `py-stream-${Date.now()}`;
        const { token } = (await py(
          stack,
          "call",
          "my_service.MyServiceAPI/Login",
          JSON.stringify({ username: "TestUser", password: "TestPassword", sessionId }),
        )) as { token: string };
        tokens.push(token);
        const auth = [`authorization=${token}`, `session-id=${sessionId}`];
        const { stdout } = await run(
          python,
          [
            reflectionClient,
            stack.gatewayAddress,
            "call",
            "my_service.MyServiceAPI/MyServiceSubscribe",
            '{"value":"s"}',
            ...auth,
            "--max-messages",
            "3",
          ],
          { timeout: 20_000 },
        );
        const messages = stdout
          .trim()
          .split("\n")
          .map((line) => JSON.parse(line) as { index?: number; podName: string; serverMethod: string });
        assert.deepEqual(
          messages.map((m) => [m.index ?? 0, m.serverMethod]),
          [
            [0, "MyServiceSubscribe"],
            [1, "MyServiceSubscribe"],
            [2, "MyServiceSubscribe"],
          ],
        );
        assert.equal(new Set(messages.map((m) => m.podName)).size, 1);
        await py(stack, "call", "my_service.MyServiceAPI/MyServiceShutdown", "{}", ...auth);
        const bidi = spawnSync(
          python,
          [reflectionClient, stack.gatewayAddress, "call", "grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "{}"],
          {
            encoding: "utf8",
          },
        );
        assert.equal(bidi.status, 2);
        assert.match(bidi.stderr, /client-streaming or bidirectional: this helper cannot call it/);
      });

      it("decodes status details with reflection, as grpcurl does: the retry hint of all instances are busy", async () => {
        await settle();
        const holders = [];
        for (let i = 0; i < 3; i++) {
          const s = track(await login(client, "py-busy"));
          await retryWhile(capacity, () => echo(client, s));
          holders.push(s);
        }
        const s = track(await login(client, "py-busy-4th"));
        await assert.rejects(
          py(stack, "call", "my_service.MyServiceAPI/MyServiceEcho", '{"value":"x"}', `authorization=${s.token}`, `session-id=${s.id}`),
          (error: { stderr: string; code: number }) => {
            assert.equal(error.code, 1);
            assert.deepEqual(JSON.parse(error.stderr), {
              code: "RESOURCE_EXHAUSTED",
              details: "all instances are busy",
              statusDetails: [{ "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: "1s" }],
            });
            return true;
          },
        );
        for (const h of holders) await client.api.myServiceShutdown({}, { headers: h.headers });
      });

      it("answers NOT_FOUND for an unknown symbol", async () => {
        await assert.rejects(py(stack, "describe", "no.such.Service"), (error: { stderr: string }) => {
          assert.match(error.stderr, /reflection error 5: symbol no\.such\.Service not found/);
          return true;
        });
      });

      it("calls Login, health and the admin API with descriptors from reflection only", async () => {
        const reply = (await py(
          stack,
          "call",
          "my_service.MyServiceAPI/Login",
          JSON.stringify({ username: "TestUser", password: "TestPassword", sessionId: "py-reflect" }),
        )) as {
          token: string;
          role: string;
        };
        tokens.push(reply.token);
        assert.equal(reply.role, "admin");
        assert.deepEqual(await py(stack, "call", "grpc.health.v1.Health/Check", "{}"), { status: "SERVING" });
        const listed = (await py(stack, "call", "mygateway.admin.v1.AdminService/ListInstances", "{}", `authorization=${reply.token}`)) as {
          instances: { podName: string }[];
        };
        assert.deepEqual(listed.instances.map((i) => i.podName).sort(), ["myservice-1", "myservice-2", "myservice-3"]);
      });
    },
  );

  describe("Prometheus metrics at GET /metrics", () => {
    it(
      "passes promtool check metrics",
      { skip: promtool || process.env.CI ? false : "needs promtool (apt-get install prometheus)" },
      async () => {
        const { text, contentType } = await scrape(stack);
        assert.match(contentType, /^text\/plain; version=0\.0\.4/);
        await promtoolCheck(text);
      },
    );

    it("counts allocations, busy rejections, proxied calls by method and code, logins; gauges read the store", async () => {
      await settle();
      const before = (await scrape(stack)).series;
      const statsBefore = await admin.getPoolStats({}, { headers: adminHeaders });
      const sessions = [];
      for (let i = 0; i < 3; i++) sessions.push(track(await login(client, "metrics")));
      const pods = new Set<string>();
      for (const s of sessions) {
        pods.add((await echo(client, s)).podName);
        await echo(client, s);
      }
      assert.equal(pods.size, 3);
      const fourth = track(await login(client, "metrics-busy"));
      assert.equal((await errorOf(echo(client, fourth))).code, Code.ResourceExhausted);
      assert.equal(
        (await errorOf(client.api.login({ username: "TestUser", password: "not-the-password", sessionId: "x" }))).code,
        Code.PermissionDenied,
      );
      // One Echo over the Connect protocol (HTTP/1.1): counted by the Connect path.
      const connect = createClient(MyServiceAPI, createConnectTransport({ baseUrl: stack.gatewayUrl, httpVersion: "1.1" }));
      await connect.myServiceEcho({ value: "c" }, { headers: sessions[0]?.headers });

      const { series, text } = await scrape(stack);
      await promtoolCheck(text);
      const delta = (key: string) => value(series, key) - value(before, key);
      assert.equal(delta('mygateway_allocations_total{result="acquired"}'), 3);
      assert.equal(delta('mygateway_allocations_total{result="busy"}'), 1);
      assert.equal(delta('mygateway_allocation_duration_seconds_count{result="acquired"}'), 3);
      assert.equal(delta('mygateway_proxied_calls_total{method="MyServiceEcho",code="OK"}'), 7);
      assert.equal(delta('mygateway_proxied_calls_total{method="MyServiceEcho",code="RESOURCE_EXHAUSTED"}'), 1);
      assert.equal(delta('mygateway_proxied_call_duration_seconds_count{method="MyServiceEcho",code="OK"}'), 7);
      assert.equal(delta('mygateway_logins_total{result="ok"}'), 4);
      assert.equal(delta('mygateway_logins_total{result="denied"}'), 1);
      // The admin API counts the last minute itself (what the dashboard shows), in step with the counters.
      const stats = await admin.getPoolStats({}, { headers: adminHeaders });
      assert.equal(stats.allocationsAcquiredLastMinute - statsBefore.allocationsAcquiredLastMinute, 3n);
      assert.equal(stats.allocationsBusyLastMinute - statsBefore.allocationsBusyLastMinute, 1n);
      assert.ok(stats.allocationsAcquiredLastMinute <= stats.allocationsAcquired);
      assert.equal(value(series, "mygateway_active_leases"), 3);
      assert.equal(value(series, 'mygateway_instances{state="leased"}'), 3);
      const ages = [...series].filter(([k]) => k.startsWith("mygateway_lease_age_seconds{"));
      assert.equal(ages.length, 3, "one lease age per leased instance");
      assert.ok(ages.every(([, v]) => v >= 0 && v < 60));
      assert.deepEqual(
        [...series]
          .filter(([k]) => k.startsWith("mygateway_instance_up{"))
          .map(([k, v]) => [/pod="([^"]+)"/.exec(k)?.[1], v])
          .sort(),
        [
          ["myservice-1", 1],
          ["myservice-2", 1],
          ["myservice-3", 1],
        ],
      );

      for (const s of sessions) await client.api.myServiceShutdown({}, { headers: s.headers });
      const shutdownOk = (await scrape(stack)).series;
      assert.equal(
        value(shutdownOk, 'mygateway_proxied_calls_total{method="MyServiceShutdown",code="OK"}') -
          value(before, 'mygateway_proxied_calls_total{method="MyServiceShutdown",code="OK"}'),
        3,
      );
      assert.equal(value(shutdownOk, "mygateway_active_leases"), 0);
    });
  });

  describe("admin API (mygateway.admin.v1.AdminService)", () => {
    it("refuses calls without a valid token (UNAUTHENTICATED) and tokens of role user (PERMISSION_DENIED)", async () => {
      const noToken = await errorOf(admin.listInstances({}));
      assert.deepEqual([noToken.code, noToken.message], [Code.Unauthenticated, "missing or invalid token"]);
      assert.equal((await errorOf(admin.listSessions({}, { headers: { authorization: "garbage" } }))).code, Code.Unauthenticated);
      const user = track(await login(client, "user", "OtherUser", "OtherPassword"));
      // errorOf is attached to every call at once: a call that fails before its turn in a loop
      // of awaits would be an unhandled rejection.
      const denied = await Promise.all(
        [
          admin.listInstances({}, { headers: user.headers }),
          admin.listSessions({}, { headers: { authorization: `Bearer ${user.token}` } }),
          admin.releaseSession({ sessionId: user.id }, { headers: user.headers }),
          admin.drainInstance({ instance: "myservice-1" }, { headers: user.headers }),
          admin.getPoolStats({}, { headers: user.headers }),
        ].map((call) => errorOf(call)),
      );
      assert.deepEqual(
        denied.map((e) => e.code),
        Array(5).fill(Code.PermissionDenied),
      );
      // The same answers over Connect JSON, as the dashboard sees them.
      const response = await fetch(`${stack.gatewayUrl}/mygateway.admin.v1.AdminService/ListInstances`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
      });
      assert.equal(response.status, 401);
      assert.equal(((await response.json()) as { code: string }).code, "unauthenticated");
    });

    it("lists instances and sessions: pod, address, health, session, since; owner, times", async () => {
      await settle();
      const s = track(await login(client, "listed"));
      const pod = (await retryWhile(capacity, () => echo(client, s))).podName;
      const { instances } = await admin.listInstances({}, { headers: adminHeaders });
      assert.deepEqual(instances.map((i) => i.podName).sort(), ["myservice-1", "myservice-2", "myservice-3"]);
      const leased = instances.find((i) => i.podName === pod);
      assert.ok(leased);
      assert.equal(leased.state, InstanceState.LEASED);
      assert.equal(leased.sessionId, s.id);
      assert.equal(leased.healthy, true);
      assert.match(leased.address, /^127\.0\.0\.1:\d+$/);
      const since = Number(leased.since?.seconds) * 1000;
      assert.ok(Math.abs(Date.now() - since) < 30_000, "since = when the session got it");
      assert.ok(instances.filter((i) => i !== leased).every((i) => i.state === InstanceState.FREE && i.sessionId === ""));
      const { sessions } = await admin.listSessions({}, { headers: adminHeaders });
      const session = sessions.find((x) => x.sessionId === s.id);
      assert.ok(session);
      assert.equal(session.owner, "TestUser");
      assert.equal(session.podName, pod);
      assert.equal(session.instanceAddress, leased.address);
      assert.ok(Number(session.expireTime?.seconds) > Number(session.createTime?.seconds));
      // Connect JSON, as the dashboard reads it.
      const json = (await (
        await fetch(`${stack.gatewayUrl}/mygateway.admin.v1.AdminService/ListSessions`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: adminHeaders.authorization as string },
          body: "{}",
        })
      ).json()) as { sessions: { sessionId: string; createTime: string }[] };
      assert.ok(json.sessions.some((x) => x.sessionId === s.id && /^\d{4}-\d\d-\d\dT/.test(x.createTime)));
      const stats = await admin.getPoolStats({}, { headers: adminHeaders });
      const metrics = (await scrape(stack)).series;
      assert.equal(Number(stats.allocationsAcquired), value(metrics, 'mygateway_allocations_total{result="acquired"}'));
      await client.api.myServiceShutdown({}, { headers: s.headers });
    });

    it("force-releases a session: its instance restarts, the client's next call moves with reason admin", async () => {
      await settle();
      const s = track(await login(client, "released"));
      const first = await retryWhile(capacity, () => echo(client, s));
      const restartsBefore = (await stack.processes()).find((p) => p.podName === first.podName)?.restarts ?? -1;
      const released = await admin.releaseSession({ sessionId: s.id }, { headers: adminHeaders });
      assert.equal(released.session?.sessionId, s.id);
      assert.equal(released.session?.podName, first.podName);
      assert.equal(released.recycled, true);
      assert.ok(!(await admin.listSessions({}, { headers: adminHeaders })).sessions.some((x) => x.sessionId === s.id));
      await stack.waitFor((ps) => ps.some((p) => p.podName === first.podName && p.restarts > restartsBefore && p.state === "running"));
      const next = await echo(client, s);
      assert.notEqual(next.podName, first.podName);
      assert.equal(next.serverSessionId, s.id);
      assert.equal(next.responseHeaders.get(transferHeaders.from), first.podName);
      assert.equal(next.responseHeaders.get(transferHeaders.to), next.podName);
      assert.equal(next.responseHeaders.get(transferHeaders.reason), "admin");
      const metrics = (await scrape(stack)).series;
      assert.ok(value(metrics, 'mygateway_leases_revoked_total{reason="admin"}') >= 1);
      assert.ok(value(metrics, 'mygateway_instance_recycles_total{result="ok"}') >= 1);
      assert.equal((await errorOf(admin.releaseSession({ sessionId: "no-such-session" }, { headers: adminHeaders }))).code, Code.NotFound);
      await client.api.myServiceShutdown({}, { headers: s.headers });
    });

    it("drains an instance: new sessions avoid it, its session stays; undrain puts it back", async () => {
      await settle();
      const holder = track(await login(client, "holder"));
      const held = (await retryWhile(capacity, () => echo(client, holder))).podName;
      const drained = await admin.drainInstance({ instance: held }, { headers: adminHeaders });
      assert.equal(drained.instance?.draining, true);
      assert.equal(drained.instance?.sessionId, holder.id);
      assert.equal((await echo(client, holder)).podName, held, "the existing session stays on a drained instance");
      await client.api.myServiceShutdown({}, { headers: holder.headers });

      // The drained instance restarts clean but stays out of allocation.
      const deadline = Date.now() + 20_000;
      for (;;) {
        const { instances } = await admin.listInstances({}, { headers: adminHeaders });
        if (instances.every((i) => i.state === InstanceState.FREE)) break;
        assert.ok(Date.now() < deadline, "instances did not become free");
        await sleep(100);
      }
      const a = track(await login(client, "drain-a"));
      const b = track(await login(client, "drain-b"));
      const c = track(await login(client, "drain-c"));
      const podA = (await echo(client, a)).podName;
      const podB = (await echo(client, b)).podName;
      assert.ok(podA !== held && podB !== held && podA !== podB, `${podA}, ${podB} must avoid ${held}`);
      const busy = await errorOf(echo(client, c));
      assert.deepEqual([busy.code, busy.message], [Code.ResourceExhausted, "all instances are busy"]);
      const undrained = await admin.undrainInstance({ instance: drained.instance?.address ?? "" }, { headers: adminHeaders });
      assert.equal(undrained.instance?.draining, false);
      assert.equal((await echo(client, c)).podName, held);
      assert.equal((await errorOf(admin.drainInstance({ instance: "nope:1" }, { headers: adminHeaders }))).code, Code.NotFound);
      for (const s of [a, b, c]) await client.api.myServiceShutdown({}, { headers: s.headers });
    });
  });

  describe("logs", () => {
    it("are JSON lines with request id and session id for calls, and never contain tokens or passwords", async () => {
      // More traffic that logs: a refused login with a distinctive password, and a bad token.
      const secretPassword = "Wrong-Password-Never-Logged-42";
      await errorOf(client.api.login({ username: "TestUser", password: secretPassword, sessionId: "log-check" }));
      const s = track(await login(client, "log-check"));
      await errorOf(client.api.myServiceEcho({ value: "x" }, { headers: { "session-id": s.id, authorization: `${s.token}x` } }));
      await sleep(300);
      const output = stack.output();
      // The launcher prefixes each process's lines: `gateway    | {...}`.
      const gatewayLines = output.split("\n").filter((l) => /^gateway\s*\| \{/.test(l));
      assert.ok(gatewayLines.length > 0, "gateway log lines found");
      const gatewayLog = gatewayLines.join("\n");
      for (const secret of ["TestPassword", "OtherPassword", secretPassword, stack.jwtSecret, ...tokens]) {
        assert.ok(!gatewayLog.includes(secret), `a secret (${secret.slice(0, 12)}…) appears in the gateway's log`);
      }
      // No process of the stack logs a token.
      for (const token of tokens) assert.ok(!output.includes(token), "a token appears in the stack's output");
      // A token's signature alone must not appear either.
      for (const token of tokens) assert.ok(!output.includes(token.split(".")[2] as string));
      const entries = gatewayLines.map((l) => JSON.parse(l.slice(l.indexOf("{"))) as Record<string, unknown>);
      const loginLine = entries.find((j) => j.msg === "login" && j.sessionId === s.id);
      assert.ok(loginLine, "the login of the session is logged");
      assert.match(String(loginLine.requestId), /^\S+$/);
      const refused = entries.find((j) => j.msg === "login refused" && j.sessionId === "log-check");
      assert.ok(refused, "the refused login is logged with its session id");
      assert.match(String(refused.requestId), /^\S+$/);
    });
  });
});
