import type { ClientHttp2Session, OutgoingHttpHeaders } from "node:http2";
import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
import { fmt, fmtMB } from "../format.js";
import { type BenchSession, echoBody, echoHeaders, h2connect, login, mintSession, unaryCall } from "../grpc.js";
import { type Child, cpuSeconds, rssBytes } from "../proc.js";
import { startGateway, startLeanInstances, startMultiInstances } from "../stack.js";
import { median, quantile } from "../stats.js";
import type { BenchContext, ProfileResult } from "../types.js";

/**
 * Probe period of the large pools: long enough that no probe sweep (2 calls per instance, a
 * few seconds of CPU for 3,000 instances, in bursts of 32) falls into the measured rounds —
 * whether one did depended on timing and moved the rate by half. Probing cost grows with the
 * pool and the interval, not with allocations; it is outside these figures.
 */
const healthInterval = "60s";
/** Concurrent first Echos while measuring sessions allocated per second. */
const concurrency = 32;

/** The two ways the bench runs a large pool in one process. */
type PoolKind = "lean" | "myservice";

interface PoolFigures {
  readonly poolSize: number;
  readonly firstEchoP50Ms: number;
  readonly firstEchoP99Ms: number;
  readonly leasedEchoP50Ms: number;
  readonly leasedEchoP99Ms: number;
  readonly allocationAddsP50Ms: number;
  readonly freshTokenEchoP50Ms: number;
  /** First Echo of a new session over a leased Echo with a token never seen before. */
  readonly allocationAddsOverFreshTokenP50Ms: number;
  readonly afterLoginEchoP50Ms: number;
  /** First Echo of a session logged in on this gateway (its token is cached as issued) over a leased Echo. */
  readonly allocationAddsAfterLoginP50Ms: number;
  readonly sessionsPerSec: number;
  readonly gatewayCpuMsPerAllocation: number;
  readonly instancesCpuMsPerAllocation: number;
  readonly loadGenCpuMsPerAllocation: number;
  readonly gatewayRssWithLeasesBytes: number;
  readonly leases: number;
  readonly freeAtEnd: number;
  readonly raw: { first: number[]; leased: number[]; freshToken: number[]; afterLogin: number[]; rates: number[] };
}

/**
 * Profile 3 (through the gateway): first Echo of a new session (allocation: one durable
 * SQLite transaction, group-committed) vs. a leased Echo, and sessions allocated per second
 * into a large free pool. Run against two pools, each many instances in one process: the
 * lean pool (raw node:http2, ~0.3 ms CPU per first call, so the gateway sets the rate) and
 * the real myservice code (connect-node, ~1–1.5 ms CPU per first call on the same 2 cores).
 * Tokens are signed beforehand (Login excluded).
 */
