import { type ChildProcess, spawn } from "node:child_process";
import { canConnect } from "./net-util.js";
import {
  allGatewaysName,
  allInstancesName,
  type ProcessInfo,
  type ProcessKind,
  type ProcessState,
  type RestartPolicy,
} from "./up-protocol.js";

/** How to run one supervised process. */
export interface ProcessSpec {
  /** Unique name, used in logs and the control API. */
  readonly name: string;
  readonly kind: ProcessKind;
  /** Pod name of an instance, `null` for the gateway. */
  readonly podName: string | null;
  /** Port the process listens on; a TCP connect to `probeHost:port` marks it running. */
  readonly port: number;
  /** Address the readiness probe connects to. */
  readonly probeHost: string;
  readonly command: string;
  readonly args: readonly string[];
  /** Complete environment of the child. */
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  /** What happens when the process ends by itself (see `RestartPolicy`). Default `always`. */
  readonly restart?: RestartPolicy;
  /** Run as this user and group (PostgreSQL refuses to run as root). */
  readonly uid?: number;
  readonly gid?: number;
  /** Signal of a clean stop. Default SIGTERM (PostgreSQL: SIGINT, its fast shutdown). */
  readonly stopSignal?: NodeJS.Signals;
  /** Signal of the control API's kill. Default SIGKILL (PostgreSQL: SIGQUIT, its immediate shutdown). */
  readonly killSignal?: NodeJS.Signals;
}

/** Restart delays; all in milliseconds. */
export interface BackoffOptions {
  /** First delay after a failure. Default 100. */
  readonly initialMs: number;
  /** Largest delay; it doubles per failure up to this. Default 5000. */
  readonly maxMs: number;
  /** A process that stayed up this long starts again from `initialMs`. Default 10,000. */
  readonly resetAfterMs: number;
  /** Delay after a clean exit (code 0) of a process that had become ready, e.g. after Shutdown. Default 50. */
  readonly cleanExitMs: number;
}

/** Options of `createSupervisor`. */
export interface SupervisorOptions {
  readonly specs: readonly ProcessSpec[];
  /** Receives raw output of a child; `null` marks the end of that stream. */
  readonly onOutput: (name: string, stream: "stdout" | "stderr", chunk: Buffer | null) => void;
  /** The supervisor's own messages (exits, restarts). */
  readonly log: (message: string) => void;
  /** Called after every change of any process's state, pid, restarts or hold. */
  readonly onChange: () => void;
  readonly backoff?: Partial<BackoffOptions>;
  /** Wait between SIGTERM and SIGKILL when stopping, milliseconds. Default 3000. */
  readonly stopTimeoutMs?: number;
  /** Period of the readiness probe (TCP connect) while starting, milliseconds. Default 100. */
  readonly probeIntervalMs?: number;
}

/** Starts, watches and restarts a fixed set of processes. */
export interface Supervisor {
  /** Starts every process that is not held. */
  startAll(): void;
  /** Snapshot of every process, in spec order. */
  list(): ProcessInfo[];
  /**
   * Names of the processes `name` addresses, or `[]`: a process's own name, `instances` (every
   * myservice), or `gateway` (every gateway, when none is named exactly `gateway`).
   */
  resolve(name: string): string[];
  /** SIGKILL; the process restarts with backoff. Resolves once it exited (at most ~2 s). */
  kill(name: string): Promise<void>;
  /** Holds the process stopped: SIGTERM, SIGKILL after the stop timeout; no restart. */
  stop(name: string): Promise<void>;
  /** Releases the hold and starts the process now if it is not running (also after `exited`). */
  start(name: string): void;
  /**
   * Stops the process gracefully (as `stop`) and starts it again at once; resolves once it
   * accepts connections again, or ended, or after `timeoutMs` (default 30,000): read its state.
   */
  restart(name: string, timeoutMs?: number): Promise<void>;
  /** Sends `signal` to the running process, if any; does not change the hold. */
  signal(name: string, signal: NodeJS.Signals): void;
  /** Stops every process (no restarts afterwards). */
  shutdown(): Promise<void>;
  /** Last resort on exit: SIGKILL every child synchronously. */
  killAllNow(): void;
}

