import { execFile } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { devJwtSecret } from "../common/dev-defaults.js";
import { dualStackHost } from "../common/listen.js";
import { builtPath } from "./build-output.js";
import { createControlServer } from "./control-server.js";
import { type DevTlsFiles, ensureDevTls } from "./dev-certs.js";
import { createLinePrefixer, prefixFor } from "./line-prefixer.js";
import { pickFreePorts, portProblem } from "./net-util.js";
import { watchParentPipe, watchParentProcesses } from "./parent-watch.js";
import { initPostgres, postgresCommand, postgresInstalled, postgresUrl } from "./postgres-server.js";
import {
  gatewayEnv,
  inheritedTokenVariables,
  jwksUrlOf,
  myserviceEnv,
  type StackSettings,
  type StackTlsFiles,
  stackDefaults,
} from "./stack-env.js";
import { createSupervisor, type ProcessSpec } from "./supervisor.js";
import { parseUpOptions, type UpCommand, type UpOptions, UsageError, usage } from "./up-config.js";
import { ControlApiError, createControlClient, defaultControlUrl, readUpState, repoRoot } from "./up-control-client.js";
import { allGatewaysName, allInstancesName, type ProcessInfo, type UpState } from "./up-protocol.js";

/** Hard limit for a clean stop of everything before the launcher kills what is left. */
const shutdownLimitMs = 10_000;

function loadOptions(): UpOptions {
  try {
    return parseUpOptions(process.argv.slice(2), process.env, repoRoot, process.cwd());
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`up: ${error.message}\n\n${usage}\n`);
    process.exit(2);
  }
}

/** Replaces every port 0 by a free loopback port, once, so a restarted process keeps its port. */
async function resolvePorts(options: UpOptions) {
  const wanted = [
    options.controlPort,
    options.store === "postgres" ? options.postgresPort : -1,
    ...Array.from({ length: options.gateways }, (_, i) => (options.gatewayPort === 0 ? 0 : options.gatewayPort + i)),
    ...Array.from({ length: options.instances }, (_, i) => (options.instanceBasePort === 0 ? 0 : options.instanceBasePort + i)),
  ];
  const free = await pickFreePorts(wanted.filter((p) => p === 0).length);
  const ports = wanted.map((p) => (p === 0 ? (free.shift() as number) : p));
  const [controlPort = 0, postgresPort = -1, ...rest] = ports;
  const gatewayPorts = rest.slice(0, options.gateways);
  const instancePorts = rest.slice(options.gateways);
  return { gatewayPort: gatewayPorts[0] as number, gatewayPorts, controlPort, postgresPort, instancePorts };
}

function settingsFrom(env: NodeJS.ProcessEnv, dataDir: string, tls: StackTlsFiles | undefined): StackSettings {
  return {
    tls,
    signingKeyFile: tls === undefined && env.JWT_PRIVATE_KEY_FILE ? resolve(env.JWT_PRIVATE_KEY_FILE) : undefined,
    jwtSecret: env.JWT_SECRET || stackDefaults.JWT_SECRET,
    tokenExpiration: env.TOKEN_EXPIRATION || stackDefaults.TOKEN_EXPIRATION,
    leaseIdleTtl: env.LEASE_IDLE_TTL || stackDefaults.LEASE_IDLE_TTL,
    subscribeIntervalMs: env.SUBSCRIBE_INTERVAL_MS || stackDefaults.SUBSCRIBE_INTERVAL_MS,
    logLevel: env.LOG_LEVEL || stackDefaults.LOG_LEVEL,
    logFormat: env.LOG_FORMAT || "pretty",
    gatewayListenHost: env.LISTEN_HOST || dualStackHost,
    usersFile: resolve(repoRoot, env.USERS_FILE || "gateway/dev-users.json"),
    leaseDbPath: join(dataDir, "leases.db"),
  };
}

/** Node arguments running `script` (a `.ts` path): from `dist/` when compiled, else through tsx. */
function nodeArgs(script: string, compiled: boolean): string[] {
  if (compiled) return ["--import", pathToFileURL(builtPath("scripts/exit-with-parent.ts")).href, builtPath(script)];
  const hook = pathToFileURL(join(repoRoot, "scripts", "exit-with-parent.ts")).href;
  return ["--import", "tsx", "--import", hook, join(repoRoot, script)];
}

