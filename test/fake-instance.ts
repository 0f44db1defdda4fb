/**
 * A MyService instance in the test process (raw node:http2) that records what reaches it, and
 * a real gateway process in front of such instances. For tests that must see the gateway's
 * traffic from the instance's side: metadata pass-through, cancels, probes.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { devJwtSecret } from "../common/dev-defaults.js";
import { issueToken } from "../common/tokens.js";
import { firstMessage, frameMessage } from "../gateway/proxy/grpc-frames.js";
import { HealthCheckResponse_ServingStatus, HealthCheckResponseSchema } from "../gen/grpc/health/v1/health_pb.js";
import { EchoRequestSchema, EchoResponseSchema } from "../gen/my_service/my_service_pb.js";
import { GetStatusResponseSchema } from "../gen/myservice/instance/v1/instance_pb.js";
import { pickFreePorts } from "../scripts/net-util.js";
import { repoRoot } from "../scripts/up-control-client.js";

export const echoPath = "/my_service.MyServiceAPI/MyServiceEcho";
export const subscribePath = "/my_service.MyServiceAPI/MyServiceSubscribe";
const shutdownPath = "/my_service.MyServiceAPI/MyServiceShutdown";

/** Bytes the instance sends back in a `-bin` response header. */
export const binBytes = Buffer.from([0, 1, 2, 0x7f, 0x80, 0xfe, 0xff]);

/** A MyService instance that records what reaches it. */
export class FakeInstance {
  readonly server = http2.createServer();
  /** Request headers of every Echo and Subscribe, in order. */
  readonly calls: http2.IncomingHttpHeaders[] = [];
  /** How many of each the gateway sent. */
  readonly counts = { healthChecks: 0, statusCalls: 0, pings: 0, shutdowns: 0 };
  /** What the health service answers. */
  serving = true;
  /** The session the status call reports; `undefined`: the session bound by a call. */
  reportedSession: string | undefined;
  /** The boot id the status call reports: a test changes it to play a restart (the fake never exits). */
  bootId: string;
  /** How long Echo takes to answer, milliseconds. */
  echoDelayMs = 0;
  /** Resolves when a Subscribe stream ends, with how it ended. */
  readonly subscribeEnded: Promise<{ rstCode: number | undefined; messagesSent: number }>;
  private sessionId = "";
  private endSubscribe: (info: { rstCode: number | undefined; messagesSent: number }) => void = () => {};

