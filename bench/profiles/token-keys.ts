import type { ClientHttp2Session } from "node:http2";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { hmacSigningKey, loadPrivateKeyFile, type SigningKey } from "../../common/token-keys.js";
import { createTokenVerifier, issueToken } from "../../common/tokens.js";
import { createTokenKey } from "../../scripts/dev-certs.js";
import { fmt, fmtRatio } from "../format.js";
import { benchSecret, echoBody, echoHeaders, h2connect, mintSession, unaryCall } from "../grpc.js";
import { startGateway, startLeanInstances } from "../stack.js";
import { median, quantile, ratio } from "../stats.js";
import type { BenchContext, ProfileResult } from "../types.js";

type Alg = "HS256" | "EdDSA" | "ES256";
const algorithms: readonly Alg[] = ["HS256", "EdDSA", "ES256"];

/** The three kinds of signing key, made for the run. */
function keysFor(ctx: BenchContext): Record<Alg, { signing: SigningKey; privateKeyFile?: string; publicKeyFile?: string }> {
  const dir = join(ctx.tmpDir, "token-keys");
  const ed = createTokenKey(dir, "ed25519", "ed25519");
  const ec = createTokenKey(dir, "p256", "p256");
  return {
    HS256: { signing: hmacSigningKey(benchSecret) },
    EdDSA: { signing: loadPrivateKeyFile(ed.privateKey), privateKeyFile: ed.privateKey, publicKeyFile: ed.publicKey },
    ES256: { signing: loadPrivateKeyFile(ec.privateKey), privateKeyFile: ec.privateKey, publicKeyFile: ec.publicKey },
  };
}

/**
 * Profile 3b: what asymmetric token keys cost. (1) Per token, in this process: signing with
 * jose (Login does it once per session) and the verifier's first, uncached check (the
 * gateway's and the instance's, on a session's first call) for HS256, EdDSA and ES256. (2)
 * Through a gateway signing with an Ed25519 / P-256 key into a lean pool verifying with the
 * public key: the first Echo of a session over a leased Echo (the target: ≤ 1 ms at p50).
 */
export async function tokenKeysProfile(ctx: BenchContext): Promise<ProfileResult> {
  const keys = keysFor(ctx);
  const count = ctx.quick ? 400 : 3000;
  const rounds = ctx.quick ? 1 : ctx.rounds;
  const cost: Record<Alg, { signUs: number[]; verifyUs: number[]; cachedUs: number[] }> = {
    HS256: { signUs: [], verifyUs: [], cachedUs: [] },
    EdDSA: { signUs: [], verifyUs: [], cachedUs: [] },
    ES256: { signUs: [], verifyUs: [], cachedUs: [] },
  };
  for (let round = 0; round < rounds; round++) {
    for (const alg of algorithms) {
      const key = keys[alg].signing;
      const claims = (i: number) => ({ sub: "bench", role: "admin", session_id: `verify-${round}-${i}` });
      const t0 = performance.now();
      const tokens: string[] = [];
      for (let i = 0; i < count; i++) tokens.push((await issueToken(key, claims(i), 3_600_000)).token);
      const signed = performance.now();
      const verify = createTokenVerifier({ keys: [key.verification], cacheSize: count * 2 });
      for (const token of tokens) if (verify(token) === undefined) throw new Error(`${alg}: a token did not verify`);
      const verified = performance.now();
      for (const token of tokens) verify(token);
      const cached = performance.now();
      cost[alg].signUs.push(((signed - t0) / count) * 1000);
      cost[alg].verifyUs.push(((verified - signed) / count) * 1000);
      cost[alg].cachedUs.push(((cached - verified) / count) * 1000);
    }
  }
  const metrics: Record<string, number> = {};
  const costRows = algorithms.map((alg) => {
    const sign = median(cost[alg].signUs);
    const verify = median(cost[alg].verifyUs);
    metrics[`${alg}.signUs`] = sign;
    metrics[`${alg}.verifyUs`] = verify;
    metrics[`${alg}.cachedVerifyUs`] = median(cost[alg].cachedUs);
    return [alg, fmt(sign, 1), fmt(verify, 1), fmtRatio(ratio(verify, median(cost.HS256.verifyUs))), fmt(median(cost[alg].cachedUs), 2)];
  });

  const allocationRows: (string | number)[][] = [];
  // HS256 is the baseline of the same run; quick mode (CI: proves the profile runs) measures EdDSA only.
  for (const alg of ctx.quick ? (["EdDSA"] as const) : (["HS256", "EdDSA", "ES256"] as const)) {
    const f = await allocationWith(ctx, alg, keys[alg]);
    metrics[`${alg}.firstEchoP50Ms`] = f.first;
    metrics[`${alg}.leasedEchoP50Ms`] = f.leased;
    metrics[`${alg}.allocationAddsP50Ms`] = f.first - f.leased;
    allocationRows.push([alg, fmt(f.first, 3), fmt(f.leased, 3), fmt(f.first - f.leased, 3), f.sessions]);
  }
  return {
    id: "token-keys",
    title: "3b. Token keys: HS256, EdDSA, ES256",
    tables: [
      {
        title: "Cost per token in one process (medians)",
        columns: ["alg", "sign µs (jose)", "first verify µs", "verify vs HS256", "cached verify µs"],
        rows: costRows,
      },
      {
        title: "Allocation by key: gateway signs, lean pool verifies (HS256: the secret; EdDSA/ES256: the public key)",
        columns: ["alg", "first Echo p50 ms", "leased Echo p50 ms", "allocation adds ms", "sessions"],
        rows: allocationRows,
      },
    ],
    metrics,
    notes: [
      `Per token: ${count} tokens per algorithm and round, ${rounds} round(s); signing with jose (WebCrypto, awaited one at a time); the first verify is the verifier's synchronous check (node:crypto HMAC, Ed25519 or ECDSA P-256 verify, then the claims), the cached one a Map lookup.`,
      "Allocation: a gateway with JWT_PRIVATE_KEY_FILE and a lean pool (bench/lean-instance-pool.ts) with JWT_PUBLIC_KEY_FILE, tokens signed beforehand with the private key; one session at a time: its first Echo (lease + durable commit + both token checks) then a leased Echo.",
    ],
    raw: cost,
  };
}

