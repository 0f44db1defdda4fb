// Interop with clients that are not ours (issue 16, issue 15 item 4), against real processes:
// IPv6 dual-stack listening (grpc-js and Python grpcio on [::1] and 127.0.0.1), oversized
// headers (a gRPC status at once instead of a hang), and malformed protobuf bodies
// (INVALID_ARGUMENT where the message is decoded: the instance behind the relay, and the
// gateway for Connect and gRPC-Web).
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn, spawnSync } from "node:child_process";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { devJwtSecret } from "../common/dev-defaults.js";
import { malformedRequestMessage } from "../common/malformed-request-status.js";
import {
  EchoRequestSchema,
  EchoResponseSchema,
  LoginRequestSchema,
  LoginResponseSchema,
  MyServiceAPI,
} from "../gen/my_service/my_service_pb.js";
import { canConnect, pickFreePorts } from "../scripts/net-util.js";
import { repoRoot } from "../scripts/up-control-client.js";
import { mintHeaders } from "./reliability/helpers.js";
import { grpcFrame, rawCall } from "./reliability/wire.js";
import { type Stack, startStack } from "./stack.js";

const python = "/usr/bin/python3";
const run = promisify(execFile);
const hasPythonGrpc = spawnSync(python, ["-c", "import grpc, google.protobuf"]).status === 0;
const pythonSkip = hasPythonGrpc || process.env.CI ? false : "needs /usr/bin/python3 with grpc (apt-get install python3-grpcio)";
const hasIpv6Loopback = Object.values(networkInterfaces()).some((list) => list?.some((i) => i.address === "::1"));
const echoPath = `/${MyServiceAPI.typeName}/MyServiceEcho`;
const healthCheckPath = "/grpc.health.v1.Health/Check";

interface Outcome {
  code: string;
  details: string;
  ms: number;
  response?: Buffer;
}

/** One unary call from Python grpcio (`test/python/raw_call.py`); metadata values `@N` are N × "s". */
async function pythonCall(address: string, path: string, body: Uint8Array, ...metadata: string[]): Promise<Outcome> {
  const script = join(import.meta.dirname, "python", "raw_call.py");
  const { stdout } = await run(python, [script, address, path, Buffer.from(body).toString("hex"), ...metadata], { timeout: 30_000 });
  const result = JSON.parse(stdout) as Outcome & { response: string };
  return { ...result, response: Buffer.from(result.response, "hex") };
}

/** One unary call from grpc-js with a 10 s deadline. */
function grpcJsCall(address: string, path: string, body: Uint8Array, metadata: Record<string, string> = {}): Promise<Outcome> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  for (const [key, value] of Object.entries(metadata)) md.set(key, value);
  const started = Date.now();
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(body),
      md,
      { deadline: Date.now() + 10_000 },
      (error, response) => {
        client.close();
        resolve(
          error
            ? { code: grpc.status[error.code] ?? String(error.code), details: error.details, ms: Date.now() - started }
            : { code: "OK", details: "", ms: Date.now() - started, response },
        );
      },
    );
  });
}

const loginBody = (sessionId: string) =>
  toBinary(LoginRequestSchema, { $typeName: "my_service.LoginRequest", username: "TestUser", password: "TestPassword", sessionId });
const echoBody = (value: string) => toBinary(EchoRequestSchema, { $typeName: "my_service.EchoRequest", value });
/** HealthCheckRequest {} and the reply HealthCheckResponse { status: SERVING }. */
const serving = Buffer.from([0x08, 0x01]);

