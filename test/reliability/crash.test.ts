// Crash safety (issue 7): kill -9 of the gateway at random points during churn (Login, Echo,
// Shutdown, expiry with a short TTL), many times in a row. After each kill the database is
// consistent, and after each restart every session that had a confirmed lease still routes
// to its pod (unless it was shut down or abandoned to expiry), and its instance agrees.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { transferHeaders } from "../../gateway/routing/session-router.js";
import { pickFreePorts } from "../../scripts/net-util.js";
import { type GatewayClient, gatewayClient } from "../e2e-client.js";
import { type Stack, startStack } from "../stack.js";
import {
  checkDatabase,
  codeName,
  figure,
  instanceStatus,
  type OwnGateway,
  outcome,
  seeded,
  sleep,
  spawnGateway,
  usersFile,
} from "./helpers.js";

const kills = Number(process.env.CRASH_KILLS ?? 10);
const seed = Number(process.env.CRASH_SEED ?? 7);
const ttl = "4s";

interface Tracked {
  readonly id: string;
  headers: Record<string, string>;
  /** Pod of the last successful reply (a confirmed lease). */
  pod?: string;
  /** Shutdown was sent (it may have completed even if the reply was lost). */
  shutdown: boolean;
  /** Left idle on purpose: its lease expires and its instance is recycled. */
  abandoned: boolean;
}

