import { issueToken, type SigningKey } from "../../common/tokens.js";

/** Lifetime of a token the gateway issues for its own calls to an instance, milliseconds. */
const systemTokenLifetimeMs = 60_000;

/** Subject and role of the gateway's own tokens. */
export const systemPrincipal = { sub: "gateway", role: "system" } as const;

/**
 * Tokens for calls the gateway makes to an instance on a session's behalf (recycling: shutting
 * an instance down after an expiry; any other internal call). The one place such tokens are
 * issued: signed with the gateway's signing key, whatever its algorithm, so instances that
 * verify only (a public key, the JWKS) accept them like a client's.
 */
export function createSystemTokens(signing: SigningKey): (sessionId: string) => Promise<string> {
  return async (sessionId) => (await issueToken(signing, { ...systemPrincipal, session_id: sessionId }, systemTokenLifetimeMs)).token;
}
