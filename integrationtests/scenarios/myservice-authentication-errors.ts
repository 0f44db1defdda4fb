import { Code } from "@connectrpc/connect";
import { expiredToken } from "../crafted-tokens.js";
import { callWithHeaders, echo, login, messages, proxiedMethods, shutdown } from "../helpers.js";
import type { Scenario } from "../scenario.js";

/**
 * MyService* calls without valid credentials are refused with UNAUTHENTICATED on every method
 * (SPEC 4.2): no metadata, garbage token, expired token, token of another session, no session-id.
 */
export const myserviceAuthenticationErrors: Scenario = {
  name: "myservice_authentication_errors",
  description:
    "no metadata, garbage token, expired token, token of another session, no session-id → UNAUTHENTICATED on Echo, Subscribe and Shutdown",
  async run(ctx) {
    const session = await login(ctx, "auth");
    const other = await login(ctx, "auth-other");
    const expired = await ctx.step("Mint an expired token for the session (JWT_SECRET)", () => expiredToken(ctx, session.id));
    const cases: { what: string; headers: Record<string, string>; message: string }[] = [
      { what: "no metadata", headers: {}, message: messages.missingSessionId },
      { what: "garbage token", headers: { authorization: "garbage.not-a.jwt", "session-id": session.id }, message: messages.invalidToken },
      { what: "expired token", headers: { authorization: expired, "session-id": session.id }, message: messages.invalidToken },
      {
        what: "token of another session",
        headers: { authorization: other.token, "session-id": session.id },
        message: messages.invalidToken,
      },
      { what: "no session-id (valid token)", headers: { authorization: session.token }, message: messages.missingSessionId },
      { what: "no token", headers: { "session-id": session.id }, message: messages.invalidToken },
    ];
    for (const method of proxiedMethods) {
      for (const c of cases) {
        await ctx.expectError(`${method}: ${c.what}`, { code: Code.Unauthenticated, message: c.message }, () =>
          callWithHeaders(ctx, session.client, method, c.headers),
        );
      }
    }
    // Controls: the same session with its own token works, raw and as `Bearer <token>` (SPEC 3).
    const first = await echo(ctx, session, { waitForCapacity: true, title: "Echo with the session's own token (control)" });
    await ctx.step(
      "Echo with `Bearer <token>` (control)",
      async () => {
        const reply = await session.client.myServiceEcho(
          { value: "bearer" },
          { headers: { authorization: `Bearer ${session.token}`, "session-id": session.id }, timeoutMs: ctx.options.callTimeoutMs },
        );
        if (reply.podName !== first.podName) throw new Error(`moved from ${first.podName} to ${reply.podName}`);
        return reply;
      },
      (r) => `→ pod ${r.podName}`,
    );
    await shutdown(ctx, session, { expectPod: first.podName });
  },
};
