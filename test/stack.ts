import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import Database from "better-sqlite3";
import pg from "pg";
import { devJwtSecret } from "../common/dev-defaults.js";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { MyServiceAPI } from "../gen/my_service/my_service_pb.js";
import { canConnect } from "../scripts/net-util.js";
import {
  type ControlAction,
  createControlClient,
  type ProcessInfo,
  repoRoot,
  type UpState,
  type UpTlsState,
} from "../scripts/up-control-client.js";

export type { ProcessInfo };

/** Options of `startStack`. */
export interface StackOptions {
  /** Number of myservice instances. Default 3. */
  readonly instances?: number;
  /**
   * Environment of the stack, on top of the test process's own and of the test defaults
   * (`JWT_SECRET` = the dev secret, `LISTEN_HOST=127.0.0.1`, `LOG_FORMAT=json`,
   * `LOG_LEVEL=warn`, `SUBSCRIBE_INTERVAL_MS=100`), e.g. `{ LEASE_IDLE_TTL: "2s" }`.
   */
  readonly env?: Record<string, string>;
  /** `false` runs the instances only (`--no-gateway`). Default `true`. */
  readonly gateway?: boolean;
  /** `false`: do not wait for every instance to be free and allocatable before returning. Default true. */
  readonly waitAllFree?: boolean;
  /** Longest wait for the stack to be ready, milliseconds. Default 20,000. */
  readonly startTimeoutMs?: number;
  /** More launcher options, e.g. `["--restart", "on-failure"]`. */
  readonly launcherArgs?: readonly string[];
  /**
   * `false`: return once the gateway runs and its port accepts connections, without waiting for
   * it to be ready (for a stack whose instances the gateway must refuse). Default true.
   */
  readonly waitReady?: boolean;
  /** `--tls`: everything over TLS with a local CA and an Ed25519 token key (`npm run up -- --tls`). */
  readonly tls?: boolean;
  /** `--store`: `sqlite` (default) or `postgres` (a PostgreSQL server the launcher runs). */
  readonly store?: "sqlite" | "postgres";
  /**
   * A PostgreSQL lease store the test runs itself (e.g. to stop it): every gateway gets it as
   * `LEASE_DB_URL` (with `store` left `sqlite`, the launcher runs no server of its own).
   */
  readonly leaseDbUrl?: string;
  /** `--gateways`: gateway processes (`gateway-1`, `gateway-2`, ... when more than one). Default 1. */
  readonly gateways?: number;
}

/** A running stack of real processes under the launcher (`scripts/up.ts`). */
export interface Stack {
  /** `127.0.0.1:<port>` of the gateway. */
  readonly gatewayAddress: string;
  /** `http://127.0.0.1:<port>` (`https://` with `tls`), the base URL for Connect/gRPC transports. */
  readonly gatewayUrl: string;
  /** With `tls`: the CA, the token signing key and the instances' client certificate (`GET /state`). */
  readonly tls: UpTlsState | undefined;
  /** Every gateway's base URL, in order (one with a single gateway). */
  readonly gatewayUrls: readonly string[];
  /** `LEASE_DB_URL` of the stack's PostgreSQL server (`store: "postgres"`). */
  readonly leaseDbUrl: string | undefined;
  /** Base URL of the launcher's control API. */
  readonly controlUrl: string;
  /** Temporary data folder (lease database, state file); removed by `stop()`. */
  readonly dataDir: string;
  /** `JWT_SECRET` the stack's processes use, to mint tokens in tests. */
  readonly jwtSecret: string;
  /** Pid of the launcher process. */
  readonly launcherPid: number;
  /** Resolves when the launcher process has exited, with its exit code or signal. */
  readonly launcherExit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Current process list (`GET /processes`). */
  processes(): Promise<ProcessInfo[]>;
  /** Kills, holds stopped, or starts a process; `name` may be `instances`. */
  control(name: string, action: ControlAction): Promise<ProcessInfo[]>;
  /** Sends `SIGSTOP`, `SIGCONT`, `SIGTERM` or `SIGKILL` to a process (or `instances`). */
  signal(name: string, sig: string): Promise<ProcessInfo[]>;
  /** Polls the process list until `predicate` holds; throws after `timeoutMs` (default 10,000). */
  waitFor(predicate: (processes: ProcessInfo[]) => boolean, timeoutMs?: number): Promise<ProcessInfo[]>;
  /** Waits until the gateway's store shows every instance free and allocatable (recycling done). */
  waitAllFree(timeoutMs?: number): Promise<void>;
  /** Launcher output so far (its own lines and every process's), for failure messages. */
  output(): string;
  /** SIGTERMs the launcher, waits until it exited, removes the temp folder. Safe to call twice. */
  stop(): Promise<void>;
}

