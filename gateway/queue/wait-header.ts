import { Code } from "@connectrpc/connect";
import { parseDuration } from "../../common/duration.js";
import { GatewayError } from "../errors.js";

/** Metadata names of the waiting room (SPEC 11). */
export const queueHeaders = {
  /** Request: how long the session's first call may wait for an instance (`500ms`, `30s`, `2m`). */
  wait: "x-wait-for-instance",
  /** Response header of a call that waited: milliseconds it spent in the queue. */
  waitMs: "x-queue-wait-ms",
  /** Response header of a call that waited: its position when it entered, 1 = first. */
  position: "x-queue-position",
  /** Trailer of a refusal because the queue is full: `true`. */
  full: "x-queue-full",
} as const;

/** Longest header value accepted; a duration needs a few characters, anything longer is a mistake. */
const maxValueLength = 32;

/**
 * The wait a call asks for in `x-wait-for-instance`, milliseconds, or `undefined` when the
 * header is absent. A value that is not a positive duration (`abc`, `-1s`, empty, too long)
 * is an INVALID_ARGUMENT the client sees with the reason; nothing is queued for it.
 */
export function waitFromHeader(value: string | readonly string[] | null | undefined): number | undefined {
  if (value === undefined || value === null) return undefined;
  const text = typeof value === "string" ? value : value.join(",");
  if (text.length > maxValueLength) {
    throw new GatewayError(
      Code.InvalidArgument,
      `${queueHeaders.wait} is too long (${text.length} characters): expected a duration such as 500ms, 30s or 2m`,
    );
  }
  const ms = parseDuration(text);
  if (ms === undefined) {
    throw new GatewayError(
      Code.InvalidArgument,
      `${queueHeaders.wait}: ${JSON.stringify(text)} is not a duration: expected a positive duration such as 500ms, 30s or 2m`,
    );
  }
  return ms;
}
