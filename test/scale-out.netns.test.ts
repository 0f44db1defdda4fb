// Several hosts (issue 12, SPEC 10): PostgreSQL, two gateways and the instances each in a network
// namespace of their own, with their own addresses on a bridge (veth pairs). Cutting one
// gateway's link leaves the other serving every session; restoring it, it rejoins without a
// lease held twice. Needs root and iproute2 (CI has both); skipped with the reason elsewhere.
// Every namespace and link is named with the prefix `sc` and removed in `after`, also when a
// test fails, and leftovers of an earlier run are removed first.
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import pg from "pg";
import { devJwtSecret } from "../common/dev-defaults.js";
import { initPostgres, postgresBinDir, postgresInstalled } from "../scripts/postgres-server.js";
import { repoRoot } from "../scripts/up-control-client.js";
import { type GatewayClient, gatewayClient } from "./e2e-client.js";
import { figure, instanceStatus, mintHeaders, outcome, sleep, usersFile } from "./reliability/helpers.js";

const run = promisify(execFile);
const subnet = "10.212.77";
const bridge = "scbr0";
const hosts = { db: 2, gw1: 3, gw2: 4, inst: 5 } as const;
type Host = keyof typeof hosts;
const ns = (h: Host) => `sc-${h}`;
const ip = (h: Host) => `${subnet}.${hosts[h]}`;
const instancePorts = [5001, 5002, 5003, 5004];

function skipReason(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (network namespaces)";
  if (!existsSync("/usr/sbin/ip") && !existsSync("/sbin/ip") && !existsSync("/usr/bin/ip")) return "needs iproute2 (ip)";
  if (!postgresInstalled()) return "needs the PostgreSQL server programs";
  return undefined;
}
const skip = skipReason();
if (skip !== undefined && process.env.CI) throw new Error(`CI needs the several-hosts test: ${skip}`);

async function sh(...args: string[]): Promise<void> {
  await run(args[0] as string, args.slice(1));
}

/** Removes every namespace and link of this test (prefix `sc`), ignoring what is not there. */
async function removeTopology(): Promise<void> {
  const { stdout } = await run("ip", ["netns", "list"]).catch(() => ({ stdout: "" }));
  for (const name of stdout.split("\n").map((l) => l.split(" ")[0] ?? "")) {
    if (/^sc-/.test(name)) await sh("ip", "netns", "del", name).catch(() => {});
  }
  const { stdout: links } = await run("ip", ["-o", "link", "show"]).catch(() => ({ stdout: "" }));
  for (const m of links.matchAll(/^\d+: (sc[^:@]+)[:@]/gm)) await sh("ip", "link", "del", m[1] as string).catch(() => {});
}

async function createTopology(): Promise<void> {
  await sh("ip", "link", "add", bridge, "type", "bridge");
  await sh("ip", "addr", "add", `${subnet}.1/24`, "dev", bridge);
  await sh("ip", "link", "set", bridge, "up");
  for (const h of Object.keys(hosts) as Host[]) {
    await sh("ip", "netns", "add", ns(h));
    await sh("ip", "link", "add", `sc-${h}-h`, "type", "veth", "peer", "name", `sc-${h}-n`);
    await sh("ip", "link", "set", `sc-${h}-h`, "master", bridge, "up");
    await sh("ip", "link", "set", `sc-${h}-n`, "netns", ns(h));
    await sh("ip", "-n", ns(h), "addr", "add", `${ip(h)}/24`, "dev", `sc-${h}-n`);
    await sh("ip", "-n", ns(h), "link", "set", `sc-${h}-n`, "up");
    await sh("ip", "-n", ns(h), "link", "set", "lo", "up");
  }
}

