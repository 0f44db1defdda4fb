import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { MyServiceAPI } from "../../gen/my_service/my_service_pb.js";
import { InstanceService } from "../../gen/myservice/instance/v1/instance_pb.js";
import { CheckFailure, describeError } from "../context.js";
import { mintedToken } from "../crafted-tokens.js";
import { callWithHeaders, echo, login, messages, sessionHeaders, shutdown } from "../helpers.js";
import type { Scenario } from "../scenario.js";
import type { InstanceInfo } from "../stack-control.js";

/** The user name of the minted foreign-owner token; no such user exists in the users file. */
const otherUser = "it-other-user";

/**
 * Shutdown refused with PERMISSION_DENIED (SPEC 4.5, 4.2, 5): for a session without a lease
 * (answered by the gateway), for a session owned by another user (gateway), and — where the
 * stack exposes instances directly (`npm run up`) — by the instance itself for a session that
 * is not the one it serves (`Client session mismatch`).
 */
export const myserviceShutdownErrors: Scenario = {
  name: "myservice_shutdown_errors",
  description: "Shutdown without a session, and Shutdown for a session that is not the instance's → PERMISSION_DENIED",
  async run(ctx) {
    const a = await login(ctx, "shutdown-a");
    const b = await login(ctx, "shutdown-b");
    const notSet = { code: Code.PermissionDenied, message: messages.sessionNotSet };

    await ctx.expectError("Shutdown of a session without a lease (gateway)", notSet, () =>
      callWithHeaders(ctx, b.client, "MyServiceShutdown", sessionHeaders(b)),
    );
    await ctx.expectError("Shutdown of it again (the refused Shutdown leased nothing)", notSet, () =>
      callWithHeaders(ctx, b.client, "MyServiceShutdown", sessionHeaders(b)),
    );

    const podA = (await echo(ctx, a, { waitForCapacity: true, title: "Echo: session A leases an instance" })).podName;

    await ctx.expectError(
      "Shutdown of session A with session B's token (token not issued for A)",
      { code: Code.Unauthenticated, message: messages.invalidToken },
      () => callWithHeaders(ctx, b.client, "MyServiceShutdown", { authorization: b.token, "session-id": a.id }),
    );
    await echo(ctx, a, { expectPod: podA, title: "Echo: session A still on its pod" });

    // Owner check (SPEC 4.2): a valid token of another user for session A. The dev stack has
    // one user, so the token is minted with JWT_SECRET; first prove the secret is the stack's.
    const ownerToken = await mintedToken(ctx, ctx.options.username, ctx.options.role, a.id);
    const secretMatches = await ctx.step(
      "Echo of session A with a token minted for its owner (checks JWT_SECRET matches the stack)",
      async () => {
        try {
          const reply = await a.client.myServiceEcho(
            { value: "minted" },
            { headers: { authorization: ownerToken, "session-id": a.id }, timeoutMs: ctx.options.callTimeoutMs },
          );
          if (reply.podName !== podA) throw new CheckFailure("session A moved", podA, reply.podName);
          return true;
        } catch (error) {
          if (error instanceof ConnectError && error.code === Code.Unauthenticated) return false;
          throw error;
        }
      },
      (ok) => (ok ? `→ pod ${podA}` : "→ UNAUTHENTICATED: JWT_SECRET differs from the stack's"),
    );
    if (secretMatches) {
      const foreign = await mintedToken(ctx, otherUser, "user", a.id);
      const otherOwner = {
        code: Code.PermissionDenied,
        message: { describe: "(a clear message)", test: (m: string) => m.trim() !== "" },
      };
      await ctx.expectError(`Shutdown of session A by another user (${otherUser})`, otherOwner, () =>
        callWithHeaders(ctx, a.client, "MyServiceShutdown", { authorization: foreign, "session-id": a.id }),
      );
      await ctx.expectError(`Echo of session A by another user (${otherUser})`, otherOwner, () =>
        callWithHeaders(ctx, a.client, "MyServiceEcho", { authorization: foreign, "session-id": a.id }),
      );
      await echo(ctx, a, { expectPod: podA, title: "Echo: session A unaffected" });
    } else {
      ctx.skip("Shutdown of session A by another user", "set JWT_SECRET to the stack's secret to mint the other user's token");
    }

    await directInstanceChecks(ctx, { a, b, podA });
    await shutdown(ctx, a, { expectPod: podA, title: "Shutdown session A (its own token)" });
  },
};

/**
 * Through a healthy gateway a session only ever reaches its own instance, so the instance's own
 * checks are exercised by calling instances directly when the stack controller knows their
 * addresses (the `npm run up` stack: 127.0.0.1:<port>). None of these calls changes state.
 */
async function directInstanceChecks(
  ctx: Parameters<Scenario["run"]>[0],
  sessions: { a: { id: string; token: string }; b: { id: string; token: string }; podA: string },
): Promise<void> {
  const title = "Direct instance checks (Client session mismatch)";
  let instances: readonly InstanceInfo[];
  try {
    instances = await ctx.stack().listInstances();
  } catch (error) {
    ctx.skip(title, `no stack controller to find instance addresses (${describeError(error)})`);
    return;
  }
  const own = instances.find((i) => i.pod === sessions.podA);
  if (own?.address === undefined) {
    ctx.skip(title, `the stack does not expose instance ${sessions.podA} directly (compose keeps instances private)`);
    return;
  }
  const { a, b } = sessions;
  const direct = createClient(MyServiceAPI, ctx.transport(own.address).transport);
  await ctx.expectError(
    `Direct to ${own.pod} (${own.address}): Shutdown for session B, instance serves A`,
    { code: Code.PermissionDenied, message: messages.sessionMismatch(b.id, a.id) },
    () => direct.myServiceShutdown({}, { headers: sessionHeaders(b), timeoutMs: ctx.options.callTimeoutMs }),
  );
  await ctx.expectError(
    `Direct to ${own.pod}: Echo for session B, instance bound to A`,
    { code: Code.Internal, message: messages.sessionConflict(a.id, b.id) },
    () => direct.myServiceEcho({ value: "conflict" }, { headers: sessionHeaders(b), timeoutMs: ctx.options.callTimeoutMs }),
  );
  // A free instance (no session) refuses Shutdown with "Server session is not set".
  for (const candidate of instances) {
    if (candidate.pod === own.pod || candidate.address === undefined || candidate.state !== "running") continue;
    const transport = ctx.transport(candidate.address).transport;
    try {
      const status = await createClient(InstanceService, transport).getStatus({}, { timeoutMs: ctx.options.callTimeoutMs });
      if (status.sessionId !== "" || status.shuttingDown) continue;
    } catch {
      continue;
    }
    await ctx.expectError(
      `Direct to ${candidate.pod} (free): Shutdown for session B`,
      { code: Code.PermissionDenied, message: messages.sessionNotSet },
      () =>
        createClient(MyServiceAPI, transport).myServiceShutdown({}, { headers: sessionHeaders(b), timeoutMs: ctx.options.callTimeoutMs }),
    );
    return;
  }
  ctx.skip("Direct to a free instance: Shutdown for session B", "no free instance to ask");
}
