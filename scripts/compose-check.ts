import { dirname, posix } from "node:path";
import { processVariables } from "./process-variables.js";
import { envDifferences, gatewayEnv, myserviceEnv, type StackSettings, stackDefaults } from "./stack-env.js";

type Doc = Record<string, unknown>;

const sampleSettings: StackSettings = {
  jwtSecret: "s",
  tokenExpiration: "1h",
  leaseIdleTtl: "5m",
  subscribeIntervalMs: "5000",
  logLevel: "info",
  logFormat: "json",
  gatewayListenHost: "0.0.0.0",
  usersFile: "/u",
  leaseDbPath: "/d/leases.db",
};

function isObject(value: unknown): value is Doc {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A service's `environment` as a map, from either the list or the mapping form. */
export function environmentOf(service: Doc): Map<string, string> {
  const env = new Map<string, string>();
  const raw = service.environment;
  if (Array.isArray(raw)) {
    for (const item of raw) {
      const [key = "", ...rest] = String(item).split("=");
      env.set(key, rest.join("="));
    }
  } else if (isObject(raw)) {
    for (const [key, value] of Object.entries(raw)) env.set(key, value === null ? "" : String(value));
  }
  return env;
}

function publishes(service: Doc, port: number): boolean {
  const ports = Array.isArray(service.ports) ? service.ports : [];
  return ports.some((p) => {
    if (isObject(p)) return Number(p.published) === port && Number(p.target) === port;
    const parts = String(p).split(":");
    return parts.length >= 2 && Number(parts.at(-2)) === port && Number(parts.at(-1)) === port;
  });
}

/** Which form a compose file is: `compose.yaml` (one gateway, SQLite) or `compose.postgres.yaml` (SPEC 10). */
export type ComposeForm = "sqlite" | "postgres";

function checkEnvInStep(kind: "gateway" | "myservice", env: Map<string, string>, problems: string[], form: ComposeForm = "sqlite"): void {
  const launcher = Object.keys(kind === "gateway" ? gatewayEnv(sampleSettings, 1, ["a:1"]) : myserviceEnv(sampleSettings, "p", 1));
  const differences = envDifferences[kind];
  // The PostgreSQL form: the store is LEASE_DB_URL (the launcher adds it with --store postgres), no file.
  const launcherOnly = [...differences.launcherOnly, ...(form === "postgres" && kind === "gateway" ? ["LEASE_DB_PATH"] : [])];
  const composeOnly = [...differences.composeOnly, ...(form === "postgres" && kind === "gateway" ? ["LEASE_DB_URL"] : [])];
  const expected = new Set([...launcher.filter((k) => !launcherOnly.includes(k)), ...composeOnly]);
  for (const key of expected) {
    if (!env.has(key)) problems.push(`${kind}: compose does not set ${key}, which npm run up sets (scripts/stack-env.ts)`);
  }
  const read = processVariables(kind);
  for (const key of env.keys()) {
    if (!read.has(key)) problems.push(`${kind}: compose sets ${key}, which the ${kind} does not read`);
    if (!expected.has(key)) {
      problems.push(`${kind}: compose sets ${key}, which npm run up does not (add it to scripts/stack-env.ts, or remove it)`);
    }
  }
  for (const [key, value] of env) {
    const match = /^\$\{(\w+):?-(.*)\}$/.exec(value);
    if (match === null) continue;
    const [, name, fallback] = match;
    if (name !== key) problems.push(`${kind}: ${key} takes its value from \${${name}}, not from \${${key}}`);
    const launcherDefault = (stackDefaults as Record<string, string>)[key];
    if (launcherDefault !== undefined && fallback !== launcherDefault) {
      problems.push(
        `${kind}: ${key} defaults to ${JSON.stringify(fallback)} in compose but ${JSON.stringify(launcherDefault)} in npm run up`,
      );
    }
  }
  if (!/^\$\{JWT_SECRET:?-.+\}$/.test(env.get("JWT_SECRET") ?? "")) {
    problems.push(`${kind}: JWT_SECRET must be \${JWT_SECRET:-<dev secret>} so the operator's secret wins`);
  }
}

function checkGateway(gateway: Doc, doc: Doc, myserviceEnvMap: Map<string, string>, problems: string[]): void {
  const env = environmentOf(gateway);
  if (env.get("SERVICE_PORT_GRPC") !== "10000") problems.push("gateway: SERVICE_PORT_GRPC must be 10000");
  if (!publishes(gateway, 10000)) problems.push('gateway: port 10000 must be published ("10000:10000")');
  if (gateway.restart !== "unless-stopped") problems.push("gateway: restart must be unless-stopped");
  if (!isObject(gateway.healthcheck) || gateway.healthcheck.test === undefined) problems.push("gateway: needs a healthcheck");
  const expectedDns = `myservice:${myserviceEnvMap.get("SERVICE_PORT_GRPC")}`;
  if (env.get("MYSERVICE_DNS") !== expectedDns) problems.push(`gateway: MYSERVICE_DNS must be ${expectedDns}`);
  const dbDir = dirname(env.get("LEASE_DB_PATH") ?? "");
  const declared = isObject(doc.volumes) ? Object.keys(doc.volumes) : [];
  const mounts = (Array.isArray(gateway.volumes) ? gateway.volumes : []).map((v) =>
    isObject(v)
      ? { source: String(v.source), target: String(v.target) }
      : { source: String(v).split(":")[0] ?? "", target: String(v).split(":")[1] ?? "" },
  );
  const dbMount = mounts.find((m) => posix.normalize(m.target) === dbDir);
  if (dbMount === undefined || !declared.includes(dbMount.source)) {
    problems.push(`gateway: the folder of LEASE_DB_PATH (${dbDir}) must be a named volume declared under volumes:`);
  }
}

function checkMyservice(myservice: Doc, problems: string[]): void {
  const env = environmentOf(myservice);
  if (env.get("SERVICE_PORT_GRPC") !== "5000") problems.push("myservice: SERVICE_PORT_GRPC must be 5000");
  const replicas = isObject(myservice.deploy) ? myservice.deploy.replicas : undefined;
  if (replicas !== 3) problems.push("myservice: deploy.replicas must be 3 (SPEC 2)");
  if (myservice.restart !== "always") problems.push("myservice: restart must be always (an instance exits 0 after Shutdown)");
  if (myservice.container_name !== undefined) problems.push("myservice: no container_name (it has replicas)");
  if (myservice.ports !== undefined) problems.push("myservice: publishes no ports (replicas would clash); use expose");
  if (env.has("HOSTNAME")) problems.push("myservice: HOSTNAME is Docker's (the container id); do not set it");
}

/**
 * Checks a parsed compose file for what the stack relies on (SPEC 7) and that every variable
 * it sets matches what `npm run up` sets (`scripts/stack-env.ts`), defaults included.
 * Returns the problems found; empty means the file is fine.
 */
export function checkCompose(doc: unknown): string[] {
  if (!isObject(doc) || !isObject(doc.services)) return ["compose file has no services:"];
  const { gateway, myservice } = doc.services;
  const problems: string[] = [];
  if (!isObject(gateway)) problems.push("no gateway service");
  if (!isObject(myservice)) problems.push("no myservice service");
  if (!isObject(gateway) || !isObject(myservice)) return problems;
  checkEnvInStep("gateway", environmentOf(gateway), problems);
  checkEnvInStep("myservice", environmentOf(myservice), problems);
  checkGateway(gateway, doc, environmentOf(myservice), problems);
  checkMyservice(myservice, problems);
  return problems;
}

/**
 * Checks the PostgreSQL form (SPEC 10, 13): a `postgres` service, at least two gateway replicas
 * sharing it through `LEASE_DB_URL` behind one published port (`front`), the instances as in
 * `compose.yaml`, and every variable in step with `npm run up -- --store postgres`.
 */
export function checkComposePostgres(doc: unknown): string[] {
  if (!isObject(doc) || !isObject(doc.services)) return ["compose file has no services:"];
  const { gateway, myservice, postgres, front } = doc.services;
  const problems: string[] = [];
  for (const [name, service] of Object.entries({ gateway, myservice, postgres, front })) {
    if (!isObject(service)) problems.push(`no ${name} service`);
  }
  if (!isObject(gateway) || !isObject(myservice) || !isObject(postgres) || !isObject(front)) return problems;
  const env = environmentOf(gateway);
  checkEnvInStep("gateway", env, problems, "postgres");
  checkEnvInStep("myservice", environmentOf(myservice), problems, "postgres");
  checkMyservice(myservice, problems);
  if (!/^postgres(ql)?:\/\/[^@]+@postgres:5432\/\w+$/.test(env.get("LEASE_DB_URL") ?? "")) {
    problems.push("gateway: LEASE_DB_URL must name the postgres service (postgres://user:password@postgres:5432/db)");
  }
  if (env.has("GATEWAY_ID")) problems.push("gateway: no GATEWAY_ID (replicas; the default <container id>:<port> is unique)");
  const replicas = isObject(gateway.deploy) ? Number(gateway.deploy.replicas) : 1;
  if (!(replicas >= 2)) problems.push("gateway: deploy.replicas must be at least 2 (SPEC 13)");
  if (gateway.ports !== undefined) problems.push("gateway: replicas publish no ports; front publishes 10000");
  if (!publishes(front, 10000)) problems.push('front: port 10000 must be published ("10000:10000")');
  if (env.get("MYSERVICE_DNS") !== `myservice:${environmentOf(myservice).get("SERVICE_PORT_GRPC")}`) {
    problems.push("gateway: MYSERVICE_DNS must name the myservice service");
  }
  return problems;
}

export { loadYaml } from "./yaml.js";
