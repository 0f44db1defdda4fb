// The live dashboard (SPEC 9) in headless Chromium against a real stack: log in, see the
// pool, watch a session appear when a client leases an instance, release it from the page,
// watch the waiting room (SPEC 11) fill and drain, drain and undrain an instance. Leaves
// screenshots in test-results/.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { transferHeaders } from "../gateway/routing/session-router.js";
import { AdminService } from "../gen/mygateway/admin/v1/admin_pb.js";
import { echo, type GatewayClient, gatewayClient, login, retryWhile } from "./e2e-client.js";
import { type Stack, startStack } from "./stack.js";

const chromiumPath = "/usr/bin/chromium";
const usersFile = join(import.meta.dirname, "fixtures", "users.json");
const artifacts = join(import.meta.dirname, "..", "test-results");
const capacity = [Code.ResourceExhausted, Code.Unavailable];

/** Polls `predicate` every 100 ms until it holds; fails after `timeoutMs`. */
async function until(predicate: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    assert.ok(Date.now() < deadline, `condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe(
  "dashboard in a browser",
  { skip: existsSync(chromiumPath) || process.env.CI ? false : `needs ${chromiumPath} (apt-get install chromium)` },
  () => {
    let stack: Stack;
    let client: GatewayClient;
    let context: BrowserContext;
    let page: Page;
    let profile: string;
    const pageErrors: string[] = [];

    before(async () => {
      stack = await startStack({ env: { USERS_FILE: usersFile, HEALTH_CHECK_INTERVAL: "250ms", HEALTH_CHECK_TIMEOUT: "500ms" } });
      client = gatewayClient(stack.gatewayUrl);
      profile = await mkdtemp(join(tmpdir(), "dashboard-chromium-"));
      context = await chromium.launchPersistentContext(profile, {
        executablePath: chromiumPath,
        headless: true,
        args: [
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--disable-background-networking",
          "--disable-quic",
          "--no-first-run",
          "--disable-component-update",
          "--disable-sync",
        ],
        viewport: { width: 1280, height: 900 },
      });
      page = context.pages()[0] ?? (await context.newPage());
      page.setDefaultTimeout(15_000);
      page.on("pageerror", (error) => pageErrors.push(error.message));
      page.on("console", (message) => {
        if (message.type() === "error") pageErrors.push(message.text());
      });
      await mkdir(artifacts, { recursive: true });
    });
    after(async () => {
      await context?.close();
      client?.close();
      await stack?.stop();
      if (profile) await rm(profile, { recursive: true, force: true });
    });

    it("refuses a user without role admin", async () => {
      await page.goto(`${stack.gatewayUrl}/`);
      assert.match(page.url(), /\/dashboard$/);
      await page.fill("#username", "OtherUser");
      await page.fill("#password", "OtherPassword");
      await page.click("#login-button");
      await page.locator("#status", { hasText: "needs role admin" }).waitFor();
      assert.equal(await page.isVisible("#app"), false);
    });

    it("logs in and shows the three instances, free and healthy", async () => {
      await page.fill("#username", "TestUser");
      await page.fill("#password", "TestPassword");
      await page.click("#login-button");
      await until(async () => (await page.locator('#instances tbody tr[data-state="FREE"]').count()) === 3);
      const pods = await page.$$eval("#instances tbody tr .pod", (cells) => cells.map((c) => c.textContent).sort());
      assert.deepEqual(pods, ["myservice-1", "myservice-2", "myservice-3"]);
      assert.equal(await page.textContent("#stat-instances"), "3 / 3");
    });

    it("shows a session when a client leases an instance, and releases it from the page", async () => {
      const s = await login(client, "browser");
      const pod = (await retryWhile(capacity, () => echo(client, s))).podName;
      const row = page.locator(`#sessions tbody tr[data-session="${s.id}"]`);
      await row.waitFor();
      assert.equal(await row.locator(".pod").textContent(), pod);
      await page.locator(`#instances tbody tr[data-session="${s.id}"][data-state="LEASED"]`).waitFor();
      await until(async () => Number(await page.textContent("#stat-allocated")) >= 1);
      await page.screenshot({ path: join(artifacts, "dashboard.png"), fullPage: true });

      await row.locator(".release-button").click();
      await row.waitFor({ state: "detached" });
      assert.equal(await page.textContent("#stat-sessions"), "0");
      // The client is told on its next call, and lands on another instance.
      const next = await echo(client, s);
      assert.notEqual(next.podName, pod);
      assert.equal(next.responseHeaders.get(transferHeaders.reason), "admin");
      await page.locator(`#sessions tbody tr[data-session="${s.id}"]`).waitFor();
      await client.api.myServiceShutdown({}, { headers: s.headers });
    });

    it("shows the last minute's allocations and busy rejections as soon as a page opens (counted by the gateway)", async () => {
      // Allocations while no page is open: three sessions take the three instances, a fourth is refused.
      await until(async () => (await page.locator('#instances tbody tr[data-state="FREE"]').count()) === 3);
      const sessions = [];
      for (let i = 0; i < 3; i++) {
        const s = await login(client, `minute-${i}`);
        await retryWhile(capacity, () => echo(client, s));
        sessions.push(s);
      }
      const refused = await login(client, "minute-busy");
      await assert.rejects(echo(client, refused), (e: { code?: number }) => e.code === Code.ResourceExhausted);
      const admin = createClient(AdminService, createGrpcTransport({ baseUrl: stack.gatewayUrl }));
      const stats = await admin.getPoolStats({}, { headers: { authorization: sessions[0]?.token ?? "" } });
      // A page opened now (a reload forgets everything the page saw) shows them on its first refresh.
      await page.reload();
      await page.locator("#stat-uptime", { hasNotText: "–" }).waitFor();
      assert.equal(await page.textContent("#stat-alloc-rate"), String(stats.allocationsAcquiredLastMinute));
      assert.ok(stats.allocationsAcquiredLastMinute >= 3n);
      assert.equal(await page.textContent("#stat-busy"), `${stats.allocationsBusy}; ${stats.allocationsBusyLastMinute}`);
      assert.ok(stats.allocationsBusyLastMinute >= 1n);
      for (const s of sessions) await client.api.myServiceShutdown({}, { headers: s.headers });
    });

    it("shows the waiting room live: waiters in arrival order, the head leaving when it gets an instance", async () => {
      const holders = [];
      for (let i = 0; i < 3; i++) {
        const h = await login(client, "queue-holder");
        await retryWhile(capacity, () => echo(client, h));
        holders.push(h);
      }
      const [w1, w2] = [await login(client, "queue-w1"), await login(client, "queue-w2")];
      const wait = (s: typeof w1) =>
        client.api.myServiceEcho({ value: "w" }, { headers: { ...s.headers, "x-wait-for-instance": "30s" }, timeoutMs: 30_000 });
      const first = wait(w1);
      await page.locator(`#queue tbody tr[data-session="${w1.id}"][data-position="1"]`).waitFor();
      const second = wait(w2);
      await page.locator(`#queue tbody tr[data-session="${w2.id}"][data-position="2"]`).waitFor();
      assert.equal(await page.textContent("#stat-queue"), "2");
      assert.equal(await page.isVisible("#no-queue"), false);
      await page.screenshot({ path: join(artifacts, "dashboard-queue.png"), fullPage: true });

      await client.api.myServiceShutdown({}, { headers: (holders[0] as typeof w1).headers });
      assert.equal((await first).serverSessionId, w1.id);
      await page.locator(`#queue tbody tr[data-session="${w1.id}"]`).waitFor({ state: "detached" });
      await page.locator(`#queue tbody tr[data-session="${w2.id}"][data-position="1"]`).waitFor();
      await client.api.myServiceShutdown({}, { headers: (holders[1] as typeof w1).headers });
      assert.equal((await second).serverSessionId, w2.id);
      await page.locator("#no-queue").waitFor({ state: "visible" });
      assert.equal(await page.textContent("#stat-queue"), "0");
      // Two grants happened: the mean time between them is shown.
      assert.notEqual(await page.textContent("#stat-queue-interval"), "–");
      for (const s of [w1, w2, holders[2] as typeof w1]) await client.api.myServiceShutdown({}, { headers: s.headers });
      await stack.waitAllFree();
    });

    it("drains and undrains an instance from the page", async () => {
      const admin = createClient(AdminService, createGrpcTransport({ baseUrl: stack.gatewayUrl }));
      const headers = { authorization: (await login(client, "browser-admin")).token };
      const row = page.locator("#instances tbody tr").first();
      const address = (await row.getAttribute("data-address")) as string;
      await row.locator(".drain-button").click();
      await page.locator(`#instances tbody tr[data-address="${address}"] .drain`).waitFor();
      const drained = (await admin.listInstances({}, { headers })).instances.find((i) => i.address === address);
      assert.equal(drained?.draining, true);
      await page.screenshot({ path: join(artifacts, "dashboard-drained.png"), fullPage: true });
      await page.locator(`#instances tbody tr[data-address="${address}"] .drain-button`).click();
      await page.locator(`#instances tbody tr[data-address="${address}"] .drain`).waitFor({ state: "detached" });
      const undrained = (await admin.listInstances({}, { headers })).instances.find((i) => i.address === address);
      assert.equal(undrained?.draining, false);
      assert.deepEqual(pageErrors, [], "no script errors, failed requests or CSP violations on the page");
    });
  },
);
