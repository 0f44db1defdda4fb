import { type ClientHttp2Session, type ClientHttp2Stream, connect, type IncomingHttpHeaders, type OutgoingHttpHeaders } from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { devJwtSecret, devUser } from "../common/dev-defaults.js";
import { issueToken, type SigningKey } from "../common/tokens.js";
import { decodeGrpcMessage, frameMessage } from "../gateway/proxy/grpc-frames.js";
import { rawUnary } from "../gateway/proxy/raw-unary.js";
import {
  EchoRequestSchema,
  type EchoResponse,
  EchoResponseSchema,
  LoginRequestSchema,
  LoginResponseSchema,
} from "../gen/my_service/my_service_pb.js";

/** gRPC paths the benchmark calls. */
export const paths = {
  login: "/my_service.MyServiceAPI/Login",
  echo: "/my_service.MyServiceAPI/MyServiceEcho",
  subscribe: "/my_service.MyServiceAPI/MyServiceSubscribe",
} as const;

/** The JWT secret of every stack the benchmark starts. */
export const benchSecret = devJwtSecret;

/** Serialized EchoRequest (no gRPC prefix). */
export function echoRequest(value: string): Uint8Array {
  return toBinary(EchoRequestSchema, create(EchoRequestSchema, { value }));
}

/** An EchoRequest as a gRPC length-prefixed message (the body h2load sends). */
export function echoBody(value: string): Buffer {
  return frameMessage(echoRequest(value));
}

/** A logged-in session's metadata. */
export interface BenchSession {
  readonly id: string;
  readonly token: string;
  readonly headers: { authorization: string; "session-id": string };
}

/** An HTTP/2 connection, connected: cleartext (prior knowledge), or TLS trusting `ca`. */
export async function h2connect(address: string, ca?: Buffer): Promise<ClientHttp2Session> {
  const session = connect(`${ca ? "https" : "http"}://${address}`, { settings: { initialWindowSize: 1 << 20 }, ...(ca ? { ca } : {}) });
  session.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    session.once("connect", () => resolve());
    session.once("error", reject);
  });
  return session;
}

/** Logs `TestUser` in through the gateway (real Login: scrypt). */
export async function login(session: ClientHttp2Session, id: string): Promise<BenchSession> {
  const request = toBinary(
    LoginRequestSchema,
    create(LoginRequestSchema, { username: devUser.username, password: devUser.password, sessionId: id }),
  );
  const reply = await rawUnary(session, paths.login, request, {}, 30_000);
  if (reply.status !== 0) throw new Error(`Login failed: ${reply.status} ${reply.message}`);
  const { token } = fromBinary(LoginResponseSchema, reply.data);
  return { id, token, headers: { authorization: token, "session-id": id } };
}

/**
 * A session with a token signed like Login's (same key — the stack's secret unless `key` —
 * claims and lifetime), without the password hash: for profiles that must exclude Login's cost ("log them in beforehand").
 */
export async function mintSession(id: string, lifetimeMs = 3_600_000, key: string | SigningKey = benchSecret): Promise<BenchSession> {
  const { token } = await issueToken(key, { sub: devUser.username, role: devUser.role, session_id: id }, lifetimeMs);
  return { id, token, headers: { authorization: token, "session-id": id } };
}

/** One unary Echo; throws unless grpc-status is 0. */
export async function echo(session: ClientHttp2Session, s: BenchSession, value = "bench"): Promise<EchoResponse> {
  const reply = await rawUnary(session, paths.echo, echoRequest(value), s.headers, 10_000);
  if (reply.status !== 0) throw new Error(`Echo failed: ${reply.status} ${reply.message}`);
  return fromBinary(EchoResponseSchema, reply.data);
}

/** Size on the wire of one Echo reply's DATA (prefix + message), to check h2load's byte counts. */
export function echoReplyBytes(reply: EchoResponse): number {
  return 5 + toBinary(EchoResponseSchema, reply).length;
}

/** A unary call's outcome, for load generators that only need the status. */
export interface CallOutcome {
  readonly status: number;
  readonly message: string;
}

/**
 * The cheapest client call this bench makes (load generators whose own CPU must stay small):
 * prepared headers and framed body, no per-call timer (the caller bounds the whole run), the
 * reply's DATA is dropped. Transport failures resolve with status -1.
 */
export function unaryCall(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body: Buffer): Promise<CallOutcome> {
  return new Promise((resolve) => {
    let status = -1;
    let message = "";
    const read = (h: IncomingHttpHeaders) => {
      const s = h["grpc-status"];
      if (typeof s === "string") {
        status = Number(s);
        message = decodeGrpcMessage(h["grpc-message"] as string | undefined);
      }
    };
    let stream: ClientHttp2Stream;
    try {
      stream = session.request(headers);
    } catch (error) {
      resolve({ status: -1, message: (error as Error).message });
      return;
    }
    stream.on("response", read);
    stream.on("trailers", read);
    stream.on("data", noop);
    stream.on("error", noop);
    stream.on("close", () => resolve({ status, message }));
    stream.end(body);
  });
}

const noop = () => {};

/** Request headers of an Echo for `s`, prepared once for `unaryCall`. */
export function echoHeaders(s: BenchSession): OutgoingHttpHeaders {
  return { ":method": "POST", ":path": paths.echo, "content-type": "application/grpc", te: "trailers", ...s.headers };
}
