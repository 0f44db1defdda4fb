import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { issueToken } from "../common/tokens.js";
import { transferHeaders } from "../gateway/routing/session-router.js";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { MyServiceAPI } from "../gen/my_service/my_service_pb.js";
import { InstanceService } from "../gen/myservice/instance/v1/instance_pb.js";
import { canConnect } from "../scripts/net-util.js";
import { repoRoot } from "../scripts/up-control-client.js";
import { echo, errorOf, gatewayClient, login, retryWhile } from "./e2e-client.js";
import { type ProcessInfo, type Stack, startStack } from "./stack.js";

const run = promisify(execFile);

function transport(port: number) {
  return createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}`, idleConnectionTimeoutMs: 1000 });
}

async function health(port: number, timeoutMs = 3000): Promise<HealthCheckResponse_ServingStatus> {
  const reply = await createClient(Health, transport(port)).check({}, { timeoutMs });
  return reply.status;
}

async function podNameOf(port: number): Promise<string> {
  return (await createClient(InstanceService, transport(port)).getStatus({}, { timeoutMs: 3000 })).podName;
}

/** Retries `call` while the gateway answers UNAVAILABLE: it allocates only instances it has health-checked. */
async function whenAllocatable<T>(call: () => Promise<T>, timeoutMs = 8000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await call();
    } catch (error) {
      if (!(error instanceof ConnectError && error.code === Code.Unavailable) || Date.now() > deadline) throw error;
      await sleep(100);
    }
  }
}

function find(processes: ProcessInfo[], name: string): ProcessInfo {
  const found = processes.find((p) => p.name === name);
  assert.ok(found, `no process ${name} in ${JSON.stringify(processes)}`);
  return found;
}

/** `process.kill(pid, 0)`, not fooled by a zombie waiting for a reaper. */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

async function waitUntilDead(pids: readonly number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let alive = pids.filter(isAlive);
  while (alive.length > 0 && Date.now() < deadline) {
    await sleep(50);
    alive = alive.filter(isAlive);
  }
  return alive;
}

function childPids(processes: ProcessInfo[]): number[] {
  return processes.map((p) => p.pid).filter((pid): pid is number => pid !== null);
}

describe("scripts/up.ts supervising 2 instances", () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack({ instances: 2, gateway: false });
  });
  after(() => stack?.stop());

  it("starts each instance under its pod name on its own port", async () => {
    const processes = await stack.processes();
    assert.deepEqual(
      processes.map((p) => [p.name, p.kind, p.podName, p.state, p.held]),
      [
        ["myservice-1", "myservice", "myservice-1", "running", false],
        ["myservice-2", "myservice", "myservice-2", "running", false],
      ],
    );
    assert.notEqual(processes[0]?.port, processes[1]?.port);
    for (const p of processes) {
      assert.equal(await health(p.port), HealthCheckResponse_ServingStatus.SERVING);
      assert.equal(await podNameOf(p.port), p.podName, "HOSTNAME reaches the instance as its pod name");
    }
    const state = JSON.parse(readFileSync(join(stack.dataDir, "up-stack.json"), "utf8"));
    assert.equal(state.controlUrl, stack.controlUrl);
    assert.deepEqual(state.processes, processes);
  });

  it("kill: the process comes back with a new pid on the same port", async () => {
    const before = find(await stack.processes(), "myservice-1");
    const afterKill = find(await stack.control("myservice-1", "kill"), "myservice-1");
    assert.notEqual(afterKill.pid, before.pid);
    const back = find(
      await stack.waitFor((ps) => {
        const p = find(ps, "myservice-1");
        return p.state === "running" && p.pid !== null && p.pid !== before.pid;
      }),
      "myservice-1",
    );
    assert.equal(back.port, before.port);
    assert.equal(back.restarts, before.restarts + 1);
    assert.equal(isAlive(before.pid as number), false);
    assert.equal(await health(back.port), HealthCheckResponse_ServingStatus.SERVING);
  });

  it("stop holds the process stopped until start", async () => {
    const before = find(await stack.processes(), "myservice-2");
    const stopped = find(await stack.control("myservice-2", "stop"), "myservice-2");
    assert.deepEqual([stopped.state, stopped.pid, stopped.held], ["stopped", null, true]);
    await sleep(600); // longer than the first restart backoff
    assert.equal(find(await stack.processes(), "myservice-2").state, "stopped");
    assert.equal(await canConnect(before.port), false);
    const started = find(await stack.control("myservice-2", "start"), "myservice-2");
    assert.equal(started.held, false);
    const back = find(await stack.waitFor((ps) => find(ps, "myservice-2").state === "running"), "myservice-2");
    assert.equal(back.port, before.port);
    assert.equal(await health(back.port), HealthCheckResponse_ServingStatus.SERVING);
  });

  it("restarts an instance that exits 0 after Shutdown, at once", async () => {
    const before = find(await stack.processes(), "myservice-1");
    const { token } = await issueToken(stack.jwtSecret, { sub: "TestUser", role: "admin", session_id: "s-up" }, 60_000);
    const headers = { authorization: token, "session-id": "s-up" };
    const client = createClient(MyServiceAPI, transport(before.port));
    assert.equal((await client.myServiceEcho({ value: "x" }, { headers })).podName, "myservice-1");
    await client.myServiceShutdown({}, { headers });
    const replied = Date.now();
    const respawned = find(
      await stack.waitFor((ps) => {
        const p = find(ps, "myservice-1");
        return p.pid !== null && p.pid !== before.pid;
      }, 5000),
      "myservice-1",
    );
    assert.ok(Date.now() - replied < 5000, `respawned after ${Date.now() - replied} ms`);
    // A clean exit of a ready instance is the normal recycle: the short delay, not the backoff.
    assert.match(stack.output(), /myservice-1 exited with code 0 after \d+ ms; restarting in 50 ms/);
    assert.equal(respawned.restarts, before.restarts + 1);
    await stack.waitFor((ps) => find(ps, "myservice-1").state === "running");
    const status = await createClient(InstanceService, transport(before.port)).getStatus({});
    assert.equal(status.sessionId, "", "the restarted instance has no session");
  });

  it("signal: SIGSTOP pauses an instance and SIGCONT resumes it", async () => {
    const p = find(await stack.processes(), "myservice-2");
    await stack.signal("myservice-2", "SIGSTOP");
    await assert.rejects(health(p.port, 300));
    await stack.signal("myservice-2", "SIGCONT");
    assert.equal(await health(p.port), HealthCheckResponse_ServingStatus.SERVING);
    assert.equal(find(await stack.processes(), "myservice-2").pid, p.pid, "no restart");
  });

  it("answers 404 for an unknown process and 400 for a bad action or signal", async () => {
    const post = (path: string) => fetch(`${stack.controlUrl}${path}`, { method: "POST" }).then((r) => r.status);
    assert.equal(await post("/processes/nope/kill"), 404);
    assert.equal(await post("/processes/myservice-1/explode"), 400);
    assert.equal(await post("/processes/instances/signal?sig=SIGSEGV"), 400);
    assert.equal(await post("/processes/instances/signal"), 400);
  });

  it("stop and start address every instance as `instances`", async () => {
    const stopped = await stack.control("instances", "stop");
    assert.deepEqual(
      stopped.map((p) => p.state),
      ["stopped", "stopped"],
    );
    await stack.control("instances", "start");
    await stack.waitFor((ps) => ps.every((p) => p.state === "running" && !p.held));
  });
});

describe("scripts/up.ts shutdown", () => {
  it("SIGTERM stops every child and exits 0", async (t) => {
    const stack = await startStack({ instances: 2, gateway: false });
    t.after(() => stack.stop());
    const pids = childPids(await stack.processes());
    assert.equal(pids.length, 2);
    process.kill(stack.launcherPid, "SIGTERM");
    assert.deepEqual(await stack.launcherExit, { code: 0, signal: null });
    assert.deepEqual(await waitUntilDead(pids, 1000), [], "no orphan left");
    assert.match(stack.output(), /all processes stopped/);
  });

  it("a launcher killed with SIGKILL leaves no orphans", async (t) => {
    const stack = await startStack({ instances: 2, gateway: false });
    t.after(() => stack.stop());
    const pids = childPids(await stack.processes());
    process.kill(stack.launcherPid, "SIGKILL");
    await stack.launcherExit;
    assert.deepEqual(await waitUntilDead(pids, 8000), [], "children exit once the launcher's pipe closes");
  });
});

/** Runs `scripts/up.ts <args>` as a command line client (what `npm run up -- <args>` runs after its build). */
async function upCommand(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ["--import", "tsx", join(repoRoot, "scripts", "up.ts"), ...args], {
      cwd: repoRoot,
      timeout: 120_000,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

const controlPortOf = (stack: Stack) => stack.controlUrl.split(":").at(-1) as string;

describe("scripts/up.ts with the gateway", () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack({ instances: 2 });
  });
  after(() => stack?.stop());

  it("runs the gateway next to the instances and restarts it on its port", async () => {
    const gateway = find(await stack.processes(), "gateway");
    assert.deepEqual([gateway.kind, gateway.podName, gateway.state], ["gateway", null, "running"]);
    assert.equal(stack.gatewayAddress, `127.0.0.1:${gateway.port}`);

    const client = createClient(MyServiceAPI, createGrpcTransport({ baseUrl: stack.gatewayUrl, idleConnectionTimeoutMs: 1000 }));
    const login = await client.login({ username: "TestUser", password: "TestPassword", sessionId: "s-gw" });
    const headers = { authorization: login.token, "session-id": "s-gw" };
    const echo = await whenAllocatable(() => client.myServiceEcho({ value: "hi" }, { headers, timeoutMs: 5000 }));
    assert.match(echo.podName, /^myservice-[12]$/);

    await stack.control("gateway", "kill");
    const back = find(
      await stack.waitFor((ps) => {
        const p = find(ps, "gateway");
        return p.state === "running" && p.pid !== gateway.pid;
      }),
      "gateway",
    );
    assert.equal(back.port, gateway.port);
    assert.equal(back.restarts, gateway.restarts + 1, stack.output());
    const again = await whenAllocatable(() => client.myServiceEcho({ value: "hi" }, { headers, timeoutMs: 5000 }));
    assert.equal(again.podName, echo.podName, "the lease survived the gateway's kill -9");
    await client.myServiceShutdown({}, { headers });
  });

  it("npm run up -- restart gateway restarts only the gateway: every session stays on its instance", async () => {
    await stack.waitAllFree();
    const client = gatewayClient(stack.gatewayUrl);
    const sessions = [await login(client, "restart-a"), await login(client, "restart-b")];
    const pods = [];
    for (const s of sessions) pods.push((await retryWhile([Code.Unavailable, Code.ResourceExhausted], () => echo(client, s))).podName);
    assert.notEqual(pods[0], pods[1]);
    const before = await stack.processes();
    const result = await upCommand("restart", "gateway", "--control-port", controlPortOf(stack));
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    assert.match(result.stdout, /^gateway\s+running\s+\d+/m);
    const after = await stack.processes();
    assert.notEqual(find(after, "gateway").pid, find(before, "gateway").pid, "a new gateway process");
    assert.equal(find(after, "gateway").restarts, find(before, "gateway").restarts + 1);
    for (const name of ["myservice-1", "myservice-2"]) assert.equal(find(after, name).pid, find(before, name).pid, `${name} kept running`);
    client.close();
    const fresh = gatewayClient(stack.gatewayUrl);
    for (const [i, s] of sessions.entries()) {
      const reply = await echo(fresh, s);
      assert.equal(reply.podName, pods[i], "the session stays on its instance");
      assert.equal(reply.responseHeaders.get(transferHeaders.reason), null, "no transfer");
      await fresh.api.myServiceShutdown({}, { headers: s.headers });
    }
    fresh.close();
  });
});

describe("scripts/up.ts --restart on-failure", () => {
  it("three Shutdowns leave the pool empty (UNAVAILABLE), a crash is still restarted, npm run up -- start brings one back", async (t) => {
    const stack = await startStack({
      instances: 3,
      launcherArgs: ["--restart", "on-failure"],
      env: { HEALTH_CHECK_INTERVAL: "250ms", HEALTH_CHECK_TIMEOUT: "500ms" },
    });
    t.after(() => stack.stop());
    // A crash is a failure: restarted.
    const crashed = find(await stack.processes(), "myservice-1");
    await stack.control("myservice-1", "kill");
    await stack.waitFor((ps) => find(ps, "myservice-1").state === "running" && find(ps, "myservice-1").pid !== crashed.pid);
    await stack.waitAllFree();

    const client = gatewayClient(stack.gatewayUrl);
    t.after(() => client.close());
    const pods = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const s = await login(client, `on-failure-${i}`);
      pods.add((await echo(client, s)).podName);
      await client.api.myServiceShutdown({}, { headers: s.headers });
    }
    assert.equal(pods.size, 3);
    const exited = await stack.waitFor((ps) => ps.filter((p) => p.kind === "myservice").every((p) => p.state === "exited"));
    assert.deepEqual(
      exited.filter((p) => p.kind === "myservice").map((p) => [p.name, p.pid, p.restarts]),
      [
        ["myservice-1", null, 1],
        ["myservice-2", null, 0],
        ["myservice-3", null, 0],
      ],
    );
    assert.match(stack.output(), /myservice-2 exited with code 0 after \d+ ms; not restarted \(restart policy on-failure\)/);

    // The pool is empty: the next new session is refused as SPEC 4.3 says, once the gateway saw them go.
    const next = await login(client, "on-failure-next");
    let refusal = await errorOf(echo(client, next));
    for (let i = 0; refusal.code === Code.ResourceExhausted && i < 100; i++) {
      await sleep(100);
      refusal = await errorOf(echo(client, next));
    }
    assert.deepEqual([refusal.code, refusal.message], [Code.Unavailable, "backend service unavailable"]);

    const started = await upCommand("start", "myservice-1", "--control-port", controlPortOf(stack));
    assert.equal(started.code, 0, `${started.stdout}\n${started.stderr}`);
    assert.match(started.stdout, /^myservice-1\s+(starting|running)/m);
    await stack.waitFor((ps) => find(ps, "myservice-1").state === "running");
    const back = await retryWhile([Code.Unavailable, Code.ResourceExhausted], () => echo(client, next), 15_000);
    assert.equal(back.podName, "myservice-1");
    assert.deepEqual(
      (await stack.processes()).filter((p) => p.name !== "myservice-1" && p.kind === "myservice").map((p) => p.state),
      ["exited", "exited"],
    );
  });
});
