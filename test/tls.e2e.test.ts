// TLS at the front door and to instances (SPEC 12) with real processes, a CA made at test
// time (`npm run up -- --tls`, or `scripts/dev-certs.ts`), and clients that are not ours:
// grpc-js, Python grpcio, Chromium. Also: instances that hold only the gateway's public key
// cannot mint a token the gateway accepts.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  X509Certificate,
} from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { Agent, type AgentOptions, request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as tls from "node:tls";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { SignJWT } from "jose";
import { chromium } from "playwright-core";
import { jwkThumbprint } from "../common/token-keys.js";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { ServerReflection, ServerReflectionRequestSchema } from "../gen/grpc/reflection/v1/reflection_pb.js";
import {
  EchoRequestSchema,
  EchoResponseSchema,
  LoginRequestSchema,
  LoginResponseSchema,
  MyServiceAPI,
  ShutdownResponseSchema,
} from "../gen/my_service/my_service_pb.js";
import { InstanceService } from "../gen/myservice/instance/v1/instance_pb.js";
import { type CertFiles, createCa, issueCertificate } from "../scripts/dev-certs.js";
import { errorOf, retryWhile } from "./e2e-client.js";
import { type Stack, startStack } from "./stack.js";

const python = "/usr/bin/python3";
const hasGrpcio = spawnSync(python, ["-c", "import grpc"]).status === 0;
const chromiumPath = "/usr/bin/chromium";
const capacity = [Code.ResourceExhausted, Code.Unavailable];
const paths = {
  login: "/my_service.MyServiceAPI/Login",
  echo: "/my_service.MyServiceAPI/MyServiceEcho",
  subscribe: "/my_service.MyServiceAPI/MyServiceSubscribe",
  shutdown: "/my_service.MyServiceAPI/MyServiceShutdown",
};

/** A Connect gRPC client of the gateway over TLS, trusting `ca`, optionally presenting a client certificate. */
function tlsApi(stack: Stack, ca: Buffer, client?: CertFiles) {
  const nodeOptions = { ca, ...(client ? { cert: readFileSync(client.cert), key: readFileSync(client.key) } : {}) };
  return createClient(MyServiceAPI, createGrpcTransport({ baseUrl: stack.gatewayUrl, nodeOptions }));
}

/** GET over HTTPS (HTTP/1.1), trusting `ca`; offers ALPN `http/1.1` with `alpn`, else no ALPN (the front door then sniffs). */
function httpsGet(url: string, ca: Buffer, alpn = false): Promise<{ status: number; body: string; alpn: string | false | null }> {
  return new Promise((resolve, reject) => {
    const agent = new Agent({ ca, ...(alpn ? { ALPNProtocols: ["http/1.1"] } : {}) } as AgentOptions);
    const req = httpsRequest(url, { agent }, (res) => {
      const negotiated = (res.socket as tls.TLSSocket).alpnProtocol;
      let body = "";
      res.on("data", (c: Buffer) => {
        body += c.toString();
      });
      res.on("end", () => {
        agent.destroy();
        resolve({ status: res.statusCode ?? 0, body, alpn: negotiated });
      });
    });
    req.on("error", reject);
    req.end();
  });
}

/** Opens a TLS connection and reports how it ended: connected, or the error the client saw. */
function tlsHandshake(port: number, options: tls.ConnectionOptions): Promise<{ ok: boolean; error?: string }> {
  return new Promise<{ ok: boolean; error?: string }>((resolve) => {
    const socket = tls.connect({ host: "127.0.0.1", port, ALPNProtocols: ["h2"], ...options });
    socket.on("error", (error: Error & { code?: string }) => resolve({ ok: false, error: `${error.code ?? ""} ${error.message}` }));
    // TLS 1.3: a server refuses a missing client certificate after the client's handshake ends;
    // the refusal arrives as an alert on the first read.
    socket.on("secureConnect", () => setTimeout(() => resolve({ ok: !socket.destroyed }), 300));
    socket.on("close", () => resolve({ ok: false, error: "closed" }));
  });
}

describe("everything over TLS: npm run up -- --tls", () => {
  let stack: Stack;
  let ca: Buffer;
  before(async () => {
    stack = await startStack({ tls: true, instances: 3 });
    assert.ok(stack.tls, "the launcher reports its TLS files");
    ca = readFileSync(stack.tls.ca);
  });
  after(() => stack?.stop());

  it("grpc-js over TLS: Login (an EdDSA token with a kid), Echo, a Subscribe stream, Shutdown", async () => {
    const client = new grpc.Client(stack.gatewayAddress, grpc.credentials.createSsl(ca));
    after(() => client.close());
    const unary = (path: string, body: Uint8Array, md = new grpc.Metadata()) =>
      new Promise<Buffer>((resolve, reject) =>
        client.makeUnaryRequest(
          path,
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.from(body),
          md,
          { deadline: Date.now() + 10_000 },
          (e, v) => (e ? reject(e) : resolve(v as Buffer)),
        ),
      );
    const sessionId = `grpcjs-tls-${process.pid}`;
    const login = fromBinary(
      LoginResponseSchema,
      await unary(
        paths.login,
        toBinary(LoginRequestSchema, create(LoginRequestSchema, { username: "TestUser", password: "TestPassword", sessionId })),
      ),
    );
    const header = JSON.parse(Buffer.from(login.token.split(".")[0] as string, "base64url").toString());
    assert.equal(header.alg, "EdDSA");
    const publicKey = readFileSync(join(dirname(stack.tls?.ca as string), "token-key.pub.pem"));
    assert.equal(header.kid, jwkThumbprint(createPublicKey(publicKey)), "the kid names the stack's key");
    const md = new grpc.Metadata();
    md.set("authorization", login.token);
    md.set("session-id", sessionId);
    const echoBody = toBinary(EchoRequestSchema, create(EchoRequestSchema, { value: "over tls" }));
    const first = fromBinary(EchoResponseSchema, await retryUnary(() => unary(paths.echo, echoBody, md)));
    assert.equal(first.clientValue, "over tls");
    assert.equal(first.serverSessionId, sessionId);
    const stream = client.makeServerStreamRequest(
      paths.subscribe,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(echoBody),
      md,
    );
    const indexes: number[] = [];
    await new Promise<void>((resolve, reject) => {
      stream.on("data", (b: Buffer) => {
        const m = fromBinary(EchoResponseSchema, b);
        assert.equal(m.podName, first.podName);
        indexes.push(m.index);
        if (indexes.length === 3) {
          stream.cancel();
          resolve();
        }
      });
      stream.on("error", (e: grpc.ServiceError) => (e.code === grpc.status.CANCELLED ? resolve() : reject(e)));
    });
    assert.deepEqual(indexes, [0, 1, 2]);
    const bye = fromBinary(ShutdownResponseSchema, await unary(paths.shutdown, new Uint8Array(), md));
    assert.equal(bye.podName, first.podName);
  });

  it("Connect and gRPC-Web over HTTP/1.1 TLS", async () => {
    const nodeOptions = { ca };
    const connect = createClient(MyServiceAPI, createConnectTransport({ baseUrl: stack.gatewayUrl, httpVersion: "1.1", nodeOptions }));
    const web = createClient(MyServiceAPI, createGrpcWebTransport({ baseUrl: stack.gatewayUrl, httpVersion: "1.1", nodeOptions }));
    const sessionId = `connect-tls-${process.pid}`;
    const { token } = await connect.login({ username: "TestUser", password: "TestPassword", sessionId });
    const headers = { authorization: token, "session-id": sessionId };
    const viaConnect = await retryWhile(capacity, () => connect.myServiceEcho({ value: "connect" }, { headers }));
    const viaWeb = await web.myServiceEcho({ value: "grpc-web" }, { headers });
    assert.equal(viaWeb.podName, viaConnect.podName);
    assert.equal(viaWeb.clientValue, "grpc-web");
    await connect.myServiceShutdown({}, { headers });
  });

  it("serves health, readiness, metrics, the JWKS, gRPC health and reflection over TLS; cleartext is refused", async () => {
    const base = stack.gatewayUrl;
    const healthz = await httpsGet(`${base}/healthz`, ca, true);
    assert.equal(healthz.status, 200);
    assert.equal(healthz.alpn, "http/1.1", "ALPN http/1.1");
    const sniffed = await httpsGet(`${base}/healthz`, ca);
    assert.equal(sniffed.alpn, false, "a client without ALPN");
    assert.equal(sniffed.status, 200, "is served HTTP/1.1 after sniffing its first bytes");
    assert.equal((await httpsGet(`${base}/readyz`, ca)).status, 200);
    assert.match((await httpsGet(`${base}/metrics`, ca)).body, /mygateway_instances\{state="free"\}/);
    const jwks = JSON.parse((await httpsGet(`${base}/.well-known/jwks.json`, ca)).body) as {
      keys: { kid: string; kty: string; d?: string }[];
    };
    assert.equal(jwks.keys.length, 1);
    assert.equal(jwks.keys[0]?.kty, "OKP");
    assert.equal(jwks.keys[0]?.d, undefined, "no private part");
    const transport = createGrpcTransport({ baseUrl: base, nodeOptions: { ca } });
    const health = await createClient(Health, transport).check({ service: MyServiceAPI.typeName });
    assert.equal(health.status, HealthCheckResponse_ServingStatus.SERVING);
    const reflection = createClient(ServerReflection, transport);
    const services: string[] = [];
    for await (const reply of reflection.serverReflectionInfo(
      (async function* () {
        yield create(ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "" } });
      })(),
    )) {
      if (reply.messageResponse.case === "listServicesResponse") services.push(...reply.messageResponse.value.service.map((s) => s.name));
    }
    assert.ok(services.includes(MyServiceAPI.typeName), services.join(", "));
    const cleartext = createClient(Health, createGrpcTransport({ baseUrl: base.replace("https:", "http:") }));
    await assert.rejects(cleartext.check({}, { timeoutMs: 3000 }), "h2c is not spoken on a TLS port");
  });

  it(
    "Python grpcio (C core) over TLS with the CA: the seed flow",
    { skip: hasGrpcio || process.env.CI ? false : "python3-grpcio not installed" },
    async (t) => {
      await stack.waitAllFree();
      const port = stack.gatewayAddress.split(":")[1];
      const run = spawnSync(
        python,
        [join(import.meta.dirname, "python", "seed_flow.py"), `localhost:${port}`, "3", stack.tls?.ca as string],
        {
          encoding: "utf8",
          timeout: 60_000,
        },
      );
      t.diagnostic(run.stdout);
      assert.equal(run.status, 0, `python client failed:\n${run.stdout}\n${run.stderr}`);
      assert.match(run.stdout, /0 checks failed/);
    },
  );

  it(
    "the dashboard over https in Chromium (HTTP/2 by ALPN)",
    { skip: existsSync(chromiumPath) || process.env.CI ? false : `needs ${chromiumPath}` },
    async () => {
      await stack.waitAllFree();
      // Trust exactly the gateway's key, as a pinned certificate: no CA store to edit.
      const gatewayCert = new X509Certificate(readFileSync(join(dirname(stack.tls?.ca as string), "gateway.crt")));
      const spki = createHash("sha256")
        .update(gatewayCert.publicKey.export({ type: "spki", format: "der" }))
        .digest("base64");
      const profile = mkdtempSync(join(tmpdir(), "dashboard-tls-"));
      const context = await chromium.launchPersistentContext(profile, {
        executablePath: chromiumPath,
        headless: true,
        args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", `--ignore-certificate-errors-spki-list=${spki}`],
      });
      try {
        const page = context.pages()[0] ?? (await context.newPage());
        page.setDefaultTimeout(15_000);
        await page.goto(`https://localhost:${stack.gatewayAddress.split(":")[1]}/dashboard`);
        // Evaluated in the page (a browser context, not this Node process).
        assert.equal(await page.evaluate("location.protocol"), "https:");
        const protocol = await page.evaluate('performance.getEntriesByType("navigation")[0].nextHopProtocol');
        assert.equal(protocol, "h2");
        await page.fill("#username", "TestUser");
        await page.fill("#password", "TestPassword");
        await page.click("#login-button");
        await page.locator('#instances tbody tr[data-state="FREE"]').nth(2).waitFor();
        assert.equal(await page.textContent("#stat-instances"), "3 / 3");
      } finally {
        await context.close();
        rmSync(profile, { recursive: true, force: true });
      }
    },
  );

  it("instances speak TLS only and require the gateway's client certificate", async () => {
    const [instance] = (await stack.processes()).filter((p) => p.kind === "myservice");
    assert.ok(instance);
    const files = stack.tls as NonNullable<Stack["tls"]>;
    const noCert = await tlsHandshake(instance.port, { ca });
    assert.equal(noCert.ok, false);
    assert.match(noCert.error ?? "", /certificate required/i, "TLS 1.3 alert: certificate required");
    const withCert = createClient(
      InstanceService,
      createGrpcTransport({
        baseUrl: `https://127.0.0.1:${instance.port}`,
        nodeOptions: { ca, cert: readFileSync(files.instanceClient.cert), key: readFileSync(files.instanceClient.key) },
      }),
    );
    assert.equal((await withCert.getStatus({})).podName, instance.podName);
    const cleartext = createClient(InstanceService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${instance.port}` }));
    await assert.rejects(cleartext.getStatus({}, { timeoutMs: 3000 }));
  });

  it("an instance holding only the public key cannot produce a token the gateway accepts", async () => {
    const [instance] = (await stack.processes()).filter((p) => p.kind === "myservice");
    assert.ok(instance?.pid);
    // Everything the instance process has: its environment and every file it names.
    const env = Object.fromEntries(
      readFileSync(`/proc/${instance.pid}/environ`, "utf8")
        .split("\0")
        .filter((l) => l.includes("="))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    for (const name of ["JWT_SECRET", "JWT_PRIVATE_KEY_FILE", "JWT_PREVIOUS_KEYS"])
      assert.equal(env[name], undefined, `${name} reaches the instance`);
    assert.ok(env.JWT_PUBLIC_KEY_FILE, "it verifies with the public key");
    const files = Object.values(env).filter((v) => v.startsWith("/") && existsSync(v) && statSync(v).isFile() && !v.endsWith("node"));
    const materials: (string | Buffer)[] = [...Object.values(env), ...files.map((f) => readFileSync(f))];
    const jwks = (await httpsGet(`${stack.gatewayUrl}/.well-known/jwks.json`, ca)).body;
    materials.push(jwks, ...(JSON.parse(jwks) as { keys: { x: string }[] }).keys.flatMap((k) => [k.x, Buffer.from(k.x, "base64url")]));
    const gatewayKid = (JSON.parse(jwks) as { keys: { kid: string }[] }).keys[0]?.kid as string;
    // Private keys among those files (its own TLS key): try signing with each, as any algorithm.
    const privateKeys: KeyObject[] = [];
    for (const f of files) {
      try {
        privateKeys.push(createPrivateKey(readFileSync(f)));
      } catch {}
    }
    assert.equal(privateKeys.length, 1, "the only private key an instance holds is its TLS key");
    const sessionId = `forged-${process.pid}`;
    const now = Math.floor(Date.now() / 1000);
    const claims = { sub: "TestUser", role: "admin", session_id: sessionId, iat: now, exp: now + 600 };
    const part = (v: object) => Buffer.from(JSON.stringify(v)).toString("base64url");
    const forged: string[] = [`${part({ alg: "none", kid: gatewayKid })}.${part(claims)}.`];
    for (const secret of materials) {
      if (secret.length === 0) continue;
      for (const header of [{ alg: "HS256", kid: gatewayKid }, { alg: "HS256" }]) {
        const input = `${part(header)}.${part(claims)}`;
        forged.push(`${input}.${createHmac("sha256", secret).update(input).digest("base64url")}`);
      }
    }
    for (const key of privateKeys) {
      const alg = key.asymmetricKeyType === "ed25519" ? "EdDSA" : "ES256";
      for (const kid of [gatewayKid, jwkThumbprint(createPublicKey(key))]) {
        forged.push(await new SignJWT(claims).setProtectedHeader({ alg, kid }).sign(key));
      }
    }
    // And a fresh key of the gateway's own type, claiming its kid.
    forged.push(
      await new SignJWT(claims).setProtectedHeader({ alg: "EdDSA", kid: gatewayKid }).sign(generateKeyPairSync("ed25519").privateKey),
    );
    const api = tlsApi(stack, ca);
    for (const token of forged) {
      const refusal = await errorOf(api.myServiceEcho({ value: "forged" }, { headers: { authorization: token, "session-id": sessionId } }));
      assert.equal(refusal.code, Code.Unauthenticated, `${token.slice(0, 60)}…`);
      assert.equal(refusal.message, "missing or invalid token");
    }
    assert.ok(forged.length > 20, `${forged.length} forgeries tried`);
    // Control: a token of the gateway's key is accepted.
    const { token } = await api.login({ username: "TestUser", password: "TestPassword", sessionId });
    const reply = await retryWhile(capacity, () =>
      api.myServiceEcho({ value: "real" }, { headers: { authorization: token, "session-id": sessionId } }),
    );
    assert.equal(reply.serverSessionId, sessionId);
    await api.myServiceShutdown({}, { headers: { authorization: token, "session-id": sessionId } });
  });
});

describe("front door with client certificates (TLS_CLIENT_CA_FILE)", () => {
  let stack: Stack;
  let dir: string;
  let clientCert: CertFiles;
  let strangerCert: CertFiles;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "mtls-"));
    const clientCa = createCa(dir, "client-ca", "client CA");
    clientCert = issueCertificate(clientCa, dir, "alice", { commonName: "alice", usage: "client" });
    strangerCert = issueCertificate(createCa(dir, "stranger-ca", "stranger CA"), dir, "mallory", {
      commonName: "mallory",
      usage: "client",
    });
    // Instances get their own TLS_CLIENT_CA_FILE from the launcher (the gateway's certificate).
    // The harness's readiness check has no client certificate: wait with one here.
    stack = await startStack({ tls: true, instances: 1, waitReady: false, env: { TLS_CLIENT_CA_FILE: clientCa.cert } });
    const health = createClient(
      Health,
      createGrpcTransport({
        baseUrl: stack.gatewayUrl,
        nodeOptions: { ca: readFileSync(stack.tls?.ca as string), cert: readFileSync(clientCert.cert), key: readFileSync(clientCert.key) },
      }),
    );
    await retryWhile(
      [Code.Unavailable, Code.Unknown],
      async () => {
        const { status } = await health.check({ service: MyServiceAPI.typeName }, { timeoutMs: 2000 });
        if (status !== HealthCheckResponse_ServingStatus.SERVING) throw new ConnectError("not ready", Code.Unavailable);
      },
      20_000,
    );
  });
  after(async () => {
    await stack?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("refuses a client without a certificate, with a clear error", async () => {
    const ca = readFileSync(stack.tls?.ca as string);
    const handshake = await tlsHandshake(Number(stack.gatewayAddress.split(":")[1]), { ca });
    assert.equal(handshake.ok, false);
    assert.match(handshake.error ?? "", /certificate required/i);
    const error = await tlsApi(stack, ca)
      .login({ username: "TestUser", password: "TestPassword", sessionId: "no-cert" }, { timeoutMs: 5000 })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    assert.ok(error instanceof ConnectError, String(error));
    assert.match(error.message, /certificate required/i, "the client's error names the reason");
  });

  it("accepts a certificate of the client CA, refuses one of another CA", async () => {
    const ca = readFileSync(stack.tls?.ca as string);
    const reply = await tlsApi(stack, ca, clientCert).login({ username: "TestUser", password: "TestPassword", sessionId: "with-cert" });
    assert.ok(reply.token);
    const stranger = await tlsHandshake(Number(stack.gatewayAddress.split(":")[1]), {
      ca,
      cert: readFileSync(strangerCert.cert),
      key: readFileSync(strangerCert.key),
    });
    assert.equal(stranger.ok, false, "the connection does not survive the handshake");
    await assert.rejects(
      tlsApi(stack, ca, strangerCert).login({ username: "TestUser", password: "TestPassword", sessionId: "stranger" }, { timeoutMs: 5000 }),
    );
  });
});

describe("TLS to instances: an instance whose certificate the gateway's CA did not sign", () => {
  let stack: Stack;
  let dir: string;
  let otherCa: CertFiles;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "foreign-ca-"));
    const trusted = createCa(dir, "trusted-ca", "the CA the gateway trusts");
    otherCa = createCa(dir, "other-ca", "another CA");
    const cert = issueCertificate(otherCa, dir, "server", { commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
    // Every process serves this certificate (the launcher passes one environment to all).
    stack = await startStack({
      instances: 1,
      waitReady: false,
      env: { TLS_CERT_FILE: cert.cert, TLS_KEY_FILE: cert.key, UPSTREAM_TLS_CA_FILE: trusted.cert, HEALTH_CHECK_INTERVAL: "200ms" },
    });
  });
  after(async () => {
    await stack?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("answers UNAVAILABLE and logs why", async () => {
    const ca = readFileSync(otherCa.cert);
    const api = createClient(MyServiceAPI, createGrpcTransport({ baseUrl: `https://${stack.gatewayAddress}`, nodeOptions: { ca } }));
    const sessionId = `foreign-${process.pid}`;
    const { token } = await api.login({ username: "TestUser", password: "TestPassword", sessionId });
    const refusal = await errorOf(api.myServiceEcho({ value: "x" }, { headers: { authorization: token, "session-id": sessionId } }));
    assert.equal(refusal.code, Code.Unavailable);
    assert.equal(refusal.message, "backend service unavailable");
    const deadline = Date.now() + 10_000;
    const cause = /UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to verify the first certificate/;
    while (!cause.test(stack.output()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const line = stack
      .output()
      .split("\n")
      .find((l) => cause.test(l));
    assert.ok(line, `the cause is logged; output:\n${stack.output().slice(-3000)}`);
    assert.match(line, /gateway/);
  });
});

/** Echo while the instance is still being made free (a recycle after an earlier test). */
async function retryUnary(call: () => Promise<Buffer>): Promise<Buffer> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      return await call();
    } catch (error) {
      const code = (error as grpc.ServiceError).code;
      if (Date.now() > deadline || (code !== grpc.status.RESOURCE_EXHAUSTED && code !== grpc.status.UNAVAILABLE)) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

describe("start-up errors for key and certificate files", () => {
  const dir = mkdtempSync(join(tmpdir(), "startup-errors-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const ca = createCa(dir, "ca");
  const expired = issueCertificate(ca, dir, "expired", { commonName: "localhost", days: -1 });
  const other = issueCertificate(ca, dir, "other", { commonName: "localhost" });
  const run = (script: string, env: Record<string, string>) =>
    spawnSync(process.execPath, ["--import", "tsx", join(import.meta.dirname, "..", script)], {
      encoding: "utf8",
      timeout: 30_000,
      env: { PATH: process.env.PATH ?? "", ...env },
    });

  it("the gateway exits 2 naming every bad file: unreadable key, expired certificate, mismatched key", () => {
    const result = run("gateway/main.ts", {
      JWT_PRIVATE_KEY_FILE: join(dir, "missing.pem"),
      USERS_FILE: join(import.meta.dirname, "fixtures", "users.json"),
      MYSERVICE_ADDRESSES: "127.0.0.1:1",
      TLS_CERT_FILE: expired.cert,
      TLS_KEY_FILE: other.key,
      UPSTREAM_TLS_CA_FILE: join(dir, "no-ca.pem"),
    });
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, /^invalid gateway configuration:/);
    assert.match(result.stderr, /JWT_PRIVATE_KEY_FILE .*missing\.pem: cannot read/);
    assert.match(result.stderr, /TLS_CERT_FILE .*expired\.crt: the certificate expired on/);
    assert.match(result.stderr, /TLS_KEY_FILE .*other\.key does not match the certificate/);
    assert.match(result.stderr, /UPSTREAM_TLS_CA_FILE .*no-ca\.pem: cannot read/);
  });

  it("an instance exits 2 when JWT_PUBLIC_KEY_FILE holds a private key", () => {
    const privateKey = join(dir, "private.pem");
    writeFileSync(privateKey, generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }) as string);
    const result = run("myservice/main.ts", { JWT_PUBLIC_KEY_FILE: privateKey });
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, /JWT_PUBLIC_KEY_FILE .*holds a private key; give this process the public key only/);
  });
});
