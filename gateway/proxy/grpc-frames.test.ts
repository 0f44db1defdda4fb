import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decodeGrpcMessage, encodeGrpcMessage, firstMessage, frameMessage, GrpcFrameMeter } from "./grpc-frames.js";

function payload(length: number, seed = 1): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff);
}

function prefix(length: number, flag = 0): Buffer {
  const out = Buffer.alloc(5);
  out[0] = flag;
  out.writeUInt32BE(length, 1);
  return out;
}

const sizes = [0, 1, 4, 5, 6, 255, 256, 300];
const stream = Buffer.concat(sizes.map((n, i) => frameMessage(payload(n, i))));
const boundaries = new Set(
  sizes.reduce<number[]>(
    (acc, n) => {
      acc.push((acc.at(-1) ?? 0) + 5 + n);
      return acc;
    },
    [0],
  ),
);

describe("GrpcFrameMeter", () => {
  it("follows messages split across two chunks at every byte offset", () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const meter = new GrpcFrameMeter(300);
      assert.equal(meter.push(stream.subarray(0, cut)), undefined, `cut ${cut}`);
      assert.equal(meter.atBoundary, boundaries.has(cut), `atBoundary after ${cut} bytes`);
      assert.equal(meter.push(stream.subarray(cut)), undefined, `cut ${cut}`);
      assert.equal(meter.messages, sizes.length, `cut ${cut}`);
      assert.equal(meter.atBoundary, true, `cut ${cut}`);
    }
  });

  it("follows a stream fed one byte at a time", () => {
    const meter = new GrpcFrameMeter(300);
    for (let i = 0; i < stream.length; i++) {
      assert.equal(meter.push(stream.subarray(i, i + 1)), undefined);
      assert.equal(meter.atBoundary, boundaries.has(i + 1), `after byte ${i}`);
    }
    assert.equal(meter.messages, sizes.length);
  });

  it("counts a message once its 5-byte prefix is complete", () => {
    const meter = new GrpcFrameMeter(100);
    meter.push(prefix(10).subarray(0, 4));
    assert.equal(meter.messages, 0);
    meter.push(prefix(10).subarray(4));
    assert.equal(meter.messages, 1);
    assert.equal(meter.atBoundary, false, "payload still to come");
    meter.push(new Uint8Array(10));
    assert.equal(meter.atBoundary, true);
  });

  it("ignores empty chunks", () => {
    const meter = new GrpcFrameMeter(100);
    assert.equal(meter.push(new Uint8Array(0)), undefined);
    assert.equal(meter.atBoundary, true);
    assert.equal(meter.messages, 0);
  });

  it("allows a message of exactly the limit and reports one byte more", () => {
    const exact = new GrpcFrameMeter(100);
    assert.equal(exact.push(frameMessage(payload(100))), undefined);
    assert.equal(exact.atBoundary, true);
    const over = new GrpcFrameMeter(100);
    assert.equal(over.push(frameMessage(payload(101))), 101);
  });

  it("reports an oversized message from its prefix alone, before any payload byte", () => {
    const meter = new GrpcFrameMeter(4 * 1024 * 1024);
    assert.equal(meter.push(prefix(4 * 1024 * 1024 + 1)), 4 * 1024 * 1024 + 1);
    assert.equal(new GrpcFrameMeter(1024).push(prefix(0xffffffff)), 0xffffffff, "no sign overflow");
    assert.equal(new GrpcFrameMeter(1024).push(prefix(2000, 1)), 2000, "compressed messages count too");
  });

  it("reports an oversized prefix split across chunks on its last byte", () => {
    const head = prefix(0x01020304);
    for (let cut = 1; cut < 5; cut++) {
      const meter = new GrpcFrameMeter(1000);
      assert.equal(meter.push(head.subarray(0, cut)), undefined, `cut ${cut}`);
      assert.equal(meter.atBoundary, false);
      assert.equal(meter.push(head.subarray(cut)), 0x01020304, `cut ${cut}`);
    }
    const meter = new GrpcFrameMeter(1000);
    for (let i = 0; i < 4; i++) assert.equal(meter.push(head.subarray(i, i + 1)), undefined);
    assert.equal(meter.push(head.subarray(4)), 0x01020304);
  });

  it("reports an oversized message that follows small ones in the same chunk", () => {
    const meter = new GrpcFrameMeter(50);
    const chunk = Buffer.concat([frameMessage(payload(10)), frameMessage(payload(50)), prefix(51)]);
    assert.equal(meter.push(chunk), 51);
    assert.equal(meter.messages, 3);
  });

  it("is not at a boundary after a truncated payload", () => {
    const meter = new GrpcFrameMeter(100);
    meter.push(frameMessage(payload(20)).subarray(0, 15));
    assert.equal(meter.atBoundary, false);
  });
});

