import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { InstanceService } from "../gen/myservice/instance/v1/instance_pb.js";
import { describeError, formatStatus, ScenarioContext, type ScenarioOptions, StepFailed, sleep } from "./context.js";
import { formatMs, messages, sessionHeaders } from "./helpers.js";
import type { Reporter, RunResult, ScenarioResult } from "./results.js";
import type { Scenario } from "./scenario.js";
import { StackControlError, waitForInstancesRunning } from "./stack-control.js";

/** How a scenario is run and cleaned up after. */
export interface RunOptions {
  /** Leave the sessions the scenario leased open instead of shutting them down. Default false. */
  readonly keep?: boolean;
  /**
   * After cleanup, wait until recycled instances are free again (what `all` does between
   * scenarios). Default false.
   */
  readonly settle?: boolean;
  /**
   * Extra wait after the instances look free, for the gateway's health checks to see them,
   * milliseconds. Default 1500.
   */
  readonly settleMs?: number;
}

/**
 * Runs one scenario: its steps, its restore actions (even on failure), the verdict, then the
 * cleanup (Shutdown of every session still leased, unless `keep`) and, with `settle`, the wait
 * for recycled instances. Never throws.
 */
export async function runScenario(
  scenario: Scenario,
  options: ScenarioOptions,
  reporter: Reporter,
  run: RunOptions = {},
): Promise<ScenarioResult> {
  reporter.scenarioStarted(scenario.name, scenario.description);
  const ctx = new ScenarioContext(scenario.name, options, reporter);
  const started = performance.now();
  let error: string | undefined;
  try {
    await scenario.run(ctx);
  } catch (caught) {
    if (caught instanceof StepFailed) {
      error = `${caught.step.title}: ${caught.step.error ?? "failed"}`;
    } else {
      // A bug in the scenario itself, or an error outside any step: report it as a step.
      error = `unexpected error: ${describeError(caught)}`;
      ctx.skip("(outside any step)", error);
    }
  }
  const restored = await ctx.runRestores();
  if (!restored && error === undefined) error = "restoring the stack failed";
  const durationMs = Math.round(performance.now() - started);
  const verdict: ScenarioResult = {
    name: scenario.name,
    status: error === undefined ? "passed" : "failed",
    durationMs,
    steps: [...ctx.steps],
    notes: [...ctx.notes],
    ...(error !== undefined ? { error } : {}),
    cleanup: { status: "none", steps: [] },
  };
  reporter.scenarioFinished(verdict);

  const before = ctx.steps.length;
  ctx.enterCleanup();
  let cleanupStatus: ScenarioResult["cleanup"]["status"] = "none";
  if (ctx.leases.size > 0 && run.keep) {
    cleanupStatus = "kept";
    ctx.note(
      `--keep: left ${ctx.leases.size} session(s) leased: ${[...ctx.leases.values()]
        .map((l) => `${l.id}${l.pod ? ` on ${l.pod}` : ""}`)
        .join(", ")}; they expire after the gateway's LEASE_IDLE_TTL`,
    );
  } else if (ctx.leases.size > 0) {
    cleanupStatus = (await shutDownLeases(ctx)) ? "passed" : "failed";
  }
  if (run.settle && ctx.recycled > 0 && cleanupStatus !== "kept") {
    try {
      await ctx.step(
        "Wait until recycled instances are free again",
        () => waitForFreeInstances(ctx, run.settleMs ?? 1500),
        (d) => d,
      );
      if (cleanupStatus === "none") cleanupStatus = "passed";
    } catch {
      cleanupStatus = "failed";
    }
  }
  ctx.closeConnections();
  const result: ScenarioResult = {
    ...verdict,
    notes: [...ctx.notes],
    cleanup: { status: cleanupStatus, steps: ctx.steps.slice(before) },
  };
  reporter.cleanupFinished(result);
  return result;
}

