import { mkdtempSync, rmSync } from "node:fs";
import type { ClientHttp2Session, OutgoingHttpHeaders } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import type { LeaseStore } from "../../gateway/leases/lease-store.js";
import { PostgresLeaseStore } from "../../gateway/leases/postgres-lease-store.js";
import { SqliteLeaseStore } from "../../gateway/leases/sqlite-lease-store.js";
import { pickFreePorts } from "../../scripts/net-util.js";
import { initPostgres, postgresInstalled, postgresUrl, startPostgres, stopPostgres } from "../../scripts/postgres-server.js";
import { fmt, fmtRatio } from "../format.js";
import { echoBody, echoHeaders, h2connect, mintSession, unaryCall } from "../grpc.js";
import { cpuSeconds } from "../proc.js";
import { type BenchGateway, startGateway, startLeanInstances } from "../stack.js";
import { median, quantile, ratio } from "../stats.js";
import type { BenchContext, ProfileResult } from "../types.js";

const ttlMs = 300_000;
const concurrency = 32;

/** A PostgreSQL server of the bench: durable (fsync on, synchronous_commit=on), as in production. */
async function startBenchPostgres() {
  const dir = mkdtempSync(join(tmpdir(), "bench-pg-"));
  const [port] = (await pickFreePorts(1)) as [number];
  await initPostgres(dir);
  await startPostgres({ dir, port, settings: { synchronous_commit: "on", max_connections: "200" } });
  let n = 0;
  return {
    async database(): Promise<string> {
      const name = `bench_${++n}`;
      const admin = new pg.Client({ connectionString: postgresUrl(port) });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${name}`);
      await admin.end();
      return postgresUrl(port, "127.0.0.1", name);
    },
    async stop() {
      await stopPostgres(dir, "fast").catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The lease store alone: acquire latency and acquire+release cycles at 3, 1,000 and 10,000 instances. */
async function storeAlone(open: () => Promise<LeaseStore>, size: number, cycles: number) {
  const store = await open();
  const addresses = Array.from({ length: size }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:5000`);
  await store.register(addresses);
  for (let i = 0; i < addresses.length; i += 50) {
    await Promise.all(
      addresses
        .slice(i, i + 50)
        .map((a, k) =>
          store.recordStatus(a, { podName: `pod-${i + k}`, bootId: "boot-0", sessionId: "", shuttingDown: false }, Date.now() + 1),
        ),
    );
  }
  const acquire: number[] = [];
  let total = 0;
  for (let i = 0; i < cycles + 50; i++) {
    const t0 = performance.now();
    const r = await store.acquire(`s-${i}`, "TestUser", ttlMs);
    const t1 = performance.now();
    if (r.kind !== "acquired") throw new Error(`store alone at ${size}: ${r.kind}`);
    await store.release(`s-${i}`, r.lease.instanceAddress);
    const t2 = performance.now();
    if (i >= 50) {
      acquire.push(t1 - t0);
      total += t2 - t0;
    }
    // The next probe sees it restarted (untimed).
    await store.recordStatus(
      r.lease.instanceAddress,
      { podName: r.lease.podName, bootId: `boot-${i + 1}`, sessionId: "", shuttingDown: false },
      Date.now() + 1,
    );
  }
  await store.close();
  return { p50: quantile(acquire, 0.5), p99: quantile(acquire, 0.99), cyclesPerSec: cycles / (total / 1000) };
}

/** Sessions allocated per second through `gateways` (connections spread over them), and the leased Echo p50 at 1 stream. */
async function throughGateways(ctx: BenchContext, gateways: readonly BenchGateway[], label: string, batch: number, rounds: number) {
  const clients: ClientHttp2Session[] = [];
  for (let i = 0; i < 4; i++) clients.push(await h2connect((gateways[i % gateways.length] as BenchGateway).address));
  const body = echoBody("bench");
  const mint = async (n: number, tag: string) =>
    (await Promise.all(Array.from({ length: n }, (_, i) => mintSession(`bench-scale-${process.pid}-${label}-${tag}-${i}`)))).map(
      echoHeaders,
    );
  const runAll = async (list: readonly OutgoingHttpHeaders[]) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async (_, w) => {
        const c = clients[w % clients.length] as ClientHttp2Session;
        for (let i = next++; i < list.length; i = next++) {
          const r = await unaryCall(c, list[i] as OutgoingHttpHeaders, body);
          if (r.status !== 0) throw new Error(`${label}: Echo failed: ${r.status} ${r.message}`);
        }
      }),
    );
  };
  await runAll(await mint(ctx.quick ? 50 : 200, "warm"));
  const rates: number[] = [];
  const cpu: number[] = [];
  for (let round = 1; round <= rounds; round++) {
    const fresh = await mint(batch, `r${round}`);
    await sleep(200);
    const c0 = gateways.reduce((n, g) => n + cpuSeconds(g.pid), 0);
    const t0 = performance.now();
    await runAll(fresh);
    const seconds = (performance.now() - t0) / 1000;
    rates.push(batch / seconds);
    cpu.push(((gateways.reduce((n, g) => n + cpuSeconds(g.pid), 0) - c0) / batch) * 1000);
    ctx.progress(`scale-out (${label}): round ${round}: ${fmt(batch / seconds)} sessions/s`);
  }
  // Leased Echo at one stream: one session, one call at a time, through the first gateway.
  const [one] = await mint(1, "leased");
  const first = clients[0] as ClientHttp2Session;
  await unaryCall(first, one as OutgoingHttpHeaders, body);
  const leased: number[] = [];
  for (let i = 0; i < (ctx.quick ? 300 : 2000); i++) {
    const t0 = performance.now();
    const r = await unaryCall(first, one as OutgoingHttpHeaders, body);
    leased.push(performance.now() - t0);
    if (r.status !== 0) throw new Error(`${label}: leased Echo failed: ${r.status}`);
  }
  for (const c of clients) c.close();
  return { sessionsPerSec: median(rates), gatewayCpuMs: median(cpu), leasedP50: quantile(leased, 0.5) };
}