describe("frameMessage() and firstMessage()", () => {
  it("frames with a zero flag and a big-endian length", () => {
    const framed = frameMessage(Uint8Array.of(7, 8, 9));
    assert.deepEqual([...framed], [0, 0, 0, 0, 3, 7, 8, 9]);
    assert.deepEqual([...frameMessage(new Uint8Array(0))], [0, 0, 0, 0, 0]);
    assert.equal(frameMessage(payload(70_000)).readUInt32BE(1), 70_000);
  });

  it("round-trips a message, ignoring what follows it", () => {
    for (const n of [0, 1, 300, 70_000]) {
      const message = payload(n);
      assert.deepEqual(firstMessage(frameMessage(message)), Buffer.from(message));
    }
    const two = Buffer.concat([frameMessage(Uint8Array.of(1)), frameMessage(Uint8Array.of(2, 3))]);
    assert.deepEqual([...(firstMessage(two) ?? [])], [1]);
  });

  it("returns undefined for a short, incomplete or compressed body", () => {
    assert.equal(firstMessage(Buffer.alloc(0)), undefined);
    assert.equal(firstMessage(Buffer.from([0, 0, 0, 0])), undefined);
    assert.equal(firstMessage(frameMessage(payload(10)).subarray(0, 14)), undefined);
    const compressed = frameMessage(payload(3));
    compressed[0] = 1;
    assert.equal(firstMessage(compressed), undefined);
  });
});

describe("encodeGrpcMessage() and decodeGrpcMessage()", () => {
  const samples = [
    "all instances are busy",
    "backend service unavailable",
    "Client session mismatch: client=a b, server=c/d",
    "100% done, 50%25 literal",
    "café ☕ 日本語 🚀",
    "line\nbreak\ttab",
    "",
  ];

  it("keeps spaces readable and escapes % and non-ASCII", () => {
    assert.equal(encodeGrpcMessage("all instances are busy"), "all instances are busy");
    assert.equal(encodeGrpcMessage("100%"), "100%25");
    assert.equal(encodeGrpcMessage("é"), "%C3%A9");
    for (const text of samples) {
      assert.match(encodeGrpcMessage(text), /^[\x20-\x7e]*$/, `printable ASCII only: ${text}`);
    }
  });

  it("round-trips", () => {
    for (const text of samples) assert.equal(decodeGrpcMessage(encodeGrpcMessage(text)), text);
  });

  it("decodes what other gRPC implementations send", () => {
    assert.equal(decodeGrpcMessage("a%20b"), "a b");
    assert.equal(decodeGrpcMessage("caf%C3%A9"), "café");
    assert.equal(decodeGrpcMessage(undefined), "");
  });

  it("returns a malformed value as it is", () => {
    assert.equal(decodeGrpcMessage("100%"), "100%");
    assert.equal(decodeGrpcMessage("%E0%A4%A"), "%E0%A4%A");
    assert.equal(decodeGrpcMessage("%FF"), "%FF");
  });
});
