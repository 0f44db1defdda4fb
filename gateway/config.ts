import { hostname } from "node:os";
import { devJwtSecret } from "../common/dev-defaults.js";
import { EnvReader } from "../common/env.js";
import { defaultMaxHeaderBytes } from "../common/header-limits.js";
import { dualStackHost } from "../common/listen.js";
import { readTlsReloadInterval, readTlsServerEnv, type TlsClientConfig, type TlsServerConfig } from "../common/tls.js";
import { minSecretBytes } from "../common/tokens.js";

/** Settings of the gateway, resolved once from the environment by `loadConfig`. */
export interface GatewayConfig {
  /** `SERVICE_PORT_GRPC`: listen port (gRPC, Connect, gRPC-Web, HTTP/1.1 pages). Default 10000. */
  readonly port: number;
  /**
   * `LISTEN_HOST`: listen address. Default `::`: IPv6 and IPv4 on one socket (dual-stack), or
   * `0.0.0.0` with a warning on a host without IPv6. Any other value is bound as given.
   */
  readonly host: string;
  /**
   * `JWT_SECRET`: HMAC key for tokens (HS256), shared with the instances. Required unless
   * `JWT_PRIVATE_KEY_FILE` is set; never both.
   */
  readonly jwtSecret: string | undefined;
  /**
   * `JWT_PRIVATE_KEY_FILE`: PEM private key (Ed25519 or ECDSA P-256) the gateway signs tokens
   * with (`EdDSA` / `ES256`); instances then verify with its public key and hold nothing that
   * signs. Default none (HS256 with `JWT_SECRET`).
   */
  readonly jwtPrivateKeyFile: string | undefined;
  /**
   * `JWT_PREVIOUS_KEYS`: keys accepted for verification only (a rotation logs nobody out),
   * comma-separated: PEM key files (public or private; only the public part is used), files
   * holding an HMAC secret, or `secret:<value>`. Default none.
   */
  readonly jwtPreviousKeys: readonly string[];
  /** TLS of the front door (`TLS_CERT_FILE`, `TLS_KEY_FILE`, `TLS_CLIENT_*`, ...); `undefined` = cleartext (default). */
  readonly tls: TlsServerConfig | undefined;
  /**
   * TLS to instances, on when `UPSTREAM_TLS_CA_FILE` is set: the CA instance certificates must
   * chain to, `UPSTREAM_TLS_CERT_FILE` / `UPSTREAM_TLS_KEY_FILE` (the gateway's client
   * certificate, mTLS) and `UPSTREAM_TLS_SERVER_NAME` (the name instance certificates carry;
   * default the host of `MYSERVICE_DNS`, else each address's host). `undefined` = cleartext (default).
   */
  readonly upstreamTls: TlsClientConfig | undefined;
  /** `TLS_RELOAD_INTERVAL`: how often certificate files (front door, upstream) are read again, milliseconds; 0 = never. Default 5s. */
  readonly tlsReloadIntervalMs: number;
  /** `TOKEN_EXPIRATION`: token lifetime, milliseconds. Default 1h. */
  readonly tokenLifetimeMs: number;
  /** `LEASE_IDLE_TTL`: a lease idle this long expires, milliseconds. Default 5m. */
  readonly leaseIdleTtlMs: number;
  /** `USERS_FILE`: path of the users file (JSON, scrypt hashes). Required. */
  readonly usersFile: string;
  /** `LEASE_DB_PATH`: SQLite lease database file. Default `data/leases.db`. */
  readonly leaseDbPath: string;
  /** `LEASE_DB_SYNCHRONOUS`: SQLite `synchronous` pragma, `FULL` (durable commits) or `NORMAL`. Default `FULL`. */
  readonly leaseDbSynchronous: "FULL" | "NORMAL";
  /**
   * `LEASE_DB_URL`: `postgres://user:pass@host:port/db` (or `postgresql://`) selects the
   * PostgreSQL lease store shared by several gateways (SPEC 10); unset = SQLite at `LEASE_DB_PATH`.
   */
  readonly leaseDbUrl: string | undefined;
  /** `LEASE_DB_POOL_SIZE`: most PostgreSQL connections of the query pool (one more listens). Default 4. */
  readonly leaseDbPoolSize: number;
  /** `LEASE_DB_STATEMENT_TIMEOUT`: PostgreSQL `statement_timeout` of every statement, milliseconds. Default 5s. */
  readonly leaseDbStatementTimeoutMs: number;
  /**
   * `GATEWAY_ID`: this gateway's name among the gateways sharing the lease store (membership,
   * logs). Default `<hostname>:<SERVICE_PORT_GRPC>`.
   */
  readonly gatewayId: string;
  /** `MYSERVICE_ADDRESSES`: static instance list, `host:port` comma-separated. */
  readonly instanceAddresses: readonly string[];
  /** `MYSERVICE_DNS`: `name:port` resolved to every address (compose service, headless service). */
  readonly instanceDns: string | undefined;
  /** `DISCOVERY_INTERVAL`: how often DNS is resolved again, milliseconds. Default 5s. */
  readonly discoveryIntervalMs: number;
  /** `HEALTH_CHECK_INTERVAL`: period of health probes per instance, milliseconds. Default 1s. */
  readonly healthIntervalMs: number;
  /**
   * `HEALTH_FULL_CHECK_INTERVAL`: period of the full probe per instance (gRPC health Check +
   * status call), milliseconds; probes in between are HTTP/2 PINGs. Default 5s; at most
   * `HEALTH_CHECK_INTERVAL` makes every probe a full one.
   */
  readonly healthFullIntervalMs: number;
  /** `HEALTH_CHECK_TIMEOUT`: bound of one probe, milliseconds. Default 1s. */
  readonly healthTimeoutMs: number;
  /** `HEALTH_FAILURE_THRESHOLD`: consecutive failed probes before an instance is declared dead. Default 3. */
  readonly healthFailureThreshold: number;
  /** `MAX_MESSAGE_BYTES`: largest gRPC message accepted either way, bytes. Default 4 MiB. */
  readonly maxMessageBytes: number;
  /**
   * `MAX_HEADER_BYTES`: largest request header list (names, values and 32 bytes per field, as
   * HTTP/2 counts it), bytes; larger ones get RESOURCE_EXHAUSTED (HTTP 431 for plain HTTP). Default 16 KiB.
   */
  readonly maxHeaderBytes: number;
  /** `UPSTREAM_CONNECT_TIMEOUT`: bound for reaching an instance, milliseconds. Default 2s. */
  readonly upstreamConnectTimeoutMs: number;
  /** `MAX_SESSIONS_PER_USER`: most sessions (leases) one user may hold at once; 0 = no limit. Default 0. */
  readonly maxSessionsPerUser: number;
  /**
   * `QUEUE_MAX_WAIT`: longest a call with `x-wait-for-instance` waits for a free instance
   * (SPEC 11), milliseconds; the header and the call's deadline may make it shorter. Default 60s.
   */
  readonly queueMaxWaitMs: number;
  /**
   * `QUEUE_MAX_LENGTH`: sessions the waiting queue holds at most, every gateway sharing the lease
   * store together; a call that would wait beyond it is refused at once (`x-queue-full: true`).
   * 0 turns waiting off. Default 1000.
   */
  readonly queueMaxLength: number;
  /** `LOGIN_MAX_FAILURES_PER_USER`: failed logins of one username within `loginUserFailureWindowMs` before Login is refused; 0 = off. Default 5. */
  readonly loginMaxFailuresPerUser: number;
  /** `LOGIN_USER_FAILURE_WINDOW`: sliding window of the per-user count, milliseconds. Default 5m. */
  readonly loginUserFailureWindowMs: number;
  /** `LOGIN_MAX_FAILURES_PER_PEER`: failed logins from one client address within `loginPeerFailureWindowMs`; 0 = off. Default 20. */
  readonly loginMaxFailuresPerPeer: number;
  /** `LOGIN_PEER_FAILURE_WINDOW`: sliding window of the per-peer count, milliseconds. Default 1m. */
  readonly loginPeerFailureWindowMs: number;
  /** `LOG_LEVEL`: pino level. Default `info`. */
  readonly logLevel: string;
  /** `LOG_FORMAT`: `json` or `pretty`. Default `json`. */
  readonly logFormat: "json" | "pretty";
  /** `NODE_ENV=production`: refuse development secrets and users. */
  readonly production: boolean;
}

