/**
 * Bench-only: a pool of many instances at the lowest CPU cost per call this machine allows,
 * for the allocation-rate profile, where a connect-node instance (~1 ms CPU per first call)
 * and not the gateway would set the rate. One process serves many ports; each port is one
 * instance of the contract the gateway relies on, on raw `node:http2` (unary native gRPC only):
 *
 * - `InstanceService/GetStatus` and `grpc.health.v1.Health/Check`, as the gateway probes them;
 * - `MyServiceEcho`: the token is verified as the real instance does (`authenticateCall`, same
 *   verifier and cache), the first session binds the instance, another one is a Session conflict
 *   (SPEC 4.9), the reply has every EchoResponse field;
 * - `MyServiceShutdown`: same checks; after the reply the port restarts with a new boot id, as
 *   the launcher's supervisor restarts an exited instance;
 * - `InstanceService/Recycle` (a gateway's token of role `system`): restarts the same way whether
 *   a session bound or not, refused if another session is bound, as the real instance (the
 *   gateway recycles an instance whose lease ended without a restart: the boot-id fence).
 *
 * Anything else answers UNIMPLEMENTED. Environment: `JWT_SECRET` or `JWT_PUBLIC_KEY_FILE` (required), `BENCH_INSTANCES`
 * (count, default 100), `BENCH_POD_PREFIX` (default `lean`), `BENCH_LOG_BINDS=1` (print one line
 * `{"bound":"<session>","pod":"<pod>","at":<Unix ms>}` whenever an instance binds a session: the
 * waiting-room tests read which sessions ever reached an instance). Prints `{"ports":[...]}`
 * once every port listens (`pool-process.ts`).
 */
import { randomUUID } from "node:crypto";
import * as http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { authenticateCall, authFailureMessage } from "../common/metadata-auth.js";
import { createTokenVerifier, type TokenVerifier } from "../common/tokens.js";
import { encodeGrpcMessage, firstMessage, frameMessage } from "../gateway/proxy/grpc-frames.js";
import { HealthCheckResponse_ServingStatus, HealthCheckResponseSchema } from "../gen/grpc/health/v1/health_pb.js";
import { EchoRequestSchema, EchoResponseSchema, ShutdownResponseSchema } from "../gen/my_service/my_service_pb.js";
import { GetStatusResponseSchema, RecycleRequestSchema, RecycleResponseSchema } from "../gen/myservice/instance/v1/instance_pb.js";
import { serverValue, systemRole } from "../myservice/my-service.js";
import { poolEnv, servePool } from "./pool-process.js";

const { keys, count } = poolEnv();
const prefix = process.env.BENCH_POD_PREFIX ?? "lean";
const logBinds = process.env.BENCH_LOG_BINDS === "1";

type Reply = { status: 0; message: Uint8Array } | { status: Code; error: string };

function ok(message: Uint8Array): Reply {
  return { status: 0, message };
}

function fail(status: Code, error: string): Reply {
  return { status, error };
}

class LeanInstance {
  readonly bootId = randomUUID();
  readonly startedAtMs = Date.now();
  sessionId: string | undefined;
  shuttingDown = false;
  readonly server = http2.createServer();
  private readonly sessions = new Set<http2.ServerHttp2Session>();

