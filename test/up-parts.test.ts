import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { createLinePrefixer } from "../scripts/line-prefixer.js";
import { pickFreePorts } from "../scripts/net-util.js";
import { createSupervisor, type ProcessSpec, type Supervisor } from "../scripts/supervisor.js";
import { parseUpOptions, UsageError } from "../scripts/up-config.js";
import type { ProcessInfo, RestartPolicy } from "../scripts/up-protocol.js";

describe("createLinePrefixer()", () => {
  it("writes whole lines only, each prefixed", () => {
    const out: string[] = [];
    const feed = createLinePrefixer("a| ", (t) => out.push(t));
    feed(Buffer.from("one\ntw"));
    feed(Buffer.from("o\r\nthr"));
    feed(Buffer.from("ee"));
    assert.deepEqual(out, ["a| one\n", "a| two\n"]);
    feed(null);
    assert.deepEqual(out, ["a| one\n", "a| two\n", "a| three\n"]);
  });

  it("never splits a multi-byte character across chunks", () => {
    const out: string[] = [];
    const feed = createLinePrefixer("", (t) => out.push(t));
    const bytes = Buffer.from("héllo\n");
    feed(bytes.subarray(0, 2));
    feed(bytes.subarray(2));
    assert.deepEqual(out, ["héllo\n"]);
  });
});

describe("parseUpOptions()", () => {
  it("fills the defaults of SPEC 7", () => {
    const o = parseUpOptions([], {}, "/repo", "/cwd");
    assert.deepEqual(
      [o.instances, o.gatewayPort, o.instanceBasePort, o.controlPort, o.dataDir, o.stateFile, o.gateway],
      [3, 10000, 5001, 10099, "/repo/data", "/repo/data/up-stack.json", true],
    );
  });

  it("takes the environment, and the command line over it", () => {
    const env = { UP_INSTANCES: "5", SERVICE_PORT_GRPC: "12000" };
    const o = parseUpOptions(["--instances", "2", "--data-dir", "d", "--no-gateway"], env, "/repo", "/cwd");
    assert.deepEqual([o.instances, o.gatewayPort, o.dataDir, o.gateway], [2, 12000, "/cwd/d", false]);
  });

  it("runs one gateway on SQLite unless asked for the PostgreSQL shape (SPEC 10)", () => {
    const o = parseUpOptions([], {}, "/repo", "/cwd");
    assert.deepEqual([o.store, o.gateways, o.postgresPort], ["sqlite", 1, 10432]);
    const p = parseUpOptions(["--store", "postgres", "--gateways", "2", "--postgres-port", "20432"], {}, "/repo", "/cwd");
    assert.deepEqual([p.store, p.gateways, p.postgresPort], ["postgres", 2, 20432]);
    const e = parseUpOptions([], { UP_STORE: "postgres", UP_GATEWAYS: "3" }, "/repo", "/cwd");
    assert.deepEqual([e.store, e.gateways], ["postgres", 3]);
    assert.throws(
      () => parseUpOptions(["--store", "mysql", "--gateways", "0"], {}, "/repo", "/cwd"),
      (e: unknown) => e instanceof UsageError && /--store/.test(e.message) && /--gateways/.test(e.message),
    );
  });

  it("reports every bad value at once", () => {
    assert.throws(
      () => parseUpOptions(["--instances", "0", "--control-port", "x"], {}, "/repo", "/cwd"),
      (e: unknown) => e instanceof UsageError && /--instances/.test(e.message) && /--control-port/.test(e.message),
    );
    assert.throws(() => parseUpOptions(["--bogus"], {}, "/repo", "/cwd"), UsageError);
  });

  it("reads the restart policy and commands for a running launcher", () => {
    const o = parseUpOptions(["--restart", "on-failure"], {}, "/repo", "/cwd");
    assert.deepEqual([o.restart, o.command, o.controlPortGiven], ["on-failure", undefined, false]);
    assert.equal(parseUpOptions([], { UP_RESTART: "on-failure" }, "/repo", "/cwd").restart, "on-failure");
    assert.equal(parseUpOptions([], {}, "/repo", "/cwd").restart, "always");
    const restart = parseUpOptions(["restart", "gateway", "--control-port", "22099"], {}, "/repo", "/cwd");
    assert.deepEqual(
      [restart.command, restart.controlPort, restart.controlPortGiven],
      [{ action: "restart", name: "gateway" }, 22099, true],
    );
    assert.deepEqual(parseUpOptions(["status"], {}, "/repo", "/cwd").command, { action: "status", name: "" });
    for (const bad of [["--restart", "unless-stopped"], ["start"], ["explode", "x"], ["stop", "a", "b"], ["status", "x"]]) {
      assert.throws(() => parseUpOptions(bad, {}, "/repo", "/cwd"), UsageError, bad.join(" "));
    }
  });
});