const second = 1000;
const minute = 60 * second;
const hour = 60 * minute;

/** Reads and validates the environment; throws a `ConfigError` listing every bad variable. */
export function loadConfig(env: Readonly<Record<string, string | undefined>>): GatewayConfig {
  const r = new EnvReader(env, "gateway");
  const production = env.NODE_ENV === "production";
  const jwtPrivateKeyFile = r.optionalString("JWT_PRIVATE_KEY_FILE");
  const jwtSecret =
    jwtPrivateKeyFile === undefined
      ? r.required("JWT_SECRET", "the HMAC key for tokens (shared with every myservice instance), or set JWT_PRIVATE_KEY_FILE")
      : r.optionalString("JWT_SECRET");
  if (jwtPrivateKeyFile !== undefined && jwtSecret !== undefined) {
    r.problem(
      "JWT_SECRET and JWT_PRIVATE_KEY_FILE are both set: sign with one; to keep accepting tokens of the old secret, list it in JWT_PREVIOUS_KEYS",
    );
  }
  if (jwtSecret !== undefined && jwtSecret !== "" && Buffer.byteLength(jwtSecret) < minSecretBytes) {
    r.problem(`JWT_SECRET is too short: use at least ${minSecretBytes} bytes`);
  }
  if (production && jwtSecret === devJwtSecret) {
    r.problem("JWT_SECRET is the development secret, refused with NODE_ENV=production");
  }
  const jwtPreviousKeys = (r.optionalString("JWT_PREVIOUS_KEYS") ?? "")
    .split(",")
    .map((k) => k.trim())
    .filter((k) => k !== "");
  const tlsReloadIntervalMs = readTlsReloadInterval(r);
  const tls = readTlsServerEnv(r, tlsReloadIntervalMs);
  const upstreamTls = readUpstreamTlsEnv(r, r.optionalString("MYSERVICE_DNS"));
  const usersFile = r.required("USERS_FILE", "path of the users file (see gateway/dev-users.json)");
  if (production && /dev-users\.json$/.test(usersFile)) {
    r.problem("USERS_FILE is the development users file, refused with NODE_ENV=production");
  }
  const instanceAddresses = (r.optionalString("MYSERVICE_ADDRESSES") ?? "")
    .split(",")
    .map((a) => a.trim())
    .filter((a) => a !== "");
  for (const address of instanceAddresses) {
    if (!isHostPort(address)) r.problem(`MYSERVICE_ADDRESSES: ${JSON.stringify(address)} is not host:port`);
  }
  const instanceDns = r.optionalString("MYSERVICE_DNS");
  if (instanceDns !== undefined && !isHostPort(instanceDns)) {
    r.problem(`MYSERVICE_DNS=${JSON.stringify(instanceDns)}: expected name:port, e.g. myservice:5000`);
  }
  if (instanceAddresses.length === 0 && instanceDns === undefined) {
    r.problem("set MYSERVICE_ADDRESSES (host:port,...) or MYSERVICE_DNS (name:port) so the gateway finds its instances");
  }
  const leaseDbUrl = r.optionalString("LEASE_DB_URL");
  if (leaseDbUrl !== undefined && !isPostgresUrl(leaseDbUrl)) {
    r.problem("LEASE_DB_URL: expected postgres://user:password@host:port/database (or postgresql://)");
  }
  const port = r.port("SERVICE_PORT_GRPC", 10000);
  const gatewayId = r.string("GATEWAY_ID", `${hostname()}:${port}`);
  if (!/^[A-Za-z0-9._:@-]{1,128}$/.test(gatewayId)) {
    r.problem(`GATEWAY_ID=${JSON.stringify(gatewayId)}: expected 1 to 128 letters, digits or . _ : @ -`);
  }
  const config: GatewayConfig = {
    port,
    host: r.string("LISTEN_HOST", dualStackHost),
    jwtSecret: jwtSecret === "" ? undefined : jwtSecret,
    jwtPrivateKeyFile,
    jwtPreviousKeys,
    tls,
    upstreamTls,
    tlsReloadIntervalMs,
    tokenLifetimeMs: r.duration("TOKEN_EXPIRATION", hour, second, 30 * 24 * hour),
    leaseIdleTtlMs: r.duration("LEASE_IDLE_TTL", 5 * minute, 500, 30 * 24 * hour),
    usersFile,
    leaseDbPath: r.string("LEASE_DB_PATH", "data/leases.db"),
    leaseDbSynchronous: r.oneOf("LEASE_DB_SYNCHRONOUS", "FULL", ["FULL", "NORMAL"]),
    leaseDbUrl,
    leaseDbPoolSize: r.integer("LEASE_DB_POOL_SIZE", 4, 1, 100),
    leaseDbStatementTimeoutMs: r.duration("LEASE_DB_STATEMENT_TIMEOUT", 5 * second, 100, 10 * minute),
    gatewayId,
    instanceAddresses,
    instanceDns,
    discoveryIntervalMs: r.duration("DISCOVERY_INTERVAL", 5 * second, 100, hour),
    healthIntervalMs: r.duration("HEALTH_CHECK_INTERVAL", second, 50, 5 * minute),
    healthFullIntervalMs: r.duration("HEALTH_FULL_CHECK_INTERVAL", 5 * second, 50, hour),
    healthTimeoutMs: r.duration("HEALTH_CHECK_TIMEOUT", second, 10, minute),
    healthFailureThreshold: r.integer("HEALTH_FAILURE_THRESHOLD", 3, 1, 100),
    maxMessageBytes: r.integer("MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    maxHeaderBytes: r.integer("MAX_HEADER_BYTES", defaultMaxHeaderBytes, 1024, 1024 * 1024),
    upstreamConnectTimeoutMs: r.duration("UPSTREAM_CONNECT_TIMEOUT", 2 * second, 10, minute),
    maxSessionsPerUser: r.integer("MAX_SESSIONS_PER_USER", 0, 0, 1_000_000),
    queueMaxWaitMs: r.duration("QUEUE_MAX_WAIT", minute, 1, hour),
    queueMaxLength: r.integer("QUEUE_MAX_LENGTH", 1000, 0, 1_000_000),
    loginMaxFailuresPerUser: r.integer("LOGIN_MAX_FAILURES_PER_USER", 5, 0, 1_000_000),
    loginUserFailureWindowMs: r.duration("LOGIN_USER_FAILURE_WINDOW", 5 * minute, second, 24 * hour),
    loginMaxFailuresPerPeer: r.integer("LOGIN_MAX_FAILURES_PER_PEER", 20, 0, 1_000_000),
    loginPeerFailureWindowMs: r.duration("LOGIN_PEER_FAILURE_WINDOW", minute, second, 24 * hour),
    logLevel: r.oneOf("LOG_LEVEL", "info", ["trace", "debug", "info", "warn", "error", "fatal", "silent"]),
    logFormat: r.oneOf("LOG_FORMAT", "json", ["json", "pretty"]),
    production,
  };
  r.done();
  return Object.freeze(config);
}

function isPostgresUrl(text: string): boolean {
  try {
    const url = new URL(text);
    return (url.protocol === "postgres:" || url.protocol === "postgresql:") && url.hostname !== "" && url.pathname.length > 1;
  } catch {
    return false;
  }
}

/** The `UPSTREAM_TLS_*` variables; TLS to instances is on when the CA is set. */
function readUpstreamTlsEnv(r: EnvReader, instanceDns: string | undefined): TlsClientConfig | undefined {
  const caFile = r.optionalString("UPSTREAM_TLS_CA_FILE");
  const certFile = r.optionalString("UPSTREAM_TLS_CERT_FILE");
  const keyFile = r.optionalString("UPSTREAM_TLS_KEY_FILE");
  const serverName = r.optionalString("UPSTREAM_TLS_SERVER_NAME");
  if ((certFile === undefined) !== (keyFile === undefined)) {
    r.problem("UPSTREAM_TLS_CERT_FILE and UPSTREAM_TLS_KEY_FILE go together (the gateway's client certificate)");
  }
  if (caFile === undefined) {
    if (certFile !== undefined || keyFile !== undefined || serverName !== undefined) {
      r.problem(
        "UPSTREAM_TLS_CERT_FILE, UPSTREAM_TLS_KEY_FILE and UPSTREAM_TLS_SERVER_NAME need UPSTREAM_TLS_CA_FILE (TLS to instances is on when it is set)",
      );
    }
    return undefined;
  }
  const dnsHost = instanceDns === undefined ? undefined : instanceDns.slice(0, instanceDns.lastIndexOf(":"));
  return Object.freeze({ caFile, certFile, keyFile, serverName: serverName ?? dnsHost });
}

function isHostPort(text: string): boolean {
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/.exec(text);
  return match !== null && Number(match[2]) > 0 && Number(match[2]) <= 65535;
}
