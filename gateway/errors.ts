import { create, type DescFile, toBinary } from "@bufbuild/protobuf";
import { anyPack, durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { file_google_rpc_error_details, RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { file_google_rpc_status, StatusSchema } from "../gen/google/rpc/status_pb.js";

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
    options?: { cause?: unknown; retryAfterMs?: number; metadata?: Readonly<Record<string, string>> },
  ) {
    super(clientMessage, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "GatewayError";
    this.retryAfterMs = options?.retryAfterMs;
    this.metadata = options?.metadata;
  }
  /** Hint for RESOURCE_EXHAUSTED: when a retry may succeed. */
  readonly retryAfterMs: number | undefined;
  /** Extra trailers the client gets with the status (e.g. `x-queue-full`). */
  readonly metadata: Readonly<Record<string, string>> | undefined;
}

export const busyError = (retryAfterMs?: number, metadata?: Readonly<Record<string, string>>) =>
  new GatewayError(Code.ResourceExhausted, messages.busy, { retryAfterMs, ...(metadata ? { metadata } : {}) });
export const unavailableError = (cause?: unknown) => new GatewayError(Code.Unavailable, messages.unavailable, { cause });

/**
 * Files of the messages this module puts on the wire in status details
 * (`grpc-status-details-bin`: a `google.rpc.Status` holding a `google.rpc.RetryInfo`): served
 * by reflection, so tools such as grpcurl can decode them.
 */
export const statusDetailFiles: readonly DescFile[] = [file_google_rpc_status, file_google_rpc_error_details];

/**
 * A failure of a dependency that may pass (the lease store unreachable): errors that carry
 * `transient: true` are answered UNAVAILABLE `backend service unavailable`.
 */
export interface TransientFailure {
  readonly transient: true;
}

function isTransient(reason: unknown): reason is TransientFailure {
  return typeof reason === "object" && reason !== null && (reason as { transient?: unknown }).transient === true;
}

/** gRPC status (code + message) for any thrown value: the one mapping of the gateway. */
export function grpcStatusOf(reason: unknown): { code: Code; message: string } {
  if (reason instanceof GatewayError) return { code: reason.code, message: reason.clientMessage };
  if (reason instanceof ConnectError) return { code: reason.code, message: reason.rawMessage };
  if (isTransient(reason)) return { code: Code.Unavailable, message: messages.unavailable };
  return { code: Code.Internal, message: messages.internal };
}

/** Converts any thrown value to the `ConnectError` the client sees; upstream errors pass unchanged. */
export function toConnectError(reason: unknown): ConnectError {
  if (reason instanceof ConnectError) return reason;
  const { code, message } = grpcStatusOf(reason);
  const error =
    reason instanceof GatewayError && reason.retryAfterMs !== undefined
      ? retryableError(message, code, reason.retryAfterMs, reason)
      : new ConnectError(message, code, undefined, undefined, reason);
  if (reason instanceof GatewayError && reason.metadata !== undefined) {
    for (const [key, value] of Object.entries(reason.metadata)) error.metadata.set(key, value);
  }
  return error;
}

/**
 * The retry hint of a refusal that may succeed later, two ways: a `google.rpc.RetryInfo` in the
 * status details (what gRPC client libraries read: grpc-status's `from_call`, connect's
 * `findDetails`, ...) and a plain `retry-after-ms` metadata entry (whole milliseconds, for
 * clients without status-details support). Both carry the same delay.
 */
function retryHint(retryAfterMs: number) {
  const ms = Math.max(0, Math.round(retryAfterMs));
  return { metadata: String(ms), info: create(RetryInfoSchema, { retryDelay: durationFromMs(ms) }) };
}

/** A `ConnectError` carrying the retry hint (see `retryHint`); connect-node encodes the details. */
export function retryableError(message: string, code: Code, retryAfterMs: number, cause?: unknown): ConnectError {
  const hint = retryHint(retryAfterMs);
  const error = new ConnectError(message, code, undefined, [{ desc: RetryInfoSchema, value: hint.info }], cause);
  error.metadata.set("retry-after-ms", hint.metadata);
  return error;
}

/**
 * The retry hint (see `retryHint`) as trailers, for the native relay that writes trailers
 * itself: `grpc-status-details-bin` is a serialized `google.rpc.Status` (code, message, details),
 * base64 without padding as the gRPC HTTP/2 protocol asks senders to emit.
 */
export function retryTrailers(code: Code, message: string, retryAfterMs: number): Record<string, string> {
  const hint = retryHint(retryAfterMs);
  const status = create(StatusSchema, { code, message, details: [anyPack(RetryInfoSchema, hint.info)] });
  return {
    "retry-after-ms": hint.metadata,
    "grpc-status-details-bin": Buffer.from(toBinary(StatusSchema, status)).toString("base64").replace(/=+$/, ""),
  };
}
