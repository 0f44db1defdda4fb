import { Code } from "@connectrpc/connect";
import { checkLoginReply, messages } from "../helpers.js";
import type { Scenario } from "../scenario.js";

/** Login's checks in order (SPEC 4.1): username, session_id, credentials. */
export const loginErrors: Scenario = {
  name: "login_errors",
  description: "empty username, empty session_id, unknown user, wrong password → INVALID_ARGUMENT / PERMISSION_DENIED",
  async run(ctx) {
    const client = ctx.client();
    const { username, password, callTimeoutMs } = ctx.options;
    const sessionId = ctx.sessionId("login");
    const call = (request: { username: string; password: string; sessionId: string }) =>
      client.login(request, { timeoutMs: callTimeoutMs });

    await ctx.expectError("Login empty username", { code: Code.InvalidArgument, message: messages.usernameRequired }, () =>
      call({ username: "", password, sessionId }),
    );
    await ctx.expectError("Login empty session_id", { code: Code.InvalidArgument, message: messages.sessionIdRequired }, () =>
      call({ username, password, sessionId: "" }),
    );
    await ctx.expectError(
      "Login empty username and session_id (username is checked first)",
      { code: Code.InvalidArgument, message: messages.usernameRequired },
      () => call({ username: "", password: "", sessionId: "" }),
    );
    await ctx.expectError("Login unknown user", { code: Code.PermissionDenied, message: messages.badCredentials }, () =>
      call({ username: `it-nobody-${sessionId}`, password, sessionId }),
    );
    await ctx.expectError("Login wrong password", { code: Code.PermissionDenied, message: messages.badCredentials }, () =>
      call({ username, password: `${password}-wrong`, sessionId }),
    );
    await ctx.expectError("Login empty password", { code: Code.PermissionDenied, message: messages.badCredentials }, () =>
      call({ username, password: "", sessionId }),
    );
    await ctx.expectError(
      "Login empty session_id with wrong password (session_id is checked before credentials)",
      { code: Code.InvalidArgument, message: messages.sessionIdRequired },
      () => call({ username, password: `${password}-wrong`, sessionId: "" }),
    );
    // The control: the same request with the right password succeeds (Login leases nothing).
    await ctx.step(
      `Login ${username} with the right password (control)`,
      async () => {
        const reply = await call({ username, password, sessionId });
        checkLoginReply(reply, { username, sessionId, role: ctx.options.role });
        return reply;
      },
      (r) => `→ role ${r.role}`,
    );
  },
};
