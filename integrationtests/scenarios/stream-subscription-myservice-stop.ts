import { ConnectError } from "@connectrpc/connect";
import type { EchoResponse } from "../../gen/my_service/my_service_pb.js";
import { CheckFailure, formatStatus } from "../context.js";
import { checkEchoReply, echo, expectStreamMessage, formatMs, login, shutdown, streamMessageTimeoutMs, subscribe } from "../helpers.js";
import type { Scenario } from "../scenario.js";
import { waitForInstancesRunning } from "../stack-control.js";

/** The instance under an open Subscribe stream is killed: the stream continues from another pod. */
export const streamSubscriptionMyserviceStop: Scenario = {
  name: "stream_subscription_myservice_stop",
  description: "the instance under an open Subscribe stream is killed (SIGKILL): the stream continues from another pod, index from 0",
  controlsStack: true,
  async run(ctx) {
    const stack = ctx.stack();
    await ctx.step(
      `Stack control: ${stack.describe()}`,
      () => stack.listInstances(),
      (list) => `→ ${list.map((i) => `${i.pod} ${i.state}`).join(", ")}`,
    );
    const session = await login(ctx, "stream-stop");
    const { sub, first } = await subscribe(ctx, session, { waitForCapacity: true });
    const pod = first.podName;
    try {
      await expectStreamMessage(ctx, session, sub, { index: 1, pod, timeoutMs: streamMessageTimeoutMs(ctx) });
      ctx.onRestore("Every instance is running again", () => waitForInstancesRunning(stack, ctx.options.instances, 30_000));
      await ctx.step(`Kill pod ${pod} (SIGKILL)`, async () => {
        await stack.killInstanceByPod(pod);
        ctx.recycled += 1;
      });
      // The transfer needs the gateway to notice the dead upstream and lease a free instance;
      // the first message of the new stream comes at once, so allow a few intervals of slack.
      const boundMs = 30_000 + 2 * ctx.options.subscribeIntervalMs;
      let lastIndex = 1;
      const moved = await ctx.step(
        `Stream continues from another pod within ${formatMs(boundMs)} (index restarts at 0)`,
        async () => {
          const deadline = Date.now() + boundMs;
          for (;;) {
            const left = deadline - Date.now();
            if (left <= 0)
              throw new CheckFailure(`no message from another pod within ${formatMs(boundMs)}`, "a message from a new pod", "none");
            let message: EchoResponse;
            try {
              message = await sub.next(left);
            } catch (error) {
              if (!(error instanceof ConnectError)) throw error;
              throw new CheckFailure(
                "the stream ended with an error instead of continuing from another pod",
                "messages from a new pod, index from 0",
                formatStatus(error.code, error.rawMessage),
              );
            }
            if (message.podName === pod) {
              // A message already in flight from the old pod: it must continue the old sequence.
              checkEchoReply(message, { value: sub.value, sessionId: session.id, index: lastIndex + 1, method: "MyServiceSubscribe" });
              lastIndex = message.index;
              continue;
            }
            checkEchoReply(message, { value: sub.value, sessionId: session.id, index: 0, method: "MyServiceSubscribe" });
            return message;
          }
        },
        (m) => `→ index 0 from pod ${m.podName}`,
      );
      const newPod = moved.podName;
      session.pod = newPod;
      await expectStreamMessage(ctx, session, sub, { index: 1, pod: newPod, timeoutMs: streamMessageTimeoutMs(ctx) });
      await ctx.step("Cancel the stream", async () => sub.cancel());
      await echo(ctx, session, { expectPod: newPod, title: "Echo: the session now lives on the new pod" });
      await shutdown(ctx, session, { expectPod: newPod });
    } finally {
      sub.cancel();
    }
  },
};
