import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { builtPath, runBuild } from "../scripts/build-output.js";
import { canConnect } from "../scripts/net-util.js";
import { repoRoot } from "../scripts/up-control-client.js";

export { repoRoot };

/** Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux). */
const ticksPerSecond = 100;

/** CPU seconds (user + system) a process has used so far; `NaN` if it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
  } catch {
    return Number.NaN;
  }
}

/** Resident set size of a process, bytes; `NaN` if it is gone. */
export function rssBytes(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) * 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Direct children of a process (nginx workers of their master). */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** A child process of the benchmark with its output kept for failure messages. */
export interface Child {
  readonly name: string;
  readonly process: ChildProcess;
  readonly pid: number;
  output(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it exited. */
  stop(graceMs?: number): Promise<void>;
}

const running = new Set<Child>();

/** Spawns a command; its output is kept (last 200 kB), never printed unless it fails. */
export function spawnChild(name: string, command: string, args: readonly string[], env: NodeJS.ProcessEnv): Child {
  const child = spawn(command, args, { cwd: repoRoot, env, stdio: ["ignore", "pipe", "pipe"] });
  let text = "";
  const collect = (chunk: Buffer) => {
    text += chunk.toString("utf8");
    if (text.length > 200_000) text = text.slice(-100_000);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const handle: Child = {
    name,
    process: child,
    pid: child.pid ?? 0,
    output: () => text,
    async stop(graceMs = 3000) {
      running.delete(handle);
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
  running.add(handle);
  return handle;
}

/** Set by `buildProduct()`: the product's processes run from dist/. */
let productBuilt = false;

/**
 * Runs `npm run build`, after which `spawnNode` starts the gateway and myservice from `dist/`
 * — what `npm run up` and the container images run — instead of through tsx. The bench's own
 * processes (pools, load generators) are not in the build and keep running through tsx.
 */
export function buildProduct(): void {
  runBuild();
  productBuilt = true;
}

/** Starts `script` (a `.ts` path): its build output in dist/ after `buildProduct()`, else through tsx. */
export function spawnNode(name: string, script: string, env: NodeJS.ProcessEnv, nodeArgs: readonly string[] = []): Child {
  const built = builtPath(script);
  const args = productBuilt && existsSync(built) ? [built] : ["--import", "tsx", join(repoRoot, script)];
  return spawnChild(name, process.execPath, [...nodeArgs, ...args], env);
}

/** Stops every child still running (on exit or failure). */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((c) => c.stop(2000)));
}

/** Waits until `port` accepts connections; throws with the child's output tail after `timeoutMs`. */
export async function waitForPort(child: Child, port: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.process.exitCode !== null) {
      throw new Error(`${child.name} exited with ${child.process.exitCode}:\n${child.output().slice(-3000)}`);
    }
    if (await canConnect(port, "127.0.0.1", 300)) return;
    await sleep(50);
  }
  throw new Error(`${child.name} did not listen on ${port} within ${timeoutMs} ms:\n${child.output().slice(-3000)}`);
}

/** Waits until the child printed a line matching `pattern`; returns the match. */
export async function waitForOutput(child: Child, pattern: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const match = pattern.exec(child.output());
    if (match) return match;
    if (child.process.exitCode !== null) {
      throw new Error(`${child.name} exited with ${child.process.exitCode}:\n${child.output().slice(-3000)}`);
    }
    await sleep(50);
  }
  throw new Error(`${child.name}: no ${pattern} within ${timeoutMs} ms:\n${child.output().slice(-3000)}`);
}
