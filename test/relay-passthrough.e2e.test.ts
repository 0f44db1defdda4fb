/**
 * What the relay does with what it does not interpret, seen from both ends: a grpc-js client
 * (not ours) on one side, a recording fake instance (raw node:http2) on the other, the real
 * gateway process in between. Custom metadata (text and `-bin`) must reach the instance, the
 * instance's own response headers and trailers must reach the client, and a client cancel
 * must end the instance's stream (SPEC 4.4) — not leave it streaming to nobody.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { devJwtSecret } from "../common/dev-defaults.js";
import { issueToken } from "../common/tokens.js";
import { firstMessage, frameMessage } from "../gateway/proxy/grpc-frames.js";
import { HealthCheckResponseSchema, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { EchoRequestSchema, EchoResponseSchema } from "../gen/my_service/my_service_pb.js";
import { GetStatusResponseSchema } from "../gen/myservice/instance/v1/instance_pb.js";
import { repoRoot } from "../scripts/up-control-client.js";
import { pickFreePorts } from "../scripts/net-util.js";

const echoPath = "/my_service.MyServiceAPI/MyServiceEcho";
const subscribePath = "/my_service.MyServiceAPI/MyServiceSubscribe";
const binBytes = Buffer.from([0, 1, 2, 0x7f, 0x80, 0xfe, 0xff]);

/** A MyService instance that records what reaches it. */
class FakeInstance {
  readonly server = http2.createServer();
  /** Request headers of every Echo and Subscribe, in order. */
  readonly calls: http2.IncomingHttpHeaders[] = [];
  /** Resolves when a Subscribe stream ends, with how it ended. */
  readonly subscribeEnded: Promise<{ rstCode: number | undefined; messagesSent: number }>;
  private sessionId = "";
  private endSubscribe: (info: { rstCode: number | undefined; messagesSent: number }) => void = () => {};

  constructor() {
    this.subscribeEnded = new Promise((resolve) => (this.endSubscribe = resolve));
    this.server.on("stream", (stream, headers) => {
      stream.on("error", () => {});
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => this.onRequest(stream, headers, firstMessage(Buffer.concat(chunks)) ?? Buffer.alloc(0)));
    });
  }

  private unary(stream: http2.ServerHttp2Stream, message: Uint8Array, headers: http2.OutgoingHttpHeaders = {}, trailers: http2.OutgoingHttpHeaders = {}) {
    stream.respond({ ":status": 200, "content-type": "application/grpc", ...headers }, { waitForTrailers: true });
    stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0", ...trailers }));
    stream.end(frameMessage(message));
  }

  private reply(value: string, session: string, index: number, method: string): Uint8Array {
    return toBinary(
      EchoResponseSchema,
      create(EchoResponseSchema, { clientValue: value, serverValue: "my_service", podName: "fake-1", serverSessionId: this.sessionId, clientSessionId: session, index, serverMethod: method }),
    );
  }

  /** Records a MyService call, binds its session, decodes its request. */
  private accept(headers: http2.IncomingHttpHeaders, body: Buffer): { session: string; value: string } {
    this.calls.push(headers);
    const session = String(headers["session-id"]);
    this.sessionId ||= session;
    return { session, value: fromBinary(EchoRequestSchema, body).value };
  }

  private onRequest(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, body: Buffer): void {
    if (stream.destroyed) return;
    switch (headers[":path"]) {
      case "/myservice.instance.v1.InstanceService/GetStatus":
        this.unary(stream, toBinary(GetStatusResponseSchema, create(GetStatusResponseSchema, { podName: "fake-1", bootId: "boot-fake-1", sessionId: this.sessionId })));
        return;
      case "/grpc.health.v1.Health/Check":
        this.unary(stream, toBinary(HealthCheckResponseSchema, create(HealthCheckResponseSchema, { status: HealthCheckResponse_ServingStatus.SERVING })));
        return;
      case echoPath: {
        const { session, value } = this.accept(headers, body);
        this.unary(
          stream,
          this.reply(value, session, 0, "MyServiceEcho"),
          { "x-instance-header": "from-instance", "x-instance-data-bin": binBytes.toString("base64") },
          { "x-instance-trailer": "trailer-value" },
        );
        return;
      }
      case subscribePath: {
        const { session, value } = this.accept(headers, body);
        stream.respond({ ":status": 200, "content-type": "application/grpc" });
        let sent = 0;
        const send = () => {
          if (!stream.destroyed) stream.write(frameMessage(this.reply(value, session, sent++, "MyServiceSubscribe")));
        };
        send();
        const timer = setInterval(send, 30);
        stream.once("close", () => {
          clearInterval(timer);
          this.endSubscribe({ rstCode: stream.rstCode, messagesSent: sent });
        });
        return;
      }
      default:
        stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "12" }, { endStream: true });
    }
  }
}