describe("interop with other clients", () => {
  let stack: Stack;
  let gatewayPort: number;
  let instancePort: number;
  before(async () => {
    // LISTEN_HOST unset: the gateway listens as it does by default (dual-stack).
    stack = await startStack({ instances: 2, env: { LISTEN_HOST: "", LOG_LEVEL: "info" } });
    gatewayPort = Number(stack.gatewayAddress.split(":").at(-1));
    instancePort = (await stack.processes()).find((p) => p.name === "myservice-1")?.port ?? 0;
  });
  after(() => stack?.stop());

  describe("IPv6 dual-stack listening", { skip: hasIpv6Loopback ? false : "no ::1 on this host" }, () => {
    it("the gateway serves grpc-js on [::1] and 127.0.0.1, one session on one instance", async () => {
      const pods = new Set<string>();
      const login = await grpcJsCall(`[::1]:${gatewayPort}`, `/${MyServiceAPI.typeName}/Login`, loginBody("v6-js"));
      assert.equal(login.code, "OK", login.details);
      const { token } = fromBinary(LoginResponseSchema, login.response as Buffer);
      for (const host of ["[::1]", "127.0.0.1"]) {
        const r = await grpcJsCall(`${host}:${gatewayPort}`, echoPath, echoBody(host), { authorization: token, "session-id": "v6-js" });
        assert.equal(r.code, "OK", `${host}: ${r.details}`);
        const reply = fromBinary(EchoResponseSchema, r.response as Buffer);
        assert.equal(reply.clientValue, host);
        pods.add(reply.podName);
      }
      assert.equal(pods.size, 1, "the same lease whichever address family the client used");
      await grpcJsCall(`[::1]:${gatewayPort}`, `/${MyServiceAPI.typeName}/MyServiceShutdown`, new Uint8Array(), {
        authorization: token,
        "session-id": "v6-js",
      });
    });

    it("the gateway serves Python grpcio on [::1] and 127.0.0.1 (Login, health, reflection)", { skip: pythonSkip }, async () => {
      for (const host of ["[::1]", "127.0.0.1"]) {
        const login = await pythonCall(`${host}:${gatewayPort}`, `/${MyServiceAPI.typeName}/Login`, loginBody(`v6-py-${host}`));
        assert.equal(login.code, "OK", `${host}: ${login.details}`);
        assert.equal(fromBinary(LoginResponseSchema, login.response as Buffer).role, "admin");
        const health = await pythonCall(`${host}:${gatewayPort}`, healthCheckPath, new Uint8Array());
        assert.deepEqual([health.code, health.response], ["OK", serving], host);
      }
      // What `grpcurl -plaintext [::1]:10000 list` does.
      const { stdout } = await run(python, [
        join(import.meta.dirname, "python", "grpc_reflection_client.py"),
        `[::1]:${gatewayPort}`,
        "list",
      ]);
      assert.ok((JSON.parse(stdout) as string[]).includes(MyServiceAPI.typeName));
    });

    it("an instance with the default LISTEN_HOST serves grpc-js and Python on [::1] and 127.0.0.1", async (t) => {
      const [port = 0] = await pickFreePorts(1);
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        JWT_SECRET: devJwtSecret,
        SERVICE_PORT_GRPC: String(port),
        HOSTNAME: "v6-pod",
        LOG_LEVEL: "warn",
      };
      delete env.LISTEN_HOST;
      delete env.NODE_TEST_CONTEXT;
      const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", join(repoRoot, "myservice", "main.ts")], {
        env,
        stdio: "ignore",
      });
      t.after(() => child.kill("SIGKILL"));
      for (let i = 0; !(await canConnect(port, "::1")); i++) {
        assert.ok(i < 100 && child.exitCode === null, "the instance listens");
        await new Promise((r) => setTimeout(r, 100));
      }
      for (const host of ["[::1]", "127.0.0.1"]) {
        const js = await grpcJsCall(`${host}:${port}`, healthCheckPath, new Uint8Array());
        assert.deepEqual([js.code, js.response], ["OK", serving], `grpc-js ${host}`);
        if (!pythonSkip) {
          const py = await pythonCall(`${host}:${port}`, healthCheckPath, new Uint8Array());
          assert.deepEqual([py.code, py.response], ["OK", serving], `python ${host}`);
        }
      }
    });
  });

  describe("oversized headers: a gRPC status at once, never a hang", () => {
    const tooLarge = /^request headers larger than max \(\d+ vs\. 16384 bytes\)$/;

    for (const target of ["gateway", "instance"] as const) {
      it(`${target}: grpc-js gets RESOURCE_EXHAUSTED for a 20,000 and a 100,000-character session-id`, async () => {
        const port = target === "gateway" ? gatewayPort : instancePort;
        for (const size of [20_000, 100_000]) {
          const r = await grpcJsCall(`127.0.0.1:${port}`, echoPath, echoBody("x"), { "session-id": "s".repeat(size) });
          assert.equal(r.code, "RESOURCE_EXHAUSTED", `${size}: ${r.details}`);
          assert.match(r.details, tooLarge);
          assert.ok(r.ms < 3000, `${size}: answered after ${r.ms} ms`);
        }
      });

      it(
        `${target}: Python grpcio gets RESOURCE_EXHAUSTED at 20,000 characters, and fails at once at 100,000`,
        { skip: pythonSkip },
        async () => {
          const port = target === "gateway" ? gatewayPort : instancePort;
          const r = await pythonCall(`127.0.0.1:${port}`, echoPath, echoBody("x"), "session-id=@20000");
          assert.equal(r.code, "RESOURCE_EXHAUSTED", r.details);
          assert.match(r.details, tooLarge);
          assert.ok(r.ms < 3000, `answered after ${r.ms} ms`);
          // grpcio sends this field uncompressed: over 64 KiB, which HTTP/2 (HPACK) cannot decode,
          // so no status can come back; the connection is closed instead of left hanging.
          const huge = await pythonCall(`127.0.0.1:${port}`, echoPath, echoBody("x"), "session-id=@100000");
          assert.equal(huge.code, "UNAVAILABLE", huge.details);
          assert.ok(huge.ms < 3000, `failed after ${huge.ms} ms (the deadline is 10 s)`);
        },
      );
    }

    it("both processes log what they refused", () => {
      const lines = stack.output().split("\n");
      for (const name of ["gateway", "myservice-1"]) {
        const own = lines.filter((l) => l.startsWith(name));
        assert.ok(
          own.some((l) => l.includes("headers larger than MAX_HEADER_BYTES")),
          `${name} logs the refusal`,
        );
        if (!pythonSkip) {
          assert.ok(
            own.some((l) => l.includes("headers never arrived whole")),
            `${name} logs the closed connection`,
          );
        }
      }
    });
  });

  describe("malformed protobuf: INVALID_ARGUMENT where the message is decoded", () => {
    /** EchoRequest whose field 1 claims 5 bytes and carries 2: correctly framed, not valid protobuf. */
    const malformed = Buffer.from([0x0a, 0x05, 0x61, 0x62]);
    const expected = malformedRequestMessage("my_service.EchoRequest");

    it("native gRPC through the relay: the instance answers, the session stays usable", async () => {
      const h = await mintHeaders(stack.jwtSecret, `malformed-${Date.now()}`);
      for (const path of [echoPath, `/${MyServiceAPI.typeName}/MyServiceSubscribe`]) {
        const r = await rawCall(stack.gatewayUrl, path, h, [grpcFrame(malformed)], { timeoutMs: 10_000 });
        assert.deepEqual([r.grpcStatus, r.grpcMessage], [Code.InvalidArgument, expected], path);
      }
      const ok = await rawCall(stack.gatewayUrl, echoPath, h, [grpcFrame(Buffer.from(echoBody("fine")))], { timeoutMs: 10_000 });
      assert.equal(ok.grpcStatus, 0, ok.grpcMessage);
      assert.ok(
        stack
          .output()
          .split("\n")
          .some((l) => l.startsWith("myservice") && l.includes("malformed request message") && l.includes("premature EOF")),
        "the instance logs the decoder's reason",
      );
      await rawCall(stack.gatewayUrl, `/${MyServiceAPI.typeName}/MyServiceShutdown`, h, [grpcFrame(Buffer.alloc(0))]);
    });

    it("Connect and gRPC-Web: the gateway answers, before any routing", async () => {
      const h = await mintHeaders(stack.jwtSecret, `malformed-web-${Date.now()}`);
      const post = (type: string, body: Buffer) =>
        fetch(`${stack.gatewayUrl}${echoPath}`, { method: "POST", headers: { ...h, "content-type": type }, body });
      const connect = await post("application/proto", malformed);
      assert.equal(connect.status, 400);
      assert.deepEqual(await connect.json(), { code: "invalid_argument", message: expected });
      const web = Buffer.from(await (await post("application/grpc-web+proto", grpcFrame(malformed))).arrayBuffer());
      let trailer = "";
      for (let i = 0; i + 5 <= web.length; i += 5 + web.readUInt32BE(i + 1)) {
        if (((web[i] as number) & 0x80) !== 0) trailer = web.subarray(i + 5, i + 5 + web.readUInt32BE(i + 1)).toString();
      }
      assert.match(trailer, /grpc-status: ?3\r\n/);
      assert.equal(decodeURIComponent(/grpc-message: ?(.*)\r\n/.exec(trailer)?.[1] ?? ""), expected);
      assert.ok(
        stack
          .output()
          .split("\n")
          .some((l) => l.startsWith("gateway") && l.includes("malformed request message")),
        "the gateway logs it",
      );
    });
  });
});
