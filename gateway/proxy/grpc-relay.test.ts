import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type { ClientHttp2Stream } from "node:http2";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import { createLogger } from "../../common/logger.js";
import type { LeaseKeeper } from "../leases/lease-keeper.js";
import type { InstancePool } from "../pool/instance-pool.js";
import type { SessionRouter } from "../routing/session-router.js";
import { frameMessage } from "./grpc-frames.js";
import { createGrpcRelay, parseGrpcTimeout } from "./grpc-relay.js";
import type { UpstreamPool } from "./upstream-pool.js";

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

/**
 * Node emits a client stream's `response` on the next tick but its `data` at once: when the
 * instance's HEADERS and DATA arrive in one read (seen over TLS under load, about once in 4,000
 * calls) the relay sees the data first. Written to the client before the response headers, it
 * made node answer with a bare `:status 200` of its own; the relay then found the stream
 * answered, and the call never ended (h2load stalled). The upstream here delivers in that order.
 */
describe("relay: response DATA before the response event", () => {
  const message = frameMessage(Buffer.from("reply"));

  /** A fake upstream stream: after the request ends it emits `events` in order. */
  function upstreamEmitting(events: (up: EventEmitter) => void) {
    return {
      bootId: "boot-1",
      active: 0,
      session: {
        request(): ClientHttp2Stream {
          const up = Object.assign(new EventEmitter(), {
            destroyed: false,
            end: () => setImmediate(() => events(up)),
            close: () => {},
            pause: () => {},
            resume: () => {},
          });
          return up as unknown as ClientHttp2Stream;
        },
      },
    };
  }

  async function callThroughRelay(events: (up: EventEmitter) => void) {
    const lease = { sessionId: "s1", instanceAddress: "10.0.0.1:1", podName: "pod-1", instanceBootId: "boot-1", createdAt: 0 };
    const relay = createGrpcRelay({
      router: { authenticate: (sessionId: string) => ({ sessionId }), route: () => ({ lease }) } as unknown as SessionRouter,
      pool: { isDown: () => false } as unknown as InstancePool,
      upstream: { get: () => upstreamEmitting(events) } as unknown as UpstreamPool,
      keeper: {} as LeaseKeeper,
      maxMessageBytes: 1 << 20,
      logger: createLogger({ name: "test", level: "silent", format: "json" }),
    });
    const server = http2.createServer();
    const sessions = new Set<http2.ServerHttp2Session>();
    server.on("session", (session) => sessions.add(session));
    server.on("stream", (stream, headers) => relay(stream, headers, "MyServiceEcho"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    try {
      const req = client.request({
        ":method": "POST",
        ":path": "/my_service.MyServiceAPI/MyServiceEcho",
        "content-type": "application/grpc",
        "session-id": "s1",
      });
      req.end(frameMessage(Buffer.from("hi")));
      const result = await new Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; body: Buffer }>(
        (resolve, reject) => {
          let headers: http2.IncomingHttpHeaders = {};
          let trailers: http2.IncomingHttpHeaders = {};
          const chunks: Buffer[] = [];
          const timer = setTimeout(() => reject(new Error("the call never ended")), 3000);
          req.on("response", (h) => {
            headers = h;
          });
          req.on("trailers", (t) => {
            trailers = t;
          });
          req.on("data", (c: Buffer) => chunks.push(c));
          req.on("error", reject);
          req.on("close", () => {
            clearTimeout(timer);
            resolve({ headers, trailers, body: Buffer.concat(chunks) });
          });
        },
      );
      return result;
    } finally {
      // Destroyed, not closed: a call left open must fail this test, not hang the run.
      client.destroy();
      for (const session of sessions) session.destroy();
      server.close();
    }
  }

  it("sends the instance's headers, then the early data, then its trailers", async () => {
    const { headers, trailers, body } = await callThroughRelay((up) => {
      up.emit("data", message);
      up.emit("response", { ":status": 200, "content-type": "application/grpc", "x-from": "instance" });
      up.emit("trailers", { "grpc-status": "0" });
      up.emit("close");
    });
    assert.equal(headers["x-from"], "instance", "the instance's response headers, not node's own");
    assert.equal(headers["content-type"], "application/grpc");
    assert.deepEqual(body, message);
    assert.equal(trailers["grpc-status"], "0");
  });

  it("still sends data that comes after the response event as it arrives", async () => {
    const { headers, trailers, body } = await callThroughRelay((up) => {
      up.emit("response", { ":status": 200, "content-type": "application/grpc", "x-from": "instance" });
      up.emit("data", message.subarray(0, 3));
      up.emit("data", message.subarray(3));
      up.emit("trailers", { "grpc-status": "0" });
      up.emit("close");
    });
    assert.equal(headers["x-from"], "instance");
    assert.deepEqual(body, message);
    assert.equal(trailers["grpc-status"], "0");
  });
});
