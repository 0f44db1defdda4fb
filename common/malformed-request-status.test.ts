import assert from "node:assert/strict";
import * as http from "node:http";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { ServerReflection, ServerReflectionResponseSchema } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { EchoResponseSchema, MyServiceAPI } from "../gen/my_service/my_service_pb.js";
import { grpcFrame, rawCall } from "../test/reliability/wire.js";
import { type MalformedRequest, malformedRequestMessage, withMalformedRequestStatus } from "./malformed-request-status.js";

/** EchoRequest whose field 1 claims 5 bytes and carries 2: correctly framed, not valid protobuf. */
const malformed = Buffer.from([0x0a, 0x05, 0x61, 0x62]);
/** EchoRequest { value: "hi" }. */
const valid = Buffer.from([0x0a, 0x02, 0x68, 0x69]);
const echoPath = "/my_service.MyServiceAPI/MyServiceEcho";
const subscribePath = "/my_service.MyServiceAPI/MyServiceSubscribe";
const expected = malformedRequestMessage("my_service.EchoRequest");

function routes(router: ConnectRouter): void {
  router.service(ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const request of requests) yield create(ServerReflectionResponseSchema, { validHost: request.host });
    },
  });
  router.service(MyServiceAPI, {
    myServiceEcho: (request) => create(EchoResponseSchema, { clientValue: request.value }),
    async *myServiceSubscribe(request) {
      yield create(EchoResponseSchema, { clientValue: request.value, index: 0 });
    },
    myServiceShutdown() {
      // Another INTERNAL error: must pass unchanged.
      throw new ConnectError("boom", Code.Internal);
    },
  });
}

/** Splits a streaming body into its frames (flag byte, payload). */
function frames(body: Buffer): { flags: number; data: Buffer }[] {
  const out: { flags: number; data: Buffer }[] = [];
  for (let i = 0; i + 5 <= body.length; ) {
    const length = body.readUInt32BE(i + 1);
    out.push({ flags: body[i] as number, data: body.subarray(i + 5, i + 5 + length) });
    i += 5 + length;
  }
  return out;
}

describe("withMalformedRequestStatus()", () => {
  const seen: MalformedRequest[] = [];
  const handler = connectNodeAdapter({ routes: withMalformedRequestStatus(routes, { onMalformed: (r) => seen.push(r) }) });
  const h2 = http2.createServer(handler);
  const h1 = http.createServer(handler);
  let h2Url = "";
  let h1Url = "";
  const listen = async (server: http.Server | http2.Http2Server) => {
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  };
  before(async () => {
    h2Url = await listen(h2);
    h1Url = await listen(h1);
  });
  after(async () => {
    h1.closeAllConnections();
    await Promise.all([new Promise((r) => h2.close(r)), new Promise((r) => h1.close(r))]);
  });

  const post = (path: string, type: string, body: Buffer) =>
    fetch(`${h1Url}${path}`, { method: "POST", headers: { "content-type": type, "connect-protocol-version": "1" }, body });

  it("answers a malformed gRPC request INVALID_ARGUMENT, unary and server stream, and reports the decoder's reason", async () => {
    seen.length = 0;
    for (const path of [echoPath, subscribePath]) {
      const r = await rawCall(h2Url, path, { "session-id": "s1" }, [grpcFrame(malformed)]);
      assert.deepEqual([r.grpcStatus, r.grpcMessage], [Code.InvalidArgument, expected], path);
    }
    assert.deepEqual(
      seen.map((s) => [s.path, s.typeName, s.reason, s.header.get("session-id")]),
      [
        [echoPath, "my_service.EchoRequest", "premature EOF", "s1"],
        [subscribePath, "my_service.EchoRequest", "premature EOF", "s1"],
      ],
    );
  });

  it("answers a malformed message later in a client stream, after the replies to the valid ones", async () => {
    // ServerReflectionRequest { host: "h" }, then one that claims 9 bytes of host and carries 1.
    const r = await rawCall(h2Url, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", {}, [
      grpcFrame(Buffer.from([0x0a, 0x01, 0x68])),
      grpcFrame(Buffer.from([0x0a, 0x09, 0x68])),
    ]);
    assert.deepEqual(
      [r.grpcStatus, r.grpcMessage],
      [Code.InvalidArgument, malformedRequestMessage("grpc.reflection.v1.ServerReflectionRequest")],
    );
    assert.equal(frames(r.body).length, 1, "the reply to the valid message came first");
  });

  it("answers gRPC-Web in the trailer frame", async () => {
    const response = await post(echoPath, "application/grpc-web+proto", grpcFrame(malformed));
    const trailer = frames(Buffer.from(await response.arrayBuffer())).find((f) => (f.flags & 0x80) !== 0);
    assert.ok(trailer, "a trailer frame");
    const text = trailer.data.toString();
    assert.match(text, /grpc-status: ?3\r\n/);
    assert.equal(decodeURIComponent(/grpc-message: ?(.*)\r\n/.exec(text)?.[1] ?? ""), expected);
  });

  it("answers Connect unary with HTTP 400 and the JSON error", async () => {
    const response = await post(echoPath, "application/proto", malformed);
    assert.equal(response.status, 400);
    assert.deepEqual(await response.json(), { code: "invalid_argument", message: expected });
  });

  it("answers Connect streaming in the end-of-stream frame", async () => {
    const response = await post(subscribePath, "application/connect+proto", grpcFrame(malformed));
    const end = frames(Buffer.from(await response.arrayBuffer())).find((f) => (f.flags & 0x02) !== 0);
    assert.ok(end, "an end-of-stream frame");
    assert.deepEqual(JSON.parse(end.data.toString()).error, { code: "invalid_argument", message: expected });
  });

  it("leaves valid requests and other errors alone", async () => {
    seen.length = 0;
    const ok = await rawCall(h2Url, echoPath, {}, [grpcFrame(valid)]);
    assert.equal(ok.grpcStatus, 0);
    assert.equal(frames(ok.body).length, 1);
    const boom = await rawCall(h2Url, "/my_service.MyServiceAPI/MyServiceShutdown", {}, [grpcFrame(Buffer.alloc(0))]);
    assert.deepEqual([boom.grpcStatus, boom.grpcMessage], [Code.Internal, "boom"]);
    const connectOk = await post(echoPath, "application/proto", valid);
    assert.equal(connectOk.status, 200);
    const connectBoom = await post("/my_service.MyServiceAPI/MyServiceShutdown", "application/proto", Buffer.alloc(0));
    assert.deepEqual(await connectBoom.json(), { code: "internal", message: "boom" });
    // Malformed JSON is connect's own INVALID_ARGUMENT already: unchanged.
    const json = await post(echoPath, "application/json", Buffer.from("{"));
    assert.equal(json.status, 400);
    assert.notEqual(((await json.json()) as { message: string }).message, expected);
    assert.deepEqual(seen, []);
  });
});
