import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SignJWT } from "jose";
import { type TokenClaims, createTokenVerifier, issueToken, minSecretBytes, tokenFromAuthorization } from "./tokens.js";

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

describe("issueToken()", () => {
  it("signs an HS256 JWT with sub, role, session_id, iat and exp", async () => {
    const { token, iat, exp } = await issueToken(secret, claims, hour, t0 + 400);
    assert.equal(iat, seconds(t0));
    assert.equal(exp, seconds(t0) + 3600);
    const [header, payload] = parts(token);
    assert.deepEqual(JSON.parse(Buffer.from(header, "base64url").toString()), { alg: "HS256", typ: "JWT" });
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

  it("answers a second check of the same token synchronously from its cache", async () => {
    const verify = createTokenVerifier({ secret, now: () => t0 + 1000 });
    const { token } = await issueToken(secret, claims, hour, t0);
    const first = verify(token);
    assert.ok(first instanceof Promise, "the first check verifies the signature");
    const claimsFirst = await first;
    const second = verify(token);
    assert.ok(!(second instanceof Promise), "the second check is a cache hit");
    assert.deepEqual(second, claimsFirst);
  });

  it("answers a token it was told it issued (remember) from its cache, until it expires", async () => {
    const clock = { now: t0 + 1000 };
    const verify = createTokenVerifier({ secret, now: () => clock.now });
    const { token, iat, exp } = await issueToken(secret, claims, 60_000, t0);
    verify.remember(token, { ...claims, iat, exp });
    const answer = verify(token);
    assert.ok(!(answer instanceof Promise), "no signature check for a remembered token");
    assert.deepEqual(answer, { ...claims, iat, exp });
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
    assert.ok(!(verify(c) instanceof Promise), "newest cached");
    assert.ok(!(verify(b) instanceof Promise), "second newest cached");
    const again = verify(a);
    assert.ok(again instanceof Promise, "oldest evicted");
    assert.equal((await again)?.session_id, "s1");
  });

  it("does not cache rejected tokens", async () => {
    const verify = createTokenVerifier({ secret, now: () => t0 });
    const { token } = await issueToken(`${secret}-other`, claims, hour, t0);
    assert.equal(await verify(token), undefined);
    const again = verify(token);
    assert.ok(again instanceof Promise);
    assert.equal(await again, undefined);
  });

  it("exports a minimum secret length of 32 bytes", () => {
    assert.equal(minSecretBytes, 32);
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
