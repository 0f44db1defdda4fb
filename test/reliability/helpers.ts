// Shared pieces of the reliability suites: a gateway process of our own, the database
// invariant check, instance status, tokens, RSS, a seeded random generator.
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import Database from "better-sqlite3";
import { issueToken } from "../../common/tokens.js";
import { InstanceService } from "../../gen/myservice/instance/v1/instance_pb.js";
import { canConnect, pickFreePorts } from "../../scripts/net-util.js";
import { repoRoot } from "../../scripts/up-control-client.js";
import type { Stack } from "../stack.js";

export const usersFile = join(repoRoot, "test", "fixtures", "users.json");
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Mulberry32: a tiny seeded generator, so every failure can be replayed with its seed. */
export function seeded(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T,
    bytes: (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(next() * 256))),
  };
}

/** Resident set size of a process, kB (VmRSS of /proc/<pid>/status); 0 when gone. */
export function rssKb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Pid of the stack's gateway process. */
export async function gatewayPid(stack: Stack): Promise<number> {
  const p = (await stack.processes()).find((x) => x.kind === "gateway");
  if (!p?.pid) throw new Error("no gateway pid");
  return p.pid;
}

/** A token as Login would issue it, minted with the stack's secret (Login itself is tested elsewhere). */
export async function mintHeaders(secret: string, sessionId: string, sub = "TestUser", role = "admin") {
  const { token } = await issueToken(secret, { sub, role, session_id: sessionId }, 3_600_000);
  return { authorization: token, "session-id": sessionId };
}

/** A gateway process of our own on the stack's database and instances. */
export interface OwnGateway {
  readonly port: number;
  readonly url: string;
  readonly child: ChildProcess;
  readonly pid: number;
  output(): string;
  /** Resolves when the port accepts connections (reconciliation done); throws after `timeoutMs`. */
  ready(timeoutMs?: number): Promise<void>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export async function instanceAddresses(stack: Stack): Promise<string[]> {
  return (await stack.processes()).filter((p) => p.kind === "myservice").map((p) => `127.0.0.1:${p.port}`);
}

/** Starts `gateway/main.ts` with the stack's environment (same secret, users, database, instances). */
export async function spawnGateway(stack: Stack, env: Record<string, string> = {}, port?: number): Promise<OwnGateway> {
  const gatewayPort = port ?? (await pickFreePorts(1))[0]!;
  const childEnv: Record<string, string | undefined> = {
    ...process.env,
    JWT_SECRET: stack.jwtSecret,
    USERS_FILE: usersFile,
    LEASE_DB_PATH: join(stack.dataDir, "leases.db"),
    MYSERVICE_ADDRESSES: (await instanceAddresses(stack)).join(","),
    SERVICE_PORT_GRPC: String(gatewayPort),
    LISTEN_HOST: "127.0.0.1",
    LOG_LEVEL: "warn",
    HEALTH_CHECK_INTERVAL: "250ms",
    HEALTH_CHECK_TIMEOUT: "500ms",
    ...env,
  };
  delete childEnv.NODE_TEST_CONTEXT;
  const child = spawn(process.execPath, ["--import", "tsx", join(repoRoot, "gateway", "main.ts")], {
    cwd: repoRoot,
    env: childEnv,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const collect = (c: Buffer) => {
    out += c.toString();
    if (out.length > 200_000) out = out.slice(-100_000);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    port: gatewayPort,
    url: `http://127.0.0.1:${gatewayPort}`,
    child,
    pid: child.pid ?? 0,
    output: () => out,
    async ready(timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`gateway exited early:\n${out}`);
        if (await canConnect(gatewayPort, "127.0.0.1", 200)) return;
        await sleep(25);
      }
      throw new Error(`gateway not listening within ${timeoutMs} ms:\n${out}`);
    },
    async kill(signal = "SIGKILL") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      await exited;
    },
  };
}

export interface DbSnapshot {
  readonly leases: { session_id: string; instance_address: string; pod_name: string; owner: string; expires_at: number }[];
  readonly instances: { address: string; pod_name: string; session_id: string | null; healthy: number; clean: number }[];
}

/**
 * Opens the lease database read-only and checks its invariants: every lease's instance row
 * points back to it, no instance is leased twice, leases == instances with a session, and
 * SQLite's own integrity check passes. Throws with the details otherwise.
 */
export function checkDatabase(path: string): DbSnapshot {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    const integrity = db.pragma("integrity_check", { simple: true });
    const snapshot = db.transaction(() => ({
      leases: db.prepare("SELECT session_id, instance_address, pod_name, owner, expires_at FROM leases").all(),
      instances: db.prepare("SELECT address, pod_name, session_id, healthy, clean FROM instances").all(),
    }))() as DbSnapshot;
    const problems: string[] = [];
    if (integrity !== "ok") problems.push(`integrity_check: ${String(integrity)}`);
    const byAddress = new Map(snapshot.instances.map((i) => [i.address, i]));
    const leasedAddresses = new Set<string>();
    for (const l of snapshot.leases) {
      if (leasedAddresses.has(l.instance_address)) problems.push(`instance ${l.instance_address} leased twice`);
      leasedAddresses.add(l.instance_address);
      const row = byAddress.get(l.instance_address);
      if (row === undefined) problems.push(`lease ${l.session_id} on unknown instance ${l.instance_address}`);
      else if (row.session_id !== l.session_id) {
        problems.push(`lease ${l.session_id} on ${l.instance_address}, whose row says ${row.session_id}`);
      }
    }
    const occupied = snapshot.instances.filter((i) => i.session_id !== null);
    if (occupied.length !== snapshot.leases.length) {
      problems.push(`${snapshot.leases.length} leases but ${occupied.length} instances with a session`);
    }
    const sessions = new Set(snapshot.leases.map((l) => l.session_id));
    for (const i of occupied)
      if (!sessions.has(i.session_id as string)) problems.push(`instance ${i.address} holds ${i.session_id} without a lease`);
    if (problems.length > 0) throw new Error(`lease database inconsistent:\n  ${problems.join("\n  ")}`);
    return snapshot;
  } finally {
    db.close();
  }
}

/** `InstanceService/GetStatus` of one instance, straight to its port. */
export async function instanceStatus(address: string) {
  const sessionManager = new Http2SessionManager(`http://${address}`);
  try {
    const client = createClient(InstanceService, createGrpcTransport({ baseUrl: `http://${address}`, sessionManager }));
    return await client.getStatus({}, { timeoutMs: 3000 });
  } finally {
    sessionManager.abort();
  }
}

/** Waits until every instance in the store is free, healthy and clean (recycling done). */
export function settle(stack: Stack, timeoutMs = 20_000): Promise<void> {
  return stack.waitAllFree(timeoutMs);
}

/** Code and message of a failed call (`code` 0 when it succeeded). */
export async function outcome<T>(call: Promise<T>): Promise<{ code: number; message: string; value?: T; metadata?: Headers }> {
  try {
    return { code: 0, message: "", value: await call };
  } catch (error) {
    if (error instanceof ConnectError) return { code: error.code, message: error.rawMessage, metadata: error.metadata };
    return { code: -1, message: String(error) };
  }
}

export function countBy<T>(items: readonly T[], key: (t: T) => string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const item of items) counts[key(item)] = (counts[key(item)] ?? 0) + 1;
  return counts;
}

export const codeName = (code: number) => (code === 0 ? "OK" : code === -1 ? "transport" : (Code[code] ?? String(code)));

/** Prints a figure line the report collects (`# reliability: ...`). */
export function figure(text: string): void {
  process.stdout.write(`reliability: ${text}\n`);
}
