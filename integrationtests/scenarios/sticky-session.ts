import { CheckFailure } from "../context.js";
import { echo, login, shutdown } from "../helpers.js";
import type { Scenario } from "../scenario.js";

/** Two sessions, 10 interleaved rounds: each stays on its pod, the pods differ, both shut down. */
export const stickySession: Scenario = {
  name: "sticky_session",
  description: "two sessions, 10 interleaved rounds: each stays on its own pod, the pods differ; both shut down",
  async run(ctx) {
    const a = await login(ctx, "sticky-a");
    const b = await login(ctx, "sticky-b");
    const podA = (await echo(ctx, a, { waitForCapacity: true })).podName;
    const podB = (await echo(ctx, b, { waitForCapacity: true })).podName;
    await ctx.step(
      "The two sessions are on different pods",
      async () => {
        if (podA === podB) throw new CheckFailure("both sessions share one pod", "two different pods", `${podA} and ${podB}`);
      },
      () => `→ ${podA} ≠ ${podB}`,
    );
    for (let round = 2; round <= 10; round++) {
      await echo(ctx, a, { expectPod: podA, title: `Round ${round}: Echo session A` });
      await echo(ctx, b, { expectPod: podB, title: `Round ${round}: Echo session B` });
    }
    await shutdown(ctx, a, { expectPod: podA, title: "Shutdown session A" });
    await shutdown(ctx, b, { expectPod: podB, title: "Shutdown session B" });
  },
};
