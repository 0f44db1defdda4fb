import { devJwtSecret } from "../common/dev-defaults.js";

/**
 * Settings the development stack passes to its processes. `npm run up` fills them from its
 * environment; `compose.yaml` sets the same variables (checked by `scripts/check-compose.sh`).
 */
export interface StackSettings {
  /** `JWT_SECRET`, shared by the gateway and every instance. */
  readonly jwtSecret: string;
  /** `TOKEN_EXPIRATION` of the gateway, e.g. `1h`. */
  readonly tokenExpiration: string;
  /** `LEASE_IDLE_TTL` of the gateway, e.g. `5m`. */
  readonly leaseIdleTtl: string;
  /** `SUBSCRIBE_INTERVAL_MS` of the instances, milliseconds as text. */
  readonly subscribeIntervalMs: string;
  /** `LOG_LEVEL` of every process. */
  readonly logLevel: string;
  /** `LOG_FORMAT` of every process: `pretty` or `json`. */
  readonly logFormat: string;
  /** `LISTEN_HOST` of the gateway. */
  readonly gatewayListenHost: string;
  /** `USERS_FILE` of the gateway, absolute path. */
  readonly usersFile: string;
  /** `LEASE_DB_PATH` of the gateway, absolute path. */
  readonly leaseDbPath: string;
}

/** Defaults of the development stack, by variable; compose's `${VAR:-default}` must agree. */
export const stackDefaults = {
  JWT_SECRET: devJwtSecret,
  TOKEN_EXPIRATION: "1h",
  LEASE_IDLE_TTL: "5m",
  SUBSCRIBE_INTERVAL_MS: "5000",
  LOG_LEVEL: "info",
} as const;

/**
 * Variables only one side sets, on purpose: the launcher lists instance addresses and names
 * its pods, compose lets the gateway resolve the service name and Docker sets `HOSTNAME`.
 */
export const envDifferences = {
  gateway: { launcherOnly: ["MYSERVICE_ADDRESSES"], composeOnly: ["MYSERVICE_DNS"] },
  myservice: { launcherOnly: ["HOSTNAME"], composeOnly: [] as string[] },
} as const;

/** Environment the launcher sets for the gateway (on top of its own inherited environment). */
export function gatewayEnv(settings: StackSettings, port: number, instanceAddresses: readonly string[]): Record<string, string> {
  return {
    SERVICE_PORT_GRPC: String(port),
    LISTEN_HOST: settings.gatewayListenHost,
    JWT_SECRET: settings.jwtSecret,
    TOKEN_EXPIRATION: settings.tokenExpiration,
    LEASE_IDLE_TTL: settings.leaseIdleTtl,
    USERS_FILE: settings.usersFile,
    LEASE_DB_PATH: settings.leaseDbPath,
    MYSERVICE_ADDRESSES: instanceAddresses.join(","),
    LOG_LEVEL: settings.logLevel,
    LOG_FORMAT: settings.logFormat,
  };
}

/** Environment the launcher sets for one instance; instances always listen on loopback. */
export function myserviceEnv(settings: StackSettings, podName: string, port: number): Record<string, string> {
  return {
    SERVICE_PORT_GRPC: String(port),
    HOSTNAME: podName,
    LISTEN_HOST: "127.0.0.1",
    JWT_SECRET: settings.jwtSecret,
    SUBSCRIBE_INTERVAL_MS: settings.subscribeIntervalMs,
    LOG_LEVEL: settings.logLevel,
    LOG_FORMAT: settings.logFormat,
  };
}
