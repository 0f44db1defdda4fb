/**
 * How the gateway probes instances (SPEC 4.8), seen from the instance: a full probe (gRPC
 * health Check + status call) every HEALTH_FULL_CHECK_INTERVAL, an HTTP/2 PING every
 * HEALTH_CHECK_INTERVAL in between — and what only a full probe can see (NOT_SERVING, a session
 * the store does not know) is still seen within one full period.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { EchoRequestSchema, EchoResponseSchema } from "../gen/my_service/my_service_pb.js";
import { echoPath, FakeInstance, sessionMetadata, withGatewayFor } from "./fake-instance.js";

describe("probing: PINGs between full probes", () => {
  const fake = new FakeInstance("probed-1");
  const { gateway, client } = withGatewayFor(fake, {
    HEALTH_CHECK_INTERVAL: "100ms",
    HEALTH_FULL_CHECK_INTERVAL: "1s",
    HEALTH_CHECK_TIMEOUT: "300ms",
  });

  const echo = async (session: string): Promise<{ code: number; pod?: string }> => {
    const md = await sessionMetadata(session);
    const request = Buffer.from(toBinary(EchoRequestSchema, create(EchoRequestSchema, { value: "p" })));
    return new Promise((resolve) =>
      client().makeUnaryRequest(
        echoPath,
        (b: Buffer) => b,
        (b: Buffer) => b,
        request,
        md,
        { deadline: Date.now() + 5000 },
        (error, value) => resolve(error ? { code: error.code } : { code: 0, pod: fromBinary(EchoResponseSchema, value as Buffer).podName }),
      ),
    );
  };

  /** Polls `check` every 50 ms until it holds; returns how long that took, ms (throws after `withinMs`). */
  const until = async (what: string, withinMs: number, check: () => boolean | Promise<boolean>) => {
    const t0 = Date.now();
    while (!(await check())) {
      if (Date.now() - t0 > withinMs)
        throw new Error(`${what}: not within ${withinMs} ms (gateway log:\n${gateway().output().slice(-2000)})`);
      await sleep(50);
    }
    return Date.now() - t0;
  };

  it("sends one health Check and one status call per full period and PINGs in between", async () => {
    const before = { ...fake.counts };
    await sleep(3000);
    const checks = fake.counts.healthChecks - before.healthChecks;
    const statuses = fake.counts.statusCalls - before.statusCalls;
    const pings = fake.counts.pings - before.pings;
    // 3 s: ~3 full probes and ~27 PINGs; every probe a full one would be ~30 of each.
    assert.ok(checks >= 2 && checks <= 5, `health Checks in 3 s: ${checks}`);
    assert.equal(statuses, checks, "each full probe is a health Check and a status call");
    assert.ok(pings >= 15, `PINGs in 3 s: ${pings}`);
  });

  it("takes an instance that reports NOT_SERVING out of allocation within a full period, and back", async (t) => {
    // The gateway's view, without allocating: free instances on /metrics.
    const free = async () => {
      const text = await (await fetch(`http://${gateway().address}/metrics`)).text();
      return Number(/^mygateway_instances\{state="free"\} (\d+)/m.exec(text)?.[1]);
    };
    assert.equal(await free(), 1);
    fake.serving = false;
    // Within three full periods (one is expected; the slack is for a loaded machine).
    const outAfter = await until("NOT_SERVING seen", 3000, async () => (await free()) === 0);
    fake.serving = true;
    await until("free again", 3000, async () => (await free()) === 1);
    t.diagnostic(`probing: out of allocation ${outAfter} ms after NOT_SERVING (full period 1 s)`);
    assert.equal((await echo("after-not-serving")).pod, "probed-1");
  });

  it("finds a leased instance holding a session the store does not know within a full period", async () => {
    // The instance is leased by "after-not-serving" and answered PINGs since; now it reports a
    // session no lease knows: the full probe must release the lease and recycle the instance.
    fake.reportedSession = "rogue-session";
    await until("recycle of the unknown session", 3000, () => fake.counts.shutdowns > 0);
  });
});