/** A process that listens on `port` (so the supervisor sees it running), then exits with `code` after `ms`. */
function fakeSpec(
  name: string,
  port: number,
  restart: RestartPolicy,
  code: number,
  ms: number,
  kind: ProcessSpec["kind"] = "myservice",
): ProcessSpec {
  const script = `require("net").createServer().listen(${port}, "127.0.0.1"); setTimeout(() => process.exit(${code}), ${ms});`;
  return {
    name,
    kind,
    podName: kind === "myservice" ? name : null,
    port,
    probeHost: "127.0.0.1",
    command: process.execPath,
    args: ["-e", script],
    env: {},
    cwd: process.cwd(),
    restart,
  };
}

async function until(supervisor: Supervisor, name: string, predicate: (p: ProcessInfo) => boolean, timeoutMs = 8000): Promise<ProcessInfo> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const p = supervisor.list().find((x) => x.name === name);
    if (p !== undefined && predicate(p)) return p;
    assert.ok(Date.now() < deadline, `${name}: ${JSON.stringify(p)}`);
    await sleep(25);
  }
}

describe("createSupervisor() restart policies", () => {
  const quiet = { onOutput() {}, onChange() {}, backoff: { initialMs: 50, cleanExitMs: 50 }, probeIntervalMs: 25 };

  it("always: restarts after exit code 0 and after a failure", async (t) => {
    const [a = 0, b = 0] = await pickFreePorts(2);
    const log: string[] = [];
    const supervisor = createSupervisor({
      ...quiet,
      log: (m) => log.push(m),
      specs: [fakeSpec("clean", a, "always", 0, 300), fakeSpec("crash", b, "always", 1, 300)],
    });
    t.after(() => supervisor.shutdown());
    supervisor.startAll();
    for (const name of ["clean", "crash"]) await until(supervisor, name, (p) => p.restarts >= 1 && p.state === "running");
    assert.ok(
      log.some((l) => /^clean exited with code 0 after \d+ ms; restarting in 50 ms$/.test(l)),
      log.join("\n"),
    );
  });

  it("on-failure: exit code 0 stays down (exited) until start; a failure or a kill is restarted", async (t) => {
    const [a = 0, b = 0, c = 0] = await pickFreePorts(3);
    const log: string[] = [];
    const supervisor = createSupervisor({
      ...quiet,
      log: (m) => log.push(m),
      specs: [
        fakeSpec("clean", a, "on-failure", 0, 300),
        fakeSpec("crash", b, "on-failure", 1, 300),
        fakeSpec("killed", c, "on-failure", 0, 60_000),
      ],
    });
    t.after(() => supervisor.shutdown());
    supervisor.startAll();
    await until(supervisor, "clean", (p) => p.state === "exited");
    await until(supervisor, "crash", (p) => p.restarts >= 1);
    await until(supervisor, "killed", (p) => p.state === "running");
    const killedPid = supervisor.list().find((p) => p.name === "killed")?.pid;
    await supervisor.kill("killed");
    await until(supervisor, "killed", (p) => p.state === "running" && p.pid !== killedPid);
    await sleep(400); // longer than every restart delay: "clean" stays down
    assert.deepEqual(
      [supervisor.list().find((p) => p.name === "clean")].map((p) => [p?.state, p?.pid, p?.restarts]),
      [["exited", null, 0]],
    );
    assert.ok(
      log.some((l) => /^clean exited with code 0 after \d+ ms; not restarted \(restart policy on-failure\)$/.test(l)),
      log.join("\n"),
    );
    supervisor.start("clean");
    await until(supervisor, "clean", (p) => p.state === "running" && p.restarts === 1);
  });

  it("restart: stops gracefully and waits until the process is back; gateway names every gateway", async (t) => {
    const [a = 0, b = 0, c = 0] = await pickFreePorts(3);
    const supervisor = createSupervisor({
      ...quiet,
      log() {},
      specs: [
        fakeSpec("gateway-1", a, "always", 0, 60_000, "gateway"),
        fakeSpec("gateway-2", b, "always", 0, 60_000, "gateway"),
        fakeSpec("myservice-1", c, "always", 0, 60_000),
      ],
    });
    t.after(() => supervisor.shutdown());
    assert.deepEqual(supervisor.resolve("gateway"), ["gateway-1", "gateway-2"]);
    assert.deepEqual(supervisor.resolve("instances"), ["myservice-1"]);
    assert.deepEqual(supervisor.resolve("gateway-2"), ["gateway-2"]);
    assert.deepEqual(supervisor.resolve("nope"), []);
    supervisor.startAll();
    const before = await until(supervisor, "gateway-1", (p) => p.state === "running");
    await supervisor.restart("gateway-1");
    const after = supervisor.list().find((p) => p.name === "gateway-1");
    assert.equal(after?.state, "running");
    assert.notEqual(after?.pid, before.pid);
    assert.equal(after?.restarts, before.restarts + 1);
  });
});
