import assert from "node:assert/strict";
import { hostname } from "node:os";
import { describe, it } from "node:test";
import { ConfigError } from "../common/env.js";
import { loadConfig } from "./config.js";

const secret = "x".repeat(32);
/** Defaults of the token-source and TLS settings when only JWT_SECRET is set. */
const keyAndTlsDefaults = {
  jwtPublicKeyFiles: [],
  jwksUrl: undefined,
  jwksCaFile: undefined,
  jwksRefreshIntervalMs: 300_000,
  jwksRefreshCooldownMs: 5_000,
  tls: undefined,
};

function problemsOf(env: Record<string, string | undefined>): readonly string[] {
  try {
    loadConfig(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    assert.equal(error.process, "myservice");
    return error.problems;
  }
  assert.fail("expected loadConfig to throw");
}

describe("myservice loadConfig()", () => {
  it("fills the defaults of SPEC 6", () => {
    const config = loadConfig({ JWT_SECRET: secret });
    assert.deepEqual(config, {
      port: 5000,
      host: "::",
      jwtSecret: secret,
      ...keyAndTlsDefaults,
      subscribeIntervalMs: 5000,
      podName: hostname(),
      maxMessageBytes: 4 * 1024 * 1024,
      maxHeaderBytes: 16 * 1024,
      logLevel: "info",
      logFormat: "json",
    });
    assert.ok(Object.isFrozen(config));
  });

  it("reads every variable", () => {
    assert.deepEqual(
      loadConfig({
        JWT_SECRET: secret,
        SERVICE_PORT_GRPC: "5001",
        LISTEN_HOST: "127.0.0.1",
        SUBSCRIBE_INTERVAL_MS: "250",
        HOSTNAME: "pod-7",
        LOG_LEVEL: "warn",
        LOG_FORMAT: "pretty",
        MAX_MESSAGE_BYTES: "65536",
        MAX_HEADER_BYTES: "32768",
      }),
      {
        port: 5001,
        host: "127.0.0.1",
        jwtSecret: secret,
        ...keyAndTlsDefaults,
        subscribeIntervalMs: 250,
        podName: "pod-7",
        maxMessageBytes: 65536,
        maxHeaderBytes: 32768,
        logLevel: "warn",
        logFormat: "pretty",
      },
    );
  });

  it("requires JWT_SECRET of at least 32 bytes", () => {
    assert.match(problemsOf({})[0] as string, /^JWT_SECRET is required.*JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL/);
    assert.deepEqual(problemsOf({ JWT_SECRET: "x".repeat(31) }), ["JWT_SECRET is too short: use at least 32 bytes"]);
  });

  it("refuses bad values", () => {
    for (const [name, value] of [
      ["SERVICE_PORT_GRPC", "65536"],
      ["SERVICE_PORT_GRPC", "five"],
      ["SUBSCRIBE_INTERVAL_MS", "0"],
      ["SUBSCRIBE_INTERVAL_MS", "5s"],
      ["SUBSCRIBE_INTERVAL_MS", "1.5"],
      ["LOG_LEVEL", "loud"],
      ["LOG_FORMAT", "text"],
      ["MAX_HEADER_BYTES", "lots"],
    ] as const) {
      const problems = problemsOf({ JWT_SECRET: secret, [name]: value });
      assert.equal(problems.length, 1, `${name}=${value}`);
      assert.ok((problems[0] as string).includes(name), problems[0]);
    }
  });

  it("reports all problems at once", () => {
    const problems = problemsOf({ SERVICE_PORT_GRPC: "x", SUBSCRIBE_INTERVAL_MS: "-1", LOG_FORMAT: "x" });
    assert.equal(problems.length, 4, problems.join("\n"));
  });

  it("verifies with public keys or the JWKS instead of JWT_SECRET", () => {
    const config = loadConfig({
      JWT_PUBLIC_KEY_FILE: "/k/a.pub.pem,/k/b.pub.pem",
      JWT_JWKS_URL: "https://gateway:10000/.well-known/jwks.json",
      JWT_JWKS_CA_FILE: "/k/ca.pem",
      JWKS_REFRESH_INTERVAL: "1m",
      JWKS_REFRESH_COOLDOWN: "500ms",
    });
    assert.equal(config.jwtSecret, undefined);
    assert.deepEqual(config.jwtPublicKeyFiles, ["/k/a.pub.pem", "/k/b.pub.pem"]);
    assert.equal(config.jwksUrl, "https://gateway:10000/.well-known/jwks.json");
    assert.equal(config.jwksRefreshIntervalMs, 60_000);
    assert.equal(config.jwksRefreshCooldownMs, 500);
    assert.match(problemsOf({ JWT_JWKS_URL: "gateway:10000" })[0] as string, /JWT_JWKS_URL.*http:\/\/ or https:\/\//);
    assert.match(problemsOf({ JWT_JWKS_URL: "http://g/jwks", JWT_JWKS_CA_FILE: "/ca" })[0] as string, /needs an https/);
  });

  it("serves TLS with TLS_CERT_FILE and TLS_KEY_FILE; TLS_CLIENT_CA_FILE requires the gateway's certificate", () => {
    const tls = loadConfig({ JWT_SECRET: secret, TLS_CERT_FILE: "/t/c", TLS_KEY_FILE: "/t/k", TLS_CLIENT_CA_FILE: "/t/ca" }).tls;
    assert.equal(tls?.clientAuth, "require");
    assert.match(problemsOf({ JWT_SECRET: secret, TLS_KEY_FILE: "/t/k" })[0] as string, /go together/);
  });
});
