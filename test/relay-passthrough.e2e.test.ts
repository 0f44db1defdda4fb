/**
 * What the relay does with what it does not interpret, seen from both ends: a grpc-js client
 * (not ours) on one side, a recording fake instance (raw node:http2) on the other, the real
 * gateway process in between. Custom metadata (text and `-bin`) must reach the instance, the
 * instance's own response headers and trailers must reach the client, and a client cancel
 * must end the instance's stream (SPEC 4.4) — not leave it streaming to nobody.
 */
import assert from "node:assert/strict";
import type * as http2 from "node:http2";
import { constants } from "node:http2";
import { describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { EchoRequestSchema, EchoResponseSchema } from "../gen/my_service/my_service_pb.js";
import { binBytes, echoPath, FakeInstance, sessionMetadata, subscribePath, withGatewayFor } from "./fake-instance.js";

describe("relay pass-through (grpc-js client, recording instance)", () => {
  const fake = new FakeInstance();
  const { client } = withGatewayFor(fake);
  const encode = (value: string) => Buffer.from(toBinary(EchoRequestSchema, create(EchoRequestSchema, { value })));
  const decode = (b: Buffer) => fromBinary(EchoResponseSchema, b);

  it("passes custom metadata to the instance and the instance's headers and trailers back", async () => {
    const md = await sessionMetadata("passthrough-1");
    md.set("x-custom-text", "hello there");
    md.set("x-custom-data-bin", binBytes);
    let headers: grpc.Metadata | undefined;
    let trailers: grpc.Metadata | undefined;
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const call = client().makeUnaryRequest(
        echoPath,
        (b: Buffer) => b,
        (b: Buffer) => b,
        encode("v1"),
        md,
        (error, value) => (error ? reject(error) : resolve(value as Buffer)),
      );
      call.on("metadata", (m) => {
        headers = m;
      });
      call.on("status", (s) => {
        trailers = s.metadata;
      });
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
    const md = await sessionMetadata("passthrough-1");
    const call = client().makeServerStreamRequest(
      subscribePath,
      (b: Buffer) => b,
      (b: Buffer) => b,
      encode("s1"),
      md,
    );
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
    const ended = await Promise.race([fake.subscribeEnded, new Promise<undefined>((r) => setTimeout(() => r(undefined), 5000))]);
    assert.ok(ended !== undefined, "the instance's stream is still open 5 s after the client cancelled");
    // The gateway resets the upstream stream (RST_STREAM CANCEL = 8) right away.
    assert.equal(ended.rstCode, constants.NGHTTP2_CANCEL);
    assert.ok(Date.now() - t0 < 1000, `instance stream ended ${Date.now() - t0} ms after the cancel`);
    // The session is still usable afterwards.
    const again = await new Promise<Buffer>((resolve, reject) =>
      client().makeUnaryRequest(
        echoPath,
        (b: Buffer) => b,
        (b: Buffer) => b,
        encode("after"),
        md,
        (e, v) => (e ? reject(e) : resolve(v as Buffer)),
      ),
    );
    assert.equal(decode(again).clientValue, "after");
  });
});
