/**
 * Real processes for the waiting-room suites: one or more gateway processes on one lease
 * database (a SQLite file, or a PostgreSQL database when `leaseDbUrl` is given), in front of a pool of lean instances in one process (`bench/lean-instance-pool.ts`:
 * real sockets, the instance contract, a Shutdown restarts the instance at once with a new boot
 * id, as a supervisor would restart the exited process, only faster), and a raw HTTP/2 gRPC
 * client cheap enough to hold a thousand waiting calls.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import * as http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import Database from "better-sqlite3";
import pg from "pg";
import { devJwtSecret } from "../../common/dev-defaults.js";
import { issueToken } from "../../common/tokens.js";
import { decodeGrpcMessage, firstMessage, frameMessage } from "../../gateway/proxy/grpc-frames.js";
import { EchoRequestSchema, type EchoResponse, EchoResponseSchema } from "../../gen/my_service/my_service_pb.js";
import { AdminService } from "../../gen/mygateway/admin/v1/admin_pb.js";
import { GetStatusResponseSchema } from "../../gen/myservice/instance/v1/instance_pb.js";
import { repoRoot } from "../../scripts/up-control-client.js";
import { type GatewayProcess, startGatewayFor } from "../fake-instance.js";

export const echoPath = "/my_service.MyServiceAPI/MyServiceEcho";
export const subscribePath = "/my_service.MyServiceAPI/MyServiceSubscribe";
export const shutdownPath = "/my_service.MyServiceAPI/MyServiceShutdown";

/** A session's token and metadata (user `TestUser`, role admin, the development secret). */
export interface TestSession {
  readonly id: string;
  readonly token: string;
  readonly headers: Record<string, string>;
}

let sessionCounter = 0;

/** Mints a token for a fresh session id (no Login round trip: the gateway verifies it all the same). */
export async function newSession(label: string, user = "TestUser"): Promise<TestSession> {
  const id = `${label}-${process.pid}-${++sessionCounter}-${Math.random().toString(36).slice(2, 6)}`;
  const { token } = await issueToken(devJwtSecret, { sub: user, role: "admin", session_id: id }, 3_600_000);
  return { id, token, headers: { authorization: token, "session-id": id } };
}

/** A token of `user` for `sessionId` (e.g. another user's token for someone's session). */
export async function tokenFor(sessionId: string, user: string): Promise<string> {
  return (await issueToken(devJwtSecret, { sub: user, role: "user", session_id: sessionId }, 3_600_000)).token;
}

/** How one raw call ended. */
export interface CallResult {
  /** gRPC status (from the trailers, or a trailers-only response); -1 if the stream was reset or cut. */
  readonly code: number;
  readonly message: string;
  readonly headers: http2.IncomingHttpHeaders;
  readonly trailers: http2.IncomingHttpHeaders;
  /** The EchoResponse, for a successful Echo. */
  readonly reply?: EchoResponse;
  /** `performance.now()` when the call was sent and when it ended. */
  readonly sentAt: number;
  readonly endedAt: number;
}

/** A raw native gRPC client over a few HTTP/2 connections to one gateway. */
export class RawClient {
  private readonly sessions: http2.ClientHttp2Session[] = [];
  private next = 0;

  constructor(
    readonly address: string,
    connections = 4,
  ) {
    for (let i = 0; i < connections; i++) {
      const session = http2.connect(`http://${address}`);
      session.on("error", () => {});
      this.sessions.push(session);
    }
  }

  /** One unary call; `signal` cancels it (RST_STREAM CANCEL). Never throws. */
  call(path: string, headers: Record<string, string>, value = "v", options: { signal?: AbortSignal } = {}): Promise<CallResult> {
    const session = this.sessions[this.next++ % this.sessions.length] as http2.ClientHttp2Session;
    const sentAt = performance.now();
    return new Promise((resolve) => {
      let responseHeaders: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      let done = false;
      const end = (stream: http2.ClientHttp2Stream | undefined, error?: string) => {
        if (done) return;
        done = true;
        const status = trailers["grpc-status"] ?? responseHeaders["grpc-status"];
        const rawMessage = trailers["grpc-message"] ?? responseHeaders["grpc-message"];
        const code = status === undefined ? -1 : Number(status);
        const message = error ?? decodeGrpcMessage(typeof rawMessage === "string" ? rawMessage : undefined);
        const body = firstMessage(Buffer.concat(chunks));
        const reply = code === 0 && path !== shutdownPath && body !== undefined ? fromBinary(EchoResponseSchema, body) : undefined;
        resolve({ code, message, headers: responseHeaders, trailers, ...(reply ? { reply } : {}), sentAt, endedAt: performance.now() });
        if (stream !== undefined && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
      };
      let stream: http2.ClientHttp2Stream;
      try {
        stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...headers });
      } catch (error) {
        end(undefined, String(error));
        return;
      }
      stream.on("response", (h) => {
        responseHeaders = h;
      });
      stream.on("trailers", (t) => {
        trailers = t;
      });
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("error", () => {});
      stream.on("close", () => end(stream));
      options.signal?.addEventListener("abort", () => {
        if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
      });
      stream.end(frameMessage(toBinary(EchoRequestSchema, create(EchoRequestSchema, { value }))));
    });
  }

  close(): void {
    for (const session of this.sessions) session.destroy();
  }
}

