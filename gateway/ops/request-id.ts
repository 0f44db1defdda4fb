const prefix = Math.random().toString(36).slice(2, 8);
let counter = 0;

/** Longest client-sent `x-request-id` kept; longer ones are replaced by a gateway id. */
export const maxRequestIdLength = 128;

/**
 * The request id of a call for its log lines: the client's `x-request-id` when it sent a
 * short printable one, else a new gateway id (`<process prefix>-<n>`).
 */
export function requestIdOf(headers: Headers): string {
  const given = headers.get("x-request-id");
  if (given !== null && given.length > 0 && given.length <= maxRequestIdLength && /^[\x21-\x7e]+$/.test(given)) return given;
  return `${prefix}-c${++counter}`;
}
