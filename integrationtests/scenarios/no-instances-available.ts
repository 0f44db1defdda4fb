import { Code } from "@connectrpc/connect";
import { CheckFailure } from "../context.js";
import { callWithHeaders, echo, login, messages, sessionHeaders, type TestSession } from "../helpers.js";
import type { Scenario } from "../scenario.js";

/**
 * N sessions occupy the N instances (no Shutdown); one more gets RESOURCE_EXHAUSTED
 * `all instances are busy` at once (SPEC 4.3). By design it leaves the N sessions leased: the
 * runner shuts them down afterwards (after `all`'s scenario, or after reporting when run alone
 * unless `--keep`).
 */
export const noInstancesAvailable: Scenario = {
  name: "no_instances_available",
  description: "N sessions occupy the N instances (no Shutdown); one more gets RESOURCE_EXHAUSTED `all instances are busy`",
  async run(ctx) {
    const n = ctx.options.instances;
    const holders: TestSession[] = [];
    const pods = new Set<string>();
    for (let i = 1; i <= n; i++) {
      const session = await login(ctx, `busy-${i}`);
      const reply = await echo(ctx, session, { waitForCapacity: true, title: `Echo: session ${i} of ${n} leases an instance` });
      if (pods.has(reply.podName)) {
        await ctx.step(`Session ${i} has a pod of its own`, async () => {
          throw new CheckFailure("two sessions share a pod", "distinct pods", `${reply.podName} twice`);
        });
      }
      pods.add(reply.podName);
      holders.push(session);
    }
    const extra = await login(ctx, "busy-extra");
    const busy = { code: Code.ResourceExhausted, message: messages.allBusy };
    await ctx.expectError(`Echo: session ${n + 1} while all ${n} are leased`, busy, () =>
      callWithHeaders(ctx, extra.client, "MyServiceEcho", sessionHeaders(extra)),
    );
    await ctx.expectError(`Subscribe: session ${n + 1} while all ${n} are leased`, busy, () =>
      callWithHeaders(ctx, extra.client, "MyServiceSubscribe", sessionHeaders(extra)),
    );
    await ctx.expectError(
      `Shutdown: session ${n + 1} holds no lease (nothing was allocated for it)`,
      { code: Code.PermissionDenied, message: messages.sessionNotSet },
      () => callWithHeaders(ctx, extra.client, "MyServiceShutdown", sessionHeaders(extra)),
    );
    for (const s of holders) await echo(ctx, s, { expectPod: s.pod, title: `Echo: ${s.label} still on ${s.pod}` });
    ctx.note(`leaves ${n} sessions leased on purpose: ${holders.map((s) => `${s.id} on ${s.pod}`).join(", ")}`);
  },
};