const launcherScript = join(repoRoot, "scripts", "up.ts");
const maxOutputChars = 1_000_000;
const testDefaults: Record<string, string> = {
  JWT_SECRET: devJwtSecret,
  LISTEN_HOST: "127.0.0.1",
  LOG_FORMAT: "json",
  LOG_LEVEL: "warn",
  SUBSCRIBE_INTERVAL_MS: "100",
};

function tail(text: string, lines = 40): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

function exitOf(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/**
 * Starts the whole stack as real processes: the launcher with all ports 0 (free loopback
 * ports) and a temporary data folder. Resolves once the state file exists, every instance is
 * running, and the gateway's port accepts connections and its gRPC health Check answers
 * SERVING (or UNIMPLEMENTED, for a gateway without health); on timeout it stops what it
 * started and throws with the launcher's last output lines. Always call `stop()` (e.g. in
 * `t.after`).
 */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const instances = options.instances ?? 3;
  const withGateway = options.gateway ?? true;
  const dataDir = await mkdtemp(join(tmpdir(), "up-stack-"));
  const stateFile = join(dataDir, "up-stack.json");
  const env: Record<string, string | undefined> = { ...process.env, ...testDefaults, ...options.env };
  if (options.leaseDbUrl !== undefined) env.LEASE_DB_URL = options.leaseDbUrl;
  else delete env.LEASE_DB_URL;
  // A node:test worker's context must not leak into the stack's processes.
  delete env.NODE_TEST_CONTEXT;
  const args = ["--import", "tsx", launcherScript, "--instances", String(instances)];
  args.push("--gateway-port", "0", "--instance-base-port", "0", "--control-port", "0");
  args.push("--data-dir", dataDir, "--exit-with-stdin");
  if (!withGateway) args.push("--no-gateway");
  args.push(...(options.launcherArgs ?? []));
  if (options.tls) args.push("--tls");
  const gateways = options.gateways ?? 1;
  if (options.store === "postgres") args.push("--store", "postgres", "--postgres-port", "0");
  if (gateways > 1) args.push("--gateways", String(gateways));
  const launcher = spawn(process.execPath, args, { cwd: repoRoot, env, stdio: ["pipe", "pipe", "pipe"] });
  launcher.stdin.on("error", () => {});
  const launcherExit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    launcher.once("exit", (code, signal) => resolve({ code, signal }));
  });
  let output = "";
  const collect = (chunk: Buffer) => {
    output += chunk.toString("utf8");
    if (output.length > maxOutputChars) output = output.slice(-maxOutputChars / 2);
  };
  launcher.stdout.on("data", collect);
  launcher.stderr.on("data", collect);

  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      if (!(await exitOf(launcher, 0))) {
        launcher.kill("SIGTERM");
        if (!(await exitOf(launcher, 15_000))) {
          launcher.kill("SIGKILL");
          await exitOf(launcher, 5000);
        }
      }
      launcher.stdin.destroy();
      await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
    })();
    return stopped;
  };

  let state: UpState;
  try {
    state = await waitUntilReady(
      launcher,
      stateFile,
      instances,
      withGateway ? gateways : 0,
      options.startTimeoutMs ?? 20_000,
      () => output,
      options.waitReady ?? true,
    );
  } catch (error) {
    await stop();
    throw error;
  }
  const client = createControlClient(state.controlUrl);
  const dbPath = join(dataDir, "leases.db");

  /** Polls the gateway's lease store (read-only) until every instance is free and allocatable. */
  async function waitAllFree(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let free = -1;
    while (Date.now() < deadline) {
      const url = options.leaseDbUrl ?? state.leaseDbUrl;
      if (url !== undefined) {
        free = await countFreeInPostgres(url).catch(() => -1);
        if (free === instances) return;
      } else if (existsSync(dbPath)) {
        const db = new Database(dbPath, { readonly: true, fileMustExist: true });
        try {
          free = (
            db
              .prepare("SELECT COUNT(*) AS n FROM instances WHERE session_id IS NULL AND healthy = 1 AND clean = 1 AND draining = 0")
              .get() as { n: number }
          ).n;
        } finally {
          db.close();
        }
        if (free === instances) return;
      }
      await sleep(100);
    }
    throw new Error(`only ${free} of ${instances} instances became free within ${timeoutMs} ms\nlauncher output (tail):\n${tail(output)}`);
  }
  if (withGateway && options.waitAllFree !== false && options.waitReady !== false) {
    try {
      await waitAllFree(options.startTimeoutMs ?? 20_000);
    } catch (error) {
      await stop();
      throw error;
    }
  }

  async function waitFor(predicate: (p: ProcessInfo[]) => boolean, timeoutMs = 10_000): Promise<ProcessInfo[]> {
    const deadline = Date.now() + timeoutMs;
    let last: ProcessInfo[] = [];
    while (Date.now() < deadline) {
      last = await client.processes();
      if (predicate(last)) return last;
      await sleep(50);
    }
    throw new Error(
      `waitFor: condition not met within ${timeoutMs} ms\nprocesses: ${JSON.stringify(last)}\n` +
        `launcher output (tail):\n${tail(output)}`,
    );
  }

  return {
    gatewayAddress: state.gateway,
    gatewayUrl: `${state.tls ? "https" : "http"}://${state.gateway}`,
    gatewayUrls: (state.gateways ?? [state.gateway]).map((a) => `${state.tls ? "https" : "http"}://${a}`),
    leaseDbUrl: options.leaseDbUrl ?? state.leaseDbUrl,
    tls: state.tls,
    controlUrl: state.controlUrl,
    dataDir,
    jwtSecret: env.JWT_SECRET ?? devJwtSecret,
    launcherPid: launcher.pid ?? 0,
    launcherExit,
    processes: () => client.processes(),
    control: (name, action) => client.control(name, action),
    signal: (name, sig) => client.signal(name, sig),
    waitFor,
    waitAllFree,
    output: () => output,
    stop,
  };
}

