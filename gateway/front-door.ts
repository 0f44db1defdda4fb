import type * as http from "node:http";
import type * as http2 from "node:http2";
import * as net from "node:net";
import * as tls from "node:tls";

const h2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** TLS of the front door: options of the `tls.Server`, and whether a presented client certificate must be valid. */
export interface FrontDoorTls {
  /** Certificate, key, client CA, minimum version, `requestCert` / `rejectUnauthorized`. */
  readonly options: tls.TlsOptions;
  /**
   * `TLS_CLIENT_AUTH=optional`: a client may come without a certificate, but one it presents
   * must chain to the client CA (node alone would accept any certificate then).
   */
  readonly refuseInvalidOptionalCertificate: boolean;
  /** Observes a refused handshake (metrics, debug log). */
  readonly onHandshakeFailure?: (reason: string, remoteAddress: string | undefined) => void;
}

/** Options of `createFrontDoor`. */
export interface FrontDoorOptions {
  /** Receives connections that speak HTTP/2 (gRPC; ALPN `h2`, or the preface in cleartext). */
  readonly h2: http2.Http2Server;
  /** Receives every other connection (HTTP/1.1: browsers, gRPC-Web, Connect, metrics). */
  readonly h1: http.Server;
  /** A connection that sends nothing (or finishes no TLS handshake) for this long is closed, milliseconds. Default 10 s. */
  readonly firstBytesTimeoutMs?: number;
  /** TLS on the port instead of cleartext. */
  readonly tls?: FrontDoorTls;
}

/** The front door: a `net.Server` in cleartext, a `tls.Server` with TLS (`setSecureContext` swaps certificates). */
export type FrontDoor = net.Server | tls.Server;

/**
 * One port for both protocols. In cleartext it looks at the first bytes of each connection
 * and hands it to the HTTP/2 server (prior-knowledge h2c, as gRPC clients speak) or the
 * HTTP/1.1 server; the bytes read are put back, so either server sees the whole stream. With
 * TLS, ALPN decides (`h2` or `http/1.1`); a client that offers no ALPN is sniffed as in
 * cleartext, inside TLS.
 */
export function createFrontDoor(options: FrontDoorOptions): FrontDoor {
  const timeoutMs = options.firstBytesTimeoutMs ?? 10_000;
  if (options.tls === undefined) return net.createServer({ noDelay: true }, (socket) => sniff(socket, options, timeoutMs));
  const { tls: secure } = options;
  const server = tls.createServer({ ...secure.options, handshakeTimeout: timeoutMs }, (socket) => {
    socket.setNoDelay(true);
    socket.on("error", () => {});
    if (secure.refuseInvalidOptionalCertificate && !socket.authorized && hasPeerCertificate(socket)) {
      secure.onHandshakeFailure?.(`client certificate refused: ${String(socket.authorizationError)}`, socket.remoteAddress);
      socket.destroy();
      return;
    }
    if (socket.alpnProtocol === "h2") options.h2.emit("connection", socket);
    else if (socket.alpnProtocol === "http/1.1") options.h1.emit("connection", socket);
    else sniff(socket, options, timeoutMs);
  });
  server.on("tlsClientError", (error: Error & { code?: string }, socket) => {
    secure.onHandshakeFailure?.(error.code ?? error.message, socket.remoteAddress);
  });
  return server;
}

function hasPeerCertificate(socket: tls.TLSSocket): boolean {
  const peer = socket.getPeerCertificate();
  return peer !== null && Object.keys(peer).length > 0;
}

function sniff(socket: net.Socket, options: FrontDoorOptions, timeoutMs: number): void {
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
}
