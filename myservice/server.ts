import { randomUUID } from "node:crypto";
import * as http2 from "node:http2";
import type { TLSSocket } from "node:tls";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { closeStalledHeaderBlocks, defaultMaxHeaderBytes, refuseOversizedHeaders } from "../common/header-limits.js";
import type { Logger } from "../common/logger.js";
import { withMalformedRequestStatus } from "../common/malformed-request-status.js";
import { type ServerTlsMaterial, serverOptions, type TlsServerConfig } from "../common/tls.js";
import type { VerificationKey } from "../common/token-keys.js";
import { createTokenVerifier } from "../common/tokens.js";
import { MyServiceAPI } from "../gen/my_service/my_service_pb.js";
import { InstanceService } from "../gen/myservice/instance/v1/instance_pb.js";
import type { JwksClient } from "./jwks-client.js";
import { createMyServiceRoutes, type InstanceState } from "./my-service.js";

const shutdownPath = `/${MyServiceAPI.typeName}/${MyServiceAPI.method.myServiceShutdown.name}`;
const recyclePath = `/${InstanceService.typeName}/${InstanceService.method.recycle.name}`;

/** Options of `createMyServiceServer`. */
export interface MyServiceServerOptions {
  /** Pod name reported in replies and status. */
  readonly podName: string;
  /** Period between Subscribe messages, milliseconds. */
  readonly subscribeIntervalMs: number;
  /** Largest message either way after decompression, bytes. Default 4 MiB. */
  readonly maxMessageBytes?: number;
  /** Largest request header list, bytes (`MAX_HEADER_BYTES`). Default 16 KiB. */
  readonly maxHeaderBytes?: number;
  /** Keys tokens are verified with besides the JWKS's (`JWT_SECRET`, `JWT_PUBLIC_KEY_FILE`). */
  readonly keys: readonly VerificationKey[];
  /** The gateway's key set: its keys join `keys`, and a token of an unknown kid makes it refresh. */
  readonly jwks?: JwksClient;
  /** TLS of the port (its certificate, key, and whom it asks for a client certificate); cleartext without. */
  readonly tls?: { readonly config: TlsServerConfig; readonly material: ServerTlsMaterial };
}

/** A MyService instance: an HTTP/2 server (cleartext, or TLS), not yet listening. */
export interface MyServiceServer {
  readonly server: http2.Http2Server | http2.Http2SecureServer;
  readonly state: InstanceState;
  readonly bootId: string;
  /** Resolves once a Shutdown was accepted and its reply has left (or failed to leave). */
  readonly shutdownFlushed: Promise<string>;
  /** Stops listening and closes every connection (gracefully, then by force after 500 ms). */
  close(): Promise<void>;
}

/** Builds an instance from its configuration; `main.ts` listens and exits. */
export function createMyServiceServer(config: MyServiceServerOptions, logger: Logger): MyServiceServer {
  const bootId = randomUUID();
  let resolveFlushed: (sessionId: string) => void = () => {};
  const shutdownFlushed = new Promise<string>((resolve) => {
    resolveFlushed = resolve;
  });
  let acceptedSession: string | undefined;
  const verifyToken = createTokenVerifier({ keys: config.keys });
  const { jwks } = config;
  jwks?.onKeys((fetched) => verifyToken.setKeys([...config.keys, ...fetched]));
  const { routes, state } = createMyServiceRoutes({
    podName: config.podName,
    bootId,
    startedAtMs: Date.now(),
    verifyToken,
    refreshKeysFor:
      jwks === undefined
        ? undefined
        : (token) => {
            const kid = verifyToken.unknownKid(token);
            return kid === undefined ? Promise.resolve(false) : jwks.refreshFor(kid);
          },
    subscribeIntervalMs: config.subscribeIntervalMs,
    onShutdown(sessionId) {
      acceptedSession = sessionId;
      logger.info({ sessionId }, "shutdown accepted; exiting once the reply is flushed");
    },
  });
  // The limit applies after decompression: a small gzip bomb is refused, not inflated.
  const maxBytes = config.maxMessageBytes ?? 4 * 1024 * 1024;
  const handler = connectNodeAdapter({
    routes: withMalformedRequestStatus(routes, {
      onMalformed: (r) =>
        logger.warn({ path: r.path, reason: r.reason, sessionId: r.header.get("session-id") ?? undefined }, "malformed request message"),
    }),
    readMaxBytes: maxBytes,
    writeMaxBytes: maxBytes,
  });
  const maxHeaderBytes = config.maxHeaderBytes ?? defaultMaxHeaderBytes;
  const onRequest = (request: http2.Http2ServerRequest, response: http2.Http2ServerResponse) => {
    if (refuseOversizedHeaders(response.stream, request.headers, request.rawHeaders, maxHeaderBytes, logger)) return;
    handler(request, response);
  };
  const { tls } = config;
  const server =
    tls === undefined
      ? http2.createServer({ maxHeaderListPairs: 1024 }, onRequest)
      : http2.createSecureServer({ ...serverOptions(tls.config, tls.material, ["h2"]), maxHeaderListPairs: 1024 }, onRequest);
  if (tls?.config.clientAuth === "optional") {
    // A client may come without a certificate, but one it presents must chain to the CA.
    server.on("secureConnection", (socket: TLSSocket) => {
      if (!socket.authorized && Object.keys(socket.getPeerCertificate() ?? {}).length > 0) socket.destroy();
    });
  }
  const stopStallCheck = closeStalledHeaderBlocks(server, { logger });
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
      stopStallCheck();
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
