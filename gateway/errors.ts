import { Code, ConnectError } from "@connectrpc/connect";

/** Exact client-facing messages of SPEC section 5 that the gateway produces. */
export const messages = {
  usernameRequired: "username is required",
  sessionIdRequired: "session_id is required",
  badCredentials: "invalid username or password",
  missingSessionId: "missing session-id",
  invalidToken: "missing or invalid token",
  busy: "all instances are busy",
  unavailable: "backend service unavailable",
  sessionNotSet: "Server session is not set",
  internal: "internal error",
} as const;

/**
 * A failure the gateway answers itself, with a gRPC code and the exact message the client
 * sees. `cause` (if any) goes to the log, never to the client.
 */
export class GatewayError extends Error {
  constructor(
    readonly code: Code,
    readonly clientMessage: string,
    options?: { cause?: unknown; retryAfterMs?: number },
  ) {
    super(clientMessage, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "GatewayError";
    this.retryAfterMs = options?.retryAfterMs;
  }
  /** Hint for RESOURCE_EXHAUSTED: when a retry may succeed. */
  readonly retryAfterMs: number | undefined;
}

export const busyError = (retryAfterMs?: number) =>
  new GatewayError(Code.ResourceExhausted, messages.busy, { retryAfterMs });
export const unavailableError = (cause?: unknown) => new GatewayError(Code.Unavailable, messages.unavailable, { cause });

/** gRPC status (code + message) for any thrown value: the one mapping of the gateway. */
export function grpcStatusOf(reason: unknown): { code: Code; message: string } {
  if (reason instanceof GatewayError) return { code: reason.code, message: reason.clientMessage };
  if (reason instanceof ConnectError) return { code: reason.code, message: reason.rawMessage };
  return { code: Code.Internal, message: messages.internal };
}

/** Converts any thrown value to the `ConnectError` the client sees; upstream errors pass unchanged. */
export function toConnectError(reason: unknown): ConnectError {
  if (reason instanceof ConnectError) return reason;
  const { code, message } = grpcStatusOf(reason);
  const error = new ConnectError(message, code, undefined, undefined, reason);
  if (reason instanceof GatewayError && reason.retryAfterMs !== undefined) {
    error.metadata.set("retry-after-ms", String(reason.retryAfterMs));
  }
  return error;
}
