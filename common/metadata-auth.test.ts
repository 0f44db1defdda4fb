import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { authenticateCall, authFailureMessage } from "./metadata-auth.js";
import { createTokenVerifier, issueToken } from "./tokens.js";

const secret = "unit-test-secret-unit-test-secret-0123456789";
const t0 = 1_700_000_000_000;
const hour = 3_600_000;

async function tokenFor(session_id: string, lifetimeMs = hour, key = secret): Promise<string> {
  return (await issueToken(key, { sub: "alice", role: "admin", session_id }, lifetimeMs, t0)).token;
}

describe("authenticateCall()", () => {
  it("refuses a missing or empty session-id first, whatever the token", async () => {
    const verify = createTokenVerifier({ secret, now: () => t0 });
    const good = await tokenFor("s1");
    for (const sessionId of [undefined, "", "   "]) {
      for (const authorization of [undefined, "", "garbage", `Bearer ${good}`]) {
        const result = authenticateCall(sessionId, authorization, verify);
        assert.ok(!(result instanceof Promise), "decided without verifying the token");
        assert.deepEqual(result, { ok: false, failure: "missing-session-id" });
      }
    }
  });

  it("refuses a missing, blank or malformed token", async () => {
    const verify = createTokenVerifier({ secret, now: () => t0 });
    for (const authorization of [undefined, "", "  ", "Bearer ", "Bearer garbage", "a.b.c"]) {
      assert.deepEqual(await authenticateCall("s1", authorization, verify), { ok: false, failure: "invalid-token" });
    }
  });

  it("refuses a valid token issued for another session", async () => {
    const verify = createTokenVerifier({ secret, now: () => t0 });
    const other = await tokenFor("s2");
    assert.deepEqual(await authenticateCall("s1", `Bearer ${other}`, verify), { ok: false, failure: "invalid-token" });
    // Also once the token is cached.
    assert.ok(await verify(other));
    assert.deepEqual(authenticateCall("s1", `Bearer ${other}`, verify), { ok: false, failure: "invalid-token" });
  });

  it("refuses an expired token or one signed with another key", async () => {
    const later = createTokenVerifier({ secret, now: () => t0 + 2 * hour });
    assert.deepEqual(await authenticateCall("s1", await tokenFor("s1"), later), { ok: false, failure: "invalid-token" });
    const verify = createTokenVerifier({ secret, now: () => t0 });
    const foreign = await tokenFor("s1", hour, `${secret}-other`);
    assert.deepEqual(await authenticateCall("s1", foreign, verify), { ok: false, failure: "invalid-token" });
  });

  it("accepts a token for the call's session, raw or Bearer, synchronously once cached", async () => {
    const verify = createTokenVerifier({ secret, now: () => t0 });
    const token = await tokenFor("s1");
    const first = await authenticateCall("s1", `Bearer ${token}`, verify);
    assert.equal(first.ok, true);
    assert.ok(first.ok);
    assert.equal(first.sessionId, "s1");
    assert.equal(first.claims.sub, "alice");
    assert.equal(first.claims.role, "admin");
    assert.equal(first.claims.session_id, "s1");
    const second = authenticateCall("s1", token, verify);
    assert.ok(!(second instanceof Promise));
    assert.deepEqual(second, first);
  });
});

describe("authFailureMessage", () => {
  it("holds the exact messages of SPEC 5", () => {
    assert.deepEqual(authFailureMessage, {
      "missing-session-id": "missing session-id",
      "invalid-token": "missing or invalid token",
    });
  });
});
