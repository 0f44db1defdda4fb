import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { anyUnpack, durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../gen/google/rpc/status_pb.js";
import { busyError, grpcStatusOf, messages, retryTrailers, toConnectError, unavailableError } from "./errors.js";

describe("retry hints", () => {
  it("retryTrailers: grpc-status-details-bin is a google.rpc.Status with the code, message and a RetryInfo", () => {
    const trailers = retryTrailers(Code.ResourceExhausted, messages.busy, 1500);
    assert.equal(trailers["retry-after-ms"], "1500");
    const bin = trailers["grpc-status-details-bin"] as string;
    assert.match(bin, /^[A-Za-z0-9+/]+$/, "base64 without padding");
    const status = fromBinary(StatusSchema, Buffer.from(bin, "base64"));
    assert.equal(status.code, Code.ResourceExhausted);
    assert.equal(status.message, "all instances are busy");
    assert.equal(status.details.length, 1);
    assert.equal(status.details[0]?.typeUrl, "type.googleapis.com/google.rpc.RetryInfo");
    const info = anyUnpack(status.details[0]!, RetryInfoSchema);
    assert.equal(info?.retryDelay && durationMs(info.retryDelay), 1500);
  });

  it("toConnectError: a busy refusal carries RetryInfo and retry-after-ms; other errors carry neither", () => {
    const busy = toConnectError(busyError(1000));
    assert.equal(busy.code, Code.ResourceExhausted);
    assert.equal(busy.rawMessage, "all instances are busy");
    const [info] = busy.findDetails(RetryInfoSchema);
    assert.equal(info?.retryDelay && durationMs(info.retryDelay), 1000);
    assert.equal(busy.metadata.get("retry-after-ms"), "1000");

    const down = toConnectError(unavailableError(new Error("ECONNREFUSED")));
    assert.equal(down.code, Code.Unavailable);
    assert.equal(down.rawMessage, "backend service unavailable");
    assert.deepEqual(down.findDetails(RetryInfoSchema), []);
    assert.equal(down.metadata.get("retry-after-ms"), null);

    const upstream = new ConnectError("Server session is not set", Code.PermissionDenied);
    assert.equal(toConnectError(upstream), upstream, "an instance's error passes unchanged");
  });
});

describe("grpcStatusOf()", () => {
  it("answers a transient dependency failure UNAVAILABLE and anything unexpected INTERNAL, never with the cause's text", () => {
    const transient = Object.assign(new Error("connect ECONNREFUSED 10.0.0.9:5432"), { transient: true as const });
    assert.deepEqual(grpcStatusOf(transient), { code: Code.Unavailable, message: "backend service unavailable" });
    assert.deepEqual(grpcStatusOf(new Error('relation "leases" does not exist')), { code: Code.Internal, message: "internal error" });
    const converted = toConnectError(transient);
    assert.equal(converted.rawMessage, "backend service unavailable");
    assert.equal(converted.cause, transient, "the cause stays for the log");
  });
});
