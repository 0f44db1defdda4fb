import { mkdtemp } from "node:fs/promises";
import type * as http2 from "node:http2";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import Database from "better-sqlite3";
import { AdminService } from "../../gen/mygateway/admin/v1/admin_pb.js";
import { fmt } from "../format.js";
import { type BenchSession, echoBody, echoHeaders, h2connect, mintSession, unaryCall } from "../grpc.js";
import { type Child, cpuSeconds } from "../proc.js";
import { type BenchGateway, startGateway, startLeanInstances } from "../stack.js";
import { median, quantile } from "../stats.js";
import type { BenchContext, ProfileResult } from "../types.js";

/** Waiters kept in the queue while grant latency is measured. */
const queued = 4;

interface Figures {
  readonly gateways: number;
  readonly grants: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Grants to a waiter on the other gateway than the one that freed the instance (two gateways). */
  readonly crossP50Ms: number;
  readonly crossP99Ms: number;
  readonly violations: number;
  readonly waitersPerSec: number;
  readonly admitted: number;
  /** Gateway CPU per second of wall time while nobody waits, and while one call waits (the poll runs), milliseconds. */
  readonly idleCpuMsPerSec: number;
  readonly pollingCpuMsPerSec: number;
  /** One `PRAGMA data_version` read (prepared), microseconds. */
  readonly dataVersionReadUs: number;
  readonly raw: { latencies: number[]; cross: number[] };
}

/**
 * Profile `queue` (issue 13): the waiting room. Grant latency is measured from the moment an
 * instance becomes allocatable to the moment the waiter's call reaches it: one lean instance is
 * kept drained while waiters queue; the bench undrains it through the admin API of the first
 * gateway (the grant runs inside that transaction, as it does inside the probe's that finds an
 * instance back clean) and reads when the instance bound the waiter's session (its own log, same
 * clock). Then it drains the instance again, shuts the session down (the instance restarts) and
 * waits until the instance is back clean before the next round. With two gateways on one SQLite
 * file the waiters alternate between them: half the grants wake a waiter in another process
 * (PRAGMA data_version, polled every 2 ms while it waits). Every grant must go to the oldest
 * waiter (FIFO). Waiters admitted per second: many waiting calls at once into a busy pool, until
 * the store holds them all.
 */
export async function queueProfile(ctx: BenchContext): Promise<ProfileResult> {
  const grants = ctx.quick ? 20 : 200;
  const admissions = ctx.quick ? 300 : 2000;
  const results: Figures[] = [];
  for (const gateways of [1, 2]) results.push(await measure(ctx, gateways, grants, admissions));
  const [one, two] = results as [Figures, Figures];
  const rows = results.flatMap((f) => [
    [
      `${f.gateways} gateway${f.gateways > 1 ? "s" : ""}`,
      "grant latency: instance free → waiter's call at the instance",
      `${fmt(f.p50Ms, 1)} ms`,
      `${fmt(f.p99Ms, 1)} ms`,
      `max ${fmt(f.maxMs, 1)} ms, ${f.grants} grants`,
    ],
    ...(f.gateways > 1
      ? [["", "… waiter on the other gateway", `${fmt(f.crossP50Ms, 1)} ms`, `${fmt(f.crossP99Ms, 1)} ms`, "woken by data_version"]]
      : []),
    ["", "FIFO violations", String(f.violations), "", `of ${f.grants} grants`],
    ["", "waiters admitted/s", fmt(f.waitersPerSec), "", `${f.admitted} waiting calls at once into a busy pool`],
    [
      "",
      "gateway CPU, nobody waits → one call waits",
      `${fmt(f.idleCpuMsPerSec, 1)} → ${fmt(f.pollingCpuMsPerSec, 1)} ms/s`,
      "",
      `data_version polled every 2 ms while someone waits; one read ${fmt(f.dataVersionReadUs, 2)} µs`,
    ],
  ]);
  return {
    id: "queue",
    title: "Waiting room (issue 13)",
    tables: [{ title: "Waiting room: grant latency, FIFO, admission", columns: ["gateways", "measure", "p50", "p99", "notes"], rows }],
    metrics: {
      grantP50OneMs: one.p50Ms,
      grantP99OneMs: one.p99Ms,
      grantP50TwoMs: two.p50Ms,
      grantP99TwoMs: two.p99Ms,
      grantCrossP99TwoMs: two.crossP99Ms,
      fifoViolations: one.violations + two.violations,
      waitersPerSecOne: one.waitersPerSec,
      waitersPerSecTwo: two.waitersPerSec,
      pollingCpuMsPerSec: two.pollingCpuMsPerSec - two.idleCpuMsPerSec,
      dataVersionReadUs: two.dataVersionReadUs,
    },
    notes: [
      "grant latency: from just before the admin UndrainInstance call on gateway 1 to the instance binding the waiter's session (Date.now() of both processes, 1 ms resolution); it includes the admin RPC, the grant's commit, the wake-up, the claim's commit and the relayed call",
      "in production an instance becomes allocatable when a probe finds it back clean after its restart: that wait (up to HEALTH_CHECK_INTERVAL) comes before this figure and is not part of it",
      `${queued} waiters queued at every grant; SQLite synchronous=FULL (every commit durable); instances: one lean instance (bench/lean-instance-pool.ts)`,
    ],
    raw: results.map((f) => ({ gateways: f.gateways, ...f.raw })),
  };
}

