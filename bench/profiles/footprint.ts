import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { SqliteLeaseStore } from "../../gateway/leases/sqlite-lease-store.js";
import { fmtMB } from "../format.js";
import { cpuSeconds, rssBytes } from "../proc.js";
import { startGateway, startLeanInstances, startMultiInstances } from "../stack.js";
import type { BenchContext, ProfileResult } from "../types.js";

/**
 * Profile 5: gateway RSS idle and with 10,000 leases. 10,000 instance processes (or ports: 2
 * connections each) do not fit this machine's 20,000 file descriptors, so the 10,000 leases
 * are written into the lease database (with the store's own code) before the gateway starts;
 * the gateway serves one real instance. Per-stream memory comes from the streams profile.
 * Also the gateway's idle CPU spent probing lean-pool instances (see `probingCost`).
 */
export async function footprintProfile(ctx: BenchContext): Promise<ProfileResult> {
  const leases = 10_000;
  const dir = await mkdtemp(join(tmpdir(), "bench-footprint-"));
  const multi = await startMultiInstances(1);
  try {
    const idle = await startGateway(multi.addresses);
    await sleep(2000);
    const idleRss = rssBytes(idle.pid);
    await idle.stop();

    const dbPath = join(dir, "leases.db");
    const store = new SqliteLeaseStore({ path: dbPath, synchronous: "NORMAL" });
    const addresses = Array.from({ length: leases }, (_, i) => `10.9.${i >> 8}.${i & 255}:5000`);
    await store.register(addresses);
    for (const [i, address] of addresses.entries()) {
      await store.recordStatus(address, { podName: `seed-${i}`, bootId: `boot-${i}`, sessionId: "", shuttingDown: false }, Date.now() + 1);
    }
    for (let i = 0; i < leases; i++) {
      const r = await store.acquire(`seeded-${i}`, "TestUser", 3_600_000);
      if (r.kind !== "acquired") throw new Error(`seeding lease ${i}: ${r.kind}`);
    }
    await store.close();
    ctx.progress(`footprint: ${leases} leases seeded`);
    const loaded = await startGateway(multi.addresses, {}, dir);
    await sleep(2000);
    const leasesRss = rssBytes(loaded.pid);
    await loaded.stop();
    const probing = await probingCost(ctx);
    const metrics: Record<string, number> = { gatewayIdleRssBytes: idleRss, gatewayRss10kLeasesBytes: leasesRss };
    for (const p of probing) {
      metrics[`probingCpuFull${p.instances}Percent`] = p.fullPercent;
      metrics[`probingCpuPing${p.instances}Percent`] = p.pingPercent;
    }
    return {
      id: "footprint",
      title: "5. Footprint",
      tables: [
        {
          title: "Gateway memory (RSS)",
          columns: ["state", "", "RSS"],
          rows: [
            ["idle (1 instance, 2 s after start)", "", fmtMB(idleRss)],
            [`${leases.toLocaleString("en-US")} leases in its store`, "", fmtMB(leasesRss)],
          ],
        },
        {
          title: "Gateway CPU spent probing an idle pool (HEALTH_CHECK_INTERVAL 1 s), % of one core",
          columns: ["instances", "every probe full", "PING between full probes (5 s)", "ratio"],
          rows: probing.map((p) => [
            p.instances.toLocaleString("en-US"),
            `${p.fullPercent.toFixed(1)}%`,
            `${p.pingPercent.toFixed(1)}%`,
            `${(p.pingPercent / p.fullPercent).toFixed(2)}×`,
          ]),
        },
      ],
      metrics,
      notes: [
        `The ${leases} leases are written into the database before the gateway starts (10,000 live instances exceed this machine's file-descriptor limit); leases live in SQLite, not in the gateway's heap.`,
        `Probing: a lean pool (one process, many ports) behind a gateway at its defaults but for HEALTH_FULL_CHECK_INTERVAL: 1s (every probe a health Check + status call) or 5s (the default: an HTTP/2 PING in between); gateway CPU over ${ctx.quick ? 2 : 8} s after ${ctx.quick ? 1 : 3} s of settling. A full probe costs the gateway ~0.3 ms CPU; 3,000 instances at 1 s need more than one core.`,
        "Per open stream: see the streams profile. The gateway runs from dist/ (npm run build: compiled JavaScript, as npm run up and the images run it).",
      ],
    };
  } finally {
    await multi.child.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Gateway CPU spent probing an idle pool, with every probe a full one (health Check + status
 * call) and with the default PINGs between full probes; one gateway at a time, same pool.
 */
async function probingCost(ctx: BenchContext): Promise<{ instances: number; fullPercent: number; pingPercent: number }[]> {
  const sizes = ctx.quick ? [100] : [1000, 3000];
  const settleMs = ctx.quick ? 1000 : 3000;
  const windowMs = ctx.quick ? 2000 : 8000;
  const results = [];
  for (const instances of sizes) {
    const pool = await startLeanInstances(instances);
    try {
      const percent = async (fullEvery: string) => {
        const gateway = await startGateway(pool.addresses, { HEALTH_CHECK_INTERVAL: "1s", HEALTH_FULL_CHECK_INTERVAL: fullEvery });
        try {
          await sleep(settleMs);
          const c0 = cpuSeconds(gateway.pid);
          const t0 = performance.now();
          await sleep(windowMs);
          return (100 * (cpuSeconds(gateway.pid) - c0)) / ((performance.now() - t0) / 1000);
        } finally {
          await gateway.stop();
        }
      };
      const fullPercent = await percent("1s");
      const pingPercent = await percent("5s");
      ctx.progress(
        `footprint: probing ${instances} instances: every probe full ${fullPercent.toFixed(1)}%, PING between ${pingPercent.toFixed(1)}% of a core`,
      );
      results.push({ instances, fullPercent, pingPercent });
    } finally {
      await pool.child.stop();
    }
  }
  return results;
}
