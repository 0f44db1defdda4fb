import assert from "node:assert/strict";
import { createHmac, createSign, generateKeyPairSync, type KeyObject } from "node:crypto";
import { describe, it } from "node:test";
import { calculateJwkThumbprint, createLocalJWKSet, type JSONWebKeySet, type JWK, jwtVerify, SignJWT } from "jose";
import { asymmetricSigningKey, hmacSigningKey, jwksOf } from "./token-keys.js";
import { createTokenVerifier, issueToken, minSecretBytes, type TokenClaims, tokenFromAuthorization } from "./tokens.js";

const secret = "unit-test-secret-unit-test-secret-0123456789";
const claims = { sub: "alice", role: "admin", session_id: "session-1" };
const t0 = 1_700_000_000_000;
const hour = 3_600_000;

function b64(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

function parts(token: string): [string, string, string] {
  const [h, p, s] = token.split(".");
  return [h as string, p as string, s as string];
}

/** Signs arbitrary claims with `secret` and HS256 (or another algorithm). */
function sign(payload: Record<string, unknown>, alg = "HS256", key = secret): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ alg, typ: "JWT" }).sign(new TextEncoder().encode(key));
}

const seconds = (ms: number) => Math.floor(ms / 1000);

/**
 * Runs every token of `corpus` through our verifier and through jose's `jwtVerify` (`jose`
 * says whether jose accepts it); they must agree, except that we reject the `strictlyRejected`
 * ones jose accepts. Returns the names our verifier accepts.
 */
async function sameVerdicts(
  corpus: Record<string, string>,
  ours: (token: string) => boolean,
  jose: (token: string) => Promise<unknown>,
  strictlyRejected: ReadonlySet<string>,
): Promise<string[]> {
  for (const [name, token] of Object.entries(corpus)) {
    const theirs = await jose(token).then(
      () => true,
      () => false,
    );
    const accepted = ours(token);
    assert.equal(
      accepted,
      theirs && !strictlyRejected.has(name),
      `${name}: ours ${accepted ? "accepts" : "rejects"}, jwtVerify ${theirs ? "accepts" : "rejects"}`,
    );
  }
  return Object.keys(corpus).filter((name) => ours(corpus[name] as string));
}

describe("issueToken()", () => {
  it("signs an HS256 JWT with sub, role, session_id, iat and exp", async () => {
    const { token, iat, exp } = await issueToken(secret, claims, hour, t0 + 400);
    assert.equal(iat, seconds(t0));
    assert.equal(exp, seconds(t0) + 3600);
    const [header, payload] = parts(token);
    assert.deepEqual(JSON.parse(Buffer.from(header, "base64url").toString()), {
      alg: "HS256",
      kid: hmacSigningKey(secret).kid,
      typ: "JWT",
    });
    assert.deepEqual(JSON.parse(Buffer.from(payload, "base64url").toString()), { ...claims, iat, exp });
  });

  it("gives even a sub-second lifetime one second", async () => {
    const { iat, exp } = await issueToken(secret, claims, 10, t0);
    assert.equal(exp - iat, 1);
  });
});