/** Runs scenarios one after another, each cleaned up (and with `settle`, waited for) before the next. */
export async function runScenarios(
  scenarios: readonly Scenario[],
  options: ScenarioOptions,
  reporter: Reporter,
  run: RunOptions = {},
): Promise<RunResult> {
  const startedAt = new Date();
  const started = performance.now();
  const results: ScenarioResult[] = [];
  for (const scenario of scenarios) results.push(await runScenario(scenario, options, reporter, run));
  return {
    gateway: options.gateway,
    startedAt: startedAt.toISOString(),
    durationMs: Math.round(performance.now() - started),
    passed: results.every((r) => r.status === "passed" && r.cleanup.status !== "failed"),
    scenarios: results,
  };
}

/** Shuts down every session the scenario left leased; returns false if one could not be. */
async function shutDownLeases(ctx: ScenarioContext): Promise<boolean> {
  let ok = true;
  const client = ctx.client();
  for (const lease of [...ctx.leases.values()]) {
    try {
      await ctx.step(
        `Cleanup: Shutdown ${lease.id}${lease.pod ? ` (pod ${lease.pod})` : ""}`,
        async () => {
          // After a kill or an outage the session's instance may still be restarting: retry
          // UNAVAILABLE / RESOURCE_EXHAUSTED until the gateway answers for good.
          const started = Date.now();
          for (;;) {
            try {
              const reply = await client.myServiceShutdown({}, { headers: sessionHeaders(lease), timeoutMs: ctx.options.callTimeoutMs });
              ctx.recycled += 1;
              ctx.released(lease);
              return `→ pod ${reply.podName} shut down`;
            } catch (error) {
              // The lease is already gone (instance died or was recycled): nothing left to free.
              if (error instanceof ConnectError && error.code === Code.PermissionDenied && error.rawMessage === messages.sessionNotSet) {
                ctx.released(lease);
                return `→ no lease left (${formatStatus(error.code, error.rawMessage)})`;
              }
              const transient = error instanceof ConnectError && (error.code === Code.Unavailable || error.code === Code.ResourceExhausted);
              if (!transient || Date.now() - started > ctx.options.capacityWaitMs) throw error;
              await sleep(250);
            }
          }
        },
        (detail) => detail,
      );
    } catch {
      ok = false;
    }
  }
  return ok;
}

/** Used when the stack exposes no instance view: a fixed wait for restarts and health checks. */
const blindSettleMs = 5000;

/**
 * Waits until every instance runs and (when the stack exposes instances directly) reports no
 * session, then `settleMs` more for the gateway's health checks. Without a stack controller it
 * waits a fixed time. Returns what it observed.
 */
async function waitForFreeInstances(ctx: ScenarioContext, settleMs: number): Promise<string> {
  const started = Date.now();
  let instances: Awaited<ReturnType<typeof waitForInstancesRunning>>;
  try {
    instances = await waitForInstancesRunning(ctx.stack(), ctx.options.instances, 30_000);
  } catch (error) {
    if (error instanceof StackControlError && error.unreachable) {
      await sleep(blindSettleMs);
      return `→ no stack controller; waited ${formatMs(blindSettleMs)}`;
    }
    throw error;
  }
  const deadline = Date.now() + 30_000;
  const direct = instances.filter((i) => i.address !== undefined);
  for (const instance of direct) {
    const client = createClient(InstanceService, ctx.transport(instance.address as string).transport);
    for (;;) {
      try {
        const status = await client.getStatus({}, { timeoutMs: 2000 });
        if (status.sessionId === "" && !status.shuttingDown) break;
      } catch {
        // Still starting.
      }
      if (Date.now() > deadline) throw new Error(`instance ${instance.pod} still busy or unreachable after 30 s`);
      await sleep(100);
    }
  }
  const wait = direct.length > 0 ? settleMs : settleMs + blindSettleMs;
  await sleep(wait);
  return `→ ${instances.length} instances running${direct.length > 0 ? " and free" : ""} after ${formatMs(Date.now() - started)}`;
}
