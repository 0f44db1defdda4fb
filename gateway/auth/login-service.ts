import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "../../common/logger.js";
import { isValidSessionId, maxSessionIdLength } from "../../common/metadata-auth.js";
import { issueToken } from "../../common/tokens.js";
import { type LoginRequest, type LoginResponse, LoginResponseSchema } from "../../gen/my_service/my_service_pb.js";
import { messages } from "../errors.js";
import type { UserStore } from "./user-store.js";

/** Options of `createLogin`. */
export interface LoginOptions {
  readonly users: UserStore;
  readonly jwtSecret: string;
  /** Token lifetime, milliseconds (`TOKEN_EXPIRATION`). */
  readonly tokenLifetimeMs: number;
  readonly logger: Logger;
  /** Observes every Login result (metrics). */
  readonly onResult?: (result: "ok" | "invalid_argument" | "denied") => void;
}

/** The Login handler (SPEC 4.1): validates, checks the password, issues a JWT. No instance is leased. */
export function createLogin(options: LoginOptions): (request: LoginRequest) => Promise<LoginResponse> {
  return async (request) => {
    if (request.username === "") {
      options.onResult?.("invalid_argument");
      throw new ConnectError(messages.usernameRequired, Code.InvalidArgument);
    }
    if (request.sessionId === "") {
      options.onResult?.("invalid_argument");
      throw new ConnectError(messages.sessionIdRequired, Code.InvalidArgument);
    }
    if (!isValidSessionId(request.sessionId)) {
      options.onResult?.("invalid_argument");
      throw new ConnectError(
        `session_id must be at most ${maxSessionIdLength} characters, without control characters`,
        Code.InvalidArgument,
      );
    }
    const user = await options.users.authenticate(request.username, request.password);
    if (user === undefined) {
      options.onResult?.("denied");
      options.logger.info({ username: request.username.slice(0, 128) }, "login refused");
      throw new ConnectError(messages.badCredentials, Code.PermissionDenied);
    }
    const { token, exp } = await issueToken(
      options.jwtSecret,
      { sub: user.username, role: user.role, session_id: request.sessionId },
      options.tokenLifetimeMs,
    );
    options.onResult?.("ok");
    options.logger.info({ username: user.username, sessionId: request.sessionId }, "login");
    return create(LoginResponseSchema, { token, expiresAt: timestampFromMs(exp * 1000), role: user.role });
  };
}