/** A process inside a namespace; `restart` keeps an instance coming back after it exits (Shutdown, recycle). */
function inNamespace(h: Host, command: string, args: string[], env: Record<string, string>, restart = false) {
  let child: ChildProcess | undefined;
  let stopped = false;
  let out = "";
  const start = () => {
    const c = spawn("ip", ["netns", "exec", ns(h), command, ...args], {
      cwd: repoRoot,
      env: { ...process.env, NODE_TEST_CONTEXT: undefined, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child = c;
    const collect = (chunk: Buffer) => {
      out = (out + chunk.toString()).slice(-100_000);
    };
    c.stdout?.on("data", collect);
    c.stderr?.on("data", collect);
    c.once("exit", () => {
      if (restart && !stopped) setTimeout(start, 50);
    });
  };
  start();
  return {
    output: () => out,
    async stop() {
      stopped = true;
      const c = child;
      if (c === undefined || c.exitCode !== null || c.signalCode !== null) return;
      const exited = new Promise((resolve) => c.once("exit", resolve));
      c.kill("SIGKILL");
      await exited;
    },
  };
}

const node = (script: string) => ["--import", "tsx", join(repoRoot, script)];

describe("scale-out across hosts (network namespaces)", { skip }, () => {
  const processes: { stop(): Promise<void>; output(): string }[] = [];
  const clients: GatewayClient[] = [];
  let dir = "";
  const url = `postgres://postgres@${ip("db")}:5432/postgres`;
  const gatewayUrl = (h: "gw1" | "gw2") => `http://${ip(h)}:10000`;

  before(async () => {
    await removeTopology();
    await createTopology();
    dir = mkdtempSync(join(tmpdir(), "sc-pg-"));
    await initPostgres(dir);
    const postgres = join(postgresBinDir, "postgres");
    processes.push(
      inNamespace(
        "db",
        "runuser",
        [
          "-u",
          "postgres",
          "--",
          postgres,
          "-D",
          join(dir, "pgdata"),
          "-p",
          "5432",
          "-k",
          join(dir, "socket"),
          "-c",
          `listen_addresses=${ip("db")}`,
        ],
        {},
      ),
    );
    for (const [i, port] of instancePorts.entries()) {
      processes.push(
        inNamespace(
          "inst",
          process.execPath,
          node("myservice/main.ts"),
          {
            JWT_SECRET: devJwtSecret,
            SERVICE_PORT_GRPC: String(port),
            LISTEN_HOST: ip("inst"),
            HOSTNAME: `host-pod-${i + 1}`,
            LOG_LEVEL: "warn",
          },
          true,
        ),
      );
    }
    for (const h of ["gw1", "gw2"] as const) {
      processes.push(
        inNamespace(h, process.execPath, node("gateway/main.ts"), {
          JWT_SECRET: devJwtSecret,
          USERS_FILE: usersFile,
          LEASE_DB_URL: url,
          GATEWAY_ID: h,
          MYSERVICE_ADDRESSES: instancePorts.map((p) => `${ip("inst")}:${p}`).join(","),
          SERVICE_PORT_GRPC: "10000",
          LISTEN_HOST: "0.0.0.0",
          HEALTH_CHECK_INTERVAL: "250ms",
          HEALTH_CHECK_TIMEOUT: "500ms",
          LEASE_DB_STATEMENT_TIMEOUT: "2s",
          // Gateway 1 logs its view of the membership (info), which the test reads.
          LOG_LEVEL: h === "gw1" ? "info" : "warn",
        }),
      );
    }
    // Ready: both gateways answer /readyz (store connected, an instance healthy) and every
    // instance is free and clean in the shared store.
    const deadline = Date.now() + 90_000;
    for (;;) {
      const ready = await Promise.all(
        (["gw1", "gw2"] as const).map((h) =>
          fetch(`${gatewayUrl(h)}/readyz`).then(
            (r) => r.ok,
            () => false,
          ),
        ),
      );
      if (ready.every(Boolean) && (await freeInstances()) === instancePorts.length) break;
      if (Date.now() > deadline) throw new Error(`not ready:\n${processes.map((p) => p.output().slice(-2000)).join("\n---\n")}`);
      await sleep(250);
    }
  });

  after(async () => {
    for (const c of clients) c.close();
    for (const p of processes.reverse()) await p.stop().catch(() => {});
    // The server as the postgres user may outlive `ip netns exec`'s child: stop it by its data folder.
    await run("runuser", [
      "-u",
      "postgres",
      "--",
      join(postgresBinDir, "pg_ctl"),
      "-D",
      join(dir, "pgdata"),
      "-m",
      "immediate",
      "stop",
    ]).catch(() => {});
    await removeTopology();
    if (dir !== "") rmSync(dir, { recursive: true, force: true });
  });

  async function query<R extends pg.QueryResultRow>(text: string): Promise<R[]> {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
    await client.connect();
    try {
      return (await client.query<R>(text)).rows;
    } finally {
      await client.end();
    }
  }

  async function freeInstances(): Promise<number> {
    return query<{ n: number }>(
      "SELECT COUNT(*)::int AS n FROM instances WHERE session_id IS NULL AND healthy AND clean AND NOT draining",
    ).then(
      (rows) => rows[0]?.n ?? 0,
      () => 0,
    );
  }

  it("serves every session through one gateway while the other's link is cut, and the other rejoins without double leases", async () => {
    const one = gatewayClient(gatewayUrl("gw1"));
    const two = gatewayClient(gatewayUrl("gw2"));
    clients.push(one, two);
    // Four sessions, two leased through each gateway.
    const sessions = await Promise.all(
      [0, 1, 2, 3].map(async (i) => {
        const id = `hosts-${i}-${Date.now()}`;
        const headers = await mintHeaders(devJwtSecret, id);
        const r = await (i % 2 ? two : one).api.myServiceEcho({ value: "lease" }, { headers, timeoutMs: 10_000 });
        return { id, headers, pod: r.podName };
      }),
    );
    assert.equal(new Set(sessions.map((s) => s.pod)).size, 4);

    const gw1 = processes.find((p) => p.output().includes('"gatewayId":"gw1"'));
    const logBeforeCut = gw1?.output().length ?? 0;
    await sh("ip", "link", "set", "sc-gw2-h", "down");
    const cutAt = Date.now();
    // Through gateway 1, every session (also those leased through gateway 2) stays on its pod,
    // for longer than the membership needs to drop gateway 2 and hand its probes over.
    const failures: string[] = [];
    while (Date.now() - cutAt < 4000) {
      for (const s of sessions) {
        const r = await outcome(one.api.myServiceEcho({ value: "cut" }, { headers: s.headers, timeoutMs: 5000 }));
        if (r.code !== 0) failures.push(`${s.id}: ${r.code} ${r.message}`);
        else if ((r.value as { podName: string }).podName !== s.pod) failures.push(`${s.id} moved`);
      }
      await sleep(100);
    }
    assert.deepEqual(failures, []);
    // Gateway 1's own view: gateway 2 left the live membership (so gateway 1 probes its share).
    assert.match(
      (gw1?.output() ?? "").slice(logBeforeCut),
      /live gateways changed[^\n]*"gateways":\["gw1"\]|"gateways":\["gw1"\][^\n]*live gateways changed/,
    );

    await sh("ip", "link", "set", "sc-gw2-h", "up");
    const back = Date.now();
    // Gateway 2 serves every session again on its pod, once its link is back.
    for (const s of sessions) {
      let r: Awaited<ReturnType<typeof outcome>> = { code: -1, message: "" };
      while (Date.now() - back < 20_000) {
        r = await outcome(two.api.myServiceEcho({ value: "back" }, { headers: s.headers, timeoutMs: 5000 }));
        if (r.code === 0) break;
        await sleep(200);
      }
      assert.equal(r.code, 0, `${s.id} through gateway 2 after the link came back: ${r.message}`);
      assert.equal((r.value as { podName: string }).podName, s.pod);
    }
    figure(`several hosts: link of gateway 2 cut for 4 s, 0 failures through gateway 1; gateway 2 back in ${Date.now() - back} ms`);
    const leases = await query<{ session_id: string; instance_address: string }>("SELECT session_id, instance_address FROM leases");
    assert.equal(leases.length, 4);
    assert.equal(new Set(leases.map((l) => l.instance_address)).size, 4, "no instance leased twice");
    for (const l of leases) assert.equal((await instanceStatus(l.instance_address)).sessionId, l.session_id);
    for (const s of sessions) await one.api.myServiceShutdown({}, { headers: s.headers });
  });
});
