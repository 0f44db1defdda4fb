/**
 * The production build (`npm run build` → dist/) is what the container images and `npm run up`
 * run. No Docker engine here, so this checks what the images depend on: the Dockerfile's build
 * stage copies every source folder the build compiles; every `node dist/...` the Dockerfile and
 * compose.yaml run exists after the build; and the built processes start and pass compose's own
 * health check command (run exactly as compose runs it).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { devJwtSecret } from "../common/dev-defaults.js";
import { builtPath, runBuild } from "../scripts/build-output.js";
import { canConnect, pickFreePorts } from "../scripts/net-util.js";
import { repoRoot } from "../scripts/up-control-client.js";

const dockerfile = readFileSync(join(repoRoot, "Dockerfile"), "utf8");
const compose = readFileSync(join(repoRoot, "compose.yaml"), "utf8");

/** Every `node dist/...js` entry point in the Dockerfile's CMDs and compose's health checks. */
function entryPoints(): string[] {
  const found = [...`${dockerfile}\n${compose}`.matchAll(/"node",\s*"(dist\/[^"]+\.js)"/g)].map((m) => m[1] as string);
  return [...new Set(found)];
}

describe("production build (dist/) and the container images", () => {
  const children: ChildProcess[] = [];
  let dataDir = "";
  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "build-test-"));
    runBuild();
  });
  after(async () => {
    await Promise.all(
      children.map((child) =>
        child.exitCode === null && child.signalCode === null
          ? new Promise((resolve) => {
              child.once("exit", resolve);
              child.kill("SIGTERM");
            })
          : undefined,
      ),
    );
    if (dataDir !== "") await rm(dataDir, { recursive: true, force: true });
  });

  it("copies every folder the build compiles into the Dockerfile's build stage", () => {
    const include = (JSON.parse(readFileSync(join(repoRoot, "tsconfig.build.json"), "utf8")) as { include: string[] }).include;
    const roots = new Set(include.map((path) => path.split("/")[0] as string));
    const stage = dockerfile.slice(dockerfile.indexOf("AS build"), dockerfile.indexOf("RUN npm run build"));
    for (const root of roots) assert.match(stage, new RegExp(`^COPY ${root} \\./${root}$`, "m"), `build stage lacks COPY ${root}`);
    for (const file of ["tsconfig.json", "tsconfig.build.json"]) assert.ok(stage.includes(file), `build stage lacks ${file}`);
  });

  it("emits every entry point the images run", () => {
    const entries = entryPoints();
    assert.deepEqual(
      [...entries].sort(),
      ["dist/gateway/main.js", "dist/myservice/main.js", "dist/scripts/grpc-health-check.js"],
      "the Dockerfile CMDs and compose health checks",
    );
    for (const entry of entries) assert.ok(existsSync(join(repoRoot, entry)), `${entry} missing after npm run build`);
    for (const asset of ["dashboard.html", "dashboard-page.js"]) {
      assert.ok(existsSync(builtPath(`gateway/ops/${asset}`)), `dashboard asset ${asset} not copied into dist/`);
    }
  });

  it("starts the built myservice and gateway, which pass compose's health check command", async () => {
    const [instancePort, gatewayPort] = await pickFreePorts(2);
    const env: NodeJS.ProcessEnv = { ...process.env, JWT_SECRET: devJwtSecret, LISTEN_HOST: "127.0.0.1", LOG_LEVEL: "warn" };
    delete env.NODE_TEST_CONTEXT;
    const start = (entry: string, extra: Record<string, string>) => {
      const child = spawn(process.execPath, [join(repoRoot, entry)], { cwd: repoRoot, env: { ...env, ...extra }, stdio: "ignore" });
      children.push(child);
      return child;
    };
    start("dist/myservice/main.js", { SERVICE_PORT_GRPC: String(instancePort), HOSTNAME: "built-1" });
    start("dist/gateway/main.js", {
      SERVICE_PORT_GRPC: String(gatewayPort),
      MYSERVICE_ADDRESSES: `127.0.0.1:${instancePort}`,
      USERS_FILE: join(repoRoot, "gateway", "dev-users.json"),
      LEASE_DB_PATH: join(dataDir, "leases.db"),
    });
    for (const port of [instancePort, gatewayPort]) {
      const deadline = Date.now() + 15_000;
      while (!(await canConnect(port as number))) {
        assert.ok(Date.now() < deadline, `nothing listens on ${port} 15 s after start`);
        await sleep(100);
      }
      // compose.yaml: test: ["CMD", "node", "dist/scripts/grpc-health-check.js", "127.0.0.1:<port>"]
      const check = spawnSync(process.execPath, ["dist/scripts/grpc-health-check.js", `127.0.0.1:${port}`], {
        cwd: repoRoot,
        encoding: "utf8",
      });
      assert.equal(check.status, 0, `health check of 127.0.0.1:${port}: ${check.stdout}${check.stderr}`);
      assert.match(check.stdout, /SERVING/);
    }
  });
});
