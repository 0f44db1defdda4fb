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
  /** With `--tls`: certificates and the token key; `undefined` = cleartext and `JWT_SECRET`. */
  readonly tls?: StackTlsFiles;
  /**
   * `JWT_PRIVATE_KEY_FILE` of the launcher's environment (without `--tls`): the gateway signs
   * with it, and instances verify with the gateway's JWKS (`JWT_JWKS_URL`) unless the
   * environment names `JWT_PUBLIC_KEY_FILE` or `JWT_JWKS_URL` itself.
   */
  readonly signingKeyFile?: string;
}

/** The files a `--tls` stack runs with (`scripts/dev-certs.ts`, `ensureDevTls`). */
export interface StackTlsFiles {
  readonly ca: { readonly cert: string };
  readonly gateway: { readonly cert: string; readonly key: string };
  readonly instance: { readonly cert: string; readonly key: string };
  readonly gatewayClient: { readonly cert: string; readonly key: string };
  readonly tokenKey: { readonly privateKey: string; readonly publicKey: string };
}

/**
 * Token variables a process must not inherit from the launcher's environment: an instance
 * holds nothing that signs, and a TLS gateway signs with its key, not with a secret.
 */
export function inheritedTokenVariables(kind: "gateway" | "myservice", settings: StackSettings): readonly string[] {
  const asymmetric = settings.tls !== undefined || settings.signingKeyFile !== undefined;
  if (kind === "myservice") return ["JWT_PRIVATE_KEY_FILE", "JWT_PREVIOUS_KEYS", ...(asymmetric ? ["JWT_SECRET"] : [])];
  return asymmetric ? ["JWT_SECRET"] : [];
}

/** Where an instance of the launcher fetches the gateway's key set. */
export function jwksUrlOf(gatewayPort: number): string {
  return `http://127.0.0.1:${gatewayPort}/.well-known/jwks.json`;
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
  const { tls } = settings;
  return {
    SERVICE_PORT_GRPC: String(port),
    LISTEN_HOST: settings.gatewayListenHost,
    ...(tls === undefined
      ? settings.signingKeyFile !== undefined
        ? { JWT_PRIVATE_KEY_FILE: settings.signingKeyFile }
        : { JWT_SECRET: settings.jwtSecret }
      : {
          JWT_PRIVATE_KEY_FILE: tls.tokenKey.privateKey,
          TLS_CERT_FILE: tls.gateway.cert,
          TLS_KEY_FILE: tls.gateway.key,
          UPSTREAM_TLS_CA_FILE: tls.ca.cert,
          UPSTREAM_TLS_CERT_FILE: tls.gatewayClient.cert,
          UPSTREAM_TLS_KEY_FILE: tls.gatewayClient.key,
        }),
    TOKEN_EXPIRATION: settings.tokenExpiration,
    LEASE_IDLE_TTL: settings.leaseIdleTtl,
    USERS_FILE: settings.usersFile,
    LEASE_DB_PATH: settings.leaseDbPath,
    MYSERVICE_ADDRESSES: instanceAddresses.join(","),
    LOG_LEVEL: settings.logLevel,
    LOG_FORMAT: settings.logFormat,
  };
}

/**
 * Environment the launcher sets for one instance; instances always listen on loopback.
 * `jwksUrl`: with a signing key file, where the instance fetches the gateway's keys.
 */
export function myserviceEnv(settings: StackSettings, podName: string, port: number, jwksUrl?: string): Record<string, string> {
  const { tls } = settings;
  return {
    SERVICE_PORT_GRPC: String(port),
    HOSTNAME: podName,
    LISTEN_HOST: "127.0.0.1",
    ...(tls === undefined
      ? settings.signingKeyFile !== undefined
        ? jwksUrl !== undefined
          ? { JWT_JWKS_URL: jwksUrl }
          : {}
        : { JWT_SECRET: settings.jwtSecret }
      : {
          // The public half only: this instance cannot sign a token the gateway accepts.
          JWT_PUBLIC_KEY_FILE: tls.tokenKey.publicKey,
          TLS_CERT_FILE: tls.instance.cert,
          TLS_KEY_FILE: tls.instance.key,
          // Only the gateway (its client certificate) may call the instance.
          TLS_CLIENT_CA_FILE: tls.ca.cert,
        }),
    SUBSCRIBE_INTERVAL_MS: settings.subscribeIntervalMs,
    LOG_LEVEL: settings.logLevel,
    LOG_FORMAT: settings.logFormat,
  };
}