  constructor(readonly podName = "fake-1") {
    this.bootId = `boot-${podName}`;
    this.subscribeEnded = new Promise((resolve) => {
      this.endSubscribe = resolve;
    });
    this.server.on("session", (session) => session.on("ping", () => this.counts.pings++));
    this.server.on("stream", (stream, headers) => {
      stream.on("error", () => {});
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => this.onRequest(stream, headers, firstMessage(Buffer.concat(chunks)) ?? Buffer.alloc(0)));
    });
  }

  /** Listens on a free loopback port; returns `host:port`. */
  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    return `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): void {
    this.server.close();
  }

  private unary(
    stream: http2.ServerHttp2Stream,
    message: Uint8Array,
    headers: http2.OutgoingHttpHeaders = {},
    trailers: http2.OutgoingHttpHeaders = {},
  ) {
    stream.respond({ ":status": 200, "content-type": "application/grpc", ...headers }, { waitForTrailers: true });
    stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0", ...trailers }));
    stream.end(frameMessage(message));
  }

  private reply(value: string, session: string, index: number, method: string): Uint8Array {
    return toBinary(
      EchoResponseSchema,
      create(EchoResponseSchema, {
        clientValue: value,
        serverValue: "my_service",
        podName: this.podName,
        serverSessionId: this.sessionId,
        clientSessionId: session,
        index,
        serverMethod: method,
      }),
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
        this.counts.statusCalls++;
        this.unary(
          stream,
          toBinary(
            GetStatusResponseSchema,
            create(GetStatusResponseSchema, {
              podName: this.podName,
              bootId: this.bootId,
              sessionId: this.reportedSession ?? this.sessionId,
            }),
          ),
        );
        return;
      case "/grpc.health.v1.Health/Check": {
        this.counts.healthChecks++;
        const status = this.serving ? HealthCheckResponse_ServingStatus.SERVING : HealthCheckResponse_ServingStatus.NOT_SERVING;
        this.unary(stream, toBinary(HealthCheckResponseSchema, create(HealthCheckResponseSchema, { status })));
        return;
      }
      case shutdownPath:
      case "/myservice.instance.v1.InstanceService/Recycle":
        // Recorded, refused: the fake does not exit (tests read the count of both).
        this.counts.shutdowns++;
        stream.respond(
          { ":status": 200, "content-type": "application/grpc", "grpc-status": "7", "grpc-message": "fake" },
          { endStream: true },
        );
        return;
      case echoPath: {
        const { session, value } = this.accept(headers, body);
        if (this.echoDelayMs > 0) {
          setTimeout(() => {
            if (!stream.destroyed) this.unary(stream, this.reply(value, session, 0, "MyServiceEcho"));
          }, this.echoDelayMs);
          return;
        }
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

/** A gateway process of this repository in front of `instances`, with its own lease database. */
export interface GatewayProcess {
  readonly address: string;
  readonly child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

/** Starts `gateway/main.ts` (development secret, test users) and waits until /readyz answers. */
export async function startGatewayFor(instances: readonly string[], env: Record<string, string> = {}): Promise<GatewayProcess> {
  const dataDir = await mkdtemp(join(tmpdir(), "fake-instance-gw-"));
  const [port] = await pickFreePorts(1);
  const address = `127.0.0.1:${port}`;
  const childEnv: NodeJS.ProcessEnv = {
    ...process.env,
    JWT_SECRET: devJwtSecret,
    USERS_FILE: join(repoRoot, "test", "fixtures", "users.json"),
    LEASE_DB_PATH: join(dataDir, "leases.db"),
    SERVICE_PORT_GRPC: String(port),
    LISTEN_HOST: "127.0.0.1",
    MYSERVICE_ADDRESSES: instances.join(","),
    HEALTH_CHECK_INTERVAL: "300ms",
    LOG_LEVEL: "warn",
    LOG_FORMAT: "json",
    ...env,
  };
  delete childEnv.NODE_TEST_CONTEXT;
  const child = spawn(process.execPath, ["--import", "tsx", join(repoRoot, "gateway", "main.ts")], {
    cwd: repoRoot,
    env: childEnv,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout?.on("data", (c: Buffer) => {
    output += c;
  });
  child.stderr?.on("data", (c: Buffer) => {
    output += c;
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
    await rm(dataDir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ready = await fetch(`http://${address}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ready) break;
    if (Date.now() > deadline || child.exitCode !== null) {
      await stop();
      throw new Error(`gateway not ready:\n${output.slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { address, child, output: () => output, stop };
}

/**
 * For the current suite: `fake` listens, a gateway runs in front of it (`env` added), and a
 * grpc-js client (a client that is not ours) talks to the gateway; all closed after the suite.
 */
export function withGatewayFor(fake: FakeInstance, env: Record<string, string> = {}): { gateway(): GatewayProcess; client(): grpc.Client } {
  let gateway: GatewayProcess | undefined;
  let client: grpc.Client | undefined;
  before(async () => {
    gateway = await startGatewayFor([await fake.listen()], env);
    client = new grpc.Client(gateway.address, grpc.credentials.createInsecure());
  });
  after(async () => {
    client?.close();
    await gateway?.stop();
    fake.close();
  });
  const ready = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error("the suite's before() hook has not run");
    return value;
  };
  return { gateway: () => ready(gateway), client: () => ready(client) };
}

/** grpc-js metadata of `session` with a token of the test user (development secret). */
export async function sessionMetadata(session: string): Promise<grpc.Metadata> {
  const { token } = await issueToken(devJwtSecret, { sub: "TestUser", role: "admin", session_id: session }, 600_000);
  const md = new grpc.Metadata();
  md.set("authorization", token);
  md.set("session-id", session);
  return md;
}
