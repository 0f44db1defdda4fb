// Hostile tokens for session `sessionId`: every one must be refused with UNAUTHENTICATED
// `missing or invalid token` (SPEC 4.2), by `authenticateCall` and by the real gateway.
import { forgeToken, joseToken } from "./wire.js";

export async function hostileTokens(secret: string, sessionId: string): Promise<[string, string][]> {
  const now = Math.floor(Date.now() / 1000);
  const good = { sub: "TestUser", role: "admin", session_id: sessionId, iat: now, exp: now + 3600 };
  const hs = { alg: "HS256", typ: "JWT" };
  const valid = await joseToken(secret, good);
  const [h, p, sig] = valid.split(".") as [string, string, string];
  const without = (claim: string) => Object.fromEntries(Object.entries(good).filter(([k]) => k !== claim));
  const flip = (text: string, i: number) => text.slice(0, i) + (text[i] === "A" ? "B" : "A") + text.slice(i + 1);
  const cases: [string, string][] = [
    ["alg none, no signature", await forgeToken({ alg: "none", typ: "JWT" }, good, undefined, "")],
    ["alg none, with signature", await forgeToken({ alg: "none" }, good, undefined, sig)],
    ["alg None (case)", await forgeToken({ alg: "None" }, good, undefined, "")],
    ["alg NONE, two dots only", `${Buffer.from('{"alg":"NONE"}').toString("base64url")}.${p}.`],
    ["alg HS384 with the right secret", await forgeToken({ alg: "HS384", typ: "JWT" }, good, secret)],
    ["alg HS512 with the right secret", await forgeToken({ alg: "HS512", typ: "JWT" }, good, secret)],
    ["alg RS256 header, HMAC signature", await forgeToken({ alg: "RS256", typ: "JWT" }, good, secret)],
    ["alg ES256 header, HMAC signature", await forgeToken({ alg: "ES256" }, good, secret)],
    ["alg missing", await forgeToken({ typ: "JWT" }, good, secret)],
    ["wrong key", await forgeToken(hs, good, `${secret}-but-not-quite-the-same-one`)],
    ["empty key", await forgeToken(hs, good, "")],
    ["crit header", await forgeToken({ ...hs, crit: ["exp"] }, good, secret)],
    ["b64=false header", await forgeToken({ ...hs, b64: false, crit: ["b64"] }, good, secret)],
    ["tampered session_id", `${h}.${Buffer.from(JSON.stringify({ ...good, session_id: `${sessionId}x` })).toString("base64url")}.${sig}`],
    ["tampered sub", `${h}.${Buffer.from(JSON.stringify({ ...good, sub: "OtherUser" })).toString("base64url")}.${sig}`],
    ["tampered exp", `${h}.${Buffer.from(JSON.stringify({ ...good, exp: now + 999_999 })).toString("base64url")}.${sig}`],
    ["signature bit flipped", `${h}.${p}.${flip(sig, 3)}`],
    ["signature truncated", `${h}.${p}.${sig.slice(0, 20)}`],
    ["signature empty", `${h}.${p}.`],
    ["header flipped", `${flip(h, 5)}.${p}.${sig}`],
    ["payload flipped", `${h}.${flip(p, 10)}.${sig}`],
    ["two parts", `${h}.${p}`],
    ["four parts", `${valid}.${sig}`],
    ["padding in parts", `${h}=.${p}.${sig}`],
    ["standard base64 chars", `${h}.${p}+/.${sig}`],
    ["spaces inside", `${h}. ${p}.${sig}`],
    ["missing sub", await forgeToken(hs, without("sub"), secret)],
    ["missing role", await forgeToken(hs, without("role"), secret)],
    ["missing session_id", await forgeToken(hs, without("session_id"), secret)],
    ["missing iat", await forgeToken(hs, without("iat"), secret)],
    ["missing exp", await forgeToken(hs, without("exp"), secret)],
    ["empty sub", await forgeToken(hs, { ...good, sub: "" }, secret)],
    ["sub not a string", await forgeToken(hs, { ...good, sub: 42 }, secret)],
    ["session_id not a string", await forgeToken(hs, { ...good, session_id: [sessionId] }, secret)],
    ["role object", await forgeToken(hs, { ...good, role: { admin: true } }, secret)],
    ["expired", await forgeToken(hs, { ...good, iat: now - 7200, exp: now - 3600 }, secret)],
    ["exp 0", await forgeToken(hs, { ...good, exp: 0 }, secret)],
    ["exp negative", await forgeToken(hs, { ...good, exp: -1e12 }, secret)],
    ["exp as string", await forgeToken(hs, { ...good, exp: String(now + 3600) }, secret)],
    ["exp null", await forgeToken(hs, { ...good, exp: null }, secret)],
    [
      "exp -1e400",
      await forgeToken(hs, `{"sub":"TestUser","role":"admin","session_id":${JSON.stringify(sessionId)},"iat":${now},"exp":-1e400}`, secret),
    ],
    ["iat as string", await forgeToken(hs, { ...good, iat: "yesterday" }, secret)],
    ["nbf in the future", await forgeToken(hs, { ...good, nbf: now + 3600 }, secret)],
    ["payload is an array", await forgeToken(hs, "[1,2,3]", secret)],
    ["payload is null", await forgeToken(hs, "null", secret)],
    ["payload not JSON", await forgeToken(hs, "{sub:", secret)],
    ["header not JSON", `${Buffer.from("{alg:HS256").toString("base64url")}.${p}.${sig}`],
    [
      "duplicate claims (last wins attempt)",
      await forgeToken(
        hs,
        `{"sub":"TestUser","role":"admin","session_id":"other","session_id":"x${sessionId}","iat":${now},"exp":${now + 60}}`,
        secret,
      ),
    ],
    ["token for another session", await joseToken(secret, { ...good, session_id: `${sessionId}-other` })],
    ["9 KB token", `${h}.${"A".repeat(9000)}.${sig}`],
    ["JWE-shaped (5 parts)", `${h}.${p}.${sig}.${sig}.${sig}`],
    ["unicode", `${h}.${p}.${sig}é`],
    ["empty", ""],
    ["Bearer only", "Bearer"],
    ["Bearer and spaces", "Bearer    "],
    ["Basic scheme", `Basic ${Buffer.from("TestUser:TestPassword").toString("base64")}`],
    ["Bearer Bearer", `Bearer Bearer ${valid}`],
  ];
  return cases;
}

/**
 * Tokens signed with the right secret whose `exp` is absurd (never issued by Login, whose
 * lifetime is at most 30 days). Only a holder of the secret can make them.
 */
export async function absurdSignedTokens(secret: string, sessionId: string): Promise<[string, string][]> {
  const now = Math.floor(Date.now() / 1000);
  const hs = { alg: "HS256", typ: "JWT" };
  return [
    [
      "exp 1e400 (Infinity)",
      await forgeToken(hs, `{"sub":"TestUser","role":"admin","session_id":${JSON.stringify(sessionId)},"iat":${now},"exp":1e400}`, secret),
    ],
    ["exp year 3 billion", await forgeToken(hs, { sub: "TestUser", role: "admin", session_id: sessionId, iat: now, exp: 1e17 }, secret)],
  ];
}
