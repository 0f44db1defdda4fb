/** Kind of a process the local launcher supervises. */
export type ProcessKind = "myservice" | "gateway" | "postgres";

/**
 * Lifecycle state of a supervised process:
 * `starting` (spawned, port not yet accepting connections), `running` (port accepts
 * connections), `backoff` (exited, restart scheduled), `stopped` (held stopped, or the
 * launcher is shutting down).
 */
export type ProcessState = "running" | "stopped" | "backoff" | "starting";

/** One supervised process as reported by `GET /processes` and the state file. */
export interface ProcessInfo {
  /** Unique name: `gateway` (or `gateway-1`, `gateway-2`, ... with several), `postgres`, `myservice-1`, ... */
  readonly name: string;
  readonly kind: ProcessKind;
  /** Pod name given to an instance through `HOSTNAME`; `null` for the gateway. */
  readonly podName: string | null;
  /** TCP port the process listens on; fixed for the life of the launcher. */
  readonly port: number;
  /** Operating-system pid, `null` while no process runs. */
  readonly pid: number | null;
  readonly state: ProcessState;
  /** How often the process was started again after its first start. */
  readonly restarts: number;
  /** `true` while held stopped by `POST /processes/<name>/stop` until `start`. */
  readonly held: boolean;
}

/** Content of the launcher's state file (`<data-dir>/up-stack.json`). */
export interface UpState {
  /** Where clients reach the (first) gateway, `127.0.0.1:<port>`. */
  readonly gateway: string;
  /** Every gateway, in order (`gateway-1`, `gateway-2`, ...): one entry with a single gateway. */
  readonly gateways?: readonly string[];
  /** `LEASE_DB_URL` of the stack's PostgreSQL server, with `--store postgres`. */
  readonly leaseDbUrl?: string;
  /** Base URL of the control API, `http://127.0.0.1:<port>`. */
  readonly controlUrl: string;
  /** Absolute path of the data folder (lease database, state file). */
  readonly dataDir: string;
  /** Pid of the launcher; the file is left behind after it stops, so check it is alive. */
  readonly launcherPid: number;
  readonly processes: readonly ProcessInfo[];
}

/** Actions of `POST /processes/<name>/<action>` besides `signal`. */
export type ControlAction = "kill" | "stop" | "start";

/** Signals accepted by `POST /processes/<name>/signal?sig=`. */
export const controlSignals = ["SIGSTOP", "SIGCONT", "SIGTERM", "SIGKILL"] as const;

/** One of `controlSignals`. */
export type ControlSignal = (typeof controlSignals)[number];

/** Name that addresses every myservice process at once in control calls. */
export const allInstancesName = "instances";
