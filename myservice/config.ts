import { hostname } from "node:os";
import { EnvReader } from "../common/env.js";
import { defaultMaxHeaderBytes } from "../common/header-limits.js";
import { dualStackHost } from "../common/listen.js";
import { readTlsReloadInterval, readTlsServerEnv, type TlsServerConfig } from "../common/tls.js";
import { minSecretBytes } from "../common/tokens.js";

/** Settings of one MyService instance, resolved once from the environment by `loadConfig`. */
export interface MyServiceConfig {
  /** `SERVICE_PORT_GRPC`: listen port. Default 5000. */
  readonly port: number;
  /**
   * `LISTEN_HOST`: listen address. Default `::`: IPv6 and IPv4 on one socket (dual-stack), or
   * `0.0.0.0` with a warning on a host without IPv6. Any other value is bound as given.
   */
  readonly host: string;
  /**
   * `JWT_SECRET`: HMAC key shared with the gateway (HS256, the development default). One of
   * `JWT_SECRET`, `JWT_PUBLIC_KEY_FILE` or `JWT_JWKS_URL` is required; with an asymmetric source
   * beside it, it only serves a migration away from HS256 (whoever holds it can sign).
   */
  readonly jwtSecret: string | undefined;
  /** `JWT_PUBLIC_KEY_FILE`: PEM public key file(s) of the gateway's signing keys, comma-separated. Default none. */
  readonly jwtPublicKeyFiles: readonly string[];
  /** `JWT_JWKS_URL`: the gateway's key set, e.g. `http://gateway:10000/.well-known/jwks.json`. Default none. */
  readonly jwksUrl: string | undefined;
  /** `JWT_JWKS_CA_FILE`: PEM CA the gateway's certificate must chain to, for an `https:` JWKS URL. Default the system's CAs. */
  readonly jwksCaFile: string | undefined;
  /** `JWKS_REFRESH_INTERVAL`: period of JWKS refreshes, milliseconds. Default 5m. */
  readonly jwksRefreshIntervalMs: number;
  /**
   * `JWKS_REFRESH_COOLDOWN`: least time between two JWKS fetches, milliseconds: a token naming
   * an unknown `kid` causes at most one fetch per cooldown, whatever the number of such tokens. Default 5s.
   */
  readonly jwksRefreshCooldownMs: number;
  /** TLS of the instance's port (`TLS_CERT_FILE`, `TLS_KEY_FILE`, `TLS_CLIENT_CA_FILE` to require the gateway's certificate). Default cleartext. */
  readonly tls: TlsServerConfig | undefined;
  /** `SUBSCRIBE_INTERVAL_MS`: period between Subscribe messages, milliseconds. Default 5000. */
  readonly subscribeIntervalMs: number;
  /** `HOSTNAME`: pod name reported in every reply. Default the machine's host name. */
  readonly podName: string;
  /** `MAX_MESSAGE_BYTES`: largest message either way after decompression, bytes. Default 4 MiB. */
  readonly maxMessageBytes: number;
  /**
   * `MAX_HEADER_BYTES`: largest request header list (names, values and 32 bytes per field, as
   * HTTP/2 counts it), bytes; larger ones get RESOURCE_EXHAUSTED. Default 16 KiB.
   */
  readonly maxHeaderBytes: number;
  /** `LOG_LEVEL`: pino level. Default `info`. */
  readonly logLevel: string;
  /** `LOG_FORMAT`: `json` or `pretty`. Default `json`. */
  readonly logFormat: "json" | "pretty";
}

const second = 1000;

/** Reads and validates the environment; throws a `ConfigError` listing every bad variable. */
export function loadConfig(env: Readonly<Record<string, string | undefined>>): MyServiceConfig {
  const r = new EnvReader(env, "myservice");
  const jwtSecret = r.optionalString("JWT_SECRET");
  const jwtPublicKeyFiles = (r.optionalString("JWT_PUBLIC_KEY_FILE") ?? "")
    .split(",")
    .map((f) => f.trim())
    .filter((f) => f !== "");
  const jwksUrl = r.optionalString("JWT_JWKS_URL");
  const jwksCaFile = r.optionalString("JWT_JWKS_CA_FILE");
  if (jwtSecret === undefined && jwtPublicKeyFiles.length === 0 && jwksUrl === undefined) {
    r.problem(
      "JWT_SECRET is required: the HMAC key shared with the gateway — or, when the gateway signs with a private key, JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL",
    );
  }
  if (jwtSecret !== undefined && Buffer.byteLength(jwtSecret) < minSecretBytes) {
    r.problem(`JWT_SECRET is too short: use at least ${minSecretBytes} bytes`);
  }
  if (jwksUrl !== undefined && !/^https?:\/\/[^\s/]+/.test(jwksUrl)) {
    r.problem(`JWT_JWKS_URL=${JSON.stringify(jwksUrl)}: expected an http:// or https:// URL`);
  }
  if (jwksCaFile !== undefined && !jwksUrl?.startsWith("https:")) r.problem("JWT_JWKS_CA_FILE needs an https:// JWT_JWKS_URL");
  const tls = readTlsServerEnv(r, readTlsReloadInterval(r));
  const config: MyServiceConfig = {
    port: r.port("SERVICE_PORT_GRPC", 5000),
    host: r.string("LISTEN_HOST", dualStackHost),
    jwtSecret,
    jwtPublicKeyFiles,
    jwksUrl,
    jwksCaFile,
    jwksRefreshIntervalMs: r.duration("JWKS_REFRESH_INTERVAL", 5 * 60 * second, second, 24 * 3600 * second),
    jwksRefreshCooldownMs: r.duration("JWKS_REFRESH_COOLDOWN", 5 * second, 100, 3600 * second),
    tls,
    subscribeIntervalMs: r.integer("SUBSCRIBE_INTERVAL_MS", 5000, 1, 86_400_000),
    podName: r.string("HOSTNAME", hostname()),
    maxMessageBytes: r.integer("MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    maxHeaderBytes: r.integer("MAX_HEADER_BYTES", defaultMaxHeaderBytes, 1024, 1024 * 1024),
    logLevel: r.oneOf("LOG_LEVEL", "info", ["trace", "debug", "info", "warn", "error", "fatal", "silent"]),
    logFormat: r.oneOf("LOG_FORMAT", "json", ["json", "pretty"]),
  };
  r.done();
  return Object.freeze(config);
}
