/** Kind of a process the local launcher supervises. */
export type ProcessKind = "myservice" | "gateway" | "postgres";

/**
 * Lifecycle state of a supervised process:
 * `starting` (spawned, port not yet accepting connections), `running` (port accepts
 * connections), `backoff` (exited, restart scheduled), `stopped` (held stopped, or the
 * launcher is shutting down), `exited` (ended with code 0 under the restart policy
 * `on-failure`: stays down until `start`).
 */
export type ProcessState = "running" | "stopped" | "backoff" | "starting" | "exited";

/**
 * When a process that ended by itself is started again, as compose's `restart:` says:
 * `always` whatever its exit; `on-failure` only after a failure (an exit code other than 0, or
 * a signal such as SIGKILL), so an instance that exits 0 after its Shutdown stays down. A
 * process held by `stop` is never restarted under either policy.
 */
export type RestartPolicy = "always" | "on-failure";

/** Every restart policy, for option parsing. */
export const restartPolicies: readonly RestartPolicy[] = ["always", "on-failure"];

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
  /** With `--tls`: the files of the local PKI and token key (`<data-dir>/tls/`). */
  readonly tls?: UpTlsState;
}

/**
 * Actions of `POST /processes/<name>/<action>` besides `signal`: `kill` (SIGKILL, restarted by
 * the policy), `stop` (SIGTERM and hold), `start` (release the hold, start if down), `restart`
 * (SIGTERM, start again at once, wait until it accepts connections; several processes one
 * after the other).
 */
export type ControlAction = "kill" | "stop" | "start" | "restart";

/** Every control action, for option parsing. */
export const controlActions: readonly ControlAction[] = ["kill", "stop", "start", "restart"];

/** Signals accepted by `POST /processes/<name>/signal?sig=`. */
export const controlSignals = ["SIGSTOP", "SIGCONT", "SIGTERM", "SIGKILL"] as const;

/** One of `controlSignals`. */
export type ControlSignal = (typeof controlSignals)[number];

/** Name that addresses every myservice process at once in control calls. */
export const allInstancesName = "instances";

/**
 * Name that addresses every gateway process at once in control calls, when no process is
 * called exactly that (with several gateways: `gateway-1`, `gateway-2`, ...).
 */
export const allGatewaysName = "gateway";
/** Files of a `--tls` stack a local client needs: the CA to trust, and what tests use to reach instances and mint tokens. */
export interface UpTlsState {
  /** The local CA's certificate: clients of the gateway trust it (`grpcurl -cacert`, `integrationtests --ca`). */
  readonly ca: string;
  /** The Ed25519 private key tokens are signed with (to mint expired or foreign tokens in scenarios). */
  readonly tokenSigningKey: string;
  /** A client certificate instances accept (the gateway's), for direct checks of instances. */
  readonly instanceClient: { readonly cert: string; readonly key: string };
}
