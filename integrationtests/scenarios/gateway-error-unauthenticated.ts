import { Code } from "@connectrpc/connect";
import type { ExpectedError } from "../context.js";
import { expiredToken, foreignSignedToken, unsignedToken } from "../crafted-tokens.js";
import { callWithHeaders, login, messages } from "../helpers.js";
import type { Scenario } from "../scenario.js";

/**
 * The exact UNAUTHENTICATED messages of SPEC 5 and their order (4.2): `session-id` is checked
 * before the token, then every kind of bad token gets the same message. Leases nothing.
 */
export const gatewayErrorUnauthenticated: Scenario = {
  name: "gateway_error_unauthenticated",
  description: "exact UNAUTHENTICATED messages: `missing session-id` before `missing or invalid token`, for every kind of bad token",
  async run(ctx) {
    const session = await login(ctx, "unauth");
    const other = await login(ctx, "unauth-other");
    const sid = session.id;
    const [expired, foreign] = await ctx.step("Mint expired and foreign-signed tokens", () =>
      Promise.all([expiredToken(ctx, sid), foreignSignedToken(ctx, sid)]),
    );
    const missingSessionId: ExpectedError = { code: Code.Unauthenticated, message: messages.missingSessionId };
    const invalidToken: ExpectedError = { code: Code.Unauthenticated, message: messages.invalidToken };
    const cases: { what: string; headers: Record<string, string>; expected: ExpectedError }[] = [
      { what: "no metadata at all", headers: {}, expected: missingSessionId },
      { what: "valid token, no session-id", headers: { authorization: session.token }, expected: missingSessionId },
      { what: "valid token, empty session-id", headers: { authorization: session.token, "session-id": "" }, expected: missingSessionId },
      { what: "garbage token, no session-id (session-id first)", headers: { authorization: "garbage" }, expected: missingSessionId },
      { what: "no token, empty session-id (session-id first)", headers: { "session-id": "" }, expected: missingSessionId },
      { what: "session-id, no authorization", headers: { "session-id": sid }, expected: invalidToken },
      { what: "session-id, empty authorization", headers: { "session-id": sid, authorization: "" }, expected: invalidToken },
      { what: "session-id, `Bearer ` without token", headers: { "session-id": sid, authorization: "Bearer " }, expected: invalidToken },
      { what: "session-id, malformed token", headers: { "session-id": sid, authorization: "not-a-jwt" }, expected: invalidToken },
      {
        what: "session-id, token with a broken signature",
        headers: { "session-id": sid, authorization: withBrokenSignature(session.token) },
        expected: invalidToken,
      },
      {
        what: "session-id, token signed with another secret",
        headers: { "session-id": sid, authorization: foreign },
        expected: invalidToken,
      },
      {
        what: "session-id, unsigned token (alg none)",
        headers: { "session-id": sid, authorization: unsignedToken(ctx, sid) },
        expected: invalidToken,
      },
      { what: "session-id, expired token", headers: { "session-id": sid, authorization: expired }, expected: invalidToken },
      {
        what: "session-id, token issued for another session",
        headers: { "session-id": sid, authorization: other.token },
        expected: invalidToken,
      },
      {
        what: "session-id of the other session, this session's token",
        headers: { "session-id": other.id, authorization: `Bearer ${session.token}` },
        expected: invalidToken,
      },
    ];
    for (const c of cases) {
      await ctx.expectError(`Echo: ${c.what}`, c.expected, () => callWithHeaders(ctx, session.client, "MyServiceEcho", c.headers));
    }
    await ctx.expectError("Subscribe: no session-id", missingSessionId, () =>
      callWithHeaders(ctx, session.client, "MyServiceSubscribe", { authorization: session.token }),
    );
    await ctx.expectError("Subscribe: expired token", invalidToken, () =>
      callWithHeaders(ctx, session.client, "MyServiceSubscribe", { "session-id": sid, authorization: expired }),
    );
    await ctx.expectError("Shutdown: no session-id", missingSessionId, () =>
      callWithHeaders(ctx, session.client, "MyServiceShutdown", { authorization: session.token }),
    );
    await ctx.expectError("Shutdown: token issued for another session", invalidToken, () =>
      callWithHeaders(ctx, session.client, "MyServiceShutdown", { "session-id": sid, authorization: other.token }),
    );
  },
};

/** The token with the first signature character changed (a full 6 bits, unlike the last one). */
function withBrokenSignature(token: string): string {
  const [header, payload, signature = ""] = token.split(".");
  const flipped = signature.startsWith("A") ? `B${signature.slice(1)}` : `A${signature.slice(1)}`;
  return `${header}.${payload}.${flipped}`;
}
