// Never leak, the late case (SPEC 11): a waiter's grant was claimed and its call already reached
// the instance, then the client cancels before the answer. The gateway gives the lease back and
// recycles the instance, which may have bound the session. A recording instance in the test
// process answers Echo slowly so the cancel lands in that window every time.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AdminService } from "../../gen/mygateway/admin/v1/admin_pb.js";
import { FakeInstance, withGatewayFor } from "../fake-instance.js";
import { echoPath, newSession, RawClient, waitUntil } from "./queue-stack.js";

describe("waiting room: a waiter that leaves after its grant reached the instance", () => {
  const fake = new FakeInstance("fake-slow");
  const suite = withGatewayFor(fake, { HEALTH_CHECK_INTERVAL: "100ms", HEALTH_FULL_CHECK_INTERVAL: "100ms" });

  it("releases the lease and recycles the instance when the call is cancelled before its answer", async (t) => {
    const address = suite.gateway().address;
    const client = new RawClient(address, 1);
    t.after(() => client.close());
    const admin = createClient(AdminService, createGrpcTransport({ baseUrl: `http://${address}` }));
    const holder = await newSession("holder");
    const waiter = await newSession("waiter");
    const headers = { authorization: holder.token };
    assert.equal((await client.call(echoPath, holder.headers)).code, 0);

    const abort = new AbortController();
    const waiting = client.call(echoPath, { ...waiter.headers, "x-wait-for-instance": "10s" }, "w", { signal: abort.signal });
    await waitUntil(async () => (await admin.listQueue({}, { headers })).length === 1, 5000, "queued");
    // Free the instance: the operator releases the holder; the fake then reports no session on a
    // new boot, as the instance restarted by the release's recycle would (an instance is leased
    // to another session only after a new boot: the lease store's fence).
    fake.echoDelayMs = 3000;
    fake.reportedSession = "";
    fake.bootId = "boot-after-recycle";
    await admin.releaseSession({ sessionId: holder.id }, { headers });
    await waitUntil(() => fake.calls.some((h) => h["session-id"] === waiter.id), 5000, "the waiter's Echo reached the instance");
    const leased = (await admin.listSessions({}, { headers })).sessions.map((s) => s.sessionId);
    assert.deepEqual(leased, [waiter.id], "granted and claimed");
    const shutdowns = fake.counts.shutdowns;
    abort.abort();
    assert.equal((await waiting).code, -1);
    await waitUntil(async () => (await admin.listSessions({}, { headers })).sessions.length === 0, 5000, "the lease given back");
    await waitUntil(() => fake.counts.shutdowns > shutdowns, 5000, "the instance recycled on the waiter's behalf");
    const metrics = await (await fetch(`http://${address}/metrics`)).text();
    assert.match(metrics, /^mygateway_leases_revoked_total\{reason="abandoned"\} 1$/m);
  });
});
