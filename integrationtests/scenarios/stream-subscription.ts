import { echo, expectStreamMessage, formatMs, login, shutdown, streamMessageTimeoutMs, subscribe } from "../helpers.js";
import type { Scenario } from "../scenario.js";

/** Subscribe: 3 messages, index 0,1,2 from one pod, cancel; the session stays usable. */
export const streamSubscription: Scenario = {
  name: "stream_subscription",
  description: "Subscribe: 3 messages, index 0,1,2 from one pod, then cancel; the session is still usable and shuts down",
  async run(ctx) {
    const session = await login(ctx, "stream");
    const { sub, first } = await subscribe(ctx, session, { waitForCapacity: true });
    const pod = first.podName;
    try {
      const timeoutMs = streamMessageTimeoutMs(ctx);
      ctx.note(
        `stream interval ${formatMs(ctx.options.subscribeIntervalMs)} (--subscribe-interval-ms); waiting up to ${formatMs(timeoutMs)} per message`,
      );
      for (const index of [1, 2]) await expectStreamMessage(ctx, session, sub, { index, pod, timeoutMs });
      await ctx.step("Cancel the stream", async () => sub.cancel());
      await echo(ctx, session, { expectPod: pod, title: "Echo after the cancel (same session, same pod)" });
      await shutdown(ctx, session, { expectPod: pod });
    } finally {
      sub.cancel();
    }
  },
};
