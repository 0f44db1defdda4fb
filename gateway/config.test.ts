import assert from "node:assert/strict";
import { hostname } from "node:os";
import { describe, it } from "node:test";
import { devJwtSecret } from "../common/dev-defaults.js";
import { ConfigError } from "../common/env.js";
import { loadConfig } from "./config.js";

const secret = "x".repeat(32);
const minimal = { JWT_SECRET: secret, USERS_FILE: "/etc/gateway/users.json", MYSERVICE_ADDRESSES: "127.0.0.1:5000" };

function problemsOf(env: Record<string, string | undefined>): readonly string[] {
  try {
    loadConfig(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    assert.equal(error.process, "gateway");
    return error.problems;
  }
  assert.fail("expected loadConfig to throw");
}

describe("gateway loadConfig()", () => {
  it("fills every default of SPEC 6 around the required settings", () => {
    assert.deepEqual(loadConfig(minimal), {
      port: 10000,
      host: "::",
      jwtSecret: secret,
      jwtPrivateKeyFile: undefined,
      jwtPreviousKeys: [],
      tls: undefined,
      upstreamTls: undefined,
      tlsReloadIntervalMs: 5_000,
      tokenLifetimeMs: 3_600_000,
      leaseIdleTtlMs: 300_000,
      usersFile: "/etc/gateway/users.json",
      leaseDbPath: "data/leases.db",
      leaseDbSynchronous: "FULL",
      leaseDbUrl: undefined,
      leaseDbPoolSize: 4,
      leaseDbStatementTimeoutMs: 5_000,
      gatewayId: `${hostname()}:10000`,
      instanceAddresses: ["127.0.0.1:5000"],
      instanceDns: undefined,
      discoveryIntervalMs: 5_000,
      healthIntervalMs: 1_000,
      healthFullIntervalMs: 5_000,
      healthTimeoutMs: 1_000,
      healthFailureThreshold: 3,
      maxMessageBytes: 4 * 1024 * 1024,
      maxHeaderBytes: 16 * 1024,
      upstreamConnectTimeoutMs: 2_000,
      maxSessionsPerUser: 0,
      queueMaxWaitMs: 60_000,
      queueMaxLength: 1000,
      loginMaxFailuresPerUser: 5,
      loginUserFailureWindowMs: 300_000,
      loginMaxFailuresPerPeer: 20,
      loginPeerFailureWindowMs: 60_000,
      logLevel: "info",
      logFormat: "json",
      production: false,
    });
  });

  it("returns a frozen object", () => {
    assert.ok(Object.isFrozen(loadConfig(minimal)));
  });

  it("reads every variable", () => {
    const config = loadConfig({
      ...minimal,
      SERVICE_PORT_GRPC: "12345",
      LISTEN_HOST: "127.0.0.1",
      TOKEN_EXPIRATION: "30s",
      LEASE_IDLE_TTL: "1h30m",
      LEASE_DB_PATH: "/var/lib/gw/leases.db",
      LEASE_DB_SYNCHRONOUS: "NORMAL",
      LEASE_DB_URL: "postgresql://gw:secret@db.example:5432/leases",
      GATEWAY_ID: "gateway-2",
      LEASE_DB_POOL_SIZE: "8",
      LEASE_DB_STATEMENT_TIMEOUT: "2s",
      MYSERVICE_ADDRESSES: " a:1, b.example:2 ,[::1]:3,",
      MYSERVICE_DNS: "myservice:5000",
      DISCOVERY_INTERVAL: "10s",
      HEALTH_CHECK_INTERVAL: "250ms",
      HEALTH_CHECK_TIMEOUT: "2s",
      HEALTH_FAILURE_THRESHOLD: "5",
      MAX_MESSAGE_BYTES: "1048576",
      MAX_HEADER_BYTES: "8192",
      UPSTREAM_CONNECT_TIMEOUT: "500ms",
      QUEUE_MAX_WAIT: "2m",
      QUEUE_MAX_LENGTH: "0",
      LOG_LEVEL: "debug",
      LOG_FORMAT: "pretty",
    });
    assert.equal(config.queueMaxWaitMs, 120_000);
    assert.equal(config.queueMaxLength, 0);
    assert.equal(config.port, 12345);
    assert.equal(config.host, "127.0.0.1");
    assert.equal(config.tokenLifetimeMs, 30_000);
    assert.equal(config.leaseIdleTtlMs, 5_400_000);
    assert.equal(config.leaseDbPath, "/var/lib/gw/leases.db");
    assert.equal(config.leaseDbSynchronous, "NORMAL");
    assert.equal(config.leaseDbUrl, "postgresql://gw:secret@db.example:5432/leases");
    assert.equal(config.gatewayId, "gateway-2");
    assert.equal(config.leaseDbPoolSize, 8);
    assert.equal(config.leaseDbStatementTimeoutMs, 2_000);
    assert.deepEqual(config.instanceAddresses, ["a:1", "b.example:2", "[::1]:3"]);
    assert.equal(config.instanceDns, "myservice:5000");
    assert.equal(config.discoveryIntervalMs, 10_000);
    assert.equal(config.healthIntervalMs, 250);
    assert.equal(config.healthTimeoutMs, 2_000);
    assert.equal(config.healthFailureThreshold, 5);
    assert.equal(config.maxMessageBytes, 1_048_576);
    assert.equal(config.maxHeaderBytes, 8192);
    assert.equal(config.upstreamConnectTimeoutMs, 500);
    assert.equal(config.logLevel, "debug");
    assert.equal(config.logFormat, "pretty");
  });

  it("accepts MYSERVICE_DNS alone as the instance source", () => {
    const config = loadConfig({ JWT_SECRET: secret, USERS_FILE: "users.json", MYSERVICE_DNS: "myservice:5000" });
    assert.deepEqual(config.instanceAddresses, []);
    assert.equal(config.instanceDns, "myservice:5000");
  });

  it("requires JWT_SECRET, USERS_FILE and an instance source", () => {
    const problems = problemsOf({});
    assert.equal(problems.length, 3);
    assert.match(problems[0] as string, /^JWT_SECRET is required/);
    assert.match(problems[1] as string, /^USERS_FILE is required/);
    assert.match(problems[2] as string, /MYSERVICE_ADDRESSES.*MYSERVICE_DNS/);
    assert.deepEqual(problemsOf({ ...minimal, JWT_SECRET: "   " }).length, 1);
  });

  it("refuses a secret shorter than 32 bytes", () => {
    const problems = problemsOf({ ...minimal, JWT_SECRET: "x".repeat(31) });
    assert.deepEqual(problems, ["JWT_SECRET is too short: use at least 32 bytes"]);
    // Bytes, not characters: 16 two-byte characters are enough.
    assert.equal(loadConfig({ ...minimal, JWT_SECRET: "é".repeat(16) }).jwtSecret, "é".repeat(16));
  });

  it("refuses bad durations, numbers and choices", () => {
    for (const [name, value] of [
      ["TOKEN_EXPIRATION", "5x"],
      ["TOKEN_EXPIRATION", "-1s"],
      ["TOKEN_EXPIRATION", "0s"],
      ["TOKEN_EXPIRATION", "500ms"],
      ["TOKEN_EXPIRATION", "31d"],
      ["LEASE_IDLE_TTL", "soon"],
      ["LEASE_IDLE_TTL", "100ms"],
      ["DISCOVERY_INTERVAL", "50ms"],
      ["HEALTH_CHECK_INTERVAL", "1ms"],
      ["HEALTH_CHECK_TIMEOUT", "2m"],
      ["UPSTREAM_CONNECT_TIMEOUT", "x"],
      ["SERVICE_PORT_GRPC", "65536"],
      ["SERVICE_PORT_GRPC", "http"],
      ["HEALTH_FAILURE_THRESHOLD", "0"],
      ["MAX_MESSAGE_BYTES", "1023"],
      ["MAX_MESSAGE_BYTES", "4MiB"],
      ["MAX_HEADER_BYTES", "1023"],
      ["MAX_HEADER_BYTES", "2000000"],
      ["LEASE_DB_SYNCHRONOUS", "OFF"],
      ["LEASE_DB_URL", "mysql://db:3306/leases"],
      ["LEASE_DB_URL", "postgres://db.example"],
      ["GATEWAY_ID", "gateway one"],
      ["LEASE_DB_POOL_SIZE", "0"],
      ["LEASE_DB_STATEMENT_TIMEOUT", "10ms"],
      ["LOG_LEVEL", "verbose"],
      ["LOG_FORMAT", "xml"],
      ["MYSERVICE_ADDRESSES", "localhost"],
      ["MYSERVICE_ADDRESSES", "a:1,b:0"],
      ["MYSERVICE_ADDRESSES", "a:99999"],
      ["MYSERVICE_DNS", "myservice"],
      ["QUEUE_MAX_WAIT", "0s"],
      ["QUEUE_MAX_WAIT", "2h"],
      ["QUEUE_MAX_WAIT", "-1s"],
      ["QUEUE_MAX_LENGTH", "-1"],
      ["QUEUE_MAX_LENGTH", "lots"],
    ] as const) {
      const problems = problemsOf({ ...minimal, [name]: value });
      assert.equal(problems.length, 1, `${name}=${value}: ${problems.join("; ")}`);
      assert.ok((problems[0] as string).includes(name), `${name}=${value}: ${problems[0]}`);
    }
  });

  it("reports all problems at once", () => {
    const problems = problemsOf({
      JWT_SECRET: "short",
      TOKEN_EXPIRATION: "forever",
      LEASE_IDLE_TTL: "-5m",
      SERVICE_PORT_GRPC: "-1",
      LOG_FORMAT: "yaml",
    });
    assert.equal(problems.length, 7, problems.join("\n"));
    for (const name of [
      "JWT_SECRET",
      "USERS_FILE",
      "MYSERVICE_",
      "TOKEN_EXPIRATION",
      "LEASE_IDLE_TTL",
      "SERVICE_PORT_GRPC",
      "LOG_FORMAT",
    ]) {
      assert.ok(
        problems.some((p) => p.includes(name)),
        `${name} missing from:\n${problems.join("\n")}`,
      );
    }
  });

  it("with NODE_ENV=production refuses the development secret and users file", () => {
    const dev = { JWT_SECRET: devJwtSecret, USERS_FILE: "gateway/dev-users.json", MYSERVICE_ADDRESSES: "a:1" };
    assert.equal(loadConfig(dev).production, false, "allowed outside production");
    const problems = problemsOf({ ...dev, NODE_ENV: "production" });
    assert.equal(problems.length, 2, problems.join("\n"));
    assert.match(problems[0] as string, /JWT_SECRET.*development/);
    assert.match(problems[1] as string, /USERS_FILE.*development/);
    assert.equal(problemsOf({ ...dev, USERS_FILE: "/abs/path/dev-users.json", NODE_ENV: "production" }).length, 2);
    const prod = loadConfig({ ...minimal, NODE_ENV: "production" });
    assert.equal(prod.production, true);
  });

  it("signs with JWT_PRIVATE_KEY_FILE instead of JWT_SECRET, never both; JWT_PREVIOUS_KEYS is a list", () => {
    const { JWT_SECRET: _, ...noSecret } = minimal;
    const config = loadConfig({ ...noSecret, JWT_PRIVATE_KEY_FILE: "/k/ed25519.pem", JWT_PREVIOUS_KEYS: " /k/old.pem, secret:abc ,," });
    assert.equal(config.jwtSecret, undefined);
    assert.equal(config.jwtPrivateKeyFile, "/k/ed25519.pem");
    assert.deepEqual(config.jwtPreviousKeys, ["/k/old.pem", "secret:abc"]);
    const both = problemsOf({ ...minimal, JWT_PRIVATE_KEY_FILE: "/k/ed25519.pem" });
    assert.equal(both.length, 1);
    assert.match(both[0] as string, /JWT_SECRET and JWT_PRIVATE_KEY_FILE are both set.*JWT_PREVIOUS_KEYS/);
    assert.match(problemsOf(noSecret)[0] as string, /^JWT_SECRET is required.*JWT_PRIVATE_KEY_FILE/);
  });

  it("reads the front door's TLS: both files or none, client CA with TLS_CLIENT_AUTH", () => {
    const tls = { TLS_CERT_FILE: "/t/cert.pem", TLS_KEY_FILE: "/t/key.pem" };
    assert.deepEqual(loadConfig({ ...minimal, ...tls }).tls, {
      certFile: "/t/cert.pem",
      keyFile: "/t/key.pem",
      clientCaFile: undefined,
      clientAuth: "none",
      minVersion: "TLSv1.2",
      reloadIntervalMs: 5_000,
    });
    const mtls = loadConfig({
      ...minimal,
      ...tls,
      TLS_CLIENT_CA_FILE: "/t/ca.pem",
      TLS_MIN_VERSION: "TLSv1.3",
      TLS_RELOAD_INTERVAL: "1s",
    }).tls;
    assert.equal(mtls?.clientAuth, "require", "a client CA requires client certificates unless told otherwise");
    assert.equal(mtls?.minVersion, "TLSv1.3");
    assert.equal(mtls?.reloadIntervalMs, 1000);
    assert.equal(
      loadConfig({ ...minimal, ...tls, TLS_CLIENT_CA_FILE: "/t/ca.pem", TLS_CLIENT_AUTH: "optional" }).tls?.clientAuth,
      "optional",
    );
    for (const [env, pattern] of [
      [{ TLS_CERT_FILE: "/t/cert.pem" }, /TLS_CERT_FILE and TLS_KEY_FILE go together/],
      [{ ...tls, TLS_CLIENT_AUTH: "require" }, /TLS_CLIENT_AUTH=require needs TLS_CLIENT_CA_FILE/],
      [{ TLS_CLIENT_CA_FILE: "/t/ca.pem" }, /TLS_CLIENT_CA_FILE needs TLS_CERT_FILE/],
      [{ ...tls, TLS_CLIENT_AUTH: "sometimes" }, /TLS_CLIENT_AUTH="sometimes"/],
      [{ ...tls, TLS_MIN_VERSION: "TLSv1.1" }, /TLS_MIN_VERSION/],
    ] as const) {
      const problems = problemsOf({ ...minimal, ...env });
      assert.equal(problems.length, 1, problems.join("; "));
      assert.match(problems[0] as string, pattern);
    }
  });

  it("reads TLS to instances: on with UPSTREAM_TLS_CA_FILE, the server name defaults to MYSERVICE_DNS's host", () => {
    assert.deepEqual(loadConfig({ ...minimal, UPSTREAM_TLS_CA_FILE: "/t/ca.pem" }).upstreamTls, {
      caFile: "/t/ca.pem",
      certFile: undefined,
      keyFile: undefined,
      serverName: undefined,
    });
    const dns = loadConfig({ ...minimal, MYSERVICE_DNS: "myservice.ns.svc:5000", UPSTREAM_TLS_CA_FILE: "/t/ca.pem" });
    assert.equal(dns.upstreamTls?.serverName, "myservice.ns.svc");
    const mtls = loadConfig({
      ...minimal,
      UPSTREAM_TLS_CA_FILE: "/t/ca.pem",
      UPSTREAM_TLS_CERT_FILE: "/t/gw.pem",
      UPSTREAM_TLS_KEY_FILE: "/t/gw.key",
      UPSTREAM_TLS_SERVER_NAME: "instances.internal",
    }).upstreamTls;
    assert.deepEqual(mtls, { caFile: "/t/ca.pem", certFile: "/t/gw.pem", keyFile: "/t/gw.key", serverName: "instances.internal" });
    assert.match(
      problemsOf({ ...minimal, UPSTREAM_TLS_CERT_FILE: "/t/gw.pem", UPSTREAM_TLS_KEY_FILE: "/k" })[0] as string,
      /need UPSTREAM_TLS_CA_FILE/,
    );
    assert.match(problemsOf({ ...minimal, UPSTREAM_TLS_CA_FILE: "/c", UPSTREAM_TLS_CERT_FILE: "/t/gw.pem" })[0] as string, /go together/);
  });
});