function buildSpecs(options: UpOptions, settings: StackSettings, ports: Awaited<ReturnType<typeof resolvePorts>>): ProcessSpec[] {
  const inherited = { ...process.env };
  const specs: ProcessSpec[] = ports.instancePorts.map((port, i) => {
    const podName = `myservice-${i + 1}`;
    return {
      name: podName,
      kind: "myservice",
      podName,
      port,
      probeHost: "127.0.0.1",
      command: process.execPath,
      args: nodeArgs("myservice/main.ts", options.compiled),
      env: {
        ...without(inherited, inheritedTokenVariables("myservice", settings)),
        ...myserviceEnv(
          settings,
          podName,
          port,
          inherited.JWT_PUBLIC_KEY_FILE || inherited.JWT_JWKS_URL ? undefined : jwksUrlOf(ports.gatewayPort),
        ),
      },
      cwd: repoRoot,
      restart: options.restart,
    };
  });
  if (options.gateway) {
    const gatewayInherited = without(inherited, inheritedTokenVariables("gateway", settings));
    // Discovery is the launcher's list of addresses, not DNS.
    delete gatewayInherited.MYSERVICE_DNS;
    const addresses = ports.instancePorts.map((port) => `127.0.0.1:${port}`);
    const shared: Record<string, string> = options.store === "postgres" ? { LEASE_DB_URL: postgresUrl(ports.postgresPort) } : {};
    const gateways = ports.gatewayPorts.map((port, i): ProcessSpec => {
      const name = gatewayName(options, i);
      return {
        name,
        kind: "gateway",
        podName: null,
        port,
        probeHost: connectHost(settings.gatewayListenHost),
        command: process.execPath,
        args: nodeArgs("gateway/main.ts", options.compiled),
        env: { ...gatewayInherited, ...gatewayEnv(settings, port, addresses), ...shared, GATEWAY_ID: name },
        cwd: repoRoot,
        // As compose's `restart: unless-stopped`: a gateway that ends is always brought back.
        restart: "always",
      };
    });
    specs.unshift(...gateways);
  }
  if (options.store === "postgres") specs.unshift(postgresSpec(options, ports.postgresPort));
  return specs;
}

function without(env: NodeJS.ProcessEnv, names: readonly string[]): NodeJS.ProcessEnv {
  const copy = { ...env };
  for (const name of names) delete copy[name];
  return copy;
}

/** `gateway` alone; `gateway-1`, `gateway-2`, ... when there are several (SPEC 10). */
function gatewayName(options: UpOptions, i: number): string {
  return options.gateways === 1 ? "gateway" : `gateway-${i + 1}`;
}

/** The PostgreSQL server as a supervised process: foreground `postgres`, as the `postgres` user when root. */
function postgresSpec(options: UpOptions, port: number): ProcessSpec {
  const [command, args] = postgresCommand({ dir: join(options.dataDir, "postgres"), port, settings: { synchronous_commit: "on" } });
  const asRoot = process.getuid?.() === 0;
  // The foreground server, not through runuser: the supervisor's signals reach the postmaster.
  const [program, programArgs] = asRoot && command === "runuser" ? [args[3] as string, args.slice(4)] : [command, args];
  return {
    name: "postgres",
    kind: "postgres",
    podName: null,
    port,
    probeHost: "127.0.0.1",
    command: program,
    args: programArgs,
    env: { PATH: process.env.PATH, LANG: "C.UTF-8" },
    cwd: join(options.dataDir, "postgres"),
    ...(asRoot ? postgresUser() : {}),
    // SIGINT is PostgreSQL's fast shutdown, SIGQUIT its immediate one (a crash, for tests).
    stopSignal: "SIGINT",
    killSignal: "SIGQUIT",
  };
}

/**
 * As root, the server runs as `postgres`, which must be able to enter the data folder: the
 * launcher lets others traverse (not list) its own data folder; a parent it cannot enter is
 * reported with a way out.
 */
async function postgresCanReach(dataDir: string): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  chmodSync(dataDir, statSync(dataDir).mode | 0o011);
  const ok = await new Promise<boolean>((done) =>
    execFile("runuser", ["-u", "postgres", "--", "test", "-x", dataDir], (error) => done(error === null)),
  );
  return ok
    ? undefined
    : `the postgres user cannot enter ${dataDir} (a parent folder is private): choose --data-dir under /tmp or /var/lib`;
}

