import { echo, login, shutdown } from "../helpers.js";
import type { Scenario } from "../scenario.js";

/** Rounds of Shutdown followed by the same session continuing on a different pod. */
const rounds = 3;

/** Shutdown, then the same session id continues on a different pod; repeated (SPEC 4.5). */
export const sessionTransfer: Scenario = {
  name: "session_transfer",
  description: "Shutdown, then the same session continues on a different pod; repeated",
  async run(ctx) {
    const session = await login(ctx, "transfer");
    let previous: string | undefined;
    const canCheckOtherPod = ctx.options.instances >= 2;
    if (!canCheckOtherPod) ctx.note("one instance only (--instances 1): a different pod cannot be required");
    for (let round = 1; round <= rounds; round++) {
      const first = await echo(ctx, session, {
        waitForCapacity: true,
        ...(previous !== undefined && canCheckOtherPod ? { notPod: previous } : {}),
        title:
          previous === undefined
            ? `Round ${round}: Echo leases an instance`
            : `Round ${round}: Echo after Shutdown leases another instance (not ${previous})`,
      });
      await echo(ctx, session, { expectPod: first.podName, title: `Round ${round}: Echo stays on ${first.podName}` });
      await shutdown(ctx, session, { expectPod: first.podName, title: `Round ${round}: Shutdown` });
      previous = first.podName;
    }
  },
};
