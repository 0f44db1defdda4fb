import type { TokenClaims, TokenVerifier } from "./tokens.js";
import { tokenFromAuthorization } from "./tokens.js";

/** Why a MyService* call was refused before routing (SPEC 4.2, in this order). */
export type AuthFailure = "missing-session-id" | "invalid-token";

/** Exact status messages of SPEC section 5. */
export const authFailureMessage: Record<AuthFailure, string> = {
  "missing-session-id": "missing session-id",
  "invalid-token": "missing or invalid token",
};

/** Longest session id accepted; anything longer is not a session id. */
export const maxSessionIdLength = 256;

/** A session id is 1–256 printable characters (no control characters). */
export function isValidSessionId(id: string): boolean {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it refuses
  return id.length > 0 && id.length <= maxSessionIdLength && !/[\u0000-\u001f\u007f]/.test(id);
}

/**
 * Checks the `session-id` and `authorization` metadata of a MyService* call in the spec's
 * order: session id first, then the token (signature, algorithm, expiry, and that it was
 * issued for this session). Shared by the gateway and the instance (defence in depth).
 */
export function authenticateCall(
  sessionIdHeader: string | undefined,
  authorizationHeader: string | undefined,
  verify: TokenVerifier,
): { ok: true; sessionId: string; claims: TokenClaims } | { ok: false; failure: AuthFailure } {
  const sessionId = sessionIdHeader?.trim();
  if (sessionId === undefined || sessionId === "") return { ok: false, failure: "missing-session-id" };
  const token = tokenFromAuthorization(authorizationHeader);
  // No valid token is ever issued for a malformed session id (Login refuses it).
  if (token === undefined || !isValidSessionId(sessionId)) return { ok: false, failure: "invalid-token" };
  const claims = verify(token);
  return claims !== undefined && claims.session_id === sessionId
    ? { ok: true, sessionId, claims }
    : { ok: false, failure: "invalid-token" };
}
