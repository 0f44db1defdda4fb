import { Code, createClient } from "@connectrpc/connect";
import type { EchoResponse } from "../../gen/my_service/my_service_pb.js";
import { WaitingRoom } from "../../gen/mygateway/queue/v1/waiting_room_pb.js";
import { CheckFailure } from "../context.js";
import {
  checkEchoReply,
  echo,
  expectEqual,
  expectThat,
  formatMs,
  login,
  messages,
  sessionHeaders,
  shutdown,
  type TestSession,
} from "../helpers.js";
import type { Scenario } from "../scenario.js";

/** How long each waiter asks to wait (`x-wait-for-instance`), and the deadline of the patient ones. */
const waitHeader = "60s";
const patientDeadlineMs = 60_000;
/** The deadline of the impatient waiter: it passes while every instance is still leased. */
const impatientDeadlineMs = 2_000;

/**
 * The waiting room (SPEC 11): N sessions hold the N instances; three more wait with
 * `x-wait-for-instance` and different deadlines. The one whose deadline passes gets
 * DEADLINE_EXCEEDED and never an instance; Shutdowns free instances one at a time, and each goes
 * to the longest waiter, in arrival order, with `x-queue-position` and `x-queue-wait-ms`.
 */
export const waitingRoom: Scenario = {
  name: "waiting_room",
  description:
    "N sessions hold the N instances, 3 more wait with different deadlines: grants in arrival order, the expired waiter never gets one",
  async run(ctx) {
    const n = ctx.options.instances;
    const room = createClient(WaitingRoom, ctx.transport(ctx.options.gateway).transport);
    const holders: TestSession[] = [];
    for (let i = 1; i <= n; i++) {
      const holder = await login(ctx, `holder-${i}`);
      await echo(ctx, holder, { waitForCapacity: true, title: `Echo: holder ${i} of ${n} leases an instance` });
      holders.push(holder);
    }
    const [first, impatient, third] = [await login(ctx, "waiter-1"), await login(ctx, "waiter-2"), await login(ctx, "waiter-3")];

    const position = (s: TestSession) => room.getPosition({}, { headers: sessionHeaders(s), timeoutMs: ctx.options.callTimeoutMs });
    const expectPosition = (s: TestSession, expected: number, length: number, title: string) =>
      ctx.step(
        title,
        async () => {
          const deadline = Date.now() + 5_000;
          for (;;) {
            const p = await position(s);
            if (p.waiting && p.position === expected && p.queueLength === length) return p;
            if (Date.now() > deadline) {
              throw new CheckFailure(
                "wrong place in the queue",
                `waiting, position ${expected} of ${length}`,
                `${p.waiting ? "waiting" : "not waiting"}, position ${p.position} of ${p.queueLength}`,
              );
            }
            await new Promise((r) => setTimeout(r, 50));
          }
        },
        (p) =>
          `→ position ${p.position} of ${p.queueLength}${p.estimatedWait ? `, estimated wait ${Number(p.estimatedWait.seconds)} s` : ""}`,
      );

    /** Starts a waiting Echo; resolves with its reply and response headers, or its error. */
    const wait = (s: TestSession, deadlineMs: number) => {
      let headers = new Headers();
      const value = `${s.label}-waiting`;
      const started = Date.now();
      const done = s.client
        .myServiceEcho(
          { value },
          {
            headers: { ...sessionHeaders(s), "x-wait-for-instance": waitHeader },
            timeoutMs: deadlineMs,
            onHeader: (h) => {
              headers = h;
            },
          },
        )
        .then(
          (reply: EchoResponse) => ({ reply, headers, ms: Date.now() - started, value }),
          (error: unknown) => ({ error, ms: Date.now() - started, value }),
        );
      return done;
    };
    const expectGranted = async (
      s: TestSession,
      call: ReturnType<typeof wait>,
      entryPosition: number,
      notPods: readonly string[],
      title: string,
    ) =>
      ctx.step(
        title,
        async () => {
          const out = await call;
          if ("error" in out) throw out.error;
          ctx.leased(s);
          checkEchoReply(out.reply, { value: out.value, sessionId: s.id, index: 0, method: "MyServiceEcho" });
          expectEqual("x-queue-position (its position when it entered)", out.headers.get("x-queue-position"), String(entryPosition));
          const waitedMs = Number(out.headers.get("x-queue-wait-ms"));
          expectThat(
            Number.isInteger(waitedMs) && waitedMs > 0 && waitedMs <= out.ms,
            "x-queue-wait-ms is the time it waited",
            `0 < ms ≤ ${out.ms}`,
            String(out.headers.get("x-queue-wait-ms")),
          );
          expectThat(
            !notPods.includes(out.reply.podName),
            "granted an instance nobody else holds",
            `not ${notPods.join(", ")}`,
            out.reply.podName,
          );
          s.pod = out.reply.podName;
          return out;
        },
        (out) =>
          `→ pod ${"reply" in out ? out.reply.podName : "?"} after ${formatMs(out.ms)}, x-queue-position ${"headers" in out ? out.headers.get("x-queue-position") : "?"}, x-queue-wait-ms ${"headers" in out ? out.headers.get("x-queue-wait-ms") : "?"}`,
      );

    const firstCall = wait(first, patientDeadlineMs);
    await expectPosition(
      first,
      1,
      1,
      `GetPosition (waiter-1, x-wait-for-instance ${waitHeader}, deadline ${formatMs(patientDeadlineMs)}): first in line`,
    );
    const impatientCall = wait(impatient, impatientDeadlineMs);
    await expectPosition(impatient, 2, 2, `GetPosition (waiter-2, deadline ${formatMs(impatientDeadlineMs)}): second`);
    const thirdCall = wait(third, patientDeadlineMs);
    await expectPosition(third, 3, 3, `GetPosition (waiter-3, deadline ${formatMs(patientDeadlineMs)}): third`);

    await ctx.expectError(
      `Echo (waiter-2): its deadline passes while every instance is leased`,
      { code: Code.DeadlineExceeded, message: { describe: "(the deadline's message)", test: () => true } },
      async () => {
        const out = await impatientCall;
        if ("error" in out) throw out.error;
        ctx.leased(impatient);
        return out.reply;
      },
    );
    await expectPosition(third, 2, 2, "GetPosition (waiter-3): second now, waiter-2 left the queue");

    const [h1, h2] = holders as [TestSession, TestSession];
    const held = holders.map((h) => h.pod ?? "");
    await shutdown(ctx, h1, { title: `Shutdown (holder-1): frees ${h1.pod}` });
    await expectGranted(first, firstCall, 1, held.slice(1), "Echo (waiter-1): granted the freed instance, first in arrival order");
    await expectPosition(third, 1, 1, "GetPosition (waiter-3): first in line now");
    await shutdown(ctx, h2, { title: `Shutdown (holder-2): frees ${h2.pod}` });
    await expectGranted(third, thirdCall, 3, [...held.slice(2), first.pod ?? ""], "Echo (waiter-3): granted the next freed instance");

    await ctx.expectError(
      "Shutdown (waiter-2): its deadline passed, it never got an instance",
      { code: Code.PermissionDenied, message: messages.sessionNotSet },
      () => impatient.client.myServiceShutdown({}, { headers: sessionHeaders(impatient), timeoutMs: ctx.options.callTimeoutMs }),
    );
    await ctx.step(
      "GetPosition (waiter-2): not waiting, holds no instance",
      async () => {
        const p = await position(impatient);
        if (p.waiting || p.hasInstance) {
          throw new CheckFailure(
            "waiter-2 still has a place or an instance",
            "not waiting, no instance",
            `waiting ${p.waiting}, instance ${p.hasInstance}`,
          );
        }
        return p;
      },
      (p) => `→ not waiting, queue length ${p.queueLength}`,
    );
    await shutdown(ctx, first);
    await shutdown(ctx, third);
  },
};
