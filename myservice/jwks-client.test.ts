import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { pino } from "pino";
import { jwksOf, publicVerificationKey, type VerificationKey } from "../common/token-keys.js";
import { createCa, issueCertificate } from "../scripts/dev-certs.js";
import { createJwksClient } from "./jwks-client.js";

const logger = pino({ level: "silent" });
const key = () => publicVerificationKey(generateKeyPairSync("ed25519").publicKey);

/** A JWKS endpoint whose keys the test changes; records when each fetch arrived. */
async function jwksServer(tls?: { cert: Buffer; key: Buffer }) {
  const state = { keys: [] as VerificationKey[], status: 200, fetchedAt: [] as number[] };
  const handler = (_req: http.IncomingMessage, res: http.ServerResponse) => {
    state.fetchedAt.push(performance.now());
    res.writeHead(state.status, { "content-type": "application/json" });
    res.end(JSON.stringify(jwksOf(state.keys)));
  };
  const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `${tls ? "https" : "http"}://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
  return { state, url, close: () => server.close() };
}

describe("createJwksClient()", () => {
  it("fetches at start, and again for an unknown kid once the cooldown allows", async (t) => {
    const server = await jwksServer();
    t.after(server.close);
    const k1 = key();
    const k2 = key();
    server.state.keys = [k1];
    const client = createJwksClient({ url: server.url, cooldownMs: 300, refreshIntervalMs: 3_600_000, logger });
    t.after(() => client.stop());
    const seen: string[][] = [];
    client.onKeys((keys) => seen.push(keys.map((k) => k.kid)));
    client.start();
    assert.equal(await client.refreshFor(k1.kid), true, "the first fetch brings k1");
    server.state.keys = [k2, k1]; // the gateway rotated
    const started = performance.now();
    assert.equal(await client.refreshFor(k2.kid), true, "a token of k2 triggers a refresh");
    assert.ok(performance.now() - started >= 250, "not before the cooldown since the last fetch");
    assert.equal(client.fetchCount(), 2);
    assert.deepEqual(seen, [[k1.kid], [k2.kid, k1.kid]]);
    assert.equal(await client.refreshFor(k1.kid), true, "a known kid needs no fetch");
    assert.equal(client.fetchCount(), 2);
  });

  it("bounds the fetch rate: many unknown kids share one fetch per cooldown", async (t) => {
    const server = await jwksServer();
    t.after(server.close);
    server.state.keys = [key()];
    const cooldownMs = 200;
    const client = createJwksClient({ url: server.url, cooldownMs, refreshIntervalMs: 3_600_000, logger });
    t.after(() => client.stop());
    client.start();
    await client.refreshFor(server.state.keys[0]?.kid as string);
    for (let wave = 0; wave < 3; wave++) {
      const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => client.refreshFor(`made-up-${wave}-${i}`)));
      assert.ok(answers.every((a) => a === false));
    }
    assert.equal(server.state.fetchedAt.length, 4, "the start, then one fetch per wave of 100 unknown kids");
    const gaps = server.state.fetchedAt.slice(1).map((at, i) => at - (server.state.fetchedAt[i] as number));
    assert.ok(
      gaps.every((gap) => gap >= cooldownMs - 20),
      `gaps between fetches ${gaps.map((g) => g.toFixed(0)).join(", ")} ms`,
    );
  });

  it("keeps its keys when the gateway fails, and retries at the cooldown until the first fetch succeeds", async (t) => {
    const server = await jwksServer();
    t.after(server.close);
    const k1 = key();
    server.state.keys = [k1];
    server.state.status = 503;
    const client = createJwksClient({ url: server.url, cooldownMs: 100, refreshIntervalMs: 3_600_000, logger });
    t.after(() => client.stop());
    client.start();
    await new Promise((r) => setTimeout(r, 250));
    assert.deepEqual(client.keys(), []);
    server.state.status = 200;
    const deadline = Date.now() + 3000;
    while (client.keys().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(
      client.keys().map((k) => k.kid),
      [k1.kid],
      "retried by itself",
    );
    server.state.status = 500;
    assert.equal(await client.refreshFor("another"), false);
    assert.deepEqual(
      client.keys().map((k) => k.kid),
      [k1.kid],
      "a failed refresh keeps the keys",
    );
  });

  it("fetches over https with a private CA (JWT_JWKS_CA_FILE)", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "jwks-tls-"));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const ca = createCa(dir);
    const cert = issueCertificate(ca, dir, "gateway", { commonName: "localhost", ipAddresses: ["127.0.0.1"] });
    const server = await jwksServer({ cert: readFileSync(cert.cert), key: readFileSync(cert.key) });
    t.after(server.close);
    const k1 = key();
    server.state.keys = [k1];
    const trusting = createJwksClient({
      url: server.url,
      ca: readFileSync(ca.cert),
      cooldownMs: 100,
      refreshIntervalMs: 3_600_000,
      logger,
    });
    t.after(() => trusting.stop());
    assert.equal(await trusting.refreshFor(k1.kid), true);
    const other = createJwksClient({ url: server.url, cooldownMs: 100, refreshIntervalMs: 3_600_000, logger });
    t.after(() => other.stop());
    assert.equal(await other.refreshFor(k1.kid), false, "without the CA the certificate is refused");
  });
});
