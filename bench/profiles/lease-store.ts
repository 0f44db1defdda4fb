import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { SqliteLeaseStore } from "../../gateway/leases/sqlite-lease-store.js";
import { fmt, fmtRatio } from "../format.js";
import { quantile, ratio } from "../stats.js";
import type { BenchContext, ProfileResult } from "../types.js";

const ttlMs = 300_000;

/** Creates a store file with `count` healthy, clean instances (seeded with synchronous=NORMAL: setup, not measured). */
async function seed(path: string, count: number): Promise<string[]> {
  const store = new SqliteLeaseStore({ path, synchronous: "NORMAL" });
  const addresses = Array.from({ length: count }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:5000`);
  await store.register(addresses);
  const t = Date.now() + 1;
  for (const [i, address] of addresses.entries()) {
    await store.recordStatus(address, { podName: `pod-${i}`, bootId: `boot-${i}`, sessionId: "", shuttingDown: false }, t);
  }
  await store.close();
  return addresses;
}

/**
 * Profile 3b: the lease store alone (in this process, a file on disk, synchronous=FULL as in
 * production): acquire latency and acquire+release cycles at 3, 1,000 and 10,000 instances.
 * After each release the instance is marked clean again as a health probe would (not timed).
 * The three stores are open at once and take turns, 100 cycles each.
 */
export async function leaseStoreProfile(ctx: BenchContext): Promise<ProfileResult> {
  const sizes = [3, 1000, 10_000];
  const cycles = ctx.quick ? 400 : 6000;
  const chunk = 100;
  const dir = await mkdtemp(join(process.cwd(), ".bench-lease-store-"));
  const metrics: Record<string, number> = {};
  const rows: (string | number)[][] = [];
  try {
    const cells: {
      size: number;
      store: SqliteLeaseStore;
      acquire: number[];
      release: number[];
      busy: number;
      next: number;
      checkpointMs: number;
    }[] = [];
    for (const size of sizes) {
      const path = join(dir, `leases-${size}.db`);
      await seed(path, size);
      cells.push({
        size,
        store: new SqliteLeaseStore({ path, synchronous: "FULL" }),
        acquire: [] as number[],
        release: [] as number[],
        busy: 0,
        next: 0,
        checkpointMs: 0,
      });
    }
    // One cycle: acquire, release, then what the next health probe does (the released
    // instance reports no session; untimed).
    const cycle = async (cell: (typeof cells)[number], counted: boolean) => {
      const sessionId = `s-${cell.next++}`;
      const t0 = performance.now();
      const r = await cell.store.acquire(sessionId, "TestUser", ttlMs);
      const t1 = performance.now();
      if (r.kind !== "acquired") {
        cell.busy++;
        return;
      }
      await cell.store.release(sessionId, r.lease.instanceAddress);
      const t2 = performance.now();
      if (counted) {
        cell.acquire.push(t1 - t0);
        cell.release.push(t2 - t1);
      }
      // The instance restarted after its session (recycling): a new boot, allocatable again.
      const { podName } = r.lease;
      await cell.store.recordStatus(
        r.lease.instanceAddress,
        { podName, bootId: `boot-${sessionId}`, sessionId: "", shuttingDown: false },
        Date.now() + 1,
      );
    };
    for (const cell of cells) for (let i = 0; i < 50; i++) await cycle(cell, false);
    // Sizes take turns in chunks, so the disk's fsync outliers (a shared, noisy disk) fall on
    // every size alike instead of on whichever size ran during a bad second.
    for (let done = 0; done < cycles; done += chunk) {
      for (const cell of cells) {
        for (let i = 0; i < chunk; i++) await cycle(cell, true);
        // What the store's checkpoint timer does between allocations (this loop never yields
        // to timers); its time counts in cycles/s, not in any acquire's latency.
        const t0 = performance.now();
        cell.store.checkpoint();
        cell.checkpointMs += performance.now() - t0;
      }
    }
    for (const { size, store, acquire, release, busy, checkpointMs } of cells) {
      await store.close();
      if (busy > 0) throw new Error(`lease store at ${size}: ${busy} acquires found no free instance`);
      const totalMs = acquire.reduce((a, b) => a + b, 0) + release.reduce((a, b) => a + b, 0) + checkpointMs;
      const m = {
        acquireP50Ms: quantile(acquire, 0.5),
        acquireP99Ms: quantile(acquire, 0.99),
        releaseP50Ms: quantile(release, 0.5),
        cyclesPerSec: acquire.length / (totalMs / 1000),
      };
      for (const [k, v] of Object.entries(m)) metrics[`${size}.${k}`] = v;
      rows.push([fmt(size), "FULL", fmt(m.acquireP50Ms, 3), fmt(m.acquireP99Ms, 3), fmt(m.releaseP50Ms, 3), fmt(m.cyclesPerSec)]);
      ctx.progress(
        `lease store: ${size} instances: acquire p50 ${fmt(m.acquireP50Ms, 3)} ms, p99 ${fmt(m.acquireP99Ms, 3)} ms, ${fmt(m.cyclesPerSec)} cycles/s`,
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  metrics.acquireP99Ratio10kTo3 = ratio(metrics["10000.acquireP99Ms"], metrics["3.acquireP99Ms"]);
  metrics.minCyclesPerSec = Math.min(...sizes.map((s) => metrics[`${s}.cyclesPerSec`] as number));
  return {
    id: "lease-store",
    title: "3b. Lease store alone",
    tables: [
      {
        title: `Lease store alone (better-sqlite3, WAL, BEGIN IMMEDIATE, file on disk), ${cycles} cycles per size`,
        columns: ["instances", "synchronous", "acquire p50 ms", "acquire p99 ms", "release p50 ms", "acquire+release cycles/s"],
        rows: [...rows, ["p99 10,000 / 3", "", "", fmtRatio(metrics.acquireP99Ratio10kTo3), "", ""]],
      },
    ],
    metrics,
    notes: [
      "synchronous=FULL (the product default): every commit is an fsync of the WAL. Cycles/s counts the time of acquire + release, plus the WAL checkpoints (the store's 1 s timer in production; here one per 100 cycles); the probe that marks an instance clean again runs between cycles, untimed (in production it is the health probe's write).",
      "Database in a folder of the working tree (same disk as data/), not tmpfs. The sizes take turns in chunks of 100 cycles, so disk noise falls on each alike.",
    ],
  };
}