async function measure(ctx: BenchContext, gateways: number, grants: number, admissions: number): Promise<Figures> {
  ctx.progress(`queue: ${gateways} gateway(s), ${grants} grants, ${admissions} admissions`);
  const pool = await startLeanInstances(1, { BENCH_LOG_BINDS: "1" });
  const dbDir = await mkdtemp(join(ctx.tmpDir, `queue-${gateways}-`));
  const gws: BenchGateway[] = [];
  const clients: http2.ClientHttp2Session[] = [];
  try {
    for (let i = 1; i <= gateways; i++) {
      gws.push(
        await startGateway(
          pool.addresses,
          { GATEWAY_ID: `bench-gw-${i}`, HEALTH_CHECK_INTERVAL: "50ms", QUEUE_MAX_LENGTH: String(admissions + 10), QUEUE_MAX_WAIT: "10m" },
          dbDir,
        ),
      );
    }
    const db = new Database(gws[0]?.dbPath as string, { readonly: true, fileMustExist: true });
    try {
      for (const g of gws) clients.push(await h2connect(g.address));
      const address = pool.addresses[0] as string;
      const row = db.prepare<[string], { session_id: string | null; clean: number; healthy: number; draining: number }>(
        "SELECT session_id, clean, healthy, draining FROM instances WHERE address = ?",
      );
      const waiting = db.prepare("SELECT COUNT(*) FROM waiters").pluck();
      const oldestWaiting = db.prepare("SELECT session_id FROM waiters WHERE granted_address IS NULL ORDER BY seq LIMIT 1").pluck();
      const free = async () => {
        const deadline = Date.now() + 30_000;
        for (;;) {
          const r = row.get(address);
          if (r !== undefined && r.session_id === null && r.clean === 1 && r.healthy === 1) return;
          if (Date.now() > deadline) throw new Error(`instance not back clean: ${JSON.stringify(r)}`);
          await sleep(2);
        }
      };
      await free();
      const admin = createClient(AdminService, createGrpcTransport({ baseUrl: `http://${gws[0]?.address}` }));
      const adminHeaders = { authorization: (await mintSession("bench-queue-admin")).token };
      await admin.drainInstance({ instance: address }, { headers: adminHeaders });

      // Grant latency and FIFO.
      let n = 0;
      const pending: { s: BenchSession; on: number; done: Promise<number> }[] = [];
      const enqueue = async () => {
        const on = n % gateways;
        const s = await mintSession(`bench-queue-${gateways}-${n++}`);
        const headers = { ...echoHeaders(s), "x-wait-for-instance": "10m" };
        const done = unaryCall(clients[on] as http2.ClientHttp2Session, headers, echoBody("queued")).then((o) => o.status);
        const before = waiting.get() as number;
        pending.push({ s, on, done });
        const deadline = Date.now() + 10_000;
        while ((waiting.get() as number) === before) {
          if (Date.now() > deadline)
            throw new Error(`waiter ${s.id} not queued within 10 s (status ${await Promise.race([done, sleep(0, "pending")])})`);
          await sleep(1);
        }
      };
      const bindTime = (session: string): number | undefined => {
        const line = pool.child
          .output()
          .split("\n")
          .find((l) => l.startsWith('{"bound"') && l.includes(`"${session}"`));
        return line === undefined ? undefined : (JSON.parse(line) as { at: number }).at;
      };
      const latencies: number[] = [];
      const cross: number[] = [];
      let violations = 0;
      while (pending.length < queued) await enqueue();
      for (let g = 0; g < grants; g++) {
        const head = pending[0] as (typeof pending)[number];
        const expected = oldestWaiting.get() as string;
        const t0 = Date.now();
        await admin.undrainInstance({ instance: address }, { headers: adminHeaders });
        let winner: (typeof pending)[number] | undefined;
        const deadline = Date.now() + 10_000;
        while (winner === undefined) {
          winner = pending.find((p) => bindTime(p.s.id) !== undefined);
          if (winner === undefined) {
            if (Date.now() > deadline) throw new Error("no waiter reached the instance within 10 s");
            await sleep(1);
          }
        }
        const bound = bindTime(winner.s.id) as number;
        latencies.push(bound - t0);
        if (winner.on !== 0) cross.push(bound - t0);
        if (winner !== head || winner.s.id !== expected) violations++;
        const status = await winner.done;
        if (status !== 0) throw new Error(`granted waiter ended with status ${status}`);
        pending.splice(pending.indexOf(winner), 1);
        await admin.drainInstance({ instance: address }, { headers: adminHeaders });
        const down = await unaryCall(
          clients[winner.on] as http2.ClientHttp2Session,
          { ...echoHeaders(winner.s), ":path": "/my_service.MyServiceAPI/MyServiceShutdown" },
          Buffer.from([0, 0, 0, 0, 0]),
        );
        if (down.status !== 0) throw new Error(`Shutdown failed: ${down.status} ${down.message}`);
        await waitDrainedClean(row, address);
        await enqueue();
      }

      // Waiters admitted per second: many waiting calls at once into the busy (drained) pool.
      const before = waiting.get() as number;
      const admitClients: http2.ClientHttp2Session[] = [];
      for (const g of gws) for (let k = 0; k < 4; k++) admitClients.push(await h2connect(g.address));
      const sessions = await Promise.all(Array.from({ length: admissions }, (_, i) => mintSession(`bench-admit-${gateways}-${i}`)));
      const started = performance.now();
      for (const [i, s] of sessions.entries()) {
        void unaryCall(
          admitClients[i % admitClients.length] as http2.ClientHttp2Session,
          { ...echoHeaders(s), "x-wait-for-instance": "10m" },
          echoBody("admit"),
        );
      }
      const admitDeadline = Date.now() + 120_000;
      while ((waiting.get() as number) < before + admissions) {
        if (Date.now() > admitDeadline) throw new Error(`only ${(waiting.get() as number) - before} of ${admissions} admitted`);
        await sleep(2);
      }
      const waitersPerSec = admissions / ((performance.now() - started) / 1000);
      for (const c of admitClients) c.destroy();

      // What the cross-process wake-up costs: the gateway's CPU with nobody waiting, then with
      // one call waiting (its data_version poll runs), and one read of data_version by itself.
      for (const c of clients) c.destroy();
      clients.length = 0;
      const quiet = Date.now() + 30_000;
      while ((waiting.get() as number) > 0 && Date.now() < quiet) await sleep(20);
      const gw = gws[0] as BenchGateway;
      const cpuWindowMs = ctx.quick ? 2000 : 5000;
      const cpuPerSec = async () => {
        const before = cpuSeconds(gw.pid);
        await sleep(cpuWindowMs);
        return ((cpuSeconds(gw.pid) - before) * 1000) / (cpuWindowMs / 1000);
      };
      const idleCpuMsPerSec = await cpuPerSec();
      const one = await h2connect(gw.address);
      const lone = await mintSession(`bench-lone-${gateways}`);
      void unaryCall(one, { ...echoHeaders(lone), "x-wait-for-instance": "10m" }, echoBody("lone"));
      while ((waiting.get() as number) === 0) await sleep(5);
      const pollingCpuMsPerSec = await cpuPerSec();
      one.destroy();
      const version = db.prepare("PRAGMA data_version").pluck();
      const reads = 100_000;
      const readStart = performance.now();
      for (let i = 0; i < reads; i++) version.get();
      const dataVersionReadUs = ((performance.now() - readStart) * 1000) / reads;
      return {
        gateways,
        grants,
        p50Ms: median(latencies),
        p99Ms: quantile(latencies, 0.99),
        maxMs: Math.max(...latencies),
        crossP50Ms: median(cross),
        crossP99Ms: quantile(cross, 0.99),
        violations,
        waitersPerSec,
        admitted: admissions,
        idleCpuMsPerSec,
        pollingCpuMsPerSec,
        dataVersionReadUs,
        raw: { latencies, cross },
      };
    } finally {
      db.close();
    }
  } finally {
    for (const c of clients) c.destroy();
    for (const g of gws) await g.stop();
    await (pool.child as Child).stop();
  }
}

/** Waits until the instance restarted after its Shutdown and a probe saw it clean (it stays drained). */
async function waitDrainedClean(
  row: { get(address: string): { session_id: string | null; clean: number; healthy: number; draining: number } | undefined },
  address: string,
): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const r = row.get(address);
    if (r !== undefined && r.session_id === null && r.clean === 1 && r.healthy === 1 && r.draining === 1) return;
    if (Date.now() > deadline) throw new Error(`instance not back clean: ${JSON.stringify(r)}`);
    await sleep(2);
  }
}