export async function allocationProfile(ctx: BenchContext): Promise<ProfileResult> {
  const figures: Partial<Record<PoolKind, PoolFigures>> = {};
  for (const kind of ["lean", "myservice"] as const) figures[kind] = await measurePool(ctx, kind);
  const lean = figures.lean as PoolFigures;
  const real = figures.myservice as PoolFigures;
  const rows: (string | number)[][] = [];
  for (const kind of ["lean", "myservice"] as const) {
    const f = figures[kind] as PoolFigures;
    rows.push(
      [kind, "first Echo of a new session", `${fmt(f.firstEchoP50Ms, 3)} ms`, `${fmt(f.firstEchoP99Ms, 3)} ms`, "one at a time"],
      [kind, "leased Echo (same session next)", `${fmt(f.leasedEchoP50Ms, 3)} ms`, `${fmt(f.leasedEchoP99Ms, 3)} ms`, ""],
      [kind, "allocation adds", `${fmt(f.allocationAddsP50Ms, 3)} ms`, "", "p50 difference"],
      [
        kind,
        "leased Echo, token never seen before",
        `${fmt(f.freshTokenEchoP50Ms, 3)} ms`,
        "",
        "gateway and instance verify it (uncached)",
      ],
      [kind, "allocation adds over that", `${fmt(f.allocationAddsOverFreshTokenP50Ms, 3)} ms`, "", "lease + durable commit + binding only"],
      [kind, "first Echo after Login on this gateway", `${fmt(f.afterLoginEchoP50Ms, 3)} ms`, "", "the gateway knows the token it issued"],
      [kind, "allocation adds after Login", `${fmt(f.allocationAddsAfterLoginP50Ms, 3)} ms`, "", "p50 difference to the leased Echo"],
      [
        kind,
        "sessions allocated/s",
        fmt(f.sessionsPerSec),
        "",
        `CPU/allocation: gateway ${fmt(f.gatewayCpuMsPerAllocation, 2)} ms, instances ${fmt(f.instancesCpuMsPerAllocation, 2)} ms, load generator ${fmt(f.loadGenCpuMsPerAllocation, 2)} ms`,
      ],
    );
  }
  const metrics: Record<string, number> = {
    poolSize: lean.poolSize,
    firstEchoP50Ms: lean.firstEchoP50Ms,
    leasedEchoP50Ms: lean.leasedEchoP50Ms,
    allocationAddsP50Ms: lean.allocationAddsP50Ms,
    allocationAddsOverFreshTokenP50Ms: lean.allocationAddsOverFreshTokenP50Ms,
    allocationAddsAfterLoginP50Ms: lean.allocationAddsAfterLoginP50Ms,
    sessionsPerSec: lean.sessionsPerSec,
    gatewayCpuMsPerAllocation: lean.gatewayCpuMsPerAllocation,
    instancesCpuMsPerAllocation: lean.instancesCpuMsPerAllocation,
    loadGenCpuMsPerAllocation: lean.loadGenCpuMsPerAllocation,
    gatewayRssWithLeasesBytes: lean.gatewayRssWithLeasesBytes,
    "myservice.allocationAddsP50Ms": real.allocationAddsP50Ms,
    "myservice.sessionsPerSec": real.sessionsPerSec,
    "myservice.gatewayCpuMsPerAllocation": real.gatewayCpuMsPerAllocation,
    "myservice.instancesCpuMsPerAllocation": real.instancesCpuMsPerAllocation,
  };
  const rounds = ctx.quick ? 2 : ctx.rounds;
  return {
    id: "allocation",
    title: "3a. Allocation through the gateway",
    tables: [
      {
        title: `Allocation through the gateway: ${lean.poolSize} instances per pool, synchronous=FULL`,
        columns: ["pool", "measure", "p50", "p99", "note"],
        rows,
      },
    ],
    metrics,
    notes: [
      `Each pool is ${lean.poolSize} instances in one process, one port each. lean: raw node:http2 serving the status, health, Echo and Shutdown calls the gateway uses, verifying tokens and binding sessions as myservice does (bench/lean-instance-pool.ts). myservice: the real instance code (connect-node) on every port (bench/multi-instance-server.ts). The targets read the lean pool, where the gateway and not the instance sets the rate.`,
      `Sessions allocated/s: median of ${rounds} rounds of first Echos of fresh sessions at ${concurrency} concurrent over 4 connections, after an uncounted warm-up; at least ${Math.min(lean.freeAtEnd, real.freeAtEnd)} instances stayed free. HEALTH_CHECK_INTERVAL=${healthInterval} for these pools; LEASE_DB_SYNCHRONOUS=FULL (product default): every allocation is committed with an fsync before its call reaches the instance.`,
      "Load generator: raw node:http2 client in the bench process (prepared headers and body); its CPU per allocation is shown. All three share the machine's 2 cores.",
      "Sessions' tokens are signed beforehand with the stack's secret (Login excluded, as the target says); the gateway and the instance still verify each new token on its first call.",
      `Gateway RSS with ${lean.leases} leases and ${lean.poolSize} pooled instances: ${fmtMB(lean.gatewayRssWithLeasesBytes)}.`,
    ],
    raw: { lean: lean.raw, myservice: real.raw },
  };
}

