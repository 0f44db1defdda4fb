import assert from "node:assert/strict";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import * as net from "node:net";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Code } from "@connectrpc/connect";
import {
  closeStalledHeaderBlocks,
  headerListSize,
  headersTooLargeMessage,
  refuseOversizedHeaders,
  type StalledHeaders,
} from "./header-limits.js";

describe("headerListSize()", () => {
  it("counts names, values and 32 bytes per field, as HTTP/2 does", () => {
    assert.equal(headerListSize([]), 0);
    assert.equal(headerListSize([":path", "/x", "session-id", "abc"]), 5 + 2 + 32 + 10 + 3 + 32);
  });
});

/** A server that refuses headers over `limit` and closes stalled connections; every stream gets OK. */
async function server(limit: number, stalled: StalledHeaders[]) {
  const h2 = http2.createServer();
  const stop = closeStalledHeaderBlocks(h2, { intervalMs: 100, onClose: (s) => stalled.push(s) });
  h2.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, _flags: number, rawHeaders: string[]) => {
    if (refuseOversizedHeaders(stream, headers, rawHeaders, limit)) return;
    stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "0" }, { endStream: true });
  });
  await new Promise<void>((resolve) => h2.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(h2.address() as AddressInfo).port}`;
  return {
    url,
    close: () => {
      stop();
      return new Promise((resolve) => h2.close(resolve));
    },
  };
}

/** One request; resolves with the response headers, or how the connection ended. */
function request(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders) {
  return new Promise<{ headers?: http2.IncomingHttpHeaders; closed?: string; ms: number }>((resolve) => {
    const started = Date.now();
    const req = session.request({ ":method": "POST", ":path": "/s/M", "content-type": "application/grpc", ...headers });
    req.on("response", (h) => resolve({ headers: h, ms: Date.now() - started }));
    req.on("error", (e) => resolve({ closed: String(e), ms: Date.now() - started }));
    req.on("close", () => resolve({ closed: `rst ${req.rstCode}`, ms: Date.now() - started }));
    req.end();
  });
}

describe("refuseOversizedHeaders() and closeStalledHeaderBlocks()", () => {
  it("answers headers over the limit with RESOURCE_EXHAUSTED at once; smaller ones pass", async (t) => {
    const stalled: StalledHeaders[] = [];
    const s = await server(1024, stalled);
    const session = http2.connect(s.url);
    session.on("error", () => {});
    t.after(async () => {
      session.destroy();
      await s.close();
    });
    const small = await request(session, { "session-id": "x".repeat(100) });
    assert.equal(small.headers?.["grpc-status"], "0");
    const big = await request(session, { "session-id": "x".repeat(2000) });
    assert.equal(big.headers?.["grpc-status"], String(Code.ResourceExhausted));
    const size = Number(/\((\d+) vs/.exec(decodeURIComponent(String(big.headers?.["grpc-message"])))?.[1]);
    assert.ok(size > 2000);
    assert.equal(decodeURIComponent(String(big.headers?.["grpc-message"])), headersTooLargeMessage(size, 1024));
    // The connection stays usable and is not taken for stalled.
    await sleep(300);
    assert.equal((await request(session, {})).headers?.["grpc-status"], "0");
    assert.deepEqual(stalled, []);
  });

  it("closes a connection whose header field HTTP/2 cannot decode (over 64 KiB), instead of leaving the client waiting", async (t) => {
    const stalled: StalledHeaders[] = [];
    const s = await server(1024, stalled);
    // Like grpcio, this client keeps the connection open after the server's GOAWAY and waits.
    const socket = net.connect(Number(new URL(s.url).port), "127.0.0.1");
    socket.on("error", () => {});
    socket.resume();
    t.after(() => {
      socket.destroy();
      return s.close();
    });
    const started = Date.now();
    const closed = new Promise<number>((resolve) => socket.once("close", () => resolve(Date.now() - started)));
    socket.write(Buffer.concat([preface, frame(4, 0, 0, Buffer.alloc(0)), ...headerFrames(1, "x-big", 100_000)]));
    const ms = await Promise.race([closed, sleep(5000).then(() => -1)]);
    assert.ok(ms >= 0 && ms < 2000, `connection closed after ${ms} ms`);
    assert.equal(stalled.length, 1);
    assert.equal(stalled[0]?.streamId, 1);
  });
});

const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId, 5);
  return Buffer.concat([head, payload]);
}

/** HPACK integer with an `n`-bit prefix (RFC 7541 §5.1). */
function hpackInt(value: number, n: number, first = 0): Buffer {
  const max = (1 << n) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  for (value -= max; value >= 128; value >>= 7) out.push((value & 127) | 128);
  out.push(value);
  return Buffer.from(out);
}

/** A POST request's HEADERS + CONTINUATION frames with one header of `length` bytes, not Huffman-coded. */
function headerFrames(streamId: number, name: string, length: number): Buffer[] {
  const literal = (n: string, v: string) =>
    Buffer.concat([Buffer.from([0]), hpackInt(n.length, 7), Buffer.from(n), hpackInt(v.length, 7), Buffer.from(v)]);
  const block = Buffer.concat([
    literal(":method", "POST"),
    literal(":scheme", "http"),
    literal(":path", "/s/M"),
    literal(":authority", "x"),
    literal("content-type", "application/grpc"),
    literal(name, "v".repeat(length)),
  ]);
  const frames: Buffer[] = [];
  for (let i = 0; i < block.length; i += 16_384) {
    const last = i + 16_384 >= block.length;
    const chunk = block.subarray(i, i + 16_384);
    // HEADERS (type 1, END_STREAM) first, then CONTINUATION (type 9); END_HEADERS on the last.
    frames.push(frame(i === 0 ? 1 : 9, (i === 0 ? 1 : 0) | (last ? 4 : 0), streamId, chunk));
  }
  return frames;
}