/** Waits until the store (PostgreSQL) shows `count` allocatable instances. */
async function waitAllocatablePg(url: string, count: number): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    for (let i = 0; i < 600; i++) {
      const { rows } = await client.query<{ n: number }>(
        "SELECT COUNT(*)::int AS n FROM instances WHERE healthy AND clean AND session_id IS NULL AND NOT draining",
      );
      if ((rows[0]?.n ?? 0) >= count) return;
      await sleep(200);
    }
    throw new Error(`instances not allocatable in ${url}`);
  } finally {
    await client.end();
  }
}

async function waitAllocatableSqlite(path: string, count: number): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const store = new SqliteLeaseStore({ path, checkpointIntervalMs: 0 });
    const n = (await store.instances()).filter((r) => r.healthy && r.clean && r.sessionId === null).length;
    await store.close();
    if (n >= count) return;
    await sleep(200);
  }
  throw new Error("instances not allocatable (SQLite)");
}

/**
 * Issue 12: the lease store alone on both engines; sessions allocated/s through 1 gateway on
 * SQLite and 1 and 2 gateways on one PostgreSQL (lean pool, durable commits); the leased Echo
 * p50 at one stream on each; the probe load on an idle pool with 1 and 2 gateways.
 */
export async function scaleOutProfile(ctx: BenchContext): Promise<ProfileResult> {
  if (!postgresInstalled()) throw new Error("scale-out: PostgreSQL server programs not installed (apt-get install postgresql)");
  const server = await startBenchPostgres();
  const metrics: Record<string, number> = {};
  const rows: (string | number)[][] = [];
  try {
    // 1. The store alone.
    const cycles = ctx.quick ? 200 : 2000;
    for (const size of [3, 1000, 10_000]) {
      const sqliteDir = mkdtempSync(join(process.cwd(), ".bench-scale-"));
      try {
        const s = await storeAlone(async () => new SqliteLeaseStore({ path: join(sqliteDir, "l.db"), synchronous: "FULL" }), size, cycles);
        const url = await server.database();
        const p = await storeAlone(
          async () => {
            const store = new PostgresLeaseStore({ url });
            await store.firstConnection;
            return store;
          },
          size,
          cycles,
        );
        for (const [engine, f] of [
          ["sqlite", s],
          ["postgres", p],
        ] as const) {
          metrics[`${engine}.${size}.acquireP50Ms`] = f.p50;
          metrics[`${engine}.${size}.acquireP99Ms`] = f.p99;
          metrics[`${engine}.${size}.cyclesPerSec`] = f.cyclesPerSec;
          rows.push([`store alone, ${engine}`, fmt(size), `${fmt(f.p50, 3)} / ${fmt(f.p99, 3)} ms`, `${fmt(f.cyclesPerSec)} cycles/s`]);
        }
        ctx.progress(`scale-out: store alone at ${size}: sqlite p99 ${fmt(s.p99, 3)} ms, postgres p99 ${fmt(p.p99, 3)} ms`);
      } finally {
        rmSync(sqliteDir, { recursive: true, force: true });
      }
    }
    for (const engine of ["sqlite", "postgres"]) {
      metrics[`${engine}.acquireP99Ratio10kTo3`] = ratio(metrics[`${engine}.10000.acquireP99Ms`], metrics[`${engine}.3.acquireP99Ms`]);
    }

    // 2. Through gateways, into one lean pool per shape.
    const batch = ctx.quick ? 150 : 800;
    const rounds = ctx.quick ? 1 : ctx.rounds;
    const poolSize = (ctx.quick ? 50 : 200) + batch * rounds + 1 + 110;
    const shapes = [
      { label: "sqlite-1gw", gateways: 1, postgres: false },
      { label: "postgres-1gw", gateways: 1, postgres: true },
      { label: "postgres-2gw", gateways: 2, postgres: true },
    ];
    for (const shape of shapes) {
      ctx.progress(`scale-out (${shape.label}): starting ${poolSize} lean instances`);
      const pool = await startLeanInstances(poolSize);
      const url = shape.postgres ? await server.database() : undefined;
      const env = {
        HEALTH_CHECK_INTERVAL: "60s",
        HEALTH_CHECK_TIMEOUT: "10s",
        LEASE_DB_SYNCHRONOUS: "FULL",
        ...(url !== undefined ? { LEASE_DB_URL: url } : {}),
      };
      const gateways: BenchGateway[] = [];
      try {
        for (let i = 0; i < shape.gateways; i++)
          gateways.push(await startGateway(pool.addresses, { ...env, GATEWAY_ID: `bench-${i + 1}` }));
        if (url !== undefined) await waitAllocatablePg(url, poolSize);
        else await waitAllocatableSqlite((gateways[0] as BenchGateway).dbPath, poolSize);
        const f = await throughGateways(ctx, gateways, shape.label, batch, rounds);
        metrics[`${shape.label}.sessionsPerSec`] = f.sessionsPerSec;
        metrics[`${shape.label}.leasedEchoP50Ms`] = f.leasedP50;
        rows.push([
          `allocation, ${shape.label}`,
          fmt(poolSize),
          `${fmt(f.sessionsPerSec)} sessions/s`,
          `leased Echo p50 ${fmt(f.leasedP50, 3)} ms; gateway CPU ${fmt(f.gatewayCpuMs, 2)} ms/allocation`,
        ]);
      } finally {
        for (const g of gateways) await g.stop();
        await pool.child.stop();
      }
    }
    metrics.leasedEchoP50RatioPgToSqlite = ratio(metrics["postgres-1gw.leasedEchoP50Ms"], metrics["sqlite-1gw.leasedEchoP50Ms"]);

    // 3. Probe load on an idle pool: CPU of the instances' process with 1 and 2 gateways.
    const probePool = ctx.quick ? 200 : 1000;
    // Two full-probe periods (HEALTH_FULL_CHECK_INTERVAL 5 s): every window holds the same
    // number of full probes, whatever its phase.
    const sampleMs = 10_000;
    for (const n of [1, 2]) {
      const pool = await startLeanInstances(probePool);
      const url = await server.database();
      const gateways: BenchGateway[] = [];
      try {
        for (let i = 0; i < n; i++) gateways.push(await startGateway(pool.addresses, { LEASE_DB_URL: url, GATEWAY_ID: `probe-${i + 1}` }));
        await waitAllocatablePg(url, probePool);
        await sleep(3000); // membership settled, every gateway probing its share
        const c0 = cpuSeconds(pool.child.pid);
        await sleep(sampleMs);
        const cpuPct = ((cpuSeconds(pool.child.pid) - c0) / (sampleMs / 1000)) * 100;
        metrics[`probeLoad.${n}gw.poolCpuPct`] = cpuPct;
        rows.push([
          `probe load, ${n} gateway(s)`,
          fmt(probePool),
          `${fmt(cpuPct, 1)}% of a core (instances)`,
          "idle pool, probes every 1 s",
        ]);
      } finally {
        for (const g of gateways) await g.stop();
        await pool.child.stop();
      }
    }
    metrics.probeLoadRatio2To1 = ratio(metrics["probeLoad.2gw.poolCpuPct"], metrics["probeLoad.1gw.poolCpuPct"]);
  } finally {
    await server.stop();
  }
  rows.push(
    ["p99 10,000 / 3, sqlite", "", fmtRatio(metrics["sqlite.acquireP99Ratio10kTo3"]), ""],
    ["p99 10,000 / 3, postgres", "", fmtRatio(metrics["postgres.acquireP99Ratio10kTo3"]), ""],
    ["leased Echo p50 postgres / sqlite", "", fmtRatio(metrics.leasedEchoP50RatioPgToSqlite), "1 stream"],
    ["probe load 2 / 1 gateways", "", fmtRatio(metrics.probeLoadRatio2To1), ""],
  );
  return {
    id: "scale-out",
    title: "4. Scale-out: SQLite and PostgreSQL side by side",
    tables: [{ title: "Lease store engines, gateways sharing PostgreSQL", columns: ["measure", "instances", "figure", "note"], rows }],
    metrics,
    notes: [
      "PostgreSQL 15 started by the bench in a temp folder: fsync on, synchronous_commit=on (every commit durable), as SQLite with synchronous=FULL. Pool of 4 connections per gateway.",
      "Store alone: in this process, acquire then release then (untimed) the probe that sees the instance restarted; acquire p50 / p99.",
      "Allocation: lean pool (raw node:http2 instances), 32 concurrent first Echos of fresh sessions over 4 connections (spread over the gateways), tokens signed beforehand; at least 110 instances stay free. Leased Echo: one session, one call at a time, after the allocation rounds.",
      "Probe load: CPU of the process serving every instance, idle, HEALTH_CHECK_INTERVAL=1s (a PING between full probes), 1 vs 2 gateways on one PostgreSQL (instances divided by rendezvous hashing).",
    ],
  };
}