interface Managed {
  readonly spec: ProcessSpec;
  child: ChildProcess | undefined;
  state: ProcessState;
  restarts: number;
  starts: number;
  held: boolean;
  backoffMs: number;
  startedAtMs: number;
  becameReady: boolean;
  restartTimer: NodeJS.Timeout | undefined;
  exitWaiters: Array<() => void>;
  /** Called when the process becomes `running` or exits. */
  readyWaiters: Array<() => void>;
}

const defaultBackoff: BackoffOptions = { initialMs: 100, maxMs: 5000, resetAfterMs: 10_000, cleanExitMs: 50 };

/** Creates a supervisor for `options.specs`; nothing runs until `startAll()`. */
export function createSupervisor(options: SupervisorOptions): Supervisor {
  const backoff: BackoffOptions = { ...defaultBackoff, ...options.backoff };
  const stopTimeoutMs = options.stopTimeoutMs ?? 3000;
  const probeIntervalMs = options.probeIntervalMs ?? 100;
  const managed = new Map<string, Managed>();
  let shuttingDown = false;
  for (const spec of options.specs) {
    managed.set(spec.name, {
      spec,
      child: undefined,
      state: "stopped",
      restarts: 0,
      starts: 0,
      held: false,
      backoffMs: backoff.initialMs,
      startedAtMs: 0,
      becameReady: false,
      restartTimer: undefined,
      exitWaiters: [],
      readyWaiters: [],
    });
  }

  function get(name: string): Managed {
    const m = managed.get(name);
    if (m === undefined) throw new Error(`unknown process ${name}`);
    return m;
  }

  function setState(m: Managed, state: ProcessState): void {
    m.state = state;
    options.onChange();
  }

  function clearRestart(m: Managed): void {
    if (m.restartTimer !== undefined) clearTimeout(m.restartTimer);
    m.restartTimer = undefined;
  }

  function launch(m: Managed): void {
    clearRestart(m);
    if (shuttingDown || m.held || m.child !== undefined) return;
    const { spec } = m;
    const child = spawn(spec.command, [...spec.args], {
      cwd: spec.cwd,
      env: spec.env,
      stdio: ["pipe", "pipe", "pipe"],
      ...(spec.uid !== undefined ? { uid: spec.uid } : {}),
      ...(spec.gid !== undefined ? { gid: spec.gid } : {}),
    });
    m.child = child;
    m.startedAtMs = Date.now();
    m.becameReady = false;
    if (m.starts > 0) m.restarts++;
    m.starts++;
    // stdin stays open: the child's exit-with-parent hook ends it when this launcher dies.
    child.stdin?.on("error", () => {});
    for (const stream of ["stdout", "stderr"] as const) {
      const readable = child[stream];
      readable?.on("data", (chunk: Buffer) => options.onOutput(spec.name, stream, chunk));
      readable?.on("end", () => options.onOutput(spec.name, stream, null));
      readable?.on("error", () => {});
    }
    let exited = false;
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      if (exited) return;
      exited = true;
      handleExit(m, child, code, signal);
    };
    child.once("exit", onExit);
    child.once("error", (error) => {
      options.log(`${spec.name}: ${error.message}`);
      if (child.pid === undefined) onExit(null, null);
    });
    setState(m, "starting");
    probe(m, child);
  }

  function probe(m: Managed, child: ChildProcess): void {
    setTimeout(async () => {
      if (m.child !== child) return;
      const ready = await canConnect(m.spec.port, m.spec.probeHost, 500);
      if (m.child !== child) return;
      if (!ready) return probe(m, child);
      m.becameReady = true;
      setState(m, "running");
      for (const resolve of m.readyWaiters.splice(0)) resolve();
    }, probeIntervalMs);
  }

  function handleExit(m: Managed, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (m.child !== child) return;
    m.child = undefined;
    const upMs = Date.now() - m.startedAtMs;
    const how = signal !== null ? `killed by ${signal}` : `exited with code ${code}`;
    for (const resolve of m.exitWaiters.splice(0)) resolve();
    for (const resolve of m.readyWaiters.splice(0)) resolve();
    if (shuttingDown || m.held) {
      options.log(`${m.spec.name} ${how}${m.held ? " (held stopped)" : ""}`);
      setState(m, "stopped");
      return;
    }
    if (code === 0 && m.spec.restart === "on-failure") {
      // compose's `restart: on-failure`: a clean exit (an instance after its Shutdown) stays down.
      options.log(`${m.spec.name} ${how} after ${upMs} ms; not restarted (restart policy on-failure)`);
      setState(m, "exited");
      return;
    }
    if (upMs >= backoff.resetAfterMs) m.backoffMs = backoff.initialMs;
    let delayMs: number;
    if (code === 0 && m.becameReady) {
      // SPEC 4.5: an instance exits 0 after Shutdown; bringing it back fast is the normal recycle.
      delayMs = backoff.cleanExitMs;
    } else {
      delayMs = m.backoffMs;
      m.backoffMs = Math.min(backoff.maxMs, m.backoffMs * 2);
    }
    options.log(`${m.spec.name} ${how} after ${upMs} ms; restarting in ${delayMs} ms`);
    m.restartTimer = setTimeout(() => launch(m), delayMs);
    setState(m, "backoff");
  }

  function waitExit(m: Managed, timeoutMs: number): Promise<void> {
    if (m.child === undefined) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      m.exitWaiters.push(done);
    });
  }

  async function terminate(m: Managed): Promise<void> {
    const child = m.child;
    if (child === undefined) return;
    const exited = waitExit(m, stopTimeoutMs + 2000);
    child.kill(m.spec.stopSignal ?? "SIGTERM");
    // A process paused with SIGSTOP handles SIGTERM only once continued.
    child.kill("SIGCONT");
    const timer = setTimeout(() => {
      if (m.child === child) {
        options.log(`${m.spec.name} did not stop within ${stopTimeoutMs} ms; sending SIGKILL`);
        child.kill("SIGKILL");
      }
    }, stopTimeoutMs);
    await exited;
    clearTimeout(timer);
  }

  function info(m: Managed): ProcessInfo {
    return {
      name: m.spec.name,
      kind: m.spec.kind,
      podName: m.spec.podName,
      port: m.spec.port,
      pid: m.child?.pid ?? null,
      state: m.state,
      restarts: m.restarts,
      held: m.held,
    };
  }

  return {
    startAll() {
      for (const m of managed.values()) launch(m);
    },
    list: () => [...managed.values()].map(info),
    resolve(name) {
      if (managed.has(name)) return [name];
      const ofKind = (kind: ProcessKind) => [...managed.values()].filter((m) => m.spec.kind === kind).map((m) => m.spec.name);
      if (name === allInstancesName) return ofKind("myservice");
      if (name === allGatewaysName) return ofKind("gateway");
      return [];
    },
    async kill(name) {
      const m = get(name);
      if (m.child === undefined) return;
      const exited = waitExit(m, 2000);
      m.child.kill(m.spec.killSignal ?? "SIGKILL");
      await exited;
    },
    async stop(name) {
      const m = get(name);
      m.held = true;
      clearRestart(m);
      if (m.child === undefined) setState(m, "stopped");
      else await terminate(m);
    },
    start(name) {
      const m = get(name);
      const wasHeld = m.held;
      m.held = false;
      if (m.child !== undefined) {
        if (wasHeld) options.onChange();
        return;
      }
      m.backoffMs = backoff.initialMs;
      launch(m);
    },
    async restart(name, timeoutMs = 30_000) {
      const m = get(name);
      // Held while it stops, so that its exit does not schedule a restart of its own.
      m.held = true;
      clearRestart(m);
      await terminate(m);
      m.held = false;
      m.backoffMs = backoff.initialMs;
      const ready = new Promise<void>((resolve) => {
        const timer = setTimeout(done, timeoutMs);
        function done() {
          clearTimeout(timer);
          resolve();
        }
        m.readyWaiters.push(done);
      });
      launch(m);
      if (m.child === undefined) {
        // Not started (the launcher is shutting down): nothing to wait for.
        for (const resolve of m.readyWaiters.splice(0)) resolve();
      }
      await ready;
    },
    signal(name, signal) {
      get(name).child?.kill(signal);
    },
    async shutdown() {
      shuttingDown = true;
      for (const m of managed.values()) {
        clearRestart(m);
        if (m.child === undefined && m.state !== "stopped") setState(m, "stopped");
      }
      await Promise.all([...managed.values()].map(terminate));
    },
    killAllNow() {
      for (const m of managed.values()) {
        try {
          m.child?.kill("SIGKILL");
        } catch {
          // Already gone.
        }
      }
    },
  };
}
