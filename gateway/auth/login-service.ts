import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "../../common/logger.js";
import { isValidSessionId, maxSessionIdLength } from "../../common/metadata-auth.js";
import { issueToken, type SigningKey, type TokenClaims } from "../../common/tokens.js";
import { type LoginRequest, type LoginResponse, LoginResponseSchema } from "../../gen/my_service/my_service_pb.js";
import { messages, retryableError } from "../errors.js";
import type { LoginThrottle } from "./login-throttle.js";
import type { UserStore } from "./user-store.js";

/** Options of `createLogin`. */
export interface LoginOptions {
  readonly users: UserStore;
  /** The key tokens are signed with (an HMAC secret's or a private key's). */
  readonly signingKey: SigningKey;
  /** Token lifetime, milliseconds (`TOKEN_EXPIRATION`). */
  readonly tokenLifetimeMs: number;
  readonly logger: Logger;
  /** Failed-login throttling per user and per peer; none when absent. */
  readonly throttle?: LoginThrottle;
  /** Told about every token issued (the gateway caches it as verified: it just signed it). */
  readonly onIssued?: (token: string, claims: TokenClaims) => void;
  /** Observes every Login result (metrics). */
  readonly onResult?: (result: "ok" | "invalid_argument" | "denied" | "throttled") => void;
}

/**
 * Request header carrying the client's address to Login. The gateway sets it from the
 * connection's socket and overwrites any value a client sent (see `server.ts`).
 */
export const peerHeader = "x-gateway-peer";

/** The Login handler (SPEC 4.1): validates, checks the password, issues a JWT. No instance is leased. */
export function createLogin(options: LoginOptions): (request: LoginRequest, peer?: string, log?: Logger) => Promise<LoginResponse> {
  // `log`: the call's logger (request id, session id); default the gateway's.
  return async (request, peer, log = options.logger) => {
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
    const decision = options.throttle?.begin(request.username, peer);
    if (decision !== undefined && !decision.allowed) {
      options.onResult?.("throttled");
      log.warn({ username: request.username.slice(0, 128), peer, by: decision.by }, "login throttled");
      throw retryableError(
        `too many failed logins; retry in ${Math.ceil(decision.retryAfterMs / 1000)} s`,
        Code.ResourceExhausted,
        decision.retryAfterMs,
      );
    }
    let user: Awaited<ReturnType<UserStore["authenticate"]>>;
    try {
      user = await options.users.authenticate(request.username, request.password);
    } catch (error) {
      decision?.attempt.failed();
      throw error;
    }
    if (user === undefined) {
      decision?.attempt.failed();
      options.onResult?.("denied");
      log.info({ username: request.username.slice(0, 128) }, "login refused");
      throw new ConnectError(messages.badCredentials, Code.PermissionDenied);
    }
    decision?.attempt.succeeded();
    const claims = { sub: user.username, role: user.role, session_id: request.sessionId };
    const { token, iat, exp } = await issueToken(options.signingKey, claims, options.tokenLifetimeMs);
    options.onIssued?.(token, { ...claims, iat, exp });
    options.onResult?.("ok");
    log.info({ username: user.username, sessionId: request.sessionId }, "login");
    return create(LoginResponseSchema, { token, expiresAt: timestampFromMs(exp * 1000), role: user.role });
  };
}