async function allocationWith(
  ctx: BenchContext,
  alg: Alg,
  key: { signing: SigningKey; privateKeyFile?: string; publicKeyFile?: string },
): Promise<{ first: number; leased: number; sessions: number }> {
  const sessions = ctx.quick ? 30 : 200;
  const warm = ctx.quick ? 40 : 300;
  ctx.progress(`token-keys: allocation with ${alg}, ${warm + sessions + 10} lean instances`);
  const hmac = key.privateKeyFile === undefined;
  const pool = await startLeanInstances(
    warm + sessions + 10,
    hmac ? {} : { JWT_SECRET: "", JWT_PUBLIC_KEY_FILE: key.publicKeyFile as string },
  );
  const gateway = await startGateway(pool.addresses, {
    ...(hmac ? {} : { JWT_SECRET: "", JWT_PRIVATE_KEY_FILE: key.privateKeyFile as string }),
    HEALTH_CHECK_INTERVAL: "60s",
    HEALTH_CHECK_TIMEOUT: "10s",
  });
  let client: ClientHttp2Session | undefined;
  try {
    client = await h2connect(gateway.address);
    const body = echoBody("bench");
    const mint = (label: string, i: number) => mintSession(`bench-keys-${alg}-${label}-${process.pid}-${i}`, 3_600_000, key.signing);
    const call = async (headers: ReturnType<typeof echoHeaders>) => {
      for (let attempt = 0; ; attempt++) {
        const t0 = performance.now();
        const r = await unaryCall(client as ClientHttp2Session, headers, body);
        if (r.status === 0) return performance.now() - t0;
        // The pool's first probes may still be running: UNAVAILABLE until an instance is seen.
        if (r.status !== 14 || attempt > 100) throw new Error(`Echo failed: ${r.status} ${r.message}`);
        await sleep(100);
      }
    };
    for (let i = 0; i < warm; i++) {
      const h = echoHeaders(await mint("warm", i));
      for (let k = 0; k < 4; k++) await call(h);
    }
    const first: number[] = [];
    const leased: number[] = [];
    for (let i = 0; i < sessions; i++) {
      const h = echoHeaders(await mint("lat", i));
      first.push(await call(h));
      leased.push(await call(h));
    }
    return { first: quantile(first, 0.5), leased: quantile(leased, 0.5), sessions };
  } finally {
    client?.close();
    await gateway.stop();
    await pool.child.stop();
  }
}
