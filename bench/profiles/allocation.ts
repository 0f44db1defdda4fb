import type { ClientHttp2Session } from "node:http2";
import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
import { fmt, fmtMB } from "../format.js";
import { type BenchSession, echoRaw, h2connect, mintSession } from "../grpc.js";
import { cpuSeconds, rssBytes } from "../proc.js";
import { startGateway, startMultiInstances } from "../stack.js";
import { median, quantile } from "../stats.js";
import type { BenchContext, ProfileResult } from "../types.js";

/** Probe period of the large pool (the default 1 s would mean 2 probe calls per instance per second). */
const healthInterval = "10s";

/**
 * Profile 3 (through the gateway): first Echo of a new session (allocation: one durable
 * SQLite transaction) vs. a leased Echo, and sessions allocated per second into a large free
 * pool served by `bench/multi-instance-server.ts`. Tokens are signed beforehand (Login excluded).
 */
export async function allocationProfile(ctx: BenchContext): Promise<ProfileResult> {
  const latencySessions = ctx.quick ? 20 : 200;
  const batch = ctx.quick ? 40 : 200;
  const rounds = ctx.quick ? 2 : ctx.rounds;
  const spare = 110;
  const poolSize = latencySessions + batch * rounds + spare;
  const concurrency = 32;
  ctx.progress(`allocation: starting ${poolSize} instances in one process`);
  const multi = await startMultiInstances(poolSize);
  const gateway = await startGateway(multi.addresses, {
    HEALTH_CHECK_INTERVAL: healthInterval,
    HEALTH_CHECK_TIMEOUT: "10s",
    LEASE_DB_SYNCHRONOUS: "FULL",
  });
  try {
    await waitAllocatable(gateway.dbPath, poolSize, 60_000);
    const clients: ClientHttp2Session[] = [];
    for (let i = 0; i < 4; i++) clients.push(await h2connect(gateway.address));
    const client = clients[0] as ClientHttp2Session;
    const mint = (n: number, label: string) =>
      Promise.all(Array.from({ length: n }, (_, i) => mintSession(`bench-alloc-${process.pid}-${label}-${i}`)));
    const call = async (c: ClientHttp2Session, s: BenchSession) => {
      const t0 = performance.now();
      const r = await echoRaw(c, s);
      const ms = performance.now() - t0;
      if (r.status !== 0) throw new Error(`Echo of ${s.id} failed: ${r.status} ${r.message}`);
      return ms;
    };
    // Warm-up on a few sessions (JIT of the allocation path), not counted.
    for (const s of await mint(10, "warm")) {
      await call(client, s);
      await call(client, s);
    }
    const sessions = await mint(latencySessions, "lat");
    const first: number[] = [];
    const leased: number[] = [];
    ctx.progress(`allocation: first Echo vs leased Echo, ${latencySessions} sessions, one at a time`);
    for (const s of sessions) {
      first.push(await call(client, s));
      leased.push(await call(client, s));
    }
    const rates: number[] = [];
    const cpuPerAlloc: number[] = [];
    const poolCpuPerAlloc: number[] = [];
    for (let round = 1; round <= rounds; round++) {
      const fresh = await mint(batch, `rate${round}`);
      await sleep(200);
      let next = 0;
      const cpu0 = cpuSeconds(gateway.pid);
      const pool0 = cpuSeconds(multi.child.pid);
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: concurrency }, async (_, w) => {
          for (let i = next++; i < fresh.length; i = next++) await call(clients[w % clients.length] as ClientHttp2Session, fresh[i] as BenchSession);
        }),
      );
      const seconds = (performance.now() - t0) / 1000;
      rates.push(batch / seconds);
      cpuPerAlloc.push(((cpuSeconds(gateway.pid) - cpu0) / batch) * 1000);
      poolCpuPerAlloc.push(((cpuSeconds(multi.child.pid) - pool0) / batch) * 1000);
      ctx.progress(`allocation: round ${round}/${rounds}: ${batch} new sessions in ${fmt(seconds * 1000)} ms = ${fmt(batch / seconds)}/s; CPU/allocation gateway ${fmt(cpuPerAlloc.at(-1), 2)} ms, instances ${fmt(poolCpuPerAlloc.at(-1), 2)} ms`);
    }
    const rss = rssBytes(gateway.pid);
    for (const c of clients) c.close();
    const leasedCount = 10 + latencySessions + batch * rounds;
    const metrics = {
      poolSize,
      firstEchoP50Ms: quantile(first, 0.5),
      firstEchoP99Ms: quantile(first, 0.99),
      leasedEchoP50Ms: quantile(leased, 0.5),
      leasedEchoP99Ms: quantile(leased, 0.99),
      allocationAddsP50Ms: quantile(first, 0.5) - quantile(leased, 0.5),
      sessionsPerSec: median(rates),
      gatewayCpuMsPerAllocation: median(cpuPerAlloc),
      instancesCpuMsPerAllocation: median(poolCpuPerAlloc),
      gatewayRssWithLeasesBytes: rss,
      leases: leasedCount,
      freeAtEnd: poolSize - leasedCount,
    };
    return {
      id: "allocation",
      title: "3a. Allocation through the gateway",
      tables: [
        {
          title: `Allocation through the gateway: ${poolSize} instances, synchronous=FULL`,
          columns: ["measure", "", "p50", "p99", "note"],
          rows: [
            ["first Echo of a new session", "", `${fmt(metrics.firstEchoP50Ms, 3)} ms`, `${fmt(metrics.firstEchoP99Ms, 3)} ms`, `${latencySessions} sessions, one at a time`],
            ["leased Echo (same session next)", "", `${fmt(metrics.leasedEchoP50Ms, 3)} ms`, `${fmt(metrics.leasedEchoP99Ms, 3)} ms`, ""],
            ["allocation adds", "", `${fmt(metrics.allocationAddsP50Ms, 3)} ms`, "", "p50 difference"],
            [
              "sessions allocated/s",
              "",
              fmt(metrics.sessionsPerSec),
              "",
              `median of ${rounds} × ${batch} first Echos at ${concurrency} concurrent, ≥ ${metrics.freeAtEnd} free left; CPU/allocation: gateway ${fmt(metrics.gatewayCpuMsPerAllocation, 2)} ms, instance process ${fmt(metrics.instancesCpuMsPerAllocation, 2)} ms`,
            ],
          ],
        },
      ],
      metrics,
      notes: [
        `Pool: ${poolSize} instances in one bench process (bench/multi-instance-server.ts), HEALTH_CHECK_INTERVAL=${healthInterval} for this pool; LEASE_DB_SYNCHRONOUS=FULL (product default).`,
        "Sessions' tokens are signed beforehand with the stack's secret (Login excluded, as the target says); the gateway still verifies each new token on its first call.",
        `Gateway RSS with ${leasedCount} leases and ${poolSize} pooled instances: ${fmtMB(rss)}.`,
      ],
      raw: { first, leased, rates },
    };
  } finally {
    await gateway.stop();
    await multi.child.stop();
  }
}

/** Waits until the gateway's store shows `count` allocatable instances (its first probes passed). */
async function waitAllocatable(dbPath: string, count: number, timeoutMs: number): Promise<void> {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    const deadline = Date.now() + timeoutMs;
    let n = 0;
    while (Date.now() < deadline) {
      n = (db.prepare("SELECT COUNT(*) AS n FROM instances WHERE healthy = 1 AND clean = 1 AND session_id IS NULL").get() as { n: number }).n;
      if (n >= count) return;
      await sleep(200);
    }
    throw new Error(`only ${n} of ${count} instances allocatable after ${timeoutMs} ms`);
  } finally {
    db.close();
  }
}
