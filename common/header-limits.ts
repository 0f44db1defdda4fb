import type * as http2 from "node:http2";
import { Code } from "@connectrpc/connect";
import type { Logger } from "./logger.js";

/** Default of `MAX_HEADER_BYTES`: node's own limit for HTTP/1.1 header blocks, so one limit holds on both protocols. */
export const defaultMaxHeaderBytes = 16 * 1024;

/**
 * Size of a header list as HTTP/2 counts it (RFC 9113 §6.5.2): name and value octets plus 32
 * per field, pseudo-headers included. `rawHeaders` is node's flat `[name, value, ...]` list.
 */
export function headerListSize(rawHeaders: readonly string[]): number {
  let size = 0;
  for (const part of rawHeaders) size += part.length;
  return size + 16 * rawHeaders.length;
}

/** Client-facing message of a header list over the limit. */
export function headersTooLargeMessage(size: number, limit: number): string {
  return `request headers larger than max (${size} vs. ${limit} bytes)`;
}

/**
 * Refuses a request whose header list is over `limit` bytes, at once, and logs it; returns
 * `true` when it did (the caller then leaves the stream alone). gRPC and gRPC-Web get the
 * status RESOURCE_EXHAUSTED (trailers-only, one HEADERS frame), anything else HTTP 431.
 * Refusing the stream at the HTTP/2 layer instead (RST_STREAM) makes gRPC clients retry it
 * silently until their deadline.
 */
export function refuseOversizedHeaders(
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  rawHeaders: readonly string[],
  limit: number,
  logger?: Logger,
): boolean {
  const size = headerListSize(rawHeaders);
  if (size <= limit) return false;
  logger?.warn(
    { path: String(headers[":path"]).slice(0, 200), headerBytes: size, limit, peer: stream.session?.socket?.remoteAddress },
    "request refused: headers larger than MAX_HEADER_BYTES",
  );
  if (stream.destroyed || stream.headersSent) return true;
  stream.on("error", () => {});
  const type = headers["content-type"] ?? "";
  if (type.startsWith("application/grpc")) {
    stream.respond(
      {
        ":status": 200,
        "content-type": type.startsWith("application/grpc-web") ? type : "application/grpc",
        "grpc-status": String(Code.ResourceExhausted),
        "grpc-message": encodeURIComponent(headersTooLargeMessage(size, limit)),
      },
      { endStream: true },
    );
  } else {
    stream.respond({ ":status": 431, "content-type": "text/plain" });
    stream.end(`${headersTooLargeMessage(size, limit)}\n`);
  }
  // The request body, if any, is not wanted.
  stream.resume();
  return true;
}

/** A connection closed because a request's header block never arrived whole. */
export interface StalledHeaders {
  /** Remote address of the connection. */
  readonly peer: string | undefined;
  /** Id of the stream whose headers never completed. */
  readonly streamId: number;
}

/** Options of `closeStalledHeaderBlocks`. */
export interface StalledHeaderOptions {
  /** Period of the check, milliseconds; a block still incomplete at two checks in a row is stalled. Default 250. */
  readonly intervalMs?: number;
  /** Logs each connection closed. */
  readonly logger?: Logger;
  /** Called before a stalled connection is closed. */
  readonly onClose?: (stalled: StalledHeaders) => void;
}

/**
 * Closes HTTP/2 connections on which a request's header block started but never completed.
 * Above all: a single header field larger than 64 KiB cannot be decoded by node's HTTP/2
 * layer (nghttp2's HPACK limit). It then sends GOAWAY(COMPRESSION_ERROR) naming the stream as
 * processed, and leaves the connection open: the client (Python grpcio) waits for a reply that
 * never comes until its deadline. No status can be sent on that connection any more, so it is
 * closed, and the client fails at once (UNAVAILABLE). A client that stops in the middle of a
 * header block is closed the same way. Returns a function that stops the checks.
 */
export function closeStalledHeaderBlocks(server: http2.Http2Server, options: StalledHeaderOptions = {}): () => void {
  const intervalMs = options.intervalMs ?? 250;
  /** Per connection: highest stream id delivered to the application, checks seen stalled, bytes read at the last check. */
  const sessions = new Map<http2.Http2Session, { delivered: number; strikes: number; bytesRead: number }>();
  server.on("session", (session: http2.ServerHttp2Session) => {
    sessions.set(session, { delivered: 0, strikes: 0, bytesRead: -1 });
    session.once("close", () => sessions.delete(session));
  });
  server.on("stream", (stream: http2.ServerHttp2Stream) => {
    const entry = stream.session === undefined ? undefined : sessions.get(stream.session);
    const id = stream.id ?? 0;
    if (entry !== undefined && id > entry.delivered) entry.delivered = id;
  });
  return everyInterval(intervalMs, () => {
    for (const [session, entry] of sessions) {
      if (session.destroyed || session.closed) continue;
      // A connection that read nothing since a clean check cannot have started a header block:
      // skip the costlier state query (most connections are idle most of the time).
      const bytesRead = session.socket?.bytesRead ?? -1;
      if (entry.strikes === 0 && bytesRead === entry.bytesRead) continue;
      entry.bytesRead = bytesRead;
      // nghttp2 marks a stream processed as soon as its HEADERS frame starts.
      const started = session.state.lastProcStreamID ?? 0;
      if (started <= entry.delivered) {
        entry.strikes = 0;
        continue;
      }
      if (++entry.strikes < 2) continue;
      const stalled = { peer: session.socket?.remoteAddress, streamId: started };
      options.logger?.warn(
        stalled,
        "connection closed: a request's headers never arrived whole (a header field over 64 KiB, which HTTP/2 cannot decode, or a stalled client)",
      );
      options.onClose?.(stalled);
      sessions.delete(session);
      session.destroy();
    }
  });
}

/** One timer per period for every check of this process (a bench process runs thousands of instances). */
const checksByPeriod = new Map<number, { timer: NodeJS.Timeout; checks: Set<() => void> }>();

/** Runs `check` every `periodMs` on a shared, unref'd timer; returns a function that stops it. */
function everyInterval(periodMs: number, check: () => void): () => void {
  let entry = checksByPeriod.get(periodMs);
  if (entry === undefined) {
    const checks = new Set<() => void>();
    const timer = setInterval(() => {
      for (const c of checks) c();
    }, periodMs);
    timer.unref();
    entry = { timer, checks };
    checksByPeriod.set(periodMs, entry);
  }
  const own = entry;
  own.checks.add(check);
  return () => {
    own.checks.delete(check);
    if (own.checks.size === 0 && checksByPeriod.get(periodMs) === own) {
      clearInterval(own.timer);
      checksByPeriod.delete(periodMs);
    }
  };
}
