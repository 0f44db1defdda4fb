import { parseArgs } from "node:util";
import { devJwtSecret, devUser } from "../common/dev-defaults.js";
import { defaultControlUrl } from "../scripts/up-control-client.js";

/** Default gateway address (SPEC 8). */
export const defaultGateway = "localhost:10000";
/** Default control API of the `npm run up` launcher. */
export { defaultControlUrl };

/** What the command line asks for, resolved with the environment. */
export type CliCommand =
  | { readonly kind: "help" }
  | { readonly kind: "list" }
  | { readonly kind: "usage-error"; readonly message: string }
  | { readonly kind: "run"; readonly settings: CliSettings };

/** Settings of a run; every field documents its flag, variable and default. */
export interface CliSettings {
  /** Scenario names to run, in order (`all` expanded by the caller). */
  readonly scenarios: readonly string[];
  /** True when `all` was asked for. */
  readonly all: boolean;
  /** `--gateway host:port` / `GATEWAY_ADDR`. Default `localhost:10000`. */
  readonly gateway: string;
  /** `--username` / `TEST_USERNAME`. Default `TestUser`. */
  readonly username: string;
  /** `--password` / `TEST_PASSWORD`. Default `TestPassword`. */
  readonly password: string;
  /** `--role` / `TEST_ROLE`: role Login must report. Default `admin`. */
  readonly role: string;
  /** `--instances N`: pool size. Default 3. */
  readonly instances: number;
  /** `--subscribe-interval-ms` / `SUBSCRIBE_INTERVAL_MS`. Default 5000. */
  readonly subscribeIntervalMs: number;
  /** `--capacity-wait-ms`: wait for a free instance while others recycle. Default 20,000. */
  readonly capacityWaitMs: number;
  /** `--settle-ms`: extra wait between scenarios of `all` after instances are free. Default 1500. */
  readonly settleMs: number;
  /** `--control-url` / `UP_CONTROL_URL`: the `npm run up` control API. Default `http://127.0.0.1:10099`. */
  readonly controlUrl: string;
  /** `--compose-file f`: control a docker compose project instead. */
  readonly composeFile: string | undefined;
  /** `JWT_SECRET` (environment only, never a flag): to mint expired/foreign tokens. Default the dev secret. */
  readonly jwtSecret: string;
  /**
   * `--jwt-private-key <file>` / `JWT_PRIVATE_KEY_FILE`: the stack's token signing key, to mint
   * tokens when it signs with a private key. Default: the one `npm run up -- --tls` reports on
   * its control API, else `JWT_SECRET`.
   */
  readonly jwtPrivateKeyFile: string | undefined;
  /** `--tls` (implied by `--ca`): reach the gateway over TLS. Default cleartext (h2c). */
  readonly tls: boolean;
  /** `--ca <file>` / `GATEWAY_CA_FILE`: PEM CA the gateway's certificate must chain to. Default the system's CAs. */
  readonly caFile: string | undefined;
  /** `--cert <file>` / `--key <file>`: a client certificate for a gateway that asks for one (mTLS). */
  readonly certFile: string | undefined;
  readonly keyFile: string | undefined;
  /** `--json`: print one JSON document instead of the text output (progress goes to stderr). */
  readonly json: boolean;
  /** `--junit <file>`: also write a JUnit XML report. */
  readonly junitFile: string | undefined;
  /** `--keep`: leave the sessions a single scenario leased (no cleanup). */
  readonly keep: boolean;
  /** `--no-color` / `NO_COLOR`: plain output. */
  readonly color: boolean | undefined;
}

/** The usage text. */
export function usage(scenarioNames: readonly string[]): string {
  return `Usage: integrationtests [options] <scenario>... | all
       integrationtests --scenario=<name> [options]
       integrationtests --list

Runs the integration scenarios (docs/behaviour.md, section 8) against a running gateway over native gRPC.

Options:
  --list                     print the scenario names and exit
  --scenario <name>          run this scenario (same as a positional name; repeatable)
  --gateway <host:port>      gateway address (GATEWAY_ADDR, default ${defaultGateway})
  --username <name>          test user (TEST_USERNAME, default ${devUser.username})
  --password <password>      its password (TEST_PASSWORD, default ${devUser.password})
  --role <role>              role Login must report (TEST_ROLE, default ${devUser.role})
  --instances <n>            instances in the pool (default 3)
  --subscribe-interval-ms <ms>  the stack's Subscribe interval (SUBSCRIBE_INTERVAL_MS, default 5000)
  --capacity-wait-ms <ms>    how long to wait for a recycling instance (default 20000)
  --settle-ms <ms>           pause between scenarios of 'all' once instances are free (default 1500)
  --tls                      reach the gateway over TLS (implied by --ca)
  --ca <file>                PEM CA the gateway's certificate chains to (GATEWAY_CA_FILE)
  --cert <file> --key <file> client certificate, for a gateway that requires one (mTLS)
  --jwt-private-key <file>   the stack's token signing key, to mint test tokens (JWT_PRIVATE_KEY_FILE;
                             default: the key npm run up -- --tls reports, else JWT_SECRET)
  --control-url <url>        npm run up control API (UP_CONTROL_URL, default ${defaultControlUrl})
  --compose-file <file>      control a docker compose project instead of npm run up
  --keep                     leave the sessions a single scenario leased open (no cleanup)
  --json                     print one JSON document (progress goes to stderr)
  --junit <file>             also write a JUnit XML report to <file>
  --no-color                 no ANSI colours
  -h, --help                 this text

Environment: JWT_SECRET (the stack's HMAC key, used to mint expired tokens; default the dev secret).
Against npm run up -- --tls, instances are reached with the client certificate and the tokens
minted with the key its control API names (GET /state).
Exit status: 0 all passed, 1 a scenario or its cleanup failed, 2 usage error or unknown scenario.

Scenarios:
${scenarioNames.map((n) => `  ${n}`).join("\n")}
`;
}

