import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { LeaseStore } from "../../gateway/leases/lease-store.js";
import { fmtMB } from "../format.js";
import { rssBytes } from "../proc.js";
import { startGateway, startMultiInstances } from "../stack.js";
import type { BenchContext, ProfileResult } from "../types.js";

/**
 * Profile 5: gateway RSS idle and with 10,000 leases. 10,000 instance processes (or ports: 2
 * connections each) do not fit this machine's 20,000 file descriptors, so the 10,000 leases
 * are written into the lease database (with the store's own code) before the gateway starts;
 * the gateway serves one real instance. Per-stream memory comes from the streams profile.
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
    const store = new LeaseStore({ path: dbPath, synchronous: "NORMAL" });
    const addresses = Array.from({ length: leases }, (_, i) => `10.9.${i >> 8}.${i & 255}:5000`);
    store.register(addresses);
    for (const [i, address] of addresses.entries()) {
      store.recordStatus(address, { podName: `seed-${i}`, bootId: `boot-${i}`, sessionId: "", shuttingDown: false }, Date.now() + 1);
    }
    for (let i = 0; i < leases; i++) {
      const r = store.acquire(`seeded-${i}`, "TestUser", 3_600_000);
      if (r.kind !== "acquired") throw new Error(`seeding lease ${i}: ${r.kind}`);
    }
    store.close();
    ctx.progress(`footprint: ${leases} leases seeded`);
    const loaded = await startGateway(multi.addresses, {}, dir);
    await sleep(2000);
    const leasesRss = rssBytes(loaded.pid);
    await loaded.stop();
    const metrics = { gatewayIdleRssBytes: idleRss, gatewayRss10kLeasesBytes: leasesRss };
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
      ],
      metrics,
      notes: [
        `The ${leases} leases are written into the database before the gateway starts (10,000 live instances exceed this machine's file-descriptor limit); leases live in SQLite, not in the gateway's heap.`,
        "Per open stream: see the streams profile. The gateway runs under tsx (TypeScript loader), which adds to every figure.",
      ],
    };
  } finally {
    await multi.child.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