/** A pool of lean instances in one process; `binds()` lists every session that reached one. */
export interface LeanPool {
  readonly child: ChildProcess;
  readonly addresses: readonly string[];
  /** Every session an instance bound (its first Echo reached it), in order. */
  binds(): { bound: string; pod: string; at: number }[];
  stop(): Promise<void>;
}

/** Starts `count` lean instances (one process, real ports) that log every session they bind. */
export async function startLeanPool(count: number): Promise<LeanPool> {
  const child = spawn(process.execPath, ["--import", "tsx", join(repoRoot, "bench", "lean-instance-pool.ts")], {
    cwd: repoRoot,
    env: { ...process.env, JWT_SECRET: devJwtSecret, BENCH_INSTANCES: String(count), BENCH_POD_PREFIX: "lean", BENCH_LOG_BINDS: "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout?.on("data", (c: Buffer) => {
    out += c.toString("utf8");
  });
  child.stderr?.on("data", (c: Buffer) => {
    out += c.toString("utf8");
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
  };
  const deadline = Date.now() + 60_000;
  let match = /\{"ports":\[[\d,]*\]\}/.exec(out);
  while (match === null) {
    if (Date.now() > deadline || child.exitCode !== null) {
      await stop();
      throw new Error(`lean pool did not start:\n${out.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
    match = /\{"ports":\[[\d,]*\]\}/.exec(out);
  }
  const { ports } = JSON.parse(match[0]) as { ports: number[] };
  return {
    child,
    addresses: ports.map((p) => `127.0.0.1:${p}`),
    binds: () =>
      out
        .split("\n")
        .filter((line) => line.startsWith('{"bound"'))
        .map((line) => JSON.parse(line) as { bound: string; pod: string; at: number }),
    stop,
  };
}

/** Every lease and instance row of the store (SQLite's flags as 0/1). */
export interface StoreRows {
  leases: { session_id: string; instance_address: string }[];
  instances: { address: string; session_id: string | null; clean: number; healthy: number }[];
}

/** Gateways sharing one lease database in front of one lean pool. */
export interface QueueStack {
  readonly pool: LeanPool;
  readonly gateways: GatewayProcess[];
  /** The SQLite file (unused when `leaseDbUrl` is set). */
  readonly dbPath: string;
  /** The PostgreSQL database the gateways share, when the stack runs on PostgreSQL. */
  readonly leaseDbUrl?: string;
  /** An admin API client of gateway `i` (default 0) with an admin token. */
  admin(i?: number): { client: Client<typeof AdminService>; headers: Record<string, string> };
  /** Every lease and instance row as the SQLite database holds them (read-only; SQLite only). */
  snapshot(): StoreRows;
  /** The same, from either engine. */
  rows(): Promise<StoreRows>;
  /** The gateways' warnings and errors (last `n` lines), for failure messages. */
  warnings(n?: number): string;
  /** Starts one more gateway process on the same database (e.g. after a kill). */
  addGateway(id: string): Promise<GatewayProcess>;
  stop(): Promise<void>;
}

/**
 * Starts `instances` lean instances and `gateways` gateway processes (`GATEWAY_ID` gw-1, gw-2,
 * ...) on one lease database, with `env` on top of the defaults; resolves once every gateway is
 * ready and every instance is free.
 */
export async function startQueueStack(options: {
  instances: number;
  gateways: number;
  env?: Record<string, string>;
  /** A PostgreSQL database for the gateways (`LEASE_DB_URL`) instead of a SQLite file. */
  leaseDbUrl?: string;
}): Promise<QueueStack> {
  const dir = await mkdtemp(join(tmpdir(), "queue-stack-"));
  const dbPath = join(dir, "leases.db");
  const reader = options.leaseDbUrl === undefined ? undefined : new pg.Pool({ connectionString: options.leaseDbUrl, max: 1 });
  const pool = await startLeanPool(options.instances);
  const gateways: GatewayProcess[] = [];
  const adminToken = (await newSession("admin")).token;
  const start = async (id: string): Promise<GatewayProcess> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await startGatewayFor(pool.addresses, {
          LEASE_DB_PATH: dbPath,
          LEASE_DB_SYNCHRONOUS: "NORMAL",
          ...(options.leaseDbUrl !== undefined ? { LEASE_DB_URL: options.leaseDbUrl } : {}),
          GATEWAY_ID: id,
          HEALTH_CHECK_INTERVAL: "100ms",
          ...options.env,
        });
      } catch (error) {
        // The free port it picked was taken before it listened (other processes share the machine).
        if (attempt >= 3 || !String(error).includes("EADDRINUSE")) throw error;
      }
    }
  };
  const stack: QueueStack = {
    pool,
    gateways,
    dbPath,
    ...(options.leaseDbUrl !== undefined ? { leaseDbUrl: options.leaseDbUrl } : {}),
    admin(i = 0) {
      const gateway = gateways[i] as GatewayProcess;
      return {
        client: createClient(AdminService, createGrpcTransport({ baseUrl: `http://${gateway.address}` })),
        headers: { authorization: adminToken },
      };
    },
    snapshot() {
      if (reader !== undefined) throw new Error("snapshot() reads SQLite; use rows() on PostgreSQL");
      const db = new Database(dbPath, { readonly: true, fileMustExist: true });
      try {
        return {
          leases: db.prepare("SELECT session_id, instance_address FROM leases").all() as { session_id: string; instance_address: string }[],
          instances: db.prepare("SELECT address, session_id, clean, healthy FROM instances").all() as {
            address: string;
            session_id: string | null;
            clean: number;
            healthy: number;
          }[],
        };
      } finally {
        db.close();
      }
    },
    async rows() {
      if (reader === undefined) return stack.snapshot();
      const leases = (await reader.query("SELECT session_id, instance_address FROM leases")).rows;
      const instances = (await reader.query("SELECT address, session_id, clean::int AS clean, healthy::int AS healthy FROM instances"))
        .rows;
      return { leases, instances };
    },
    warnings(n = 40) {
      return gateways
        .flatMap((g) => g.output().split("\n"))
        .filter((l) => (/"level":(40|50|60)/.test(l) || l.startsWith("QUDEBUG")) && !l.includes("JWT_SECRET"))
        .slice(-n)
        .join("\n");
    },
    async addGateway(id) {
      const gateway = await start(id);
      gateways.push(gateway);
      return gateway;
    },
    async stop() {
      await Promise.all(gateways.map((g) => g.stop()));
      await reader?.end();
      await pool.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    for (let i = 1; i <= options.gateways; i++) gateways.push(await start(`gw-${i}`));
    await waitUntil(
      async () =>
        (await stack.rows()).instances.filter((r) => r.session_id === null && r.clean === 1 && r.healthy === 1).length ===
        options.instances,
      20_000,
      "every instance free and allocatable",
    );
  } catch (error) {
    await stack.stop();
    throw error;
  }
  return stack;
}

/** What an instance itself says it holds (its status call): boot id and bound session (`""` when none). */
export function instanceStatus(address: string): Promise<{ bootId: string; sessionId: string; shuttingDown: boolean }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${address}`);
    session.on("error", reject);
    const stream = session.request({
      ":method": "POST",
      ":path": "/myservice.instance.v1.InstanceService/GetStatus",
      "content-type": "application/grpc",
    });
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("error", reject);
    stream.on("close", () => {
      session.close();
      const body = firstMessage(Buffer.concat(chunks));
      if (body === undefined) reject(new Error(`no status from ${address}`));
      else resolve(fromBinary(GetStatusResponseSchema, body));
    });
    stream.end(frameMessage(new Uint8Array(0)));
  });
}

/**
 * For the current suite: a queue stack started before its tests and stopped after them, and a
 * raw client with `connections` connections to each of its gateways.
 */
export function useQueueStack(
  options: Parameters<typeof startQueueStack>[0],
  connections = 8,
): { stack(): QueueStack; clients(): RawClient[] } {
  let stack: QueueStack | undefined;
  let clients: RawClient[] = [];
  before(async () => {
    stack = await startQueueStack(options);
    clients = stack.gateways.map((g) => new RawClient(g.address, connections));
  });
  after(async () => {
    for (const c of clients) c.close();
    await stack?.stop();
  });
  return {
    stack: () => {
      if (stack === undefined) throw new Error("the suite's before() hook has not run");
      return stack;
    },
    clients: () => clients,
  };
}

/** Fills every instance: `count` new sessions, each leasing one through `client`. */
export async function holdEveryInstance(client: RawClient, count: number): Promise<TestSession[]> {
  const holders: TestSession[] = [];
  for (let i = 0; i < count; i++) {
    const s = await newSession("holder");
    const result = await client.call(echoPath, s.headers);
    if (result.code !== 0) throw new Error(`holder ${i + 1} of ${count}: ${result.code} ${result.message}`);
    holders.push(s);
  }
  return holders;
}

/** Polls `predicate` every 20 ms until it holds; throws after `timeoutMs`. */
export async function waitUntil(predicate: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
