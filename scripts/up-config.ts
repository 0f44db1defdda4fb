import { isAbsolute, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { type ControlAction, controlActions, type RestartPolicy, restartPolicies } from "./up-protocol.js";

/** A command for a running launcher (`npm run up -- restart gateway`), sent to its control API. */
export interface UpCommand {
  /** `status` lists the processes; the others are control API actions. */
  readonly action: ControlAction | "status";
  /** Process name, `instances` or `gateway`; empty for `status`. */
  readonly name: string;
}

/** Options of the local launcher, resolved once from argv and the environment. */
export interface UpOptions {
  /** `--instances` / `UP_INSTANCES`: number of myservice processes. Default 3. */
  readonly instances: number;
  /** `--gateway-port` / `SERVICE_PORT_GRPC`: gateway port; 0 picks a free one. Default 10000. */
  readonly gatewayPort: number;
  /** `--instance-base-port` / `UP_INSTANCE_BASE_PORT`: first instance port (then +1, +2...); 0 picks free ones. Default 5001. */
  readonly instanceBasePort: number;
  /** `--data-dir` / `UP_DATA_DIR`: absolute folder for the lease database and state file. Default `<repo>/data`. */
  readonly dataDir: string;
  /** `--control-port` / `UP_CONTROL_PORT`: control API port on 127.0.0.1; 0 picks a free one. Default 10099. */
  readonly controlPort: number;
  /** `true` when `--control-port` or `UP_CONTROL_PORT` was given (a command then uses it, not the state file). */
  readonly controlPortGiven: boolean;
  /**
   * `--restart` / `UP_RESTART`: restart policy of the instances, as compose's `restart:`
   * (`always`: every exit; `on-failure`: not after exit code 0, e.g. after a Shutdown). The
   * gateway is always restarted. Default `always`.
   */
  readonly restart: RestartPolicy;
  /** A command for the running launcher instead of starting one (`start myservice-1`, `restart gateway`, `status`). */
  readonly command: UpCommand | undefined;
  /** `--state-file` / `UP_STATE_FILE`: absolute path of the state file. Default `<data-dir>/up-stack.json`. */
  readonly stateFile: string;
  /** `--store` / `UP_STORE`: `sqlite` (the default: a file in the data folder) or `postgres` (a local PostgreSQL server the launcher runs). */
  readonly store: "sqlite" | "postgres";
  /** `--gateways` / `UP_GATEWAYS`: gateway processes on ports P, P+1, ... (`gateway-1`, `gateway-2`, ... when more than one). Default 1. */
  readonly gateways: number;
  /** `--postgres-port` / `UP_POSTGRES_PORT`: the PostgreSQL server's port on 127.0.0.1 with `--store postgres`; 0 picks a free one. Default 10432. */
  readonly postgresPort: number;
  /** `false` with `--no-gateway`: run the instances only. */
  readonly gateway: boolean;
  /** `--exit-with-stdin`: stop everything when stdin (a pipe from the parent) closes. */
  readonly exitWithStdin: boolean;
  /**
   * `--compiled`: run the processes from `dist/` (the JavaScript `npm run build` emits, as the
   * container images do) instead of the TypeScript sources through tsx. `npm run up` builds and
   * passes it; test harnesses run the sources.
   */
  readonly compiled: boolean;
  /**
   * `--tls` / `UP_TLS=1`: a local CA, certificates and an Ed25519 token key in `<data-dir>/tls/`;
   * the gateway serves TLS, instances serve TLS and require the gateway's client certificate,
   * tokens are signed with the key and instances get its public half only.
   */
  readonly tls: boolean;
  /** `--help`. */
  readonly help: boolean;
}

/** Bad command line or environment; the message lists every problem. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Text of `npm run up -- --help`. */
export const usage = `Usage: npm run up -- [options]
       npm run up -- status | start NAME | stop NAME | kill NAME | restart NAME [--control-port P | --data-dir DIR]

Runs the gateway and N myservice instances on this machine, restarts any that exit (see
--restart), and serves a control API on 127.0.0.1. Ctrl-C stops everything, and so does the end
of the process that ran it (npm, its shell, a terminal that closes, kill <pid of npm>).

Commands talk to a running launcher's control API (its port from --control-port, else from the
state file in --data-dir, else 10099) and print the process list:
  status                    every process with its state, pid, port and restarts
  start NAME                start a stopped or exited process (NAME: gateway, myservice-1, ...)
  stop NAME                 stop it and keep it stopped (SIGTERM)
  kill NAME                 SIGKILL it (a crash; the restart policy brings it back)
  restart NAME              stop it gracefully and start it again at once. restart gateway
                            keeps every session on its instance (leases are in the database);
                            with several gateways, one after the other. NAME may be
                            instances (every myservice) or gateway (every gateway)

Options (environment variable in brackets):
  --instances N             myservice processes [UP_INSTANCES] (default 3)
  --gateway-port P          gateway port [SERVICE_PORT_GRPC] (default 10000; 0 = a free port)
  --instance-base-port P    first instance port, then P+1, ... [UP_INSTANCE_BASE_PORT]
                            (default 5001; 0 = free ports)
  --data-dir DIR            lease database and state file [UP_DATA_DIR] (default data/)
  --control-port P          control API on 127.0.0.1 [UP_CONTROL_PORT] (default 10099; 0 = free)
  --state-file FILE         state file [UP_STATE_FILE] (default <data-dir>/up-stack.json)
  --restart POLICY          restart policy of the instances [UP_RESTART], as compose's restart:
                            always (default): after every exit, as after a Shutdown;
                            on-failure: only after a crash (exit code not 0, or a signal);
                            an instance that exits 0 after its Shutdown stays down until
                            npm run up -- start myservice-N
  --tls                     everything over TLS [UP_TLS=1]: a local CA, certificates and an
                            Ed25519 token key in <data-dir>/tls/ (kept across runs); prints
                            the CA path and a grpcurl -cacert line
  --store sqlite|postgres   lease store [UP_STORE] (default sqlite). postgres: a local
                            PostgreSQL server (Debian's postgresql-15) in <data-dir>/postgres,
                            run as the postgres user when root; process name postgres
  --gateways N              gateway processes on ports P, P+1, ... [UP_GATEWAYS] (default 1;
                            named gateway-1, gateway-2, ... when more than one)
  --postgres-port P         PostgreSQL port on 127.0.0.1 [UP_POSTGRES_PORT] (default 10432)
  --no-gateway              run the instances only
  --exit-with-stdin         stop when stdin closes (for harnesses that spawn the launcher)
  --compiled                run dist/ (built by npm run build; npm run up passes it)
                            instead of the TypeScript sources through tsx
  --help                    this text

Environment passed to the processes: JWT_SECRET (a development secret if unset),
TOKEN_EXPIRATION (1h), LEASE_IDLE_TTL (5m), SUBSCRIBE_INTERVAL_MS (5000), LOG_LEVEL (info),
LOG_FORMAT (pretty), LISTEN_HOST of the gateway (::, i.e. IPv6 and IPv4), USERS_FILE
(gateway/dev-users.json); any other variable is inherited unchanged.`;

function integer(problems: string[], label: string, text: string | undefined, fallback: number, min: number, max: number): number {
  if (text === undefined || text.trim() === "") return fallback;
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || n < min || n > max) {
    problems.push(`${label}=${JSON.stringify(text)}: expected a whole number from ${min} to ${max}`);
    return fallback;
  }
  return n;
}

