// `npm run up` as a user runs it, killed as `kill $!` kills it: the signal reaches npm only.
// Nothing may outlive npm (issue 15): not the shell npm ran, the launcher, the gateway or an
// instance, and their ports are free again.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { canConnect } from "../scripts/net-util.js";
import { createControlClient, repoRoot, type UpState } from "../scripts/up-control-client.js";

/** `process.kill(pid, 0)`, not fooled by a zombie waiting for a reaper. */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

/** Starts `npm run up` on free ports with a temp data folder; resolves once every process runs. */
async function npmRunUp(dataDir: string): Promise<{ npm: ChildProcess; state: UpState; output: () => string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: "warn", LISTEN_HOST: "127.0.0.1" };
  delete env.NODE_TEST_CONTEXT;
  const args = ["run", "up", "--", "--instances", "1", "--gateway-port", "0", "--instance-base-port", "0", "--control-port", "0"];
  // stdin from /dev/null, as a shell gives a background job (`npm run up &`).
  const npm = spawn("npm", [...args, "--data-dir", dataDir], { cwd: repoRoot, env, stdio: ["ignore", "pipe", "pipe"] });
  let text = "";
  npm.stdout?.on("data", (c: Buffer) => {
    text += c.toString();
  });
  npm.stderr?.on("data", (c: Buffer) => {
    text += c.toString();
  });
  const stateFile = join(dataDir, "up-stack.json");
  // npm run up builds first (tsc, incremental).
  const deadline = Date.now() + 180_000;
  for (;;) {
    assert.ok(Date.now() < deadline && npm.exitCode === null, `npm run up did not come up:\n${text.slice(-3000)}`);
    if (existsSync(stateFile) && /- ready/.test(text)) {
      const state = JSON.parse(readFileSync(stateFile, "utf8")) as UpState;
      const processes = await createControlClient(state.controlUrl)
        .processes()
        .catch(() => []);
      if (processes.length === 2 && processes.every((p) => p.state === "running"))
        return { npm, state: { ...state, processes }, output: () => text };
    }
    await sleep(200);
  }
}

describe("npm run up killed with kill <pid of npm>", { skip: existsSync("/proc/self/stat") ? false : "needs /proc (Linux)" }, () => {
  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    it(`${signal}: the shell, the launcher, the gateway and the instance all stop, and free their ports`, async (t) => {
      const dataDir = await mkdtemp(join(tmpdir(), "up-npm-"));
      const { npm, state, output } = await npmRunUp(dataDir);
      const shell = parentOf(state.launcherPid);
      const children = state.processes.map((p) => p.pid as number);
      const pids = [shell, state.launcherPid, ...children];
      t.after(async () => {
        for (const pid of pids) if (isAlive(pid)) process.kill(pid, "SIGKILL");
        await rm(dataDir, { recursive: true, force: true });
      });
      assert.equal(parentOf(shell), npm.pid, "npm runs the launcher through a shell");
      // The start banner shows the commands a user needs (issue 15).
      assert.match(output(), /npm run generate \(or npx buf generate/);
      assert.match(output(), /npm run up -- restart gateway/);

      npm.kill(signal);
      const killedAt = Date.now();
      const deadline = killedAt + 15_000;
      while (pids.some(isAlive) && Date.now() < deadline) await sleep(100);
      t.diagnostic(`${signal} to npm: everything stopped within ${Date.now() - killedAt} ms`);
      assert.deepEqual(
        pids.filter(isAlive).map((pid) => `${pid} (${readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ").slice(0, 80)})`),
        [],
        `everything stopped\n${output().slice(-2000)}`,
      );
      for (const p of state.processes) assert.equal(await canConnect(p.port), false, `${p.name}'s port ${p.port} is free`);
      assert.equal(await canConnect(Number(state.controlUrl.split(":").at(-1))), false, "the control port is free");
      if (signal === "SIGKILL") assert.match(output(), /npm \d+ exited: stopping every process/);
    });
  }
});
