// The seed flow with a gRPC client that is not ours: Python grpcio (Debian python3-grpcio).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type Stack, startStack } from "./stack.js";

const python = "/usr/bin/python3";
const hasGrpcio = spawnSync(python, ["-c", "import grpc"]).status === 0;

describe("seed flow from Python grpcio", { skip: hasGrpcio || process.env.CI ? false : "python3-grpcio not installed" }, () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack({ instances: 3 });
  });
  after(() => stack?.stop());

  it("logs in four clients; three occupy the three instances, the fourth gets RESOURCE_EXHAUSTED", (t) => {
    const run = spawnSync(python, [join(import.meta.dirname, "python", "seed_flow.py"), stack.gatewayAddress, "3"], {
      encoding: "utf8",
      timeout: 60_000,
    });
    t.diagnostic(run.stdout);
    assert.equal(run.status, 0, `python client failed:\n${run.stdout}\n${run.stderr}`);
    assert.match(run.stdout, /0 checks failed/);
  });
});
