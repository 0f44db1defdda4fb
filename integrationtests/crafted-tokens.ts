import { loadPrivateKeyFile } from "../common/token-keys.js";
import { issueToken, type SigningKey } from "../common/tokens.js";
import type { ScenarioContext } from "./context.js";

const hour = 3_600_000;

/** The stack's signing key: its private key file when one is configured, else `JWT_SECRET`. */
function stackKey(ctx: ScenarioContext): string | SigningKey {
  const file = ctx.options.tokenSigningKeyFile;
  return file === undefined ? ctx.options.jwtSecret : loadPrivateKeyFile(file);
}

/** A token signed with the stack's key that expired an hour ago. */
export async function expiredToken(ctx: ScenarioContext, sessionId: string): Promise<string> {
  const { token } = await issueToken(
    stackKey(ctx),
    { sub: ctx.options.username, role: ctx.options.role, session_id: sessionId },
    hour,
    Date.now() - 2 * hour,
  );
  return token;
}

/** A valid-looking token signed with a secret the stack does not know. */
export async function foreignSignedToken(ctx: ScenarioContext, sessionId: string): Promise<string> {
  const { token } = await issueToken(
    `not-the-stack-secret-${"x".repeat(40)}`,
    { sub: ctx.options.username, role: ctx.options.role, session_id: sessionId },
    hour,
  );
  return token;
}

/** An unsigned token (`alg: none`) with otherwise valid claims. */
export function unsignedToken(ctx: ScenarioContext, sessionId: string): string {
  const now = Math.floor(Date.now() / 1000);
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "none", typ: "JWT" })}.${part({
    sub: ctx.options.username,
    role: ctx.options.role,
    session_id: sessionId,
    iat: now,
    exp: now + 3600,
  })}.`;
}

/** A token for any user, signed with the stack's key, valid for an hour. */
export async function mintedToken(ctx: ScenarioContext, sub: string, role: string, sessionId: string): Promise<string> {
  const { token } = await issueToken(stackKey(ctx), { sub, role, session_id: sessionId }, hour);
  return token;
}
