// Asymmetric token keys end to end (SPEC 12) with real processes: the gateway signs with
// JWT_PRIVATE_KEY_FILE, instances verify with the gateway's JWKS only. A rotation (EdDSA →
// ES256) logs nobody out, an instance learns the new key on the first token naming it, a
// dropped previous key's tokens are refused, and the gateway's own calls (recycling an expired
// lease) keep working with the asymmetric key.
import assert from "node:assert/strict";
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { publicVerificationKey } from "../common/token-keys.js";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { MyServiceAPI } from "../gen/my_service/my_service_pb.js";
import { errorOf, retryWhile } from "./e2e-client.js";
import { type Stack, startStack } from "./stack.js";

const pem = (key: KeyObject) =>
  key.type === "private"
    ? (key.export({ format: "pem", type: "pkcs8" }) as string)
    : (key.export({ format: "pem", type: "spki" }) as string);
const headerOf = (token: string) =>
  JSON.parse(Buffer.from(token.split(".")[0] as string, "base64url").toString()) as { alg: string; kid: string };

describe("token keys: EdDSA and ES256 end to end, rotation, JWKS refresh, dropped keys", () => {
  const dir = mkdtempSync(join(tmpdir(), "rotation-"));
  const keyFile = join(dir, "signing.pem");
  const previousFile = join(dir, "previous.pem");
  const k1 = generateKeyPairSync("ed25519");
  const k2 = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const kid1 = publicVerificationKey(k1.publicKey).kid;
  const kid2 = publicVerificationKey(k2.publicKey).kid;
  let stack: Stack;
  let api: ReturnType<typeof createClient<typeof MyServiceAPI>>;
  const sessionId = `rotation-${process.pid}`;
  let t1 = "";
  let t2 = "";
  let pod = "";

  /** Restarts the gateway (it reads its keys at start) and waits until it serves again. */
  async function restartGateway(): Promise<void> {
    const before = (await stack.processes()).find((p) => p.kind === "gateway")?.restarts ?? 0;
    await stack.control("gateway", "kill");
    await stack.waitFor((ps) => ps.some((p) => p.kind === "gateway" && p.state === "running" && p.restarts > before), 20_000);
    const health = createClient(Health, createGrpcTransport({ baseUrl: stack.gatewayUrl }));
    await retryWhile(
      [Code.Unavailable, Code.Unknown, Code.Internal],
      async () => {
        const { status } = await health.check({ service: MyServiceAPI.typeName }, { timeoutMs: 1000 });
        assert.equal(status, HealthCheckResponse_ServingStatus.SERVING);
      },
      20_000,
    );
  }

  async function jwksKids(): Promise<string[]> {
    const reply = await fetch(`${stack.gatewayUrl}/.well-known/jwks.json`);
    return ((await reply.json()) as { keys: { kid: string }[] }).keys.map((k) => k.kid);
  }

  const echo = (token: string) =>
    api.myServiceEcho({ value: "v" }, { headers: { authorization: token, "session-id": sessionId }, timeoutMs: 10_000 });

  before(async () => {
    writeFileSync(keyFile, pem(k1.privateKey));
    writeFileSync(previousFile, pem(k1.publicKey));
    stack = await startStack({
      instances: 2,
      env: {
        JWT_PRIVATE_KEY_FILE: keyFile,
        JWT_PREVIOUS_KEYS: previousFile,
        JWKS_REFRESH_COOLDOWN: "300ms",
        LEASE_IDLE_TTL: "8s",
        HEALTH_CHECK_INTERVAL: "250ms",
      },
    });
    api = createClient(MyServiceAPI, createGrpcTransport({ baseUrl: stack.gatewayUrl }));
  });
  after(async () => {
    await stack?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("instances get no secret and no private key, only the JWKS URL", async () => {
    const instance = (await stack.processes()).find((p) => p.kind === "myservice");
    const { readFileSync } = await import("node:fs");
    const env = readFileSync(`/proc/${instance?.pid}/environ`, "utf8").split("\0");
    assert.ok(
      !env.some((l) => /^(JWT_SECRET|JWT_PRIVATE_KEY_FILE|JWT_PREVIOUS_KEYS)=/.test(l)),
      env.filter((l) => l.startsWith("JWT")).join(" "),
    );
    assert.ok(env.some((l) => l.startsWith("JWT_JWKS_URL=http://127.0.0.1:")));
  });

  it("EdDSA: Login signs with the key (its kid), the instance verifies through the JWKS", async () => {
    t1 = (await api.login({ username: "TestUser", password: "TestPassword", sessionId })).token;
    assert.deepEqual(headerOf(t1), { alg: "EdDSA", kid: kid1, typ: "JWT" });
    pod = (await retryWhile([Code.ResourceExhausted], () => echo(t1))).podName;
    assert.deepEqual(await jwksKids(), [kid1]);
  });

  it("rotating to ES256 with the old key as previous logs nobody out; the instance fetches the new key on its first token", async () => {
    writeFileSync(keyFile, pem(k2.privateKey));
    writeFileSync(previousFile, pem(k1.publicKey));
    await restartGateway();
    assert.deepEqual(await jwksKids(), [kid2, kid1], "the JWKS lists current and previous keys");
    assert.equal((await echo(t1)).podName, pod, "a token of the previous key still works, same instance");
    t2 = (await api.login({ username: "TestUser", password: "TestPassword", sessionId })).token;
    assert.deepEqual(headerOf(t2), { alg: "ES256", kid: kid2, typ: "JWT" });
    // The instance has only kid1 so far: this call makes it refresh its keys, then accept.
    assert.equal((await echo(t2)).podName, pod, "a token of the new key reaches the same instance");
  });

  it("once the previous key is dropped, its tokens are refused; the new ones still work", async () => {
    writeFileSync(previousFile, pem(k2.publicKey)); // the current key again: nothing previous left
    await restartGateway();
    assert.deepEqual(await jwksKids(), [kid2]);
    const refusal = await errorOf(echo(t1));
    assert.equal(refusal.code, Code.Unauthenticated);
    assert.equal(refusal.message, "missing or invalid token");
    assert.equal((await echo(t2)).podName, pod);
  });

  it("recycling an expired lease (the gateway's own Shutdown call) works with the asymmetric key", async () => {
    const instance = (await stack.processes()).find((p) => p.podName === pod);
    const restarts = instance?.restarts ?? 0;
    // No calls: the lease expires after LEASE_IDLE_TTL and the gateway shuts the instance down.
    await stack.waitFor((ps) => ps.some((p) => p.podName === pod && p.restarts > restarts), 30_000);
    const next = await retryWhile([Code.ResourceExhausted], () => echo(t2));
    assert.ok(next.podName, "the session continues on a (clean) instance");
  });
});
