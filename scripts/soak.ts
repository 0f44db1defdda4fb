// Soak: mixed traffic (Login, Echo, Subscribe, Shutdown, expiry with a short TTL) against a
// stack of real processes for a bounded time; reports throughput, errors by code, and the
// gateway's memory (RSS sampled every few seconds, with its slope).
//
//   npm run soak                       # 60 s
//   npm run soak -- --duration 10m --instances 5 --clients 16
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { parseDuration } from "../common/duration.js";
import { gatewayClient } from "../test/e2e-client.js";
import { startStack } from "../test/stack.js";
import { repoRoot } from "./up-control-client.js";

/** Options of `runSoak`. */
export interface SoakOptions {
  /** How long traffic runs, milliseconds. */
  readonly durationMs: number;
  /** myservice instances. */
  readonly instances: number;
  /** Concurrent clients (each its own HTTP/2 connection). */
  readonly clients: number;
  /** `LEASE_IDLE_TTL` of the stack: abandoned sessions expire after it. */
  readonly leaseTtl: string;
  /** RSS sample period, milliseconds. */
  readonly sampleMs: number;
  /** Progress lines go here. */
  readonly log?: (line: string) => void;
}

/** What a soak measured. */
export interface SoakReport {
  readonly seconds: number;
  readonly operations: number;
  readonly opsPerSecond: number;
  /** Outcome counts by `<op> <code>`. */
  readonly outcomes: Record<string, number>;
  /** Outcomes that must never happen: INTERNAL, transport failures, Session conflict, a reply for another session. */
  readonly violations: string[];
  readonly rssStartMb: number;
  readonly rssEndMb: number;
  readonly rssMaxMb: number;
  /** Least-squares slope of RSS over the second half of the run, MB per minute. */
  readonly rssSlopeMbPerMin: number;
  readonly rssSamplesMb: number[];
  readonly gatewayRestarts: number;
}

function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

