import { Code, ConnectError } from "@connectrpc/connect";
import { CheckFailure, describeError, formatStatus } from "../context.js";
import { checkEchoReply, login, messages, sessionHeaders, shutdown, type TestSession } from "../helpers.js";
import type { Scenario } from "../scenario.js";

/**
 * N+1 clients call Echo at the same moment against N instances: at least one gets
 * RESOURCE_EXHAUSTED `all instances are busy`, the successful ones are on distinct pods, and
 * no other error appears (SPEC 4.3: allocation is atomic, refusal immediate).
 */
export const systemOverload: Scenario = {
  name: "system_overload",
  description: "N+1 concurrent clients, N instances: at least one RESOURCE_EXHAUSTED, the successful ones on distinct pods",
  async run(ctx) {
    const n = ctx.options.instances;
    const sessions: TestSession[] = [];
    for (let i = 1; i <= n + 1; i++) sessions.push(await login(ctx, `overload-${i}`));
    const outcomes = await ctx.step(
      `${n + 1} concurrent Echo calls`,
      async () => {
        const settled = await Promise.allSettled(
          sessions.map(async (s) => {
            const value = `${s.label}-concurrent`;
            const reply = await s.client.myServiceEcho({ value }, { headers: sessionHeaders(s), timeoutMs: ctx.options.callTimeoutMs });
            ctx.leased(s);
            s.pod = reply.podName;
            checkEchoReply(reply, { value, sessionId: s.id, index: 0, method: "MyServiceEcho" });
            return reply.podName;
          }),
        );
        return settled;
      },
      (all) =>
        `→ ${all.filter((o) => o.status === "fulfilled").length} leased, ${all.filter((o) => o.status === "rejected").length} refused`,
    );

    const pods: string[] = [];
    let refused = 0;
    for (const [i, outcome] of outcomes.entries()) {
      const title = `Client ${i + 1} (${sessions[i]?.id})`;
      if (outcome.status === "fulfilled") {
        await ctx.step(
          title,
          async () => outcome.value,
          (pod) => `→ pod ${pod}`,
        );
        pods.push(outcome.value);
        continue;
      }
      const error = outcome.reason;
      await ctx.step(
        title,
        async () => {
          if (!(error instanceof ConnectError) || error.code !== Code.ResourceExhausted || error.rawMessage !== messages.allBusy) {
            throw new CheckFailure(
              "a refused call must be RESOURCE_EXHAUSTED",
              formatStatus(Code.ResourceExhausted, messages.allBusy),
              describeError(error),
            );
          }
        },
        () => `→ ${formatStatus(Code.ResourceExhausted, messages.allBusy)}`,
      );
      refused += 1;
    }
    await ctx.step(
      "At least one client refused, at least one served, served ones on distinct pods",
      async () => {
        if (refused === 0)
          throw new CheckFailure("no client was refused", `at least 1 of ${n + 1} refused`, `all ${n + 1} served on ${pods.join(", ")}`);
        if (pods.length === 0) throw new CheckFailure("no client was served", "at least 1 served", "none");
        if (new Set(pods).size !== pods.length) throw new CheckFailure("two clients share a pod", "distinct pods", pods.join(", "));
        if (pods.length > n) throw new CheckFailure("more clients served than instances", `≤ ${n}`, String(pods.length));
      },
      () => `→ ${pods.length} served on ${pods.join(", ")}, ${refused} refused`,
    );
    if (pods.length < n) ctx.note(`only ${pods.length} of ${n} instances were free (others still recycling?)`);
    for (const s of sessions) if (s.pod !== undefined) await shutdown(ctx, s, { title: `Shutdown ${s.label}` });
  },
};
