import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseGrpcTimeout } from "./grpc-relay.js";

describe("parseGrpcTimeout()", () => {
  it("reads every unit of the gRPC spec into milliseconds", () => {
    assert.equal(parseGrpcTimeout("2H"), 7_200_000);
    assert.equal(parseGrpcTimeout("3M"), 180_000);
    assert.equal(parseGrpcTimeout("5S"), 5_000);
    assert.equal(parseGrpcTimeout("250m"), 250);
    assert.equal(parseGrpcTimeout("1500u"), 1.5);
    assert.equal(parseGrpcTimeout("2000000n"), 2);
    assert.equal(parseGrpcTimeout("0m"), 0);
  });

  it("accepts up to 8 digits", () => {
    assert.equal(parseGrpcTimeout("99999999S"), 99_999_999_000);
    assert.equal(parseGrpcTimeout("00000001m"), 1);
    assert.equal(parseGrpcTimeout("123456789S"), undefined);
  });

  it("returns undefined for a missing, repeated or malformed header", () => {
    assert.equal(parseGrpcTimeout(undefined), undefined);
    assert.equal(parseGrpcTimeout(["1S", "2S"]), undefined);
    for (const value of ["", "S", "1", "1s", "1h", "1ms", "-1S", "1.5S", " 1S", "1S ", "1 S", "1SS", "1x", "0x10m", "1e3m", "Infinity S"]) {
      assert.equal(parseGrpcTimeout(value), undefined, JSON.stringify(value));
    }
  });
});
