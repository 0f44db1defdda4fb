import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { ScenarioOptions } from "../integrationtests/context.js";
import { formatStep } from "../integrationtests/report.js";
import type { Reporter, ScenarioResult } from "../integrationtests/results.js";
import { runScenario } from "../integrationtests/runner.js";
import { allScenarios } from "../integrationtests/scenarios/index.js";
import { createUpStackControl } from "../integrationtests/stack-control.js";
import { type Stack, startStack } from "./stack.js";

/** Subscribe interval of the test stack, milliseconds (the dev default is 5000). */
const subscribeIntervalMs = 100;
const instances = 3;

/** Collects the step lines of one scenario, for the assertion message. */
function collectingReporter(lines: string[]): Reporter {
  return {
    scenarioStarted: (name) => lines.push(`▶ ${name}`),
    step: (step) => lines.push(...formatStep(step)),
    note: (text) => lines.push(`  · ${text}`),
    scenarioFinished: (r) => lines.push(`==== ${r.status.toUpperCase()}: ${r.name} (${r.durationMs} ms) ====`),
    cleanupFinished: () => {},
  };
}

describe("integration scenarios (SPEC 8) against a real stack", () => {
  let stack: Stack;
  let options: ScenarioOptions;

  before(async () => {
    stack = await startStack({
      instances,
      env: { SUBSCRIBE_INTERVAL_MS: String(subscribeIntervalMs), LOG_FORMAT: "json", LOG_LEVEL: "warn" },
    });
    const control = createUpStackControl(stack.controlUrl);
    options = {
      gateway: stack.gatewayAddress,
      username: "TestUser",
      password: "TestPassword",
      role: "admin",
      instances,
      subscribeIntervalMs,
      jwtSecret: stack.jwtSecret,
      capacityWaitMs: 20_000,
      callTimeoutMs: 10_000,
      stackControl: () => control,
    };
  });

  after(async () => {
    await stack?.stop();
  });

  // Same order and cleanup as `integrationtests all`: each scenario's leftovers are shut down
  // and recycled instances waited for before the next one starts.
  for (const scenario of allScenarios) {
    it(`${scenario.name}: ${scenario.description}`, { timeout: 120_000 }, async (t) => {
      const lines: string[] = [];
      const result: ScenarioResult = await runScenario(scenario, options, collectingReporter(lines), {
        settle: true,
        settleMs: 500,
      });
      const log = `${lines.join("\n")}\n--- stack output (tail) ---\n${stack.output().split("\n").slice(-30).join("\n")}`;
      assert.equal(result.status, "passed", `${scenario.name} failed: ${result.error}\n${log}`);
      assert.notEqual(result.cleanup.status, "failed", `cleanup after ${scenario.name} failed\n${log}`);
      for (const line of lines) t.diagnostic(line);
    });
  }
});
