// The seed flow and the waiting room with a gRPC client that is not ours: Python grpcio
// (Debian python3-grpcio).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it, type TestContext } from "node:test";
import { type Stack, startStack } from "./stack.js";

const python = "/usr/bin/python3";
const hasGrpcio = spawnSync(python, ["-c", "import grpc"]).status === 0;

describe("seed flow from Python grpcio", { skip: hasGrpcio || process.env.CI ? false : "python3-grpcio not installed" }, () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack({ instances: 3 });
  });
  after(() => stack?.stop());

  /** Runs a Python client against the stack with 3 instances; every one of its checks must hold. */
  const runPython = (t: TestContext, script: string, timeout: number) => {
    const run = spawnSync(python, [join(import.meta.dirname, "python", script), stack.gatewayAddress, "3"], { encoding: "utf8", timeout });
    t.diagnostic(run.stdout);
    assert.equal(run.status, 0, `python client failed:\n${run.stdout}\n${run.stderr}`);
    assert.match(run.stdout, /0 checks failed/);
  };

  it("logs in four clients; three occupy the three instances, the fourth gets RESOURCE_EXHAUSTED", (t) => {
    runPython(t, "seed_flow.py", 60_000);
  });

  it("waits in the queue (SPEC 11): a deadline ends the wait with DEADLINE_EXCEEDED, a freed instance goes to the waiter", async (t) => {
    await stack.waitAllFree();
    runPython(t, "waiting_room.py", 90_000);
  });
});