describe("createTokenVerifier()", () => {
  it("accepts a valid token and returns all claims", async () => {
    const verify = createTokenVerifier({ secret, now: () => t0 + 1000 });
    const { token, iat, exp } = await issueToken(secret, claims, hour, t0);
    const expected: TokenClaims = { ...claims, iat, exp };
    assert.deepEqual(await verify(token), expected);
  });

  it("answers synchronously and caches the token it verified", async () => {
    const verify = createTokenVerifier({ secret, now: () => t0 + 1000 });
    const { token, iat, exp } = await issueToken(secret, claims, hour, t0);
    assert.equal(verify.isCached(token), false);
    const first = verify(token);
    assert.ok(!(first instanceof Promise), "the signature check runs on the calling thread");
    assert.deepEqual(first, { ...claims, iat, exp });
    assert.equal(verify.isCached(token), true);
    assert.equal(verify(token), first, "the second check is answered from the cache");
  });

  it("answers a token it was told it issued (remember) from its cache, until it expires", async () => {
    const clock = { now: t0 + 1000 };
    const verify = createTokenVerifier({ secret, now: () => clock.now });
    const { token, iat, exp } = await issueToken(secret, claims, 60_000, t0);
    verify.remember(token, { ...claims, iat, exp });
    assert.equal(verify.isCached(token), true, "no signature check for a remembered token");
    assert.deepEqual(verify(token), { ...claims, iat, exp });
    clock.now = exp * 1000;
    assert.equal(verify(token), undefined);
  });

  it("rejects an expired token, also one already cached", async () => {
    const clock = { now: t0 };
    const verify = createTokenVerifier({ secret, now: () => clock.now });
    const { token, exp } = await issueToken(secret, claims, 60_000, t0);
    clock.now = exp * 1000 - 1;
    assert.ok(await verify(token));
    clock.now = exp * 1000;
    assert.equal(await verify(token), undefined);
    assert.equal(await verify(token), undefined);

    const fresh = createTokenVerifier({ secret, now: () => exp * 1000 + 5_000 });
    assert.equal(await fresh(token), undefined);
  });

  it("rejects a token signed with another key", async () => {
    const verify = createTokenVerifier({ secret, now: () => t0 });
    const { token } = await issueToken(`${secret}-other`, claims, hour, t0);
    assert.equal(await verify(token), undefined);
  });

  it('rejects an unsigned token ({"alg":"none"})', async () => {
    const verify = createTokenVerifier({ secret, now: () => t0 });
    const payload = b64({ ...claims, iat: seconds(t0), exp: seconds(t0) + 3600 });
    assert.equal(await verify(`${b64({ alg: "none" })}.${payload}.`), undefined);
    assert.equal(await verify(`${b64({ alg: "none", typ: "JWT" })}.${payload}.`), undefined);
    // Even with the signature of a valid token glued on.
    const { token } = await issueToken(secret, claims, hour, t0);
    assert.equal(await verify(`${b64({ alg: "none" })}.${payload}.${parts(token)[2]}`), undefined);
  });

  it("rejects an HS512 token signed with the same secret", async () => {
    const verify = createTokenVerifier({ secret, now: () => t0 });
    const token = await sign({ ...claims, iat: seconds(t0), exp: seconds(t0) + 3600, sub: "alice" }, "HS512");
    assert.equal(await verify(token), undefined);
  });

  it("rejects a token whose payload was changed after signing", async () => {
    const verify = createTokenVerifier({ secret, now: () => t0 });
    const { token, iat, exp } = await issueToken(secret, claims, hour, t0);
    const [h, , s] = parts(token);
    const forged = `${h}.${b64({ ...claims, session_id: "session-2", iat, exp })}.${s}`;
    assert.equal(await verify(forged), undefined);
    const longer = `${h}.${b64({ ...claims, iat, exp: exp + 86_400 })}.${s}`;
    assert.equal(await verify(longer), undefined);
    const flipped = `${token.slice(0, -2)}${token.endsWith("A") ? "B" : "A"}${token.slice(-1)}`;
    assert.equal(await verify(flipped), undefined);
  });

  it("rejects tokens missing a claim or with claims of the wrong type", async () => {
    const verify = createTokenVerifier({ secret, now: () => t0 });
    const iat = seconds(t0);
    const exp = iat + 3600;
    const full = { ...claims, iat, exp };
    assert.ok(await verify(await sign(full)), "the full set is accepted");
    const cases: Record<string, Record<string, unknown>> = {
      "no session_id": { sub: "alice", role: "admin", iat, exp },
      "no role": { sub: "alice", session_id: "session-1", iat, exp },
      "no sub": { role: "admin", session_id: "session-1", iat, exp },
      "no exp": { ...claims, iat },
      "no iat": { ...claims, exp },
      "empty session_id": { ...full, session_id: "" },
      "empty sub": { ...full, sub: "" },
      "numeric session_id": { ...full, session_id: 1 },
      "numeric role": { ...full, role: 1 },
    };
    for (const [name, payload] of Object.entries(cases)) {
      assert.equal(await verify(await sign(payload)), undefined, name);
    }
  });

  it("rejects garbage and very long strings without throwing", async () => {
    const verify = createTokenVerifier({ secret, now: () => t0 });
    const { token } = await issueToken(secret, claims, hour, t0);
    const garbage = [
      "",
      " ",
      "abc",
      "a.b",
      "a.b.c",
      "a.b.c.d",
      "..",
      "ä.ö.ü",
      `${token} `,
      `${token}.`,
      `Bearer ${token}`,
      "x".repeat(1_000_000),
      `${"a".repeat(5000)}.${"b".repeat(5000)}.${"c".repeat(5000)}`,
      `${parts(token)[0]}.${"A".repeat(100_000)}.${parts(token)[2]}`,
    ];
    for (const value of garbage) {
      assert.equal(await verify(value), undefined, `${value.slice(0, 40)} (${value.length} chars)`);
    }
  });

  it("keeps at most cacheSize tokens, dropping the oldest first", async () => {
    const verify = createTokenVerifier({ secret, cacheSize: 2, now: () => t0 });
    const tokens = await Promise.all(
      ["s1", "s2", "s3"].map(async (session_id) => (await issueToken(secret, { ...claims, session_id }, hour, t0)).token),
    );
    const [a, b, c] = tokens as [string, string, string];
    for (const token of tokens) assert.ok(await verify(token));
    assert.ok(verify.isCached(c), "newest cached");
    assert.ok(verify.isCached(b), "second newest cached");
    assert.ok(!verify.isCached(a), "oldest evicted");
    assert.equal((await verify(a))?.session_id, "s1");
    assert.ok(verify.isCached(a) && !verify.isCached(b), "a verified again, b now the oldest and evicted");
  });

  it("does not cache rejected tokens", async () => {
    const verify = createTokenVerifier({ secret, now: () => t0 });
    const { token } = await issueToken(`${secret}-other`, claims, hour, t0);
    assert.equal(await verify(token), undefined);
    assert.equal(verify.isCached(token), false);
    assert.equal(await verify(token), undefined);
  });

  it("accepts the tokens jose's jwtVerify accepts (HS256, same secret, same time), and no others", async () => {
    const at = t0 + 1000;
    const iat = seconds(t0);
    const exp = iat + 3600;
    const good = { ...claims, iat, exp };
    const hs256 = (header: string, payload: string, key = secret) =>
      `${header}.${payload}.${createHmac("sha256", key).update(`${header}.${payload}`).digest("base64url")}`;
    const raw = (value: string) => Buffer.from(value).toString("base64url");
    const valid = await sign(good);
    const [vh, vp, vs] = parts(valid);
    // The signature is 32 bytes: its 43rd character carries 4 bits and 2 spare ones.
    const last = vs.at(-1) as string;
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const spareBitsSet =
      alphabet[alphabet.indexOf(last) | 1] === last ? alphabet[alphabet.indexOf(last) & ~1] : alphabet[alphabet.indexOf(last) | 1];
    const corpus: Record<string, string> = {
      valid,
      "issued by issueToken": (await issueToken(secret, claims, hour, t0)).token,
      "no typ header": await new SignJWT(good).setProtectedHeader({ alg: "HS256" }).sign(new TextEncoder().encode(secret)),
      "extra claims": await sign({ ...good, aud: "x", jti: "1" }),
      "nbf passed": await sign({ ...good, nbf: iat }),
      "nbf ahead": await sign({ ...good, nbf: exp - 10 }),
      "nbf not a number": await sign({ ...good, nbf: "0" }),
      "expires at this second": await sign({ ...good, exp: seconds(at) }),
      "expires next second": await sign({ ...good, exp: seconds(at) + 1 }),
      "exp a string": await sign({ ...good, exp: String(exp) }),
      "another key": await sign(good, "HS256", `${secret}-other`),
      HS384: await sign(good, "HS384"),
      HS512: await sign(good, "HS512"),
      "alg none": `${b64({ alg: "none" })}.${vp}.`,
      "alg none, HS256 signature": hs256(b64({ alg: "none" }), vp),
      "crit header": hs256(b64({ alg: "HS256", crit: ["exp"], exp: 1 }), vp),
      "b64 false": hs256(b64({ alg: "HS256", b64: false, crit: ["b64"] }), vp),
      "header an array": hs256(raw("[]"), vp),
      "header not JSON": hs256(raw("{alg:HS256}"), vp),
      "payload an array": hs256(vh, raw("[]")),
      "payload null": hs256(vh, raw("null")),
      "payload not JSON": hs256(vh, raw("{sub")),
      "payload not UTF-8": hs256(vh, Buffer.from([0x7b, 0xff, 0xfe, 0x7d]).toString("base64url")),
      "signature truncated": `${vh}.${vp}.${vs.slice(0, -2)}`,
      "signature extended": `${vh}.${vp}.${vs}AA`,
      "signature with spare bits set": `${vh}.${vp}.${vs.slice(0, -1)}${spareBitsSet}`,
      "signature of another payload": `${vh}.${b64({ ...good, role: "user" })}.${vs}`,
    };
    // The one difference, on purpose: jose decodes base64url leniently and accepts a signature
    // whose spare bits are set; we accept only the canonical spelling of a signature.
    const strictlyRejected = new Set(["signature with spare bits set"]);
    const key = new TextEncoder().encode(secret);
    const verify = createTokenVerifier({ secret, now: () => at });
    const accepted = await sameVerdicts(
      corpus,
      (token) => verify(token) !== undefined,
      (token) => jwtVerify(token, key, { algorithms: ["HS256"], currentDate: new Date(at) }),
      strictlyRejected,
    );
    assert.deepEqual(accepted, ["valid", "issued by issueToken", "no typ header", "extra claims", "nbf passed", "expires next second"]);
  });

  it("exports a minimum secret length of 32 bytes", () => {
    assert.equal(minSecretBytes, 32);
  });
});

