// Contention (issue 7): 500 new sessions race for the free instances at once, through one
// gateway and through two gateway processes sharing one database file. Exactly as many win as
// instances were free, on distinct pods; every other one gets RESOURCE_EXHAUSTED; no
// `Session conflict` reaches a client; the instances agree with the database.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { type GatewayClient, gatewayClient } from "../e2e-client.js";
import { type Stack, startStack } from "../stack.js";
import {
  checkDatabase,
  codeName,
  countBy,
  figure,
  instanceAddresses,
  instanceStatus,
  mintHeaders,
  type OwnGateway,
  outcome,
  settle,
  spawnGateway,
  usersFile,
} from "./helpers.js";

const instances = 6;
const racers = Number(process.env.CONTENTION_SESSIONS ?? 500);

describe("contention: sessions racing for the free instances", () => {
  let stack: Stack;
  let second: OwnGateway | undefined;
  const clients: GatewayClient[] = [];
  before(async () => {
    stack = await startStack({
      instances,
      env: { USERS_FILE: usersFile, HEALTH_CHECK_INTERVAL: "250ms", HEALTH_CHECK_TIMEOUT: "500ms" },
    });
  });
  after(async () => {
    for (const c of clients) c.close();
    await second?.kill();
    await stack?.stop();
  });

  async function race(label: string, urls: readonly string[]) {
    await settle(stack);
    const free = instances;
    // Several HTTP/2 connections per gateway, as many independent clients would use.
    const conns = urls.flatMap((url) => Array.from({ length: 4 }, () => gatewayClient(url)));
    clients.push(...conns);
    const sessions = await Promise.all(
      Array.from({ length: racers }, async (_, i) => {
        const id = `race-${label}-${i}-${Math.random().toString(36).slice(2, 8)}`;
        return { id, headers: await mintHeaders(stack.jwtSecret, id) };
      }),
    );
    const started = performance.now();
    const results = await Promise.all(
      sessions.map((s, i) =>
        outcome(conns[i % conns.length]!.api.myServiceEcho({ value: s.id }, { headers: s.headers, timeoutMs: 20_000 })).then((r) => ({
          s,
          r,
        })),
      ),
    );
    const ms = Math.round(performance.now() - started);
    const counts = countBy(results, ({ r }) => codeName(r.code));
    figure(
      `contention[${label}]: ${racers} sessions raced for ${free} free instances in ${ms} ms via ${urls.length} gateway(s): ${JSON.stringify(counts)}`,
    );

    const winners = results.filter(({ r }) => r.code === 0);
    const losers = results.filter(({ r }) => r.code !== 0);
    for (const { r } of results) assert.doesNotMatch(r.message, /Session conflict/, "no Session conflict reaches a client");
    assert.equal(winners.length, free, `exactly ${free} winners: ${JSON.stringify(counts)}`);
    for (const { r } of losers) {
      assert.deepEqual({ code: r.code, message: r.message }, { code: Code.ResourceExhausted, message: "all instances are busy" });
    }
    const pods = winners.map(({ r }) => r.value!.podName);
    assert.equal(new Set(pods).size, free, `winners on distinct pods: ${pods}`);
    for (const { s, r } of winners) {
      assert.equal(r.value!.serverSessionId, s.id, "the instance is bound to the winner's own session");
      assert.equal(r.value!.clientSessionId, s.id);
      assert.equal(r.value!.clientValue, s.id);
    }

    // The database and the instances tell the same story.
    const db = checkDatabase(join(stack.dataDir, "leases.db"));
    assert.equal(db.leases.length, free);
    assert.deepEqual(new Set(db.leases.map((l) => l.session_id)), new Set(winners.map(({ s }) => s.id)));
    for (const address of await instanceAddresses(stack)) {
      const status = await instanceStatus(address);
      const lease = db.leases.find((l) => l.instance_address === address);
      assert.ok(lease, `instance ${address} is leased`);
      assert.equal(status.sessionId, lease.session_id, `instance ${address} holds exactly the session its lease names`);
      assert.equal(status.podName, lease.pod_name);
    }
    // A second call of every winner stays on its pod.
    for (const [i, { s, r }] of winners.entries()) {
      const again = await conns[i % conns.length]!.api.myServiceEcho({ value: "again" }, { headers: s.headers });
      assert.equal(again.podName, r.value!.podName);
    }
    for (const [i, { s }] of winners.entries()) await conns[i % conns.length]!.api.myServiceShutdown({}, { headers: s.headers });
    figure(
      `contention[${label}]: ${winners.length} winners on ${new Set(pods).size} distinct pods, ${losers.length} RESOURCE_EXHAUSTED, 0 Session conflict; DB and GetStatus of all ${free} instances agree`,
    );
  }

  it(`gives ${instances} of ${racers} racing sessions an instance through one gateway, the rest RESOURCE_EXHAUSTED`, async () => {
    await race("1gw", [stack.gatewayUrl]);
  });

  it(`does the same with two gateway processes sharing one database file`, async () => {
    second = await spawnGateway(stack);
    await second.ready();
    await race("2gw", [stack.gatewayUrl, second.url]);
    await race("2gw-again", [second.url, stack.gatewayUrl]);
  });
});
