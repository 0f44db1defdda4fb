import { randomUUID } from "node:crypto";
import * as http2 from "node:http2";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "../common/logger.js";
import { createTokenVerifier } from "../common/tokens.js";
import { MyServiceAPI } from "../gen/my_service/my_service_pb.js";
import { InstanceService } from "../gen/myservice/instance/v1/instance_pb.js";
import type { MyServiceConfig } from "./config.js";
import { createMyServiceRoutes, type InstanceState } from "./my-service.js";

const shutdownPath = `/${MyServiceAPI.typeName}/${MyServiceAPI.method.myServiceShutdown.name}`;
const recyclePath = `/${InstanceService.typeName}/${InstanceService.method.recycle.name}`;

/** A MyService instance: an HTTP/2 cleartext server, not yet listening. */
export interface MyServiceServer {
  readonly server: http2.Http2Server;
  readonly state: InstanceState;
  readonly bootId: string;
  /** Resolves once a Shutdown was accepted and its reply has left (or failed to leave). */
  readonly shutdownFlushed: Promise<string>;
  /** Stops listening and closes every connection (gracefully, then by force after 500 ms). */
  close(): Promise<void>;
}

/** Builds an instance from its configuration; `main.ts` listens and exits. */
export function createMyServiceServer(
  config: Pick<MyServiceConfig, "jwtSecret" | "podName" | "subscribeIntervalMs"> & { maxMessageBytes?: number },
  logger: Logger,
): MyServiceServer {
  const bootId = randomUUID();
  let resolveFlushed: (sessionId: string) => void = () => {};
  const shutdownFlushed = new Promise<string>((resolve) => {
    resolveFlushed = resolve;
  });
  let acceptedSession: string | undefined;
  const { routes, state } = createMyServiceRoutes({
    podName: config.podName,
    bootId,
    startedAtMs: Date.now(),
    verifyToken: createTokenVerifier({ secret: config.jwtSecret }),
    subscribeIntervalMs: config.subscribeIntervalMs,
    onShutdown(sessionId) {
      acceptedSession = sessionId;
      logger.info({ sessionId }, "shutdown accepted; exiting once the reply is flushed");
    },
  });
  // The limit applies after decompression: a small gzip bomb is refused, not inflated.
  const maxBytes = config.maxMessageBytes ?? 4 * 1024 * 1024;
  const handler = connectNodeAdapter({ routes, readMaxBytes: maxBytes, writeMaxBytes: maxBytes });
  const server = http2.createServer({}, handler);
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
    session.on("error", () => {});
  });
  // SPEC 4.5: exit only after the Shutdown reply is flushed, i.e. when its stream closes.
  server.on("stream", (stream, headers) => {
    if (headers[":path"] !== shutdownPath && headers[":path"] !== recyclePath) return;
    stream.once("close", () => {
      if (acceptedSession !== undefined) resolveFlushed(acceptedSession);
    });
  });
  return {
    server,
    state,
    bootId,
    shutdownFlushed,
    close() {
      // Graceful first (GOAWAY, pending frames flushed — the Shutdown reply's trailers must
      // reach the gateway), then whatever is still open (e.g. a Subscribe) is cut.
      return new Promise((resolve) => {
        server.close(() => resolve());
        for (const session of sessions) session.close();
        setTimeout(() => {
          for (const session of sessions) session.destroy();
          resolve();
        }, 500).unref();
      });
    },
  };
}