describe("crash safety: kill -9 of the gateway during churn", () => {
  let stack: Stack;
  let gateway: OwnGateway | undefined;
  let port: number;
  const clients: GatewayClient[] = [];
  before(async () => {
    stack = await startStack({
      instances: 6,
      env: { USERS_FILE: usersFile, HEALTH_CHECK_INTERVAL: "250ms", HEALTH_CHECK_TIMEOUT: "500ms", LEASE_IDLE_TTL: ttl },
    });
    // The launcher's gateway is held stopped: this test owns the one gateway and its kills.
    await stack.control("gateway", "stop");
    [port] = (await pickFreePorts(1)) as [number];
  });
  after(async () => {
    for (const c of clients) c.close();
    await gateway?.kill();
    await stack?.stop();
  });

  it(`loses no lease and never leases an instance twice across ${kills} kills`, async () => {
    const rnd = seeded(seed);
    const dbPath = join(stack.dataDir, "leases.db");
    const start = async (synchronous: "FULL" | "NORMAL") => {
      gateway = await spawnGateway(stack, { LEASE_IDLE_TTL: ttl, LEASE_DB_SYNCHRONOUS: synchronous }, port);
      await gateway.ready();
    };
    await start("FULL");
    const url = `http://127.0.0.1:${port}`;
    const sessions: Tracked[] = [];
    const inflight = { login: 0, echo: 0, shutdown: 0 };
    const ops = { login: 0, echo: 0, shutdown: 0, abandoned: 0, failed: {} as Record<string, number> };
    let paused = false;
    let stopping = false;
    let busyWorkers = 0;

    async function worker(w: number) {
      const r = seeded(seed * 100 + w);
      let client = gatewayClient(url);
      clients.push(client);
      let s: Tracked | undefined;
      while (!stopping) {
        if (paused) {
          await sleep(20);
          continue;
        }
        busyWorkers++;
        try {
          if (s === undefined) {
            const id = `crash-${w}-${sessions.length}-${r.int(1e9)}`;
            inflight.login++;
            const res = await outcome(
              client.api.login({ username: "TestUser", password: "TestPassword", sessionId: id }, { timeoutMs: 5000 }),
            );
            inflight.login--;
            if (res.code === 0) {
              ops.login++;
              s = { id, headers: { authorization: res.value!.token, "session-id": id }, shutdown: false, abandoned: false };
              sessions.push(s);
            } else ops.failed[`login ${codeName(res.code)}`] = (ops.failed[`login ${codeName(res.code)}`] ?? 0) + 1;
          } else {
            const roll = r.next();
            if (s.pod !== undefined && roll < 0.1) {
              s.shutdown = true;
              inflight.shutdown++;
              const res = await outcome(client.api.myServiceShutdown({}, { headers: s.headers, timeoutMs: 5000 }));
              inflight.shutdown--;
              if (res.code === 0) ops.shutdown++;
              s = undefined;
            } else if (s.pod !== undefined && roll < 0.14) {
              s.abandoned = true;
              ops.abandoned++;
              s = undefined;
            } else {
              const current = s;
              inflight.echo++;
              const res = await outcome(client.api.myServiceEcho({ value: "c" }, { headers: current.headers, timeoutMs: 5000 }));
              inflight.echo--;
              if (res.code === 0) {
                ops.echo++;
                assert.equal(res.value!.serverSessionId, current.id, "an instance only ever serves its own session");
                current.pod = res.value!.podName;
              } else {
                assert.doesNotMatch(res.message, /Session conflict/);
                const key = `echo ${codeName(res.code)}${res.code === Code.Aborted ? ` ${res.message}` : ""}`;
                ops.failed[key] = (ops.failed[key] ?? 0) + 1;
                if (res.code === Code.ResourceExhausted) await sleep(150);
                if (res.code === -1 || res.code === Code.Unavailable) {
                  // The connection died with the gateway: a fresh one.
                  client.close();
                  client = gatewayClient(url);
                  clients.push(client);
                }
              }
            }
          }
        } finally {
          busyWorkers--;
        }
        await sleep(20 + r.int(80));
      }
    }

    const workers = [1, 2, 3, 4].map((w) => worker(w));
    let checked = 0;
    let instanceChecks = 0;
    const inflightAtKill: string[] = [];
    const restartMs: number[] = [];
    try {
      for (let k = 1; k <= kills; k++) {
        await sleep(200 + rnd.int(1000));
        inflightAtKill.push(`${inflight.login}/${inflight.echo}/${inflight.shutdown}`);
        await gateway!.kill("SIGKILL");
        paused = true;
        const deadline = Date.now() + 10_000;
        while (busyWorkers > 0 && Date.now() < deadline) await sleep(10);
        // With the gateway dead, the file on disk is consistent.
        checkDatabase(dbPath);
        const mustStay = sessions.filter((s) => s.pod !== undefined && !s.shutdown && !s.abandoned);
        const restartAt = performance.now();
        await start(k % 2 === 0 ? "NORMAL" : "FULL");
        restartMs.push(Math.round(performance.now() - restartAt));
        const db = checkDatabase(dbPath);
        const check = gatewayClient(url);
        try {
          for (const s of mustStay) {
            const lease = db.leases.find((l) => l.session_id === s.id);
            assert.ok(lease, `kill ${k}: the confirmed lease of ${s.id} on ${s.pod} survived`);
            assert.equal(lease.pod_name, s.pod, `kill ${k}: ${s.id} still on its pod in the database`);
            const status = await instanceStatus(lease.instance_address);
            assert.equal(status.sessionId, s.id, `kill ${k}: instance ${lease.pod_name} holds ${s.id}`);
            instanceChecks++;
            const res = await outcome(
              check.api.myServiceEcho(
                { value: "after" },
                { headers: s.headers, onHeader: (h) => assert.equal(h.get(transferHeaders.reason), null) },
              ),
            );
            assert.equal(res.code, 0, `kill ${k}: ${s.id} answered (${res.code} ${res.message})`);
            assert.equal(res.value!.podName, s.pod, `kill ${k}: ${s.id} routes to its pod after restart`);
            assert.equal(res.value!.serverSessionId, s.id);
            checked++;
          }
        } finally {
          check.close();
        }
        paused = false;
      }
    } finally {
      stopping = true;
      paused = false;
      await Promise.all(workers);
    }
    const db = checkDatabase(dbPath);
    const active = sessions.filter((s) => s.pod !== undefined && !s.shutdown && !s.abandoned);
    const c = gatewayClient(url);
    for (const s of active) await outcome(c.api.myServiceShutdown({}, { headers: s.headers }));
    c.close();
    figure(
      `crash: ${kills} kill -9 survived (seed ${seed}; synchronous FULL and NORMAL alternating); in flight at each kill (login/echo/shutdown): ${inflightAtKill.join(" ")}; restart to listening (ms): ${restartMs.join(" ")}`,
    );
    figure(
      `crash: ${sessions.length} sessions, ${ops.login} logins, ${ops.echo} echoes, ${ops.shutdown} shutdowns, ${ops.abandoned} abandoned to expiry; failures ${JSON.stringify(ops.failed)}`,
    );
    figure(
      `crash: ${checked} confirmed leases re-checked after restarts (${instanceChecks} instance GetStatus), 0 lost, 0 instances leased twice; final DB ${db.leases.length} leases consistent`,
    );
    assert.ok(ops.echo > 50, "churn actually happened");
  });
});
