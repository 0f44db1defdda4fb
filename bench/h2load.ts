import { spawn, spawnSync } from "node:child_process";
import { readFile, rm } from "node:fs/promises";
import { quantile } from "./stats.js";

/** One h2load run: what to send and how hard. */
export interface H2loadRun {
  /** `http://127.0.0.1:<port>/<service>/<method>`. */
  readonly url: string;
  /** Request body file (gRPC length-prefixed message). */
  readonly bodyFile: string;
  readonly headers: Readonly<Record<string, string>>;
  /** Total requests (`-n`). */
  readonly requests: number;
  /** Connections (`-c`). */
  readonly connections: number;
  /** Concurrent streams per connection (`-m`). */
  readonly streamsPerConnection: number;
  /** Per-request log, for percentiles. */
  readonly logFile: string;
  /** The run is killed after this long, milliseconds. */
  readonly timeoutMs: number;
}

/** What h2load reported, plus percentiles computed from its per-request log. */
export interface H2loadResult {
  readonly requests: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly errored: number;
  readonly status2xx: number;
  /** Response DATA bytes (gRPC messages; trailers are headers). */
  readonly dataBytes: number;
  readonly seconds: number;
  readonly reqPerSec: number;
  /** Latency percentiles, milliseconds. */
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly meanMs: number;
}

/** True when Debian's `h2load` (nghttp2-client) is on PATH. */
export function haveH2load(): boolean {
  return spawnSync("h2load", ["--version"], { stdio: "ignore" }).status === 0;
}

function parseSize(text: string | undefined): number {
  return text === undefined ? Number.NaN : Number(text);
}

/** Runs h2load once; rejects if it fails to run or times out. */
export async function runH2load(run: H2loadRun): Promise<H2loadResult> {
  const args = ["-n", String(run.requests), "-c", String(run.connections), "-m", String(run.streamsPerConnection)];
  args.push("-d", run.bodyFile, `--log-file=${run.logFile}`);
  for (const [name, value] of Object.entries(run.headers)) args.push("-H", `${name}: ${value}`);
  args.push(run.url);
  const child = spawn("h2load", args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (c: Buffer) => {
    out += c.toString();
  });
  child.stderr.on("data", (c: Buffer) => {
    out += c.toString();
  });
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), run.timeoutMs);
    child.once("exit", (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  if (code !== 0) throw new Error(`h2load exited with ${code} (timeout ${run.timeoutMs} ms?):\n${out.slice(-2000)}`);
  const finished = /finished in ([\d.]+)(ms|s), ([\d.]+) req\/s/.exec(out);
  const requests = /requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out);
  const status = /status codes: (\d+) 2xx/.exec(out);
  const traffic = /traffic: .*? \((\d+)\) total, .*? \((\d+)\) headers .*?, .*? \((\d+)\) data/.exec(out);
  if (!finished || !requests || !status || !traffic) throw new Error(`cannot parse h2load output:\n${out.slice(-2000)}`);
  const latenciesUs: number[] = [];
  const log = await readFile(run.logFile, "utf8");
  await rm(run.logFile, { force: true });
  for (const line of log.split("\n")) {
    const parts = line.split("\t");
    if (parts.length === 3 && parts[1] === "200") latenciesUs.push(Number(parts[2]));
  }
  const seconds = Number(finished[1]) / (finished[2] === "ms" ? 1000 : 1);
  const mean = latenciesUs.reduce((a, b) => a + b, 0) / Math.max(1, latenciesUs.length);
  return {
    requests: Number(requests[1]),
    succeeded: Number(requests[2]),
    failed: Number(requests[3]),
    errored: Number(requests[4]),
    status2xx: Number(status[1]),
    dataBytes: parseSize(traffic[3]),
    seconds,
    reqPerSec: Number(finished[3]),
    p50Ms: quantile(latenciesUs, 0.5) / 1000,
    p99Ms: quantile(latenciesUs, 0.99) / 1000,
    meanMs: mean / 1000,
  };
}
