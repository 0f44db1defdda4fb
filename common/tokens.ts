import { SignJWT, jwtVerify } from "jose";

/** Claims every token of this platform carries (SPEC 4.1). */
export interface TokenClaims {
  /** Username. */
  readonly sub: string;
  /** Role of the user, e.g. `admin` or `user`. */
  readonly role: string;
  /** Session the token was issued for. */
  readonly session_id: string;
  /** Issued at, Unix seconds. */
  readonly iat: number;
  /** Expiry, Unix seconds. */
  readonly exp: number;
}

/** Longest token lifetime accepted (`exp - iat`), seconds: 30 days, the most `TOKEN_EXPIRATION` allows. */
export const maxLifetimeSeconds = 30 * 24 * 3600;

/** Minimum length of `JWT_SECRET` in bytes: HS256 wants a key at least as long as its hash. */
export const minSecretBytes = 32;

const algorithm = "HS256";
const encoder = new TextEncoder();

/** Signs a token for `claims` (without iat/exp) valid for `lifetimeMs` from `nowMs`. */
export async function issueToken(
  secret: string,
  claims: { sub: string; role: string; session_id: string },
  lifetimeMs: number,
  nowMs: number = Date.now(),
): Promise<{ token: string; iat: number; exp: number }> {
  const iat = Math.floor(nowMs / 1000);
  const exp = iat + Math.max(1, Math.round(lifetimeMs / 1000));
  const token = await new SignJWT({ role: claims.role, session_id: claims.session_id })
    .setProtectedHeader({ alg: algorithm, typ: "JWT" })
    .setSubject(claims.sub)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(encoder.encode(secret));
  return { token, iat, exp };
}

/** Options of `createTokenVerifier`. */
export interface TokenVerifierOptions {
  /** HMAC key (`JWT_SECRET`). */
  readonly secret: string;
  /** Most verified tokens kept in memory (~0.5 KB each). Default 20,000. */
  readonly cacheSize?: number;
  /** Clock, Unix milliseconds; tests replace it. */
  readonly now?: () => number;
}

/** Verifies tokens; returns the claims, or `undefined` for any token that is not valid now. */
export type TokenVerifier = (token: string) => Promise<TokenClaims | undefined> | TokenClaims | undefined;

/** A verifier with a cache that can be told about tokens this process signed itself. */
export type CachingTokenVerifier = TokenVerifier & {
  /**
   * Caches a token this process has just signed with the same secret (Login), so the
   * session's first call skips the signature check. Only for tokens from `issueToken`.
   */
  remember(token: string, claims: TokenClaims): void;
};

/**
 * Creates a verifier that accepts only HS256 tokens signed with the secret, with all five
 * claims, not expired. Verified tokens are cached until they expire, so a session's calls
 * cost one HMAC check, not one per call; the cache is bounded (oldest entries go first).
 */
export function createTokenVerifier(options: TokenVerifierOptions): CachingTokenVerifier {
  // Imported once: jose would import a raw Uint8Array key again on every verification.
  const key = crypto.subtle.importKey("raw", encoder.encode(options.secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "verify",
  ]);
  const cacheSize = options.cacheSize ?? 20_000;
  const now = options.now ?? Date.now;
  const cache = new Map<string, TokenClaims>();

  function put(token: string, claims: TokenClaims): void {
    if (cache.size >= cacheSize) {
      const oldest = cache.keys().next();
      if (!oldest.done) cache.delete(oldest.value);
    }
    cache.set(token, claims);
  }

  async function verifySlow(token: string): Promise<TokenClaims | undefined> {
    try {
      const { payload } = await jwtVerify(token, await key, {
        algorithms: [algorithm],
        requiredClaims: ["sub", "iat", "exp"],
        currentDate: new Date(now()),
      });
      const { sub, role, session_id, iat, exp } = payload;
      if (
        typeof sub !== "string" ||
        sub === "" ||
        typeof role !== "string" ||
        role === "" ||
        typeof session_id !== "string" ||
        session_id === "" ||
        typeof iat !== "number" ||
        typeof exp !== "number" ||
        !Number.isSafeInteger(iat) ||
        !Number.isSafeInteger(exp) ||
        exp - iat > maxLifetimeSeconds ||
        exp <= iat
      ) {
        return undefined;
      }
      const claims: TokenClaims = Object.freeze({ sub, role, session_id, iat, exp });
      put(token, claims);
      return claims;
    } catch {
      return undefined;
    }
  }

  const verify: TokenVerifier = (token: string) => {
    const cached = cache.get(token);
    if (cached !== undefined) {
      if (cached.exp * 1000 > now()) return cached;
      cache.delete(token);
      return undefined;
    }
    // A JWT is three base64url parts; refuse anything else before any crypto work.
    if (token.length > 8192 || !/^[\w-]+\.[\w-]+\.[\w-]+$/.test(token)) return undefined;
    return verifySlow(token);
  };
  const remember = (token: string, claims: TokenClaims) => put(token, Object.freeze({ ...claims }));
  return Object.assign(verify, { remember });
}

/** Takes the token out of an `authorization` value: a raw token, or `Bearer <token>`. */
export function tokenFromAuthorization(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (trimmed === "") return undefined;
  if (/^bearer$/i.test(trimmed)) return undefined;
  const match = /^bearer\s+(.+)$/i.exec(trimmed);
  const token = (match ? match[1] : trimmed)?.trim();
  return token === "" ? undefined : token;
}
