import { createHash, createPrivateKey, createPublicKey, type JsonWebKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";

/** Algorithms tokens of this platform are signed with: HMAC (development default) or asymmetric. */
export type TokenAlgorithm = "HS256" | "EdDSA" | "ES256";

/** A key that verifies tokens: its id (`kid`), the one algorithm it accepts, and its material. */
export interface VerificationKey {
  /** Key id carried in every token's header. */
  readonly kid: string;
  /** The only algorithm a token verified with this key may name (no `alg` confusion). */
  readonly alg: TokenAlgorithm;
  /** HMAC secret bytes (HS256) or a public key (EdDSA, ES256). */
  readonly key: Buffer | KeyObject;
}

/** The key the gateway signs with, and the verification key that goes with it. */
export interface SigningKey {
  readonly kid: string;
  readonly alg: TokenAlgorithm;
  /** HMAC secret bytes (HS256) or a private key (EdDSA, ES256). */
  readonly key: Buffer | KeyObject;
  readonly verification: VerificationKey;
}

/** A public key as published in a JWKS (RFC 7517), with this platform's `kid`, `alg` and `use`. */
export interface PublicJwk {
  readonly kty: "OKP" | "EC";
  readonly crv: "Ed25519" | "P-256";
  readonly x: string;
  readonly y?: string;
  readonly kid: string;
  readonly alg: "EdDSA" | "ES256";
  readonly use: "sig";
}

/** A key file or value that cannot be used; the message says why, for the start-up error. */
export class KeyError extends Error {
  override readonly name = "KeyError";
}

/**
 * Key id of an HMAC secret: a truncated SHA-256 of it, so every gateway sharing the secret
 * names it alike. It reveals no more than any token signed with the secret already does.
 */
export function hmacKid(secret: Buffer): string {
  return `hs256-${createHash("sha256").update("myservice-token-kid:").update(secret).digest("base64url").slice(0, 16)}`;
}

/** The signing key for an HMAC secret (`JWT_SECRET`). */
export function hmacSigningKey(secret: string | Buffer): SigningKey {
  const key = typeof secret === "string" ? Buffer.from(secret, "utf8") : secret;
  const kid = hmacKid(key);
  return { kid, alg: "HS256", key, verification: { kid, alg: "HS256", key } };
}

/** Algorithm of an asymmetric key, or why it is refused (only Ed25519 and ECDSA P-256). */
function algorithmOf(key: KeyObject): "EdDSA" | "ES256" {
  const type = key.asymmetricKeyType;
  if (type === "ed25519") return "EdDSA";
  if (type === "ec" && key.asymmetricKeyDetails?.namedCurve === "prime256v1") return "ES256";
  const what = type === "ec" ? `ECDSA ${key.asymmetricKeyDetails?.namedCurve ?? "?"}` : (type ?? "unknown");
  throw new KeyError(`unsupported key type ${what}: use Ed25519 (EdDSA) or ECDSA P-256 (ES256)`);
}

/** RFC 7638 thumbprint of a public key: its `kid`, the same wherever the key is loaded. */
export function jwkThumbprint(publicKey: KeyObject): string {
  const jwk = publicKey.export({ format: "jwk" }) as JsonWebKey;
  // The required members in lexicographic order, no whitespace (RFC 7638 section 3).
  const canonical =
    jwk.kty === "EC"
      ? JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y })
      : JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x });
  return createHash("sha256").update(canonical).digest("base64url");
}

/** The verification key of a public key. */
export function publicVerificationKey(publicKey: KeyObject): VerificationKey {
  return { kid: jwkThumbprint(publicKey), alg: algorithmOf(publicKey), key: publicKey };
}

/** The signing key for a private key (Ed25519 or P-256). */
export function asymmetricSigningKey(privateKey: KeyObject): SigningKey {
  const alg = algorithmOf(privateKey);
  const verification = publicVerificationKey(createPublicKey(privateKey));
  return { kid: verification.kid, alg, key: privateKey, verification };
}

const pemBlock = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+?-----END \1-----/g;

function readText(file: string, what: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (error) {
    throw new KeyError(`${what} ${file}: cannot read: ${(error as Error).message}`);
  }
}

/** Loads `JWT_PRIVATE_KEY_FILE`: one PEM private key, Ed25519 or P-256. */
export function loadPrivateKeyFile(file: string): SigningKey {
  const text = readText(file, "JWT_PRIVATE_KEY_FILE");
  let key: KeyObject;
  try {
    key = createPrivateKey(text);
  } catch (error) {
    throw new KeyError(`JWT_PRIVATE_KEY_FILE ${file}: not a PEM private key (${(error as Error).message})`);
  }
  try {
    return asymmetricSigningKey(key);
  } catch (error) {
    throw new KeyError(`JWT_PRIVATE_KEY_FILE ${file}: ${(error as Error).message}`);
  }
}

