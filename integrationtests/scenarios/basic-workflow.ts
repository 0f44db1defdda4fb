import { echo, login, shutdown } from "../helpers.js";
import type { Scenario } from "../scenario.js";

/** Login, 10 Echo calls on one pod with every field right, Shutdown returns that pod. */
export const basicWorkflow: Scenario = {
  name: "basic_workflow",
  description: "Login (token, expires_at, role), 10 Echo calls on one pod with every field right, Shutdown returns that pod",
  async run(ctx) {
    const session = await login(ctx, "basic");
    const first = await echo(ctx, session, { waitForCapacity: true });
    for (let i = 2; i <= 10; i++) await echo(ctx, session, { expectPod: first.podName });
    await shutdown(ctx, session, { expectPod: first.podName });
  },
};