/**
 * Parses the launcher's command line, with environment variables as fallbacks. Relative
 * paths are taken from `cwd`, the data folder defaults to `<repoRoot>/data`. Throws a
 * `UsageError` listing every problem.
 */
export function parseUpOptions(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  repoRoot: string,
  cwd: string,
): UpOptions {
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: true,
      options: {
        instances: { type: "string" },
        "gateway-port": { type: "string" },
        "instance-base-port": { type: "string" },
        "data-dir": { type: "string" },
        "control-port": { type: "string" },
        "state-file": { type: "string" },
        restart: { type: "string" },
        store: { type: "string" },
        gateways: { type: "string" },
        "postgres-port": { type: "string" },
        "no-gateway": { type: "boolean" },
        "exit-with-stdin": { type: "boolean" },
        compiled: { type: "boolean" },
        tls: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
  const str = (name: string) => values[name] as string | undefined;
  const problems: string[] = [];
  const instances = integer(problems, "--instances", str("instances") ?? env.UP_INSTANCES, 3, 1, 100);
  const gatewayPort = integer(problems, "--gateway-port", str("gateway-port") ?? env.SERVICE_PORT_GRPC, 10_000, 0, 65_535);
  const instanceBasePort = integer(
    problems,
    "--instance-base-port",
    str("instance-base-port") ?? env.UP_INSTANCE_BASE_PORT,
    5001,
    0,
    65_535,
  );
  if (instanceBasePort !== 0 && instanceBasePort + instances - 1 > 65_535) {
    problems.push(`--instance-base-port ${instanceBasePort} leaves no room for ${instances} instances`);
  }
  const storeText = (str("store") ?? env.UP_STORE ?? "sqlite").trim();
  if (storeText !== "sqlite" && storeText !== "postgres")
    problems.push(`--store ${JSON.stringify(storeText)}: expected sqlite or postgres`);
  const gateways = integer(problems, "--gateways", str("gateways") ?? env.UP_GATEWAYS, 1, 1, 16);
  const postgresPort = integer(problems, "--postgres-port", str("postgres-port") ?? env.UP_POSTGRES_PORT, 10_432, 0, 65_535);
  const controlPortText = str("control-port") ?? env.UP_CONTROL_PORT;
  const controlPort = integer(problems, "--control-port", controlPortText, 10_099, 0, 65_535);
  const restartText = str("restart") ?? env.UP_RESTART ?? "always";
  if (!(restartPolicies as readonly string[]).includes(restartText)) {
    problems.push(`--restart ${JSON.stringify(restartText)}: expected ${restartPolicies.join(" or ")}`);
  }
  const command = parseCommand(problems, positionals);
  const absolute = (path: string) => (isAbsolute(path) ? path : resolve(cwd, path));
  const dataDirText = str("data-dir") ?? env.UP_DATA_DIR;
  const dataDir = dataDirText ? absolute(dataDirText) : join(repoRoot, "data");
  const stateFileText = str("state-file") ?? env.UP_STATE_FILE;
  const stateFile = stateFileText ? absolute(stateFileText) : join(dataDir, "up-stack.json");
  if (problems.length > 0) throw new UsageError(problems.join("\n"));
  return Object.freeze({
    instances,
    gatewayPort,
    instanceBasePort,
    dataDir,
    controlPort,
    controlPortGiven: controlPortText !== undefined && controlPortText.trim() !== "",
    restart: (restartPolicies as readonly string[]).includes(restartText) ? (restartText as RestartPolicy) : "always",
    command,
    stateFile,
    store: storeText === "postgres" ? "postgres" : "sqlite",
    gateways,
    postgresPort,
    gateway: values["no-gateway"] !== true,
    exitWithStdin: values["exit-with-stdin"] === true,
    compiled: values.compiled === true,
    tls: values.tls === true || ["1", "true", "yes"].includes((env.UP_TLS ?? "").toLowerCase()),
    help: values.help === true,
  });
}

function parseCommand(problems: string[], positionals: readonly string[]): UpCommand | undefined {
  const [action, name = "", ...extra] = positionals;
  if (action === undefined) return undefined;
  if (action === "status") {
    if (positionals.length > 1) problems.push(`status takes no name (got ${positionals.slice(1).join(" ")})`);
    return { action, name: "" };
  }
  if (!(controlActions as readonly string[]).includes(action)) {
    problems.push(`unknown command ${JSON.stringify(action)}: use status, ${controlActions.join(", ")}`);
    return undefined;
  }
  if (name === "" || extra.length > 0) problems.push(`${action} takes one process name, e.g. ${action} myservice-1 or ${action} gateway`);
  return { action: action as ControlAction, name };
}