async function measurePool(ctx: BenchContext, kind: PoolKind): Promise<PoolFigures> {
  const latencySessions = ctx.quick ? 30 : 200;
  const warmSessions = ctx.quick ? 100 : 400;
  // Calls per warm-up session: thousands of calls before V8 has optimized the hot paths.
  const warmCalls = ctx.quick ? 4 : 10;
  const batch = ctx.quick ? 200 : 800;
  const rounds = ctx.quick ? 2 : ctx.rounds;
  // Sessions logged in through the gateway (production password hash: ~150 ms CPU each).
  const loginSessions = ctx.quick ? 4 : 80;
  const spare = 110;
  const poolSize = warmSessions + latencySessions + loginSessions + batch * rounds + spare;
  ctx.progress(`allocation (${kind}): starting ${poolSize} instances in one process`);
  const pool = await (kind === "lean" ? startLeanInstances : startMultiInstances)(poolSize);
  const gateway = await startGateway(pool.addresses, {
    HEALTH_CHECK_INTERVAL: healthInterval,
    HEALTH_CHECK_TIMEOUT: "10s",
    LEASE_DB_SYNCHRONOUS: "FULL",
  });
  try {
    await waitAllocatable(gateway.dbPath, poolSize, 120_000);
    const clients: ClientHttp2Session[] = [];
    for (let i = 0; i < 4; i++) clients.push(await h2connect(gateway.address));
    const body = echoBody("bench");
    type Prepared = { readonly session: BenchSession; readonly headers: OutgoingHttpHeaders };
    const prepare = (session: BenchSession): Prepared => ({ session, headers: echoHeaders(session) });
    const sessionId = (label: string, i: number) => `bench-alloc-${process.pid}-${kind}-${label}-${i}`;
    const mint = async (n: number, label: string) =>
      (await Promise.all(Array.from({ length: n }, (_, i) => mintSession(sessionId(label, i))))).map(prepare);
    const call = async (c: ClientHttp2Session, p: Prepared) => {
      const t0 = performance.now();
      const r = await unaryCall(c, p.headers, body);
      const ms = performance.now() - t0;
      if (r.status !== 0) throw new Error(`Echo of ${p.session.id} failed: ${r.status} ${r.message}`);
      return ms;
    };
    const runAll = async (list: readonly Prepared[], perSession: number) => {
      let next = 0;
      await Promise.all(
        Array.from({ length: concurrency }, async (_, w) => {
          const c = clients[w % clients.length] as ClientHttp2Session;
          for (let i = next++; i < list.length; i = next++) for (let k = 0; k < perSession; k++) await call(c, list[i] as Prepared);
        }),
      );
    };
    // Warm-up (not counted): JIT of the allocation path in the gateway, pool and client.
    ctx.progress(`allocation (${kind}): warm-up, ${warmSessions} sessions × ${warmCalls} calls`);
    await runAll(await mint(warmSessions, "warm"), warmCalls);
    const sessions = await mint(latencySessions, "lat");
    // A second token for each session (same claims, another expiry): a leased call whose token
    // neither the gateway nor the instance has verified yet, to split token checks from allocation.
    const secondTokens = (await Promise.all(sessions.map((p) => mintSession(p.session.id, 3_600_000 + 60_000)))).map(prepare);
    const client = clients[0] as ClientHttp2Session;
    // The usual way in: Login on this gateway, then the first call. Logins first (4 at a time),
    // their first Echos interleaved with the others below, so both see the same conditions.
    ctx.progress(`allocation (${kind}): ${loginSessions} Logins through the gateway`);
    const loggedIn: Prepared[] = [];
    for (let i = 0; i < loginSessions; i += 4) {
      const ids = Array.from({ length: Math.min(4, loginSessions - i) }, (_, k) => sessionId("login", i + k));
      loggedIn.push(...(await Promise.all(ids.map((id) => login(client, id)))).map(prepare));
    }
    ctx.progress(`allocation (${kind}): first Echo vs leased Echo, ${latencySessions} sessions, one at a time`);
    const first: number[] = [];
    const leased: number[] = [];
    const freshToken: number[] = [];
    const afterLogin: number[] = [];
    for (const [i, p] of sessions.entries()) {
      first.push(await call(client, p));
      leased.push(await call(client, p));
      freshToken.push(await call(client, secondTokens[i] as Prepared));
      const viaLogin = loggedIn[i];
      if (viaLogin !== undefined) afterLogin.push(await call(client, viaLogin));
    }
    const rates: number[] = [];
    const gwCpu: number[] = [];
    const poolCpu: number[] = [];
    const genCpu: number[] = [];
    for (let round = 1; round <= rounds; round++) {
      const fresh = await mint(batch, `rate${round}`);
      await sleep(200);
      const g0 = cpuSeconds(gateway.pid);
      const p0 = cpuSeconds((pool.child as Child).pid);
      const l0 = process.cpuUsage();
      const t0 = performance.now();
      await runAll(fresh, 1);
      const seconds = (performance.now() - t0) / 1000;
      const l = process.cpuUsage(l0);
      rates.push(batch / seconds);
      gwCpu.push(((cpuSeconds(gateway.pid) - g0) / batch) * 1000);
      poolCpu.push(((cpuSeconds(pool.child.pid) - p0) / batch) * 1000);
      genCpu.push((l.user + l.system) / 1000 / batch);
      ctx.progress(
        `allocation (${kind}): round ${round}/${rounds}: ${batch} new sessions in ${fmt(seconds * 1000)} ms = ${fmt(batch / seconds)}/s; CPU/allocation gateway ${fmt(gwCpu.at(-1), 2)} ms, instances ${fmt(poolCpu.at(-1), 2)} ms, load generator ${fmt(genCpu.at(-1), 2)} ms`,
      );
    }
    const rss = rssBytes(gateway.pid);
    for (const c of clients) c.close();
    const leases = warmSessions + latencySessions + loginSessions + batch * rounds;
    return {
      poolSize,
      firstEchoP50Ms: quantile(first, 0.5),
      firstEchoP99Ms: quantile(first, 0.99),
      leasedEchoP50Ms: quantile(leased, 0.5),
      leasedEchoP99Ms: quantile(leased, 0.99),
      allocationAddsP50Ms: quantile(first, 0.5) - quantile(leased, 0.5),
      freshTokenEchoP50Ms: quantile(freshToken, 0.5),
      allocationAddsOverFreshTokenP50Ms: quantile(first, 0.5) - quantile(freshToken, 0.5),
      afterLoginEchoP50Ms: quantile(afterLogin, 0.5),
      allocationAddsAfterLoginP50Ms: quantile(afterLogin, 0.5) - quantile(leased, 0.5),
      sessionsPerSec: median(rates),
      gatewayCpuMsPerAllocation: median(gwCpu),
      instancesCpuMsPerAllocation: median(poolCpu),
      loadGenCpuMsPerAllocation: median(genCpu),
      gatewayRssWithLeasesBytes: rss,
      leases,
      freeAtEnd: poolSize - leases,
      raw: { first, leased, freshToken, afterLogin, rates },
    };
  } finally {
    await gateway.stop();
    await pool.child.stop();
  }
}

/** Waits until the gateway's store shows `count` allocatable instances (its first probes passed). */
async function waitAllocatable(dbPath: string, count: number, timeoutMs: number): Promise<void> {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    const deadline = Date.now() + timeoutMs;
    let n = 0;
    while (Date.now() < deadline) {
      n = (db.prepare("SELECT COUNT(*) AS n FROM instances WHERE healthy = 1 AND clean = 1 AND session_id IS NULL").get() as { n: number })
        .n;
      if (n >= count) return;
      await sleep(200);
    }
    throw new Error(`only ${n} of ${count} instances allocatable after ${timeoutMs} ms`);
  } finally {
    db.close();
  }
}
