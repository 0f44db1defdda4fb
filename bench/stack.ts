import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pickFreePorts } from "../scripts/net-util.js";
import { benchSecret } from "./grpc.js";
import { type Child, repoRoot, spawnNode, waitForOutput, waitForPort } from "./proc.js";

/** Node flags for the gateway (e.g. `--cpu-prof`), from `--gateway-node-args`. */
export const gatewayNodeArgs: string[] = [];

const quiet = { LOG_LEVEL: "warn", LOG_FORMAT: "json", LISTEN_HOST: "127.0.0.1", JWT_SECRET: benchSecret };

/** Real myservice processes (`myservice/main.ts`), one per port. */
export async function startInstances(count: number, env: Record<string, string> = {}): Promise<{ children: Child[]; addresses: string[] }> {
  const ports = await pickFreePorts(count);
  const children = ports.map((port, i) =>
    spawnNode(`myservice-${i + 1}`, "myservice/main.ts", {
      ...process.env,
      ...quiet,
      SUBSCRIBE_INTERVAL_MS: "100",
      ...env,
      SERVICE_PORT_GRPC: String(port),
      HOSTNAME: `myservice-${port}`,
    }),
  );
  await Promise.all(children.map((c, i) => waitForPort(c, ports[i] as number)));
  return { children, addresses: ports.map((p) => `127.0.0.1:${p}`) };
}

/** Many instances in one process: real myservice servers (`bench/multi-instance-server.ts`). */
export function startMultiInstances(count: number, env: Record<string, string> = {}, nodeArgs: readonly string[] = []) {
  return startPoolProcess("bench/multi-instance-server.ts", count, env, nodeArgs);
}

/** Many lean raw-HTTP/2 instances in one process (`bench/lean-instance-pool.ts`). */
export function startLeanInstances(count: number, env: Record<string, string> = {}, nodeArgs: readonly string[] = []) {
  return startPoolProcess("bench/lean-instance-pool.ts", count, env, nodeArgs);
}

async function startPoolProcess(
  script: string,
  count: number,
  env: Record<string, string>,
  nodeArgs: readonly string[],
): Promise<{ child: Child; addresses: string[] }> {
  const child = spawnNode(
    script.replace(/^bench\/|\.ts$/g, ""),
    script,
    { ...process.env, ...quiet, SUBSCRIBE_INTERVAL_MS: "100", ...env, BENCH_INSTANCES: String(count) },
    nodeArgs,
  );
  const match = await waitForOutput(child, /\{"ports":\[[\d,]*\]\}/, 120_000);
  const { ports } = JSON.parse(match[0]) as { ports: number[] };
  return { child, addresses: ports.map((p) => `127.0.0.1:${p}`) };
}

/** A gateway process (`gateway/main.ts`) with its own temporary lease database. */
export interface BenchGateway {
  readonly child: Child;
  readonly pid: number;
  readonly address: string;
  readonly dbPath: string;
  stop(): Promise<void>;
}

/** Starts a gateway in front of `addresses`; resolves once it listens (it reconciles first). */
export async function startGateway(addresses: readonly string[], env: Record<string, string> = {}, dbDir?: string): Promise<BenchGateway> {
  const dir = dbDir ?? (await mkdtemp(join(tmpdir(), "bench-gw-")));
  const [port] = await pickFreePorts(1);
  const dbPath = join(dir, "leases.db");
  const child = spawnNode(
    "gateway",
    "gateway/main.ts",
    {
      ...process.env,
      ...quiet,
      USERS_FILE: join(repoRoot, "gateway", "dev-users.json"),
      LEASE_DB_PATH: dbPath,
      ...env,
      SERVICE_PORT_GRPC: String(port),
      MYSERVICE_ADDRESSES: addresses.join(","),
    },
    gatewayNodeArgs,
  );
  await waitForPort(child, port as number, 120_000);
  return {
    child,
    pid: child.pid,
    address: `127.0.0.1:${port}`,
    dbPath,
    async stop() {
      await child.stop(5000);
      if (dbDir === undefined) await rm(dir, { recursive: true, force: true });
    },
  };
}
