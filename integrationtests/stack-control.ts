import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { allInstancesName, ControlApiError, createControlClient, type ProcessInfo } from "../scripts/up-control-client.js";

/** One MyService instance as the stack controller sees it. */
export interface InstanceInfo {
  /** Pod name the instance reports (`pod_name` in replies). */
  readonly pod: string;
  /** `running`, `stopped`, `starting`, `backoff`, `exited` (restart policy on-failure), or the container state in compose. */
  readonly state: string;
  /** `host:port` reachable from this machine, when the stack exposes instances directly. */
  readonly address?: string;
}

/**
 * What scenarios that stop or kill instances need from the stack (SPEC 8: "they must work
 * against the `npm run up` stack and against compose, and restore what they stopped").
 */
export interface StackControl {
  /** One line for the output, e.g. `npm run up control at http://127.0.0.1:10099`. */
  describe(): string;
  /** The MyService instances, in the controller's order. */
  listInstances(): Promise<readonly InstanceInfo[]>;
  /**
   * Kills the instance with this pod name abruptly (SIGKILL), as a crash would. The stack brings
   * it back (supervisor, restart policy, or the controller itself) with the same pod name.
   */
  killInstanceByPod(pod: string): Promise<void>;
  /** Stops every instance and keeps them stopped until `startAllInstances`. */
  stopAllInstances(): Promise<void>;
  /** Starts every stopped or killed instance again (idempotent). */
  startAllInstances(): Promise<void>;
}

/** Thrown when the stack cannot be controlled (not reachable, command failed). */
export class StackControlError extends Error {
  override readonly name = "StackControlError";
  constructor(
    message: string,
    /** True when the controller could not be reached at all (no stack, or no launcher). */
    readonly unreachable = false,
  ) {
    super(message);
  }
}

/**
 * Controls the `npm run up` stack through its loopback control API (`scripts/up.ts`):
 * `GET /processes`, `POST /processes/<name>/kill|stop|start`, `instances` = every myservice.
 */
export function createUpStackControl(controlUrl: string): StackControl {
  const client = createControlClient(controlUrl);

  async function call<T>(what: () => Promise<T>): Promise<T> {
    try {
      return await what();
    } catch (error) {
      if (error instanceof ControlApiError && error.status === 0) {
        throw new StackControlError(
          `stack control not reachable at ${client.url}: start the stack with \`npm run up\`, or pass --control-url / --compose-file`,
          true,
        );
      }
      throw new StackControlError(describeCause(error));
    }
  }

  async function instances(): Promise<ProcessInfo[]> {
    return (await call(() => client.processes())).filter((p) => p.kind === "myservice");
  }

  return {
    describe: () => `npm run up control API at ${client.url}`,
    async listInstances() {
      return (await instances()).map((p) => ({ pod: p.podName ?? p.name, state: p.state, address: `127.0.0.1:${p.port}` }));
    },
    async killInstanceByPod(pod) {
      const target = (await instances()).find((p) => (p.podName ?? p.name) === pod);
      if (target === undefined) throw new StackControlError(`no instance with pod name ${pod} at ${client.url}/processes`);
      await call(() => client.control(target.name, "kill"));
    },
    async stopAllInstances() {
      await call(() => client.control(allInstancesName, "stop"));
    },
    async startAllInstances() {
      await call(() => client.control(allInstancesName, "start"));
    },
  };
}

/** Runs `docker` with arguments; returns stdout. */
export type DockerRunner = (args: readonly string[]) => Promise<string>;

const execFileAsync = promisify(execFile);

const runDocker: DockerRunner = async (args) => {
  try {
    const { stdout } = await execFileAsync("docker", [...args], { timeout: 60_000 });
    return stdout;
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new StackControlError(`docker ${args.join(" ")} failed: ${stderr || describeCause(error)}`);
  }
};

/**
 * Controls a docker compose project. The instance's pod name is its `HOSTNAME`, i.e. the
 * short container id, so a pod maps to the container whose id starts with it. A kill is
 * `docker kill --signal KILL` followed by `docker start` of the same container, standing in for
 * the restart policy (which Docker does not apply after `docker kill`).
 */
export function createComposeStackControl(composeFile: string, options: { service?: string; docker?: DockerRunner } = {}): StackControl {
  const service = options.service ?? "myservice";
  const docker = options.docker ?? runDocker;
  const compose = (...args: string[]) => docker(["compose", "-f", composeFile, ...args]);

  async function containerIds(): Promise<string[]> {
    return (await compose("ps", "--all", "-q", service))
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== "");
  }

  return {
    describe: () => `docker compose project ${composeFile} (service ${service})`,
    async listInstances() {
      const ids = await containerIds();
      if (ids.length === 0) return [];
      const states = await docker(["inspect", "--format", "{{.Id}} {{.Config.Hostname}} {{.State.Status}}", ...ids]);
      return states
        .split("\n")
        .filter((line) => line.trim() !== "")
        .map((line) => {
          const [, hostname = "", state = "unknown"] = line.trim().split(/\s+/);
          return { pod: hostname, state };
        });
    },
    async killInstanceByPod(pod) {
      const ids = await containerIds();
      let id = ids.find((candidate) => candidate.startsWith(pod));
      if (id === undefined) {
        // The pod name may be a HOSTNAME set explicitly; look it up.
        for (const candidate of ids) {
          const hostname = (await docker(["inspect", "--format", "{{.Config.Hostname}}", candidate])).trim();
          if (hostname === pod) id = candidate;
        }
      }
      if (id === undefined) throw new StackControlError(`no ${service} container of ${composeFile} has pod name ${pod}`);
      await docker(["kill", "--signal", "KILL", id]);
      // Docker treats `docker kill` as a manual stop and does not apply the restart policy;
      // start the same container again, as the policy would after a crash (same pod name).
      await docker(["start", id]);
    },
    async stopAllInstances() {
      await compose("stop", service);
    },
    async startAllInstances() {
      await compose("start", service);
    },
  };
}

/** Polls until every instance the controller lists is `running` (at least `count` of them). */
export async function waitForInstancesRunning(control: StackControl, count: number, timeoutMs: number): Promise<readonly InstanceInfo[]> {
  const deadline = Date.now() + timeoutMs;
  let last: readonly InstanceInfo[] = [];
  for (;;) {
    last = await control.listInstances();
    const running = last.filter((i) => i.state === "running");
    if (running.length >= count && running.length === last.length) return last;
    if (Date.now() >= deadline) {
      throw new StackControlError(
        `instances not all running after ${timeoutMs} ms: ${last.map((i) => `${i.pod}=${i.state}`).join(", ") || "none listed"}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function describeCause(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: unknown }).cause;
    return cause instanceof Error ? `${error.message}: ${cause.message}` : error.message;
  }
  return String(error);
}
