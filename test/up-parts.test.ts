import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createLinePrefixer } from "../scripts/line-prefixer.js";
import { parseUpOptions, UsageError } from "../scripts/up-config.js";

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
});
