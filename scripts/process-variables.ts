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

/** Every variable `process` reads. */
export function processVariables(process: ProcessName): ReadonlySet<string> {
  return variablesRead(process === "gateway" ? loadGatewayConfig : loadMyServiceConfig);
}

/** The `loadConfig` of `process`, to check that an environment is valid. */
export function configLoader(process: ProcessName): (env: Readonly<Record<string, string | undefined>>) => unknown {
  return process === "gateway" ? loadGatewayConfig : loadMyServiceConfig;
}
