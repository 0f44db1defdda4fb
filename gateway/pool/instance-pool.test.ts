import assert from "node:assert/strict";
import { createServer } from "node:net";
import { describe, it } from "node:test";
import { createLogger } from "../../common/logger.js";
import { SqliteLeaseStore } from "../leases/sqlite-lease-store.js";
import { UpstreamPool } from "../proxy/upstream-pool.js";
import { staticDiscovery } from "./discovery.js";
import { InstancePool } from "./instance-pool.js";

/** A loopback port nothing listens on: every probe of it is refused. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe("InstancePool with a shared probing membership", () => {
  it("does not keep an instance down on its own old failures once another gateway probes it", async (t) => {
    const address = `127.0.0.1:${await closedPort()}`;
    const store = new SqliteLeaseStore({ path: ":memory:", checkpointIntervalMs: 0 });
    const upstream = new UpstreamPool({ connectTimeoutMs: 200 });
    t.after(async () => {
      upstream.close();
      await store.close();
    });
    // Membership under the test's control: first this gateway alone, then another that wins the
    // rendezvous for the instance (the ids are tried until one wins it).
    let live: string[] = ["me"];
    const membership = { id: "me", liveIds: () => live };
    const pool = new InstancePool({
      store,
      upstream,
      discovery: staticDiscovery([address]),
      membership,
      healthIntervalMs: 60_000, // rounds are driven by the test
      healthTimeoutMs: 200,
      failureThreshold: 1,
      discoveryIntervalMs: 60_000,
      systemToken: async () => "unused",
      logger: createLogger({ name: "test", level: "silent", format: "json" }),
    });
    t.after(() => pool.stop());
    await pool.start(); // one round: refused, declared dead by this gateway
    assert.equal(pool.probesItself(address), true);
    assert.equal(pool.isDown(address), true);

    for (let i = 0; i < 1000 && pool.probesItself(address); i++) live = ["me", `other-${i}`].sort();
    assert.equal(pool.probesItself(address), false, "no other gateway id won the rendezvous");
    // The other gateway now probes it and publishes it healthy and leased in the store.
    await store.recordStatus(address, { podName: "p", bootId: "b", sessionId: "", shuttingDown: false });
    await store.acquire("s1", "u", 60_000);
    await (pool as unknown as { probeAll(): Promise<void> }).probeAll(); // reads the store again
    assert.equal(pool.isDown(address), false, "a stale local verdict kept the instance down");

    // The share comes back: the first round starts from a full probe, not from old failures.
    live = ["me"];
    assert.equal(pool.probeState(address)?.consecutiveFailures, 0);
    assert.equal(pool.probeState(address)?.lastFullProbeAt, 0);
  });
});