/** The gateway's own word on readiness: gRPC health of MyServiceAPI SERVING (an instance is healthy). */
async function gatewayServing(transport: Transport): Promise<boolean> {
  try {
    const { status } = await createClient(Health, transport).check({ service: MyServiceAPI.typeName }, { timeoutMs: 1000 });
    return status === HealthCheckResponse_ServingStatus.SERVING;
  } catch {
    return false;
  }
}

const freeInstancesSql = "SELECT COUNT(*)::int AS n FROM instances WHERE session_id IS NULL AND healthy AND clean AND NOT draining";

async function countFreeInPostgres(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
  await client.connect();
  try {
    return (await client.query<{ n: number }>(freeInstancesSql)).rows[0]?.n ?? -1;
  } finally {
    await client.end();
  }
}

async function waitUntilReady(
  launcher: ChildProcess,
  stateFile: string,
  instances: number,
  gatewayCount: number,
  timeoutMs: number,
  output: () => string,
  ready: boolean,
): Promise<UpState> {
  const deadline = Date.now() + timeoutMs;
  let waitingFor = "the state file";
  let transports: Transport[] | undefined;
  while (Date.now() < deadline) {
    if (launcher.exitCode !== null || launcher.signalCode !== null) {
      throw new Error(
        `launcher exited (code ${launcher.exitCode}, signal ${launcher.signalCode}) before the stack was ready\n` +
          `launcher output (tail):\n${tail(output())}`,
      );
    }
    if (existsSync(stateFile)) {
      const state = JSON.parse(await readFile(stateFile, "utf8")) as UpState;
      const processes = await createControlClient(state.controlUrl)
        .processes()
        .catch(() => []);
      const running = processes.filter((p) => p.kind === "myservice" && p.state === "running").length;
      const gateways = processes.filter((p) => p.kind === "gateway");
      const addresses = state.gateways ?? [state.gateway];
      const ca = state.tls ? await readFile(state.tls.ca) : undefined;
      transports ??= addresses.map((a) =>
        createGrpcTransport({
          baseUrl: `${state.tls ? "https" : "http"}://${a}`,
          idleConnectionTimeoutMs: 1000,
          ...(ca !== undefined ? { nodeOptions: { ca } } : {}),
        }),
      );
      let gatewayUp = gateways.length === gatewayCount && gateways.every((g) => g.state === "running");
      for (const [i, address] of addresses.entries()) {
        if (!gatewayUp || gatewayCount === 0) break;
        gatewayUp = (await canConnect(Number(address.split(":").at(-1)))) && (!ready || (await gatewayServing(transports[i] as Transport)));
      }
      if (running === instances && gatewayUp) return state;
      waitingFor = `${running}/${instances} instances running, gateways ${gatewayCount > 0 ? gateways.map((g) => g.state).join(",") : "off"}`;
    }
    await sleep(100);
  }
  throw new Error(`stack not ready within ${timeoutMs} ms (${waitingFor})\nlauncher output (tail):\n${tail(output())}`);
}