/** Parses the command line and environment. Pure: no output, no exit. */
export function parseCli(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  scenarioNames: readonly string[],
): CliCommand {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (error) {
    return { kind: "usage-error", message: error instanceof Error ? error.message : String(error) };
  }
  const { values, positionals } = parsed;
  if (values.help) return { kind: "help" };
  if (values.list) return { kind: "list" };

  const requested = [...(values.scenario ?? []), ...positionals];
  if (requested.length === 0) return { kind: "usage-error", message: "no scenario given (a name, 'all', or --list)" };
  const all = requested.includes("all");
  if (all && requested.length > 1) return { kind: "usage-error", message: "'all' cannot be combined with other scenario names" };
  const unknown = requested.filter((name) => name !== "all" && !scenarioNames.includes(name));
  if (unknown.length > 0) return { kind: "usage-error", message: `unknown scenario: ${unknown.join(", ")}` };
  const scenarios = all ? [...scenarioNames] : requested;
  if (values.keep && scenarios.length > 1) {
    return { kind: "usage-error", message: "--keep works with a single scenario only (the others would find the pool full)" };
  }

  const problems: string[] = [];
  const integer = (flag: string, raw: string | undefined, fallback: number, min: number, max: number): number => {
    if (raw === undefined || raw.trim() === "") return fallback;
    const n = Number(raw);
    if (!/^\d+$/.test(raw.trim()) || n < min || n > max) {
      problems.push(`${flag}=${JSON.stringify(raw)}: expected a whole number from ${min} to ${max}`);
      return fallback;
    }
    return n;
  };
  const nonEmpty = (value: string | undefined) => (value === undefined || value.trim() === "" ? undefined : value.trim());
  const gateway = nonEmpty(values.gateway) ?? nonEmpty(env.GATEWAY_ADDR) ?? defaultGateway;
  if (!/^(https?:\/\/)?[^\s/:]+(:\d+)?\/?$|^\[[0-9a-fA-F:]+\](:\d+)?$/.test(gateway)) {
    problems.push(`--gateway=${JSON.stringify(gateway)}: expected host:port`);
  }
  const settings: CliSettings = {
    scenarios,
    all,
    gateway,
    username: values.username ?? env.TEST_USERNAME ?? devUser.username,
    password: values.password ?? env.TEST_PASSWORD ?? devUser.password,
    role: nonEmpty(values.role) ?? nonEmpty(env.TEST_ROLE) ?? devUser.role,
    instances: integer("--instances", values.instances, 3, 1, 1000),
    subscribeIntervalMs: integer("--subscribe-interval-ms", values["subscribe-interval-ms"] ?? env.SUBSCRIBE_INTERVAL_MS, 5000, 1, 600_000),
    capacityWaitMs: integer("--capacity-wait-ms", values["capacity-wait-ms"], 20_000, 0, 600_000),
    settleMs: integer("--settle-ms", values["settle-ms"], 1500, 0, 600_000),
    controlUrl: nonEmpty(values["control-url"]) ?? nonEmpty(env.UP_CONTROL_URL) ?? defaultControlUrl,
    composeFile: nonEmpty(values["compose-file"]),
    jwtSecret: nonEmpty(env.JWT_SECRET) ?? devJwtSecret,
    jwtPrivateKeyFile: nonEmpty(values["jwt-private-key"]) ?? nonEmpty(env.JWT_PRIVATE_KEY_FILE),
    tls: values.tls === true || nonEmpty(values.ca) !== undefined || nonEmpty(env.GATEWAY_CA_FILE) !== undefined,
    caFile: nonEmpty(values.ca) ?? nonEmpty(env.GATEWAY_CA_FILE),
    certFile: nonEmpty(values.cert),
    keyFile: nonEmpty(values.key),
    json: values.json ?? false,
    junitFile: nonEmpty(values.junit),
    keep: values.keep ?? false,
    color: values["no-color"] || nonEmpty(env.NO_COLOR) !== undefined ? false : undefined,
  };
  if ((settings.certFile === undefined) !== (settings.keyFile === undefined)) problems.push("--cert and --key go together");
  if (problems.length > 0) return { kind: "usage-error", message: problems.join("\n") };
  return { kind: "run", settings };
}

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    options: {
      help: { type: "boolean", short: "h" },
      list: { type: "boolean" },
      scenario: { type: "string", multiple: true },
      gateway: { type: "string" },
      username: { type: "string" },
      password: { type: "string" },
      role: { type: "string" },
      instances: { type: "string" },
      "subscribe-interval-ms": { type: "string" },
      "capacity-wait-ms": { type: "string" },
      "settle-ms": { type: "string" },
      "control-url": { type: "string" },
      "compose-file": { type: "string" },
      tls: { type: "boolean" },
      ca: { type: "string" },
      cert: { type: "string" },
      key: { type: "string" },
      "jwt-private-key": { type: "string" },
      json: { type: "boolean" },
      junit: { type: "string" },
      keep: { type: "boolean" },
      "no-color": { type: "boolean" },
    },
  });
}
