import type * as http from "node:http";
import type * as http2 from "node:http2";
import * as net from "node:net";

const h2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** Options of `createFrontDoor`. */
export interface FrontDoorOptions {
  /** Receives connections that start with the HTTP/2 preface (gRPC, h2c). */
  readonly h2: http2.Http2Server;
  /** Receives every other connection (HTTP/1.1: browsers, gRPC-Web, Connect, metrics). */
  readonly h1: http.Server;
  /** A connection that sends nothing for this long is closed, milliseconds. Default 10 s. */
  readonly firstBytesTimeoutMs?: number;
}

/**
 * One TCP port for both protocols: looks at the first bytes of each connection and hands it to
 * the HTTP/2 server (prior-knowledge h2c, as gRPC clients speak) or the HTTP/1.1 server. The
 * bytes read are put back, so either server sees the whole stream.
 */
export function createFrontDoor(options: FrontDoorOptions): net.Server {
  const timeoutMs = options.firstBytesTimeoutMs ?? 10_000;
  return net.createServer({ noDelay: true }, (socket) => {
    socket.on("error", () => {});
    let seen: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    const onData = (chunk: Buffer) => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, h2Preface.length);
      const isPrefix = seen.subarray(0, n).equals(h2Preface.subarray(0, n));
      if (isPrefix && seen.length < h2Preface.length) return; // undecided yet
      clearTimeout(timer);
      socket.off("data", onData);
      socket.pause();
      socket.unshift(seen);
      if (isPrefix) {
        // The HTTP/2 session takes over the socket's handle and reads the put-back bytes first.
        options.h2.emit("connection", socket);
        return;
      }
      // The HTTP/1 parser would read the handle directly and miss the put-back bytes: make
      // it read through the socket's stream instead (node's own flag for a consumed handle).
      const handle = (socket as unknown as { _handle?: { _consumed?: boolean } })._handle;
      if (handle) handle._consumed = true;
      options.h1.emit("connection", socket);
      socket.resume();
    };
    socket.on("data", onData);
  });
}