describe("relay pass-through (grpc-js client, recording instance)", () => {
  const fake = new FakeInstance();
  let gateway: ChildProcess | undefined;
  let gatewayAddress = "";
  let dataDir = "";
  let output = "";
  let client: grpc.Client;
  const metadataFor = async (session: string) => {
    const { token } = await issueToken(devJwtSecret, { sub: "TestUser", role: "admin", session_id: session }, 600_000);
    const md = new grpc.Metadata();
    md.set("authorization", token);
    md.set("session-id", session);
    return md;
  };
  const encode = (value: string) => Buffer.from(toBinary(EchoRequestSchema, create(EchoRequestSchema, { value })));
  const decode = (b: Buffer) => fromBinary(EchoResponseSchema, b);

  before(async () => {
    await new Promise<void>((resolve) => fake.server.listen(0, "127.0.0.1", resolve));
    const instance = `127.0.0.1:${(fake.server.address() as AddressInfo).port}`;
    dataDir = await mkdtemp(join(tmpdir(), "relay-passthrough-"));
    const [port] = await pickFreePorts(1);
    gatewayAddress = `127.0.0.1:${port}`;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      JWT_SECRET: devJwtSecret,
      USERS_FILE: join(repoRoot, "test", "fixtures", "users.json"),
      LEASE_DB_PATH: join(dataDir, "leases.db"),
      SERVICE_PORT_GRPC: String(port),
      LISTEN_HOST: "127.0.0.1",
      MYSERVICE_ADDRESSES: instance,
      HEALTH_CHECK_INTERVAL: "300ms",
      LOG_LEVEL: "warn",
      LOG_FORMAT: "json",
    };
    delete env.NODE_TEST_CONTEXT;
    gateway = spawn(process.execPath, ["--import", "tsx", join(repoRoot, "gateway", "main.ts")], { cwd: repoRoot, env, stdio: ["ignore", "pipe", "pipe"] });
    gateway.stdout?.on("data", (c: Buffer) => (output += c));
    gateway.stderr?.on("data", (c: Buffer) => (output += c));
    const deadline = Date.now() + 20_000;
    for (;;) {
      const ready = await fetch(`http://${gatewayAddress}/readyz`).then((r) => r.ok, () => false);
      if (ready) break;
      if (Date.now() > deadline || gateway.exitCode !== null) throw new Error(`gateway not ready:\n${output.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    client = new grpc.Client(gatewayAddress, grpc.credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    if (gateway !== undefined && gateway.exitCode === null) {
      gateway.kill("SIGTERM");
      await new Promise((r) => gateway?.once("exit", r));
    }
    fake.server.close();
    if (dataDir !== "") await rm(dataDir, { recursive: true, force: true });
  });

  it("passes custom metadata to the instance and the instance's headers and trailers back", async () => {
    const md = await metadataFor("passthrough-1");
    md.set("x-custom-text", "hello there");
    md.set("x-custom-data-bin", binBytes);
    let headers: grpc.Metadata | undefined;
    let trailers: grpc.Metadata | undefined;
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const call = client.makeUnaryRequest(echoPath, (b: Buffer) => b, (b: Buffer) => b, encode("v1"), md, (error, value) =>
        error ? reject(error) : resolve(value as Buffer),
      );
      call.on("metadata", (m) => (headers = m));
      call.on("status", (s) => (trailers = s.metadata));
    });
    assert.equal(decode(reply).clientValue, "v1");
    assert.equal(decode(reply).podName, "fake-1");
    // At the instance: the custom metadata, unchanged; the gateway's own request id added.
    const seen = fake.calls.at(-1) as http2.IncomingHttpHeaders;
    assert.equal(seen["x-custom-text"], "hello there");
    assert.deepEqual(Buffer.from(String(seen["x-custom-data-bin"]), "base64"), binBytes);
    assert.equal(seen["session-id"], "passthrough-1");
    assert.match(String(seen["x-request-id"]), /.+/);
    // At the client: the instance's header and trailer metadata, binary decoded by grpc-js.
    assert.deepEqual(headers?.get("x-instance-header"), ["from-instance"]);
    assert.deepEqual(headers?.get("x-instance-data-bin"), [binBytes]);
    assert.deepEqual(trailers?.get("x-instance-trailer"), ["trailer-value"]);
  });

  it("ends the instance's Subscribe stream when the client cancels", async () => {
    const md = await metadataFor("passthrough-1");
    const call = client.makeServerStreamRequest(subscribePath, (b: Buffer) => b, (b: Buffer) => b, encode("s1"), md);
    const indexes: number[] = [];
    const cancelled = new Promise<grpc.ServiceError>((resolve) => call.on("error", resolve));
    await new Promise<void>((resolve) => {
      call.on("data", (b: Buffer) => {
        indexes.push(decode(b).index);
        if (indexes.length === 3) resolve();
      });
    });
    assert.deepEqual(indexes, [0, 1, 2]);
    const t0 = Date.now();
    call.cancel();
    assert.equal((await cancelled).code, grpc.status.CANCELLED);
    const ended = await Promise.race([
      fake.subscribeEnded,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 5000)),
    ]);
    assert.ok(ended !== undefined, "the instance's stream is still open 5 s after the client cancelled");
    // The gateway resets the upstream stream (RST_STREAM CANCEL = 8) right away.
    assert.equal(ended.rstCode, http2.constants.NGHTTP2_CANCEL);
    assert.ok(Date.now() - t0 < 1000, `instance stream ended ${Date.now() - t0} ms after the cancel`);
    // The session is still usable afterwards.
    const again = await new Promise<Buffer>((resolve, reject) =>
      client.makeUnaryRequest(echoPath, (b: Buffer) => b, (b: Buffer) => b, encode("after"), md, (e, v) => (e ? reject(e) : resolve(v as Buffer))),
    );
    assert.equal(decode(again).clientValue, "after");
  });
});