function slope(ys: readonly number[], dtMin: number): number {
  const n = ys.length;
  if (n < 2) return 0;
  const xs = ys.map((_, i) => i * dtMin);
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += ((xs[i] as number) - mx) * ((ys[i] as number) - my);
    den += ((xs[i] as number) - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

/** Runs a soak against a fresh stack and returns its figures. */
export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const log = options.log ?? (() => {});
  const stack = await startStack({
    instances: options.instances,
    env: {
      USERS_FILE: join(repoRoot, "test", "fixtures", "users.json"),
      LEASE_IDLE_TTL: options.leaseTtl,
      HEALTH_CHECK_INTERVAL: "250ms",
      HEALTH_CHECK_TIMEOUT: "500ms",
      SUBSCRIBE_INTERVAL_MS: "50",
    },
  });
  const outcomes: Record<string, number> = {};
  const violations: string[] = [];
  let operations = 0;
  const note = (op: string, error: unknown) => {
    operations++;
    let key: string;
    if (error === undefined) key = `${op} OK`;
    else if (error instanceof ConnectError) {
      key = `${op} ${Code[error.code]}`;
      if (error.code === Code.Internal || /Session conflict/.test(error.rawMessage))
        violations.push(`${op}: ${Code[error.code]} ${error.rawMessage}`);
    } else {
      key = `${op} transport`;
      violations.push(`${op}: ${String(error)}`);
    }
    outcomes[key] = (outcomes[key] ?? 0) + 1;
  };
  try {
    const gateway = (await stack.processes()).find((p) => p.kind === "gateway");
    const pid = gateway?.pid ?? 0;
    const restartsBefore = gateway?.restarts ?? 0;
    const samples: number[] = [rssMb(pid)];
    const sampler = setInterval(() => samples.push(rssMb(pid)), options.sampleMs);
    const deadline = Date.now() + options.durationMs;
    const started = performance.now();
    let counter = 0;

    async function client(w: number) {
      const c = gatewayClient(stack.gatewayUrl);
      try {
        while (Date.now() < deadline) {
          const id = `soak-${w}-${++counter}`;
          let headers: Record<string, string>;
          try {
            const reply = await c.api.login({
              username: w % 2 ? "OtherUser" : "TestUser",
              password: w % 2 ? "OtherPassword" : "TestPassword",
              sessionId: id,
            });
            note("login", undefined);
            headers = { authorization: reply.token, "session-id": id };
          } catch (error) {
            note("login", error);
            continue;
          }
          let leased = false;
          const rounds = 1 + (counter % 5);
          for (let i = 0; i < rounds && Date.now() < deadline; i++) {
            try {
              const r = await c.api.myServiceEcho({ value: `${i}` }, { headers, timeoutMs: 10_000 });
              if (r.serverSessionId !== id) violations.push(`echo: reply for ${r.serverSessionId}, sent ${id}`);
              note("echo", undefined);
              leased = true;
            } catch (error) {
              note("echo", error);
              await new Promise((r) => setTimeout(r, 100));
            }
          }
          if (leased && counter % 3 === 0) {
            const controller = new AbortController();
            try {
              let n = 0;
              for await (const m of c.api.myServiceSubscribe({ value: "s" }, { headers, signal: controller.signal, timeoutMs: 10_000 })) {
                if (m.serverSessionId !== id) violations.push(`subscribe: reply for ${m.serverSessionId}, sent ${id}`);
                if (++n === 3) break;
              }
              note("subscribe", undefined);
            } catch (error) {
              note("subscribe", error);
            } finally {
              controller.abort();
            }
          }
          // Most sessions shut down; every 5th is abandoned and expires after the TTL.
          if (leased && counter % 5 !== 0) {
            try {
              await c.api.myServiceShutdown({}, { headers, timeoutMs: 10_000 });
              note("shutdown", undefined);
            } catch (error) {
              note("shutdown", error);
            }
          } else if (leased) note("abandon", undefined);
        }
      } finally {
        c.close();
      }
    }

    const progress = setInterval(() => {
      log(`soak: ${Math.round((performance.now() - started) / 1000)} s, ${operations} ops, RSS ${samples.at(-1)?.toFixed(1)} MB`);
    }, 10_000);
    await Promise.all(Array.from({ length: options.clients }, (_, w) => client(w)));
    clearInterval(progress);
    clearInterval(sampler);
    samples.push(rssMb(pid));
    const seconds = (performance.now() - started) / 1000;
    const restarts = ((await stack.processes()).find((p) => p.kind === "gateway")?.restarts ?? 0) - restartsBefore;
    if (restarts > 0) {
      const crash = stack
        .output()
        .split("\n")
        .filter((l) => /^gateway .*(Error|error|fatal|"level":[56]0)/.test(l))
        .slice(-5);
      violations.push(`gateway restarted ${restarts} times; its last errors:\n${crash.join("\n")}`);
    }
    const secondHalf = samples.slice(Math.floor(samples.length / 2));
    return {
      seconds: Math.round(seconds),
      operations,
      opsPerSecond: Math.round((operations / seconds) * 10) / 10,
      outcomes,
      violations,
      rssStartMb: Math.round(samples[0] as number),
      rssEndMb: Math.round(samples.at(-1) as number),
      rssMaxMb: Math.round(Math.max(...samples)),
      rssSlopeMbPerMin: Math.round(slope(secondHalf, options.sampleMs / 60_000) * 100) / 100,
      rssSamplesMb: samples.map((s) => Math.round(s)),
      gatewayRestarts: restarts,
    };
  } finally {
    await stack.stop();
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      duration: { type: "string", default: process.env.SOAK_DURATION ?? "60s" },
      instances: { type: "string", default: "4" },
      clients: { type: "string", default: "8" },
      ttl: { type: "string", default: "2s" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write("npm run soak -- [--duration 60s|10m] [--instances 4] [--clients 8] [--ttl 2s]\n");
    return;
  }
  const durationMs = parseDuration(values.duration);
  if (durationMs === undefined) {
    process.stderr.write(`--duration ${values.duration}: expected e.g. 60s or 10m\n`);
    process.exit(2);
  }
  const report = await runSoak({
    durationMs,
    instances: Number(values.instances),
    clients: Number(values.clients),
    leaseTtl: values.ttl,
    sampleMs: 2000,
    log: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  process.exit(report.violations.length === 0 ? 0 : 1);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) await main();