describe("createTokenVerifier() with asymmetric keys (EdDSA, ES256)", () => {
  const pairs = {
    EdDSA: generateKeyPairSync("ed25519"),
    ES256: generateKeyPairSync("ec", { namedCurve: "P-256" }),
  } as const;
  const signingKeys = {
    EdDSA: asymmetricSigningKey(pairs.EdDSA.privateKey),
    ES256: asymmetricSigningKey(pairs.ES256.privateKey),
  } as const;

  for (const alg of ["EdDSA", "ES256"] as const) {
    const key = signingKeys[alg];

    it(`${alg}: signs with the private key, names its kid, and verifies with the public key only`, async () => {
      const { token, iat, exp } = await issueToken(key, claims, hour, t0);
      const header = JSON.parse(Buffer.from(parts(token)[0], "base64url").toString());
      assert.deepEqual(header, { alg, kid: key.kid, typ: "JWT" });
      assert.equal(key.kid, await calculateJwkThumbprint(pairs[alg].publicKey.export({ format: "jwk" }) as JWK));
      const verify = createTokenVerifier({ keys: [key.verification], now: () => t0 + 1000 });
      assert.ok(!(key.verification.key as KeyObject).type.includes("private"));
      const first = verify(token);
      assert.ok(!(first instanceof Promise), "verified on the calling thread");
      assert.deepEqual(first, { ...claims, iat, exp });
      assert.equal(verify.isCached(token), true);
    });

    it(`${alg}: accepts the tokens jose's jwtVerify accepts with the same key set, and no others`, async () => {
      const at = t0 + 1000;
      const iat = seconds(t0);
      const exp = iat + 3600;
      const good = { ...claims, iat, exp };
      const other = alg === "EdDSA" ? generateKeyPairSync("ed25519") : generateKeyPairSync("ec", { namedCurve: "P-256" });
      const otherAlg = alg === "EdDSA" ? "ES256" : "EdDSA";
      const signed = (payload: object, header: Record<string, unknown> = { alg, kid: key.kid, typ: "JWT" }, with_ = key.key) =>
        new SignJWT(payload as Record<string, unknown>).setProtectedHeader(header as { alg: string }).sign(with_ as KeyObject);
      const publicPem = pairs[alg].publicKey.export({ format: "pem", type: "spki" }) as string;
      const publicDer = pairs[alg].publicKey.export({ format: "der", type: "spki" });
      const jwkX = (pairs[alg].publicKey.export({ format: "jwk" }) as JWK).x as string;
      const hmacWith = (header: object, payload: object, secretBytes: Uint8Array | string) => {
        const input = `${b64(header)}.${b64(payload)}`;
        return `${input}.${createHmac("sha256", secretBytes).update(input).digest("base64url")}`;
      };
      const valid = await signed(good);
      const [vh, vp, vs] = parts(valid);
      const corpus: Record<string, string> = {
        valid,
        "issued by issueToken": (await issueToken(key, claims, hour, t0)).token,
        "no typ": await signed(good, { alg, kid: key.kid }),
        "extra claims": await signed({ ...good, aud: "x" }),
        expired: await signed({ ...good, exp: seconds(at) }),
        "nbf ahead": await signed({ ...good, nbf: exp - 10 }),
        "exp a string": await signed({ ...good, exp: String(exp) }),
        "another key under our kid": await signed(good, { alg, kid: key.kid }, other.privateKey),
        "another key, its own kid": await signed(good, { alg, kid: "someone-else" }, other.privateKey),
        "no kid": await signed(good, { alg, typ: "JWT" }),
        "kid of the key, alg of the other family": `${b64({ alg: otherAlg, kid: key.kid })}.${vp}.${vs}`,
        "HS256, public key PEM as secret, our kid": hmacWith({ alg: "HS256", kid: key.kid }, good, publicPem),
        "HS256, public key PEM as secret, no kid": hmacWith({ alg: "HS256" }, good, publicPem),
        "HS256, public key DER as secret": hmacWith({ alg: "HS256", kid: key.kid }, good, publicDer),
        "HS256, JWK x as secret": hmacWith({ alg: "HS256", kid: key.kid }, good, jwkX),
        "alg none": `${b64({ alg: "none", kid: key.kid })}.${vp}.`,
        "crit header": `${b64({ alg, kid: key.kid, crit: ["exp"], exp: 1 })}.${vp}.${vs}`,
        "signature truncated": `${vh}.${vp}.${vs.slice(0, -2)}`,
        "signature extended": `${vh}.${vp}.${vs}AA`,
        "signature of another payload": `${vh}.${b64({ ...good, role: "user" })}.${vs}`,
        "signature DER-encoded":
          alg === "ES256"
            ? `${vh}.${vp}.${createSign("sha256").update(`${vh}.${vp}`).sign(pairs.ES256.privateKey).toString("base64url")}`
            : `${vh}.${vp}.${Buffer.concat([Buffer.from([0x30, 0x44]), Buffer.from(vs, "base64url")]).toString("base64url")}`,
      };
      // Intended differences: a token signed with an asymmetric key must name its kid (jose
      // picks the one matching key of a set without it).
      const strictlyRejected = new Set(["no kid"]);
      const jwks = createLocalJWKSet(jwksOf([key.verification]) as unknown as JSONWebKeySet);
      const verify = createTokenVerifier({ keys: [key.verification], now: () => at });
      const accepted = await sameVerdicts(
        corpus,
        (token) => verify(token) !== undefined,
        (token) => jwtVerify(token, jwks, { currentDate: new Date(at) }),
        strictlyRejected,
      );
      assert.deepEqual(accepted, ["valid", "issued by issueToken", "no typ", "extra claims"]);
    });
  }

  it("refuses alg confusion: an HS256 token signed with the public key, also beside a real HMAC key", async () => {
    const key = signingKeys.EdDSA;
    const verify = createTokenVerifier({ keys: [key.verification, hmacSigningKey(secret).verification], now: () => t0 });
    const payload = { ...claims, iat: seconds(t0), exp: seconds(t0) + 3600 };
    const pem = pairs.EdDSA.publicKey.export({ format: "pem", type: "spki" }) as string;
    for (const header of [{ alg: "HS256", kid: key.kid }, { alg: "HS256" }, { alg: "HS256", kid: hmacSigningKey(secret).kid }]) {
      const forged = await new SignJWT(payload).setProtectedHeader(header).sign(new TextEncoder().encode(pem));
      assert.equal(verify(forged), undefined, JSON.stringify(header));
    }
    assert.ok(verify((await issueToken(secret, claims, hour, t0)).token), "the real HMAC key still verifies");
  });

  it("rotation: accepts tokens of previous keys; refuses them once the key is dropped", async () => {
    const [current, previous] = [signingKeys.ES256, signingKeys.EdDSA];
    const old = (await issueToken(previous, claims, hour, t0)).token;
    const fresh = (await issueToken(current, claims, hour, t0)).token;
    const both = createTokenVerifier({ keys: [current.verification, previous.verification], now: () => t0 });
    assert.ok(both(old), "a token of the previous key");
    assert.ok(both(fresh), "a token of the current key");
    const dropped = createTokenVerifier({ keys: [current.verification], now: () => t0 });
    assert.equal(dropped(old), undefined, "the previous key dropped");
    assert.ok(dropped(fresh));
    assert.equal(dropped.unknownKid(old), previous.kid, "its kid is unknown");
    assert.equal(dropped.unknownKid(fresh), undefined);
  });

  it("setKeys() replaces the keys and empties the cache", async () => {
    const old = (await issueToken(signingKeys.EdDSA, claims, hour, t0)).token;
    const verify = createTokenVerifier({ keys: [signingKeys.EdDSA.verification], now: () => t0 });
    assert.ok(verify(old));
    assert.equal(verify.isCached(old), true);
    verify.setKeys([signingKeys.ES256.verification]);
    assert.equal(verify.isCached(old), false);
    assert.equal(verify(old), undefined, "a cached token of a key that left the set is refused");
    assert.deepEqual(
      verify.keys().map((k) => k.kid),
      [signingKeys.ES256.kid],
    );
  });

  it("accepts an HS256 token without kid (issued before keys had ids) with the HMAC key only", async () => {
    const legacy = await sign({ ...claims, iat: seconds(t0), exp: seconds(t0) + 3600 });
    assert.equal(JSON.parse(Buffer.from(parts(legacy)[0], "base64url").toString()).kid, undefined);
    assert.ok(createTokenVerifier({ secret, now: () => t0 })(legacy));
    assert.equal(createTokenVerifier({ keys: [signingKeys.EdDSA.verification], now: () => t0 })(legacy), undefined);
  });
});

describe("tokenFromAuthorization()", () => {
  it("takes the token out of a Bearer value, any case, any spacing", () => {
    assert.equal(tokenFromAuthorization("Bearer abc.def.ghi"), "abc.def.ghi");
    assert.equal(tokenFromAuthorization("bearer abc"), "abc");
    assert.equal(tokenFromAuthorization("BEARER   abc  "), "abc");
    assert.equal(tokenFromAuthorization("  Bearer\tabc"), "abc");
  });

  it("accepts a raw token", () => {
    assert.equal(tokenFromAuthorization("abc.def.ghi"), "abc.def.ghi");
    assert.equal(tokenFromAuthorization("  abc  "), "abc");
  });

  it("returns undefined for a missing or blank value", () => {
    assert.equal(tokenFromAuthorization(undefined), undefined);
    assert.equal(tokenFromAuthorization(""), undefined);
    assert.equal(tokenFromAuthorization("   "), undefined);
  });
});
