import { execFile, spawn } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/** Where Debian installs the PostgreSQL server programs (`postgresql-15`). */
export const postgresBinDir = process.env.POSTGRES_BIN_DIR ?? "/usr/lib/postgresql/15/bin";

/** Options of a local PostgreSQL server in a folder of its own. */
export interface PostgresServerOptions {
  /** Folder for the cluster (`<dir>/pgdata`), its socket and its log. */
  readonly dir: string;
  /** TCP port on 127.0.0.1 (or `listenAddresses`). */
  readonly port: number;
  /** `listen_addresses`. Default `127.0.0.1`. */
  readonly listenAddresses?: string;
  /** Extra `-c name=value` settings. */
  readonly settings?: Readonly<Record<string, string>>;
}

/** True when the PostgreSQL server programs are installed here. */
export function postgresInstalled(): boolean {
  return existsSync(join(postgresBinDir, "initdb")) && existsSync(join(postgresBinDir, "pg_ctl"));
}

/** PostgreSQL refuses to run as root: as root, its programs run as the `postgres` user. */
function asServerUser(program: string, args: readonly string[]): [string, string[]] {
  const path = join(postgresBinDir, program);
  return process.getuid?.() === 0 ? ["runuser", ["-u", "postgres", "--", path, ...args]] : [path, [...args]];
}

/** Paths of a server folder. */
export function postgresPaths(dir: string) {
  return { data: join(dir, "pgdata"), socket: join(dir, "socket"), log: join(dir, "postgres.log") };
}

/** The `LEASE_DB_URL` of a local server (user `postgres`, trust authentication, database `postgres`). */
export function postgresUrl(port: number, host = "127.0.0.1", database = "postgres"): string {
  return `postgres://postgres@${host}:${port}/${database}`;
}

/**
 * Creates the cluster in `<dir>/pgdata` if it does not exist yet (`initdb`, trust
 * authentication on loopback, user `postgres`). As root the folder is given to `postgres`.
 */
export async function initPostgres(dir: string): Promise<void> {
  const paths = postgresPaths(dir);
  mkdirSync(paths.socket, { recursive: true });
  if (process.getuid?.() === 0) {
    const { stdout } = await execFileAsync("id", ["-u", "postgres"]);
    const { stdout: gid } = await execFileAsync("id", ["-g", "postgres"]);
    for (const path of [dir, paths.socket]) chownSync(path, Number(stdout.trim()), Number(gid.trim()));
  }
  chmodSync(dir, 0o700);
  if (existsSync(join(paths.data, "PG_VERSION"))) return;
  const [cmd, args] = asServerUser("initdb", ["-D", paths.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
  await execFileAsync(cmd, args, { cwd: dir });
  // Every connection from anywhere the server listens is trusted: a development server only.
  writeFileSync(join(paths.data, "pg_hba.conf"), "local all all trust\nhost all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n");
}

/** The `postgres` command line (foreground server) for a supervisor. */
export function postgresCommand(options: PostgresServerOptions): [string, string[]] {
  const paths = postgresPaths(options.dir);
  const settings = { listen_addresses: options.listenAddresses ?? "127.0.0.1", ...options.settings };
  const args = ["-D", paths.data, "-p", String(options.port), "-k", paths.socket];
  for (const [name, value] of Object.entries(settings)) args.push("-c", `${name}=${value}`);
  return asServerUser("postgres", args);
}

/** `pg_ctl start -w`: starts the server in the background and waits until it accepts connections. */
export async function startPostgres(options: PostgresServerOptions): Promise<void> {
  const paths = postgresPaths(options.dir);
  const [, serverArgs] = postgresCommand(options);
  // pg_ctl takes the server's options as one string; -D is its own flag.
  const serverOptions = serverArgs.slice(serverArgs.indexOf("-p")).join(" ");
  const [cmd, args] = asServerUser("pg_ctl", ["-D", paths.data, "-l", paths.log, "-o", serverOptions, "-w", "-t", "30", "start"]);
  await execFileAsync(cmd, args, { cwd: options.dir });
}

/** `pg_ctl stop`: `fast` (clean) or `immediate` (as a crash: no shutdown checkpoint). */
export async function stopPostgres(dir: string, mode: "fast" | "immediate" = "fast"): Promise<void> {
  const [cmd, args] = asServerUser("pg_ctl", ["-D", postgresPaths(dir).data, "-m", mode, "-w", "-t", "30", "stop"]);
  try {
    await execFileAsync(cmd, args, { cwd: dir });
  } catch (error) {
    // Not running: nothing to stop.
    if (!/PID file .* does not exist|Is server running/.test(String((error as { stderr?: string }).stderr ?? error))) throw error;
  }
}

/** Runs `pg_ctl stop -m fast` for a server a supervisor started in the foreground. */
export function stopPostgresDetached(dir: string, mode: "fast" | "immediate"): void {
  const [cmd, args] = asServerUser("pg_ctl", ["-D", postgresPaths(dir).data, "-m", mode, "stop"]);
  spawn(cmd, args, { stdio: "ignore", cwd: dir }).on("error", () => {});
}
