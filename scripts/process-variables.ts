import { loadConfig as loadGatewayConfig } from "../gateway/config.js";
import { loadConfig as loadMyServiceConfig } from "../myservice/config.js";

/** The two processes of the product. */
export type ProcessName = "gateway" | "myservice";

/**
 * Variables a process reads: the names its `loadConfig` asks the environment for, recorded
 * while it runs on an empty environment (every `loadConfig` reads each of its variables
 * whatever the others hold, so none hides behind another).
 */
export function variablesRead(load: (env: Readonly<Record<string, string | undefined>>) => unknown): ReadonlySet<string> {
  const seen = new Set<string>();
  const env = new Proxy({} as Record<string, string | undefined>, {
    get(_target, key) {
      if (typeof key === "string") seen.add(key);
      return undefined;
    },
  });
  try {
    load(env);
  } catch {
    // An empty environment is invalid (JWT_SECRET, USERS_FILE...): only the reads matter here.
  }
  return seen;
}

/**
 * Variables other work provides that this branch's processes do not read yet. Listed here, in
 * one place, so the deployment checks accept them until that work is merged:
 * - `LEASE_DB_URL` (gateway): the PostgreSQL lease store of the scale-out work (SPEC 10, issue 12).
 */
export const pendingVariables: Readonly<Record<ProcessName, readonly string[]>> = {
  gateway: ["LEASE_DB_URL"],
  myservice: [],
};

/** Every variable `process` reads, pending ones included. */
export function processVariables(process: ProcessName): ReadonlySet<string> {
  const read = variablesRead(process === "gateway" ? loadGatewayConfig : loadMyServiceConfig);
  return new Set([...read, ...pendingVariables[process]]);
}

/** The `loadConfig` of `process`, to check that an environment is valid. */
export function configLoader(process: ProcessName): (env: Readonly<Record<string, string | undefined>>) => unknown {
  return process === "gateway" ? loadGatewayConfig : loadMyServiceConfig;
}