  constructor(
    readonly podName: string,
    private readonly verify: TokenVerifier,
    private readonly onShutdown: () => void,
  ) {
    this.server.on("session", (s) => {
      this.sessions.add(s);
      s.on("close", () => this.sessions.delete(s));
      s.on("error", () => {});
    });
    this.server.on("stream", (stream, headers) => this.onStream(stream, headers));
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on("error", () => {});
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", async () => {
      let reply: Reply;
      try {
        reply = await this.handle(String(headers[":path"]), headers, Buffer.concat(chunks));
      } catch (error) {
        reply = fail(Code.InvalidArgument, `cannot handle the request: ${(error as Error).message}`);
      }
      if (stream.destroyed) return;
      if (reply.status !== 0) {
        stream.respond(
          {
            ":status": 200,
            "content-type": "application/grpc",
            "grpc-status": String(reply.status),
            "grpc-message": encodeGrpcMessage(reply.error),
          },
          { endStream: true },
        );
        return;
      }
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(frameMessage(reply.message));
    });
  }

  private authenticate(headers: http2.IncomingHttpHeaders): string | Reply {
    const result = authenticateCall(headers["session-id"] as string | undefined, headers.authorization as string | undefined, this.verify);
    return result.ok ? result.sessionId : fail(Code.Unauthenticated, authFailureMessage[result.failure]);
  }

  private async handle(path: string, headers: http2.IncomingHttpHeaders, body: Buffer): Promise<Reply> {
    switch (path) {
      case "/myservice.instance.v1.InstanceService/GetStatus":
        return ok(
          toBinary(
            GetStatusResponseSchema,
            create(GetStatusResponseSchema, {
              podName: this.podName,
              bootId: this.bootId,
              sessionId: this.sessionId ?? "",
              shuttingDown: this.shuttingDown,
              startedAtMs: BigInt(this.startedAtMs),
            }),
          ),
        );
      case "/grpc.health.v1.Health/Check":
        return ok(
          toBinary(
            HealthCheckResponseSchema,
            create(HealthCheckResponseSchema, {
              status: this.shuttingDown ? HealthCheckResponse_ServingStatus.NOT_SERVING : HealthCheckResponse_ServingStatus.SERVING,
            }),
          ),
        );
      case "/my_service.MyServiceAPI/MyServiceEcho": {
        const sessionId = this.authenticate(headers);
        if (typeof sessionId !== "string") return sessionId;
        if (this.sessionId === undefined) {
          this.sessionId = sessionId;
          if (logBinds) process.stdout.write(`${JSON.stringify({ bound: sessionId, pod: this.podName, at: Date.now() })}\n`);
        } else if (this.sessionId !== sessionId) return fail(Code.Internal, `Session conflict: was=${this.sessionId}, now=${sessionId}`);
        const message = firstMessage(body);
        if (message === undefined) return fail(Code.InvalidArgument, "no request message");
        const request = fromBinary(EchoRequestSchema, message);
        return ok(
          toBinary(
            EchoResponseSchema,
            create(EchoResponseSchema, {
              clientValue: request.value,
              serverValue,
              podName: this.podName,
              serverSessionId: this.sessionId,
              clientSessionId: sessionId,
              index: 0,
              serverMethod: "MyServiceEcho",
            }),
          ),
        );
      }
      case "/my_service.MyServiceAPI/MyServiceShutdown": {
        const sessionId = this.authenticate(headers);
        if (typeof sessionId !== "string") return sessionId;
        if (this.sessionId === undefined) return fail(Code.PermissionDenied, "Server session is not set");
        if (this.sessionId !== sessionId) {
          return fail(Code.PermissionDenied, `Client session mismatch: client=${sessionId}, server=${this.sessionId}`);
        }
        this.exit();
        return ok(
          toBinary(
            ShutdownResponseSchema,
            create(ShutdownResponseSchema, {
              podName: this.podName,
              serverSessionId: this.sessionId,
              clientSessionId: sessionId,
              index: 0,
              serverMethod: "MyServiceShutdown",
            }),
          ),
        );
      }
      case "/myservice.instance.v1.InstanceService/Recycle": {
        const result = authenticateCall(
          headers["session-id"] as string | undefined,
          headers.authorization as string | undefined,
          this.verify,
        );
        if (!result.ok) return fail(Code.Unauthenticated, authFailureMessage[result.failure]);
        if (result.claims.role !== systemRole) return fail(Code.PermissionDenied, `role ${systemRole} required`);
        const request = fromBinary(RecycleRequestSchema, firstMessage(body) ?? new Uint8Array(0));
        if (request.sessionId !== result.sessionId) return fail(Code.InvalidArgument, "session_id differs from session-id");
        if (this.sessionId !== undefined && this.sessionId !== request.sessionId) {
          return fail(Code.FailedPrecondition, `bound to another session (${this.sessionId})`);
        }
        this.exit();
        return ok(toBinary(RecycleResponseSchema, create(RecycleResponseSchema, { podName: this.podName })));
      }
      default:
        return fail(Code.Unimplemented, `method ${path} not implemented by the lean bench instance`);
    }
  }

  /** After the reply went out, the port restarts with a new boot id (`onShutdown`), as an exiting process's supervisor would. */
  private exit(): void {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    setTimeout(() => this.onShutdown(), 20);
  }

  /** Closes at once, connections included, as an exiting process would (its Shutdown reply went out 20 ms ago). */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sessions) s.destroy();
      setTimeout(resolve, 500).unref();
    });
  }
}

await servePool(count, (index) => {
  let ended: () => void = () => {};
  const instance = new LeanInstance(`${prefix}-${index}`, createTokenVerifier({ keys }), () => ended());
  return {
    server: instance.server,
    ended: new Promise<void>((resolve) => {
      ended = resolve;
    }),
    close: () => instance.close(),
  };
});
