import { createHmac, timingSafeEqual } from "node:crypto";
import { decodeJwt, decodeProtectedHeader, SignJWT } from "jose";

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

/** Verifies tokens, synchronously; returns the claims, or `undefined` for any token that is not valid now. */
export type TokenVerifier = (token: string) => TokenClaims | undefined;

/** A verifier with a cache that can be told about tokens this process signed itself. */
export type CachingTokenVerifier = TokenVerifier & {
  /**
   * Caches a token this process has just signed with the same secret (Login), so the
   * session's first call skips the signature check. Only for tokens from `issueToken`.
   */
  remember(token: string, claims: TokenClaims): void;
  /** Whether `token` is in the cache (verified or remembered, not yet found expired). */
  isCached(token: string): boolean;
};

/**
 * Creates a verifier that accepts only HS256 tokens signed with the secret, with all five
 * claims, not expired. Verified tokens are cached until they expire, so a session's calls
 * cost one HMAC check, not one per call; the cache is bounded (oldest entries go first).
 *
 * The verifier answers synchronously. The signature is checked with node:crypto's HMAC
 * (a few microseconds on the calling thread), not with jose's `jwtVerify`: jose 6 verifies
 * through WebCrypto, which runs every HMAC as a job on libuv's thread pool and resolves a
 * promise — 0.08–0.3 ms per new token, on the first call of every session, twice (gateway and
 * instance). jose still parses the header and claims (`decodeProtectedHeader`, `decodeJwt`);
 * `tokens.test.ts` checks this verifier against `jwtVerify` on a corpus of good and bad tokens.
 */
export function createTokenVerifier(options: TokenVerifierOptions): CachingTokenVerifier {
  const key = Buffer.from(options.secret, "utf8");
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

  /** The RFC 7515 checks `jwtVerify` makes for HS256, then this platform's claim rules. */
  function verifySignedToken(token: string): TokenClaims | undefined {
    const signatureAt = token.lastIndexOf(".") + 1;
    const signature = token.slice(signatureAt);
    const mac = createHmac("sha256", key)
      .update(token.slice(0, signatureAt - 1))
      .digest();
    const given = Buffer.from(signature, "base64url");
    // Only the canonical encoding: base64url decoding ignores stray trailing bits.
    if (given.length !== mac.length || !timingSafeEqual(given, mac) || given.toString("base64url") !== signature) {
      return undefined;
    }
    const header = decodeProtectedHeader(token);
    if (header.alg !== algorithm || header.crit !== undefined || header.b64 !== undefined) return undefined;
    const { sub, role, session_id, iat, exp, nbf } = decodeJwt(token);
    const nowSeconds = Math.floor(now() / 1000);
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
      (nbf !== undefined && !(typeof nbf === "number" && nbf <= nowSeconds)) ||
      exp <= nowSeconds ||
      exp <= iat ||
      exp - iat > maxLifetimeSeconds
    ) {
      return undefined;
    }
    return Object.freeze({ sub, role, session_id, iat, exp });
  }

  const verify: TokenVerifier = (token) => {
    const cached = cache.get(token);
    if (cached !== undefined) {
      if (cached.exp * 1000 > now()) return cached;
      cache.delete(token);
      return undefined;
    }
    // A JWT is three base64url parts; refuse anything else before any crypto work.
    if (token.length > 8192 || !/^[\w-]+\.[\w-]+\.[\w-]+$/.test(token)) return undefined;
    let claims: TokenClaims | undefined;
    try {
      claims = verifySignedToken(token);
    } catch {
      return undefined; // jose's decoders throw on a header or payload that is not a JSON object
    }
    if (claims !== undefined) put(token, claims);
    return claims;
  };
  const remember = (token: string, claims: TokenClaims) => put(token, Object.freeze({ ...claims }));
  const isCached = (token: string) => cache.has(token);
  return Object.assign(verify, { remember, isCached });
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