/**
 * Loads a file of PEM public keys (`JWT_PUBLIC_KEY_FILE`, one or more blocks). A private key
 * is refused: an instance must hold nothing that signs.
 */
export function loadPublicKeyFile(file: string, variable = "JWT_PUBLIC_KEY_FILE"): VerificationKey[] {
  const text = readText(file, variable);
  const blocks = [...text.matchAll(pemBlock)];
  if (blocks.length === 0) throw new KeyError(`${variable} ${file}: no PEM public key in it`);
  return blocks.map(([block, label]) => {
    if (/PRIVATE/.test(label ?? "")) {
      throw new KeyError(`${variable} ${file}: holds a private key; give this process the public key only`);
    }
    try {
      return publicVerificationKey(createPublicKey(block));
    } catch (error) {
      throw new KeyError(`${variable} ${file}: ${(error as Error).message}`);
    }
  });
}

/**
 * Loads one entry of `JWT_PREVIOUS_KEYS` (verification only): `secret:<value>` is an HMAC
 * secret; anything else is a file path holding a PEM key (public or private: only its public
 * part is kept) or, when the file is not PEM, an HMAC secret (its text without the final newline).
 */
export function loadPreviousKey(entry: string, minSecretBytes: number): VerificationKey[] {
  if (entry.startsWith("secret:")) return [checkedSecret(Buffer.from(entry.slice(7), "utf8"), "a secret:", minSecretBytes)];
  const text = readText(entry, "JWT_PREVIOUS_KEYS:");
  const blocks = [...text.matchAll(pemBlock)];
  if (blocks.length === 0) return [checkedSecret(Buffer.from(text.replace(/\r?\n$/, ""), "utf8"), entry, minSecretBytes)];
  return blocks.map(([block, label]) => {
    try {
      const key = /PRIVATE/.test(label ?? "") ? createPublicKey(createPrivateKey(block)) : createPublicKey(block);
      return publicVerificationKey(key);
    } catch (error) {
      throw new KeyError(`JWT_PREVIOUS_KEYS: ${entry}: ${(error as Error).message}`);
    }
  });
}

function checkedSecret(secret: Buffer, where: string, minSecretBytes: number): VerificationKey {
  if (secret.length < minSecretBytes) {
    throw new KeyError(`JWT_PREVIOUS_KEYS: ${where} HMAC secret is too short: use at least ${minSecretBytes} bytes`);
  }
  return hmacSigningKey(secret).verification;
}

/** The JWKS document (`GET /.well-known/jwks.json`): the public keys among `keys`; secrets never appear. */
export function jwksOf(keys: readonly VerificationKey[]): { keys: PublicJwk[] } {
  const out: PublicJwk[] = [];
  const seen = new Set<string>();
  for (const k of keys) {
    if (k.alg === "HS256" || Buffer.isBuffer(k.key) || seen.has(k.kid)) continue;
    seen.add(k.kid);
    const jwk = k.key.export({ format: "jwk" }) as JsonWebKey;
    out.push({
      kty: jwk.kty as PublicJwk["kty"],
      crv: jwk.crv as PublicJwk["crv"],
      x: jwk.x as string,
      ...(jwk.y !== undefined ? { y: jwk.y } : {}),
      kid: k.kid,
      alg: k.alg,
      use: "sig",
    });
  }
  return { keys: out };
}

/**
 * The verification keys of a JWKS document. Keys that are not Ed25519 or P-256 public signing
 * keys are skipped (a symmetric `oct` key in a key set is never used: that would let whoever
 * serves the set mint HMAC tokens); a `kid` that is not the key's thumbprint is refused too.
 */
export function keysFromJwks(document: unknown): VerificationKey[] {
  if (typeof document !== "object" || document === null || !Array.isArray((document as { keys?: unknown }).keys)) {
    throw new KeyError("not a JWKS document (no keys array)");
  }
  const keys: VerificationKey[] = [];
  for (const entry of (document as { keys: unknown[] }).keys) {
    if (typeof entry !== "object" || entry === null) continue;
    const jwk = entry as Record<string, unknown>;
    if (jwk.use !== undefined && jwk.use !== "sig") continue;
    if (!((jwk.kty === "OKP" && jwk.crv === "Ed25519") || (jwk.kty === "EC" && jwk.crv === "P-256"))) continue;
    if ("d" in jwk) continue; // a private key has no business in a published set
    let key: VerificationKey;
    try {
      const { kty, crv, x, y } = jwk;
      const material = (kty === "EC" ? { kty, crv, x, y } : { kty, crv, x }) as JsonWebKey;
      key = publicVerificationKey(createPublicKey({ key: material, format: "jwk" }));
    } catch {
      continue;
    }
    if (jwk.alg !== undefined && jwk.alg !== key.alg) continue;
    if (jwk.kid !== key.kid) continue;
    keys.push(key);
  }
  return keys;
}
