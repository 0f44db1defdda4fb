import { hostname } from "node:os";
import { EnvReader } from "../common/env.js";
import { defaultMaxHeaderBytes } from "../common/header-limits.js";
import { dualStackHost } from "../common/listen.js";
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
  /** `JWT_SECRET`: HMAC key shared with the gateway. Required. */
  readonly jwtSecret: string;
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

/** Reads and validates the environment; throws a `ConfigError` listing every bad variable. */
export function loadConfig(env: Readonly<Record<string, string | undefined>>): MyServiceConfig {
  const r = new EnvReader(env, "myservice");
  const jwtSecret = r.required("JWT_SECRET", "the HMAC key shared with the gateway");
  if (jwtSecret !== "" && Buffer.byteLength(jwtSecret) < minSecretBytes) {
    r.problem(`JWT_SECRET is too short: use at least ${minSecretBytes} bytes`);
  }
  const config: MyServiceConfig = {
    port: r.port("SERVICE_PORT_GRPC", 5000),
    host: r.string("LISTEN_HOST", dualStackHost),
    jwtSecret,
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
