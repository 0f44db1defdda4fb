import { createHmac, type KeyObject, timingSafeEqual, verify as verifySignature } from "node:crypto";
import { decodeJwt, decodeProtectedHeader, SignJWT } from "jose";
import { hmacSigningKey, type SigningKey, type TokenAlgorithm, type VerificationKey } from "./token-keys.js";

export type { SigningKey, TokenAlgorithm, VerificationKey };

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

/**
 * Signs a token for `claims` (without iat/exp) valid for `lifetimeMs` from `nowMs`, with `key`:
 * an HMAC secret (`JWT_SECRET`, HS256) or a signing key (`EdDSA`, `ES256`). The header carries
 * the key's `kid`, so verifiers pick the key by id and rotation keeps old tokens valid.
 */
export async function issueToken(
  key: string | SigningKey,
  claims: { sub: string; role: string; session_id: string },
  lifetimeMs: number,
  nowMs: number = Date.now(),
): Promise<{ token: string; iat: number; exp: number }> {
  const signing = typeof key === "string" ? hmacSigningKey(key) : key;
  const iat = Math.floor(nowMs / 1000);
  const exp = iat + Math.max(1, Math.round(lifetimeMs / 1000));
  const token = await new SignJWT({ role: claims.role, session_id: claims.session_id })
    .setProtectedHeader({ alg: signing.alg, kid: signing.kid, typ: "JWT" })
    .setSubject(claims.sub)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(signing.key);
  return { token, iat, exp };
}

/** Options of `createTokenVerifier`: the keys, as a list or as one HMAC secret. */
export interface TokenVerifierOptions {
  /** Keys that verify (current and previous). Either this or `secret`. */
  readonly keys?: readonly VerificationKey[];
  /** HMAC key (`JWT_SECRET`): shorthand for `keys: [its HS256 key]`. */
  readonly secret?: string;
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
   * Caches a token this process has just signed with one of its keys (Login), so the
   * session's first call skips the signature check. Only for tokens from `issueToken`.
   */
  remember(token: string, claims: TokenClaims): void;
  /** Whether `token` is in the cache (verified or remembered, not yet found expired). */
  isCached(token: string): boolean;
  /**
   * Replaces the keys (a JWKS refresh). The cache is emptied: a token of a key that left
   * the set must not stay valid through it.
   */
  setKeys(keys: readonly VerificationKey[]): void;
  /** The current keys. */
  keys(): readonly VerificationKey[];
  /** The `kid` of `token` when it names a key this verifier does not have (a JWKS refresh may help). */
  unknownKid(token: string): string | undefined;
};

const algorithms: ReadonlySet<string> = new Set<TokenAlgorithm>(["HS256", "EdDSA", "ES256"]);

/** Whether `signature` (canonical base64url) signs `input` with `key`. */
function signatureValid(key: VerificationKey, input: string, signature: string): boolean {
  const given = Buffer.from(signature, "base64url");
  // Only the canonical encoding: base64url decoding ignores stray trailing bits.
  if (given.toString("base64url") !== signature) return false;
  if (key.alg === "HS256") {
    const mac = createHmac("sha256", key.key as Buffer)
      .update(input)
      .digest();
    return given.length === mac.length && timingSafeEqual(given, mac);
  }
  // Both produce 64 bytes: Ed25519's R||S, ES256's r||s (JWS, not DER).
  if (given.length !== 64) return false;
  const data = Buffer.from(input, "latin1");
  return key.alg === "EdDSA"
    ? verifySignature(null, data, key.key as KeyObject, given)
    : verifySignature("sha256", data, { key: key.key as KeyObject, dsaEncoding: "ieee-p1363" }, given);
}

/**
 * Creates a verifier that accepts only tokens signed with one of its keys, in that key's one
 * algorithm (HS256, EdDSA or ES256), with all five claims, not expired. The header's `kid`
 * picks the key; a token without `kid` (issued before keys had ids) is tried against the
 * HMAC keys only. Verified tokens are cached until they expire, so a session's calls cost one
 * signature check, not one per call; the cache is bounded (oldest entries go first).
 *
 * The verifier answers synchronously, on the calling thread, with node:crypto (HMAC a few
 * microseconds; Ed25519 and P-256 verification tens of microseconds) rather than with jose's
 * `jwtVerify`: jose 6 verifies through WebCrypto, which runs every check as a job on libuv's
 * thread pool and resolves a promise — 0.08–0.3 ms per new token, on the first call of every
 * session, twice (gateway and instance). jose still parses the header and claims
 * (`decodeProtectedHeader`, `decodeJwt`); `tokens.test.ts` checks this verifier against
 * `jwtVerify` on a corpus of good and bad tokens for each algorithm.
 */
export function createTokenVerifier(options: TokenVerifierOptions): CachingTokenVerifier {
  const cacheSize = options.cacheSize ?? 20_000;
  const now = options.now ?? Date.now;
  const cache = new Map<string, TokenClaims>();
  let keyList: readonly VerificationKey[] = [];
  let byKid = new Map<string, VerificationKey>();
  let hmacKeys: readonly VerificationKey[] = [];

  function setKeys(keys: readonly VerificationKey[]): void {
    keyList = Object.freeze([...keys]);
    byKid = new Map(keys.map((k) => [k.kid, k]));
    hmacKeys = keys.filter((k) => k.alg === "HS256");
    cache.clear();
  }
  setKeys(options.keys ?? (options.secret !== undefined ? [hmacSigningKey(options.secret).verification] : []));

  function put(token: string, claims: TokenClaims): void {
    if (cache.size >= cacheSize) {
      const oldest = cache.keys().next();
      if (!oldest.done) cache.delete(oldest.value);
    }
    cache.set(token, claims);
  }

  /** The RFC 7515 checks `jwtVerify` makes, then this platform's claim rules. */
  function verifySignedToken(token: string): TokenClaims | undefined {
    const header = decodeProtectedHeader(token);
    const { alg, kid } = header;
    if (typeof alg !== "string" || !algorithms.has(alg) || header.crit !== undefined || header.b64 !== undefined) return undefined;
    const signatureAt = token.lastIndexOf(".") + 1;
    const input = token.slice(0, signatureAt - 1);
    const signature = token.slice(signatureAt);
    let signed = false;
    if (kid !== undefined) {
      const key = typeof kid === "string" ? byKid.get(kid) : undefined;
      // The key decides the algorithm: an HS256 header naming a public key's kid is refused,
      // so a public key can never serve as an HMAC secret.
      signed = key !== undefined && key.alg === alg && signatureValid(key, input, signature);
    } else if (alg === "HS256") {
      signed = hmacKeys.some((key) => signatureValid(key, input, signature));
    }
    if (!signed) return undefined;
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
  const unknownKid = (token: string): string | undefined => {
    try {
      const { kid } = decodeProtectedHeader(token);
      return typeof kid === "string" && kid.length <= 256 && !byKid.has(kid) ? kid : undefined;
    } catch {
      return undefined;
    }
  };
  return Object.assign(verify, { remember, isCached, setKeys, keys: () => keyList, unknownKid });
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