function postgresUser(): { uid: number; gid: number } {
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((l) => l.startsWith("postgres:"));
  const [, , uid, gid] = (line ?? "").split(":");
  if (uid === undefined || gid === undefined) throw new Error("no postgres user (apt-get install postgresql)");
  return { uid: Number(uid), gid: Number(gid) };
}

/** Where a client on this machine reaches a server listening on `listenHost`. */
function connectHost(listenHost: string): string {
  return ["0.0.0.0", "::", ""].includes(listenHost) ? "127.0.0.1" : listenHost;
}

function writeAtomically(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

async function main(): Promise<void> {
  const options = loadOptions();
  if (options.help) {
    process.stdout.write(`${usage}\n`);
    return;
  }
  if (options.command !== undefined) {
    process.exitCode = await runCommand(options.command, options);
    return;
  }
  process.stdout.on("error", () => {});
  mkdirSync(options.dataDir, { recursive: true });
  mkdirSync(dirname(options.stateFile), { recursive: true });
  const ports = await resolvePorts(options);
  let tlsFiles: DevTlsFiles | undefined;
  if (options.tls) {
    try {
      tlsFiles = ensureDevTls(options.dataDir);
    } catch (error) {
      process.stderr.write(`up: cannot make the TLS files: ${(error as Error).message}\n`);
      process.exitCode = 1;
      return;
    }
  }
  const settings = settingsFrom(process.env, options.dataDir, tlsFiles);
  if (options.store === "postgres") {
    if (!postgresInstalled()) {
      process.stderr.write("up: --store postgres needs the PostgreSQL server (apt-get install postgresql)\n");
      process.exitCode = 1;
      return;
    }
    const problem = await postgresCanReach(options.dataDir);
    if (problem !== undefined) {
      process.stderr.write(`up: ${problem}\n`);
      process.exitCode = 1;
      return;
    }
    await initPostgres(join(options.dataDir, "postgres"));
  }
  const specs = buildSpecs(options, settings, ports);

  const width = Math.max(2, ...specs.map((s) => s.name.length));
  const say = createLinePrefixer(prefixFor("up", width), (text) => process.stdout.write(text));
  const log = (message: string) => say(Buffer.from(`${message}\n`));

  if (options.compiled) {
    // The node processes' entry points (PostgreSQL's arguments are not files of the build).
    const entries = specs.filter((s) => s.command === process.execPath).map((s) => s.args.at(-1) as string);
    const missing = [...new Set(entries)].filter((file) => !existsSync(file));
    if (missing.length > 0) {
      log(`cannot start: ${missing.join(", ")} missing. Run npm run build first (npm run up does).`);
      process.exitCode = 1;
      return;
    }
  }
  const busy = (
    await Promise.all([
      portProblem(ports.controlPort, "127.0.0.1"),
      ...specs.map((s) => portProblem(s.port, s.kind === "gateway" ? settings.gatewayListenHost : "127.0.0.1")),
    ])
  ).filter((p) => p !== undefined);
  if (busy.length > 0) {
    log(`cannot start: ${busy.join("; ")}. Is another stack running? Stop it, or choose other ports (--help).`);
    process.exitCode = 1;
    return;
  }
  if (tlsFiles !== undefined) {
    log(`TLS: ${tlsFiles.created ? "made" : "reusing"} a local CA, certificates and an Ed25519 token key in ${dirname(tlsFiles.ca.cert)}`);
  } else if (settings.signingKeyFile !== undefined) {
    log(`tokens signed with JWT_PRIVATE_KEY_FILE ${settings.signingKeyFile}; instances verify with the gateway's JWKS`);
  } else if (!process.env.JWT_SECRET) {
    log(`WARNING: JWT_SECRET is not set; using the development secret from common/dev-defaults.ts.`);
    log(`WARNING: never use it outside development: set JWT_SECRET to a random value of 32+ bytes.`);
  } else if (process.env.JWT_SECRET === devJwtSecret) {
    log("WARNING: JWT_SECRET is the development secret; never use it outside development.");
  }

  const prefixers = new Map<string, (chunk: Buffer | null) => void>();
  for (const spec of specs) {
    for (const stream of ["stdout", "stderr"] as const) {
      const out = stream === "stdout" ? process.stdout : process.stderr;
      prefixers.set(
        `${spec.name}/${stream}`,
        createLinePrefixer(prefixFor(spec.name, width), (t) => out.write(t)),
      );
    }
  }

  const host = connectHost(settings.gatewayListenHost);
  const hostPart = host.includes(":") ? `[${host}]` : host;
  const gatewayAddress = `${hostPart}:${ports.gatewayPort}`;
  const gatewayAddresses = ports.gatewayPorts.map((port) => `${hostPart}:${port}`);
  const controlUrl = `http://127.0.0.1:${ports.controlPort}`;
  let announced = false;
  const state = (): UpState => ({
    gateway: gatewayAddress,
    gateways: gatewayAddresses,
    ...(options.store === "postgres" ? { leaseDbUrl: postgresUrl(ports.postgresPort) } : {}),
    controlUrl,
    dataDir: options.dataDir,
    launcherPid: process.pid,
    processes: supervisor.list(),
    ...(tlsFiles !== undefined
      ? { tls: { ca: tlsFiles.ca.cert, tokenSigningKey: tlsFiles.tokenKey.privateKey, instanceClient: tlsFiles.gatewayClient } }
      : {}),
  });
  const supervisor = createSupervisor({
    specs,
    log,
    onOutput: (name, stream, chunk) => prefixers.get(`${name}/${stream}`)?.(chunk),
    onChange() {
      writeAtomically(options.stateFile, `${JSON.stringify(state(), null, 2)}\n`);
      if (!announced && supervisor.list().every((p) => p.state === "running")) {
        announced = true;
        announce(log, options, settings, gatewayAddresses, controlUrl);
      }
    },
  });

  const control = createControlServer(supervisor, state);
  await new Promise<void>((resolveListen, reject) => {
    control.once("error", reject);
    control.listen(ports.controlPort, "127.0.0.1", () => resolveListen());
  });
  writeAtomically(options.stateFile, `${JSON.stringify(state(), null, 2)}\n`);

  let stopping = false;
  const shutdown = (reason: string, exitCode: number) => {
    if (stopping) {
      // A second Ctrl-C means "now"; a repeated SIGTERM from a process manager does not.
      if (reason !== "SIGINT") return;
      log(`${reason} again: killing every process now`);
      supervisor.killAllNow();
      process.exit(exitCode || 1);
    }
    stopping = true;
    log(`${reason}: stopping every process (SIGTERM, SIGKILL after 3 s)`);
    setTimeout(() => {
      log(`processes still running after ${shutdownLimitMs} ms; killing them`);
      supervisor.killAllNow();
      process.exit(exitCode || 1);
    }, shutdownLimitMs).unref();
    void supervisor.shutdown().then(() => {
      control.close();
      control.closeAllConnections();
      log(`all processes stopped; data kept in ${options.dataDir}`);
      process.exit(exitCode);
    });
  };
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, () => shutdown(signal, 0));
  process.on("uncaughtException", (error) => {
    log(`launcher error: ${error.stack ?? String(error)}`);
    shutdown("launcher error", 1);
  });
  process.on("unhandledRejection", (error) => {
    log(`launcher error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    shutdown("launcher error", 1);
  });
  // Last resort: whatever path ends this process, no child outlives it.
  process.on("exit", () => supervisor.killAllNow());
  if (options.exitWithStdin) watchParentPipe(() => shutdown("stdin closed", 0));
  // `kill <pid of npm run up>` (SIGTERM or SIGKILL) reaches npm only: nothing may outlive it.
  watchParentProcesses((why) => shutdown(why, 0), { ranByNpm: process.env.npm_lifecycle_event === "up" });

  log(
    `starting ${options.store === "postgres" ? "PostgreSQL, " : ""}${options.gateway ? (options.gateways === 1 ? "the gateway and " : `${options.gateways} gateways and `) : ""}${options.instances} myservice instance(s); ` +
      `data in ${options.dataDir}; control API ${controlUrl}; restart policy of the instances: ${options.restart}`,
  );
  supervisor.startAll();
}

function announce(
  log: (message: string) => void,
  options: UpOptions,
  settings: StackSettings,
  gatewayAddresses: readonly string[],
  controlUrl: string,
): void {
  if (!options.gateway) {
    log(`all ${options.instances} instances are up (no gateway: --no-gateway)`);
    return;
  }
  const devSecret = settings.jwtSecret === devJwtSecret;
  const gatewayAddress = gatewayAddresses[0] as string;
  const port = gatewayAddress.split(":").at(-1);
  const gatewayPorts = gatewayAddresses.map((address) => address.split(":").at(-1));
  const login = `-d '{"username":"TestUser","password":"TestPassword","session_id":"s1"}'`;
  const { tls } = settings;
  for (const p of gatewayPorts) {
    const listening = settings.gatewayListenHost === dualStackHost ? `[::]:${p} (IPv6 and IPv4)` : `${settings.gatewayListenHost}:${p}`;
    log(`gateway listening on ${listening}${tls ? " (TLS)" : ""} - ready`);
  }
  if (options.store === "postgres") log("lease store: PostgreSQL shared by every gateway (process postgres)");
  if (tls === undefined) {
    log(`try it:   npx integrationtests basic_workflow --gateway ${gatewayAddress}`);
    log(`or:       grpcurl -plaintext ${login} ${gatewayAddress} my_service.MyServiceAPI/Login`);
  } else {
    log(`CA:       ${tls.ca.cert}   (trust it to reach https://localhost:${port})`);
    const control = controlUrl === defaultControlUrl ? "" : ` --control-url ${controlUrl}`;
    log(`try it:   npx integrationtests all --gateway localhost:${port} --tls --ca ${tls.ca.cert}${control}`);
    log(`or:       grpcurl -cacert ${tls.ca.cert} ${login} localhost:${port} my_service.MyServiceAPI/Login`);
    log(`          dashboard https://localhost:${port}/dashboard, keys https://localhost:${port}/.well-known/jwks.json`);
    log(`tokens:   EdDSA, signed with ${tls.tokenKey.privateKey}; instances hold only ${tls.tokenKey.publicKey}`);
  }
  const portOption = options.controlPort === 10_099 ? "" : ` --control-port ${controlUrl.split(":").at(-1)}`;
  log(`control:  npm run up -- status${portOption}   (or curl ${controlUrl}/processes)`);
  log(`          npm run up -- restart gateway${portOption}   restarts only the gateway: every session stays on its instance`);
  log("          (Ctrl-C and npm run up again restart the instances too: every session then moves to a new instance)");
  log("edited proto/? npm run generate (or npx buf generate: buf comes with npm install, it is not on PATH)");
  if (devSecret && tls === undefined) log("(tokens are signed with the development JWT secret)");
}

const commandTimeoutMs = 120_000;

/** Runs a command against a running launcher's control API; prints the process list. Returns the exit code. */
async function runCommand(command: UpCommand, options: UpOptions): Promise<number> {
  let controlUrl = `http://127.0.0.1:${options.controlPort}`;
  if (!options.controlPortGiven) {
    // The launcher of this data folder wrote its control URL into the state file.
    const state = await readUpState(options.stateFile).catch(() => undefined);
    if (state !== undefined && isRunning(state.launcherPid)) controlUrl = state.controlUrl;
  }
  const client = createControlClient(controlUrl, { timeoutMs: commandTimeoutMs });
  try {
    const processes = command.action === "status" ? await client.processes() : await client.control(command.name, command.action);
    process.stdout.write(formatProcesses(processes));
    if (command.action === "restart") {
      const down = processes.filter((p) => (p.name === command.name || matches(command.name, p)) && p.state !== "running");
      if (down.length > 0) {
        process.stderr.write(`up: not running after restart: ${down.map((p) => `${p.name} (${p.state})`).join(", ")}\n`);
        return 1;
      }
    }
    return 0;
  } catch (error) {
    const unreachable = error instanceof ControlApiError && error.status === 0;
    process.stderr.write(
      unreachable
        ? `up: no launcher answers at ${controlUrl}: is npm run up running? (point at it with --control-port or --data-dir)\n`
        : `up: ${error instanceof Error ? error.message : String(error)}\n`,
    );
    return 1;
  }
}

/** Whether `name` is a group name (`instances`, `gateway`) that addresses `process`. */
function matches(name: string, process: ProcessInfo): boolean {
  return (name === allInstancesName && process.kind === "myservice") || (name === allGatewaysName && process.kind === "gateway");
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The process list as a small table. */
function formatProcesses(processes: readonly ProcessInfo[]): string {
  const rows = [["NAME", "STATE", "PID", "PORT", "RESTARTS"]];
  for (const p of processes) {
    rows.push([p.name, `${p.state}${p.held ? " (held)" : ""}`, String(p.pid ?? "-"), String(p.port), String(p.restarts)]);
  }
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return `${rows
    .map((r) =>
      r
        .map((cell, i) => cell.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n")}\n`;
}

await main();
