import * as http from "node:http";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import type * as tls from "node:tls";
import { Code, ConnectError, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Registry } from "prom-client";
import { closeStalledHeaderBlocks, refuseOversizedHeaders } from "../common/header-limits.js";
import { ipv4AnyHost, listenOn, plainAddress } from "../common/listen.js";
import type { Logger } from "../common/logger.js";
import { withMalformedRequestStatus } from "../common/malformed-request-status.js";
import { loadClientTls, loadServerTls, serverOptions, watchTlsFiles } from "../common/tls.js";
import { jwksOf } from "../common/token-keys.js";
import { createTokenVerifier } from "../common/tokens.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { MyServiceAPI } from "../gen/my_service/my_service_pb.js";
import { AdminService } from "../gen/mygateway/admin/v1/admin_pb.js";
import { WaitingRoom as WaitingRoomApi } from "../gen/mygateway/queue/v1/waiting_room_pb.js";
import { createLogin, peerHeader } from "./auth/login-service.js";
import { LoginThrottle } from "./auth/login-throttle.js";
import { createSystemTokens } from "./auth/system-tokens.js";
import type { UserStore } from "./auth/user-store.js";
import { Membership } from "./cluster/membership.js";
import type { GatewayConfig } from "./config.js";
import { GatewayError, statusDetailFiles, toConnectError } from "./errors.js";
import { createFrontDoor } from "./front-door.js";
import { type KeyMaterial, upstreamTlsVariables } from "./key-material.js";
import { LeaseKeeper } from "./leases/lease-keeper.js";
import type { LeaseStore } from "./leases/lease-store.js";
import { registerAdminService } from "./ops/admin-service.js";
import { createDashboardHandler } from "./ops/dashboard.js";
import { registerHealthService } from "./ops/health-service.js";
import { createCallMetricsInterceptor, createGatewayMetrics } from "./ops/metrics.js";
import { reflectionServices, registerReflectionService } from "./ops/reflection.js";
import { requestIdOf } from "./ops/request-id.js";
import { combinedDiscovery, dnsDiscovery, staticDiscovery } from "./pool/discovery.js";
import { InstancePool } from "./pool/instance-pool.js";
import { createConnectProxy } from "./proxy/connect-proxy.js";
import { encodeGrpcMessage } from "./proxy/grpc-frames.js";
import { createGrpcRelay, isNativeGrpc, relayedPaths } from "./proxy/grpc-relay.js";
import { UpstreamPool } from "./proxy/upstream-pool.js";
import { cleartextUpstream, createUpstreamTls } from "./proxy/upstream-tls.js";
import { WaitingRoom } from "./queue/waiting-room.js";
import { registerWaitingRoomService } from "./queue/waiting-room-service.js";
import { SessionRouter } from "./routing/session-router.js";

/** What the gateway is built from besides its configuration. */
export interface GatewayDeps {
  readonly logger: Logger;
  readonly users: UserStore;
  /** The lease store (`createLeaseStore(config)`); `close()` closes it. */
  readonly store: LeaseStore;
  /** Token keys and TLS material, read and checked by `loadKeyMaterial`. */
  readonly material: KeyMaterial;
}

/** A built gateway: `start()` reconciles and listens, `close()` drains and stops. */
export interface Gateway {
  readonly store: LeaseStore;
  readonly pool: InstancePool;
  readonly keeper: LeaseKeeper;
  readonly router: SessionRouter;
  readonly membership: Membership;
  readonly waitingRoom: WaitingRoom;
  /** Reconciles with the instances (SPEC 4.7), then listens. Resolves to the bound address and port. */
  start(): Promise<AddressInfo>;
  close(): Promise<void>;
}

/** Shortest silence after which a gateway's queue entries are purged, milliseconds. */
const queuePurgeFloorMs = 2000;

/** Builds the gateway from its parts; only `main.ts` reads the environment and handles signals. */
export function createGateway(config: GatewayConfig, deps: GatewayDeps): Gateway {
  const { logger, users, store, material } = deps;
  const heartbeatIntervalMs = Math.max(50, config.healthIntervalMs / 2);
  const liveWithinMs = 2 * config.healthIntervalMs + 500;
  const membership = new Membership({
    store,
    id: config.gatewayId,
    address: `${config.host}:${config.port}`,
    heartbeatIntervalMs,
    liveWithinMs,
    logger,
  });
  const upstreamTls =
    config.upstreamTls !== undefined && material.upstreamTls !== undefined
      ? createUpstreamTls(config.upstreamTls, material.upstreamTls)
      : cleartextUpstream();
  const upstream = new UpstreamPool({ connectTimeoutMs: config.upstreamConnectTimeoutMs, tls: upstreamTls });
  const verifyToken = createTokenVerifier({ keys: material.verification });
  // Public keys only (current and previous); an HMAC secret never appears (an empty set then).
  const jwks = JSON.stringify(jwksOf(material.verification));
  const metrics = createGatewayMetrics(new Registry(), { state: store });
  let pool: InstancePool;
  const keeper = new LeaseKeeper({
    store,
    idleTtlMs: config.leaseIdleTtlMs,
    // Shared store: another gateway's renewals reach it within one flush period (1 s at most).
    expireGraceMs: store.engine === "postgres" ? 2 * Math.max(50, Math.min(1000, config.leaseIdleTtlMs / 4)) : 0,
    logger,
    onExpired: (lease) => {
      metrics.leaseExpired();
      router.noteLostLease(lease, "expired");
      void pool.recycle(lease.instanceAddress, lease.sessionId);
    },
  });
  // SPEC 11: entries of a gateway that stopped beating are purged once it drops out of the
  // membership, by whichever gateway's period comes first; never sooner than 2 s of silence, so a
  // loaded gateway that misses a few beats does not lose its waiters' places (test/queue/order).
  const waitingRoom = new WaitingRoom({
    store,
    gatewayId: config.gatewayId,
    maxWaitMs: config.queueMaxWaitMs,
    maxLength: config.queueMaxLength,
    liveWithinMs: Math.max(liveWithinMs, queuePurgeFloorMs),
    purgeIntervalMs: heartbeatIntervalMs,
    defaultRetryAfterMs: 1000,
    logger,
    onOutcome: (outcome, waitedMs) => metrics.queueWait(outcome, waitedMs),
    onPurged: (count) => metrics.queuePurged(count),
  });
  const router = new SessionRouter({
    store,
    keeper,
    verifyToken,
    leaseIdleTtlMs: config.leaseIdleTtlMs,
    maxSessionsPerUser: config.maxSessionsPerUser,
    logger,
    onAllocation: (result, durationMs) => metrics.allocation(result, durationMs),
    waitingRoom,
    onGrantAbandoned: (lease) => {
      metrics.leaseRevoked("abandoned");
      void pool.recycle(lease.instanceAddress, lease.sessionId);
    },
  });
  const discovery = combinedDiscovery([
    ...(config.instanceAddresses.length > 0 ? [staticDiscovery(config.instanceAddresses)] : []),
    ...(config.instanceDns !== undefined ? [dnsDiscovery(config.instanceDns)] : []),
  ]);
  pool = new InstancePool({
    store,
    upstream,
    discovery,
    healthIntervalMs: config.healthIntervalMs,
    fullProbeIntervalMs: config.healthFullIntervalMs,
    healthTimeoutMs: config.healthTimeoutMs,
    failureThreshold: config.healthFailureThreshold,
    discoveryIntervalMs: config.discoveryIntervalMs,
    systemToken: createSystemTokens(material.signing),
    membership,
    logger,
    onLeaseReleased: (lease, reason) => {
      metrics.leaseRevoked(reason);
      router.noteLostLease(lease, reason);
    },
    onHealthChange: (address, healthy) => metrics.healthChange(address, healthy),
    onRecycled: (_address, ok) => metrics.recycled(ok),
  });

  const relay = createGrpcRelay({
    router,
    pool,
    upstream,
    keeper,
    maxMessageBytes: config.maxMessageBytes,
    logger,
    onCallEnd: (method, code, durationMs) => metrics.proxiedCall(method, code, durationMs),
  });
  const proxy = createConnectProxy({ router, keeper, maxMessageBytes: config.maxMessageBytes, upstreamTls });
  const throttle = new LoginThrottle({
    perUser: { maxFailures: config.loginMaxFailuresPerUser, windowMs: config.loginUserFailureWindowMs },
    perPeer: { maxFailures: config.loginMaxFailuresPerPeer, windowMs: config.loginPeerFailureWindowMs },
  });
  const login = createLogin({
    users,
    signingKey: material.signing,
    tokenLifetimeMs: config.tokenLifetimeMs,
    logger,
    throttle,
    // The session's first call then skips the signature check: this process just signed it.
    onIssued: (token, claims) => verifyToken.remember(token, claims),
    onResult: (result) => metrics.login(result),
  });

  let closing = false;
  const routes = (r: ConnectRouter) => {
    r.service(MyServiceAPI, {
      login: (request, context) =>
        login(
          request,
          context.requestHeader.get(peerHeader) ?? undefined,
          logger.child({ requestId: requestIdOf(context.requestHeader), sessionId: request.sessionId }),
        ),
      myServiceEcho: (request, context) => proxy.echo(request, context),
      myServiceSubscribe: (request, context) => proxy.subscribe(request, context),
      myServiceShutdown: (_request, context) => proxy.shutdown(context),
    });
    registerHealthService(r, { live: () => !closing, ready: () => store.available() && pool.healthyCount() > 0 });
    registerAdminService(r, {
      store,
      pool,
      router,
      verifyToken,
      logger,
      stats: () => metrics.stats(),
      onReleased: () => metrics.leaseRevoked("admin"),
    });
    registerWaitingRoomService(r, { store, authenticate: (sessionId, authorization) => router.authenticate(sessionId, authorization) });
    registerReflectionService(r, [MyServiceAPI, Health, AdminService, WaitingRoomApi, ...reflectionServices], statusDetailFiles);
  };
  const dashboard = createDashboardHandler();
  const handler = connectNodeAdapter({
    routes: withMalformedRequestStatus(routes, {
      onMalformed: (r) =>
        logger.warn(
          { path: r.path, reason: r.reason, requestId: requestIdOf(r.header), sessionId: r.header.get("session-id") ?? undefined },
          "malformed request message",
        ),
    }),
    readMaxBytes: config.maxMessageBytes,
    writeMaxBytes: config.maxMessageBytes,
    // Connect and gRPC-Web MyService* calls; the native relay reports its calls itself. The
    // outermost interceptor gives every error the client-facing status of SPEC 5 (a store or
    // driver failure in the admin API included); the cause goes to the log.
    interceptors: [createErrorInterceptor(logger), createCallMetricsInterceptor(MyServiceAPI.typeName, metrics.proxiedCall)],
    fallback(request, response) {
      if (request.method === "GET" && request.url === "/metrics") {
        metrics.registry.metrics().then(
          (body) => {
            response.writeHead(200, { "content-type": metrics.registry.contentType });
            response.end(body);
          },
          (error: unknown) => {
            logger.error({ err: error }, "metrics collection failed");
            response.writeHead(500, { "content-type": "text/plain" });
            response.end("metrics collection failed\n");
          },
        );
        return;
      }
      if (dashboard(request, response)) return;
      if (request.method === "GET" && request.url === jwksPath) {
        // Instances configured with JWT_JWKS_URL fetch it (on start, periodically, on an unknown kid).
        response.writeHead(200, { "content-type": "application/jwk-set+json", "cache-control": "max-age=60" });
        response.end(jwks);
        return;
      }
      if (request.method === "GET" && request.url === "/healthz") {
        response.writeHead(closing ? 503 : 200, { "content-type": "text/plain" });
        response.end(closing ? "stopping\n" : "ok\n");
        return;
      }
      if (request.method === "GET" && request.url === "/readyz") {
        const reason = closing
          ? "stopping"
          : !store.available()
            ? "lease store unavailable"
            : pool.healthyCount() === 0
              ? "no healthy instance"
              : undefined;
        response.writeHead(reason === undefined ? 200 : 503, { "content-type": "text/plain" });
        response.end(`${reason ?? "ready"}\n`);
        return;
      }
      const type = request.headers["content-type"] ?? "";
      if (request.method === "POST" && type.startsWith("application/grpc")) {
        // SPEC 5: a method not served is UNIMPLEMENTED, as a proper gRPC status (trailers-only).
        const headers = {
          "content-type": type.startsWith("application/grpc-web") ? type : "application/grpc",
          "grpc-status": String(Code.Unimplemented),
          "grpc-message": encodeGrpcMessage(`method not found: ${(request.url ?? "").slice(0, 200)}`),
        };
        if (response instanceof http2.Http2ServerResponse) {
          // One HEADERS frame with END_STREAM: what gRPC clients read as a status.
          response.stream.respond({ ":status": 200, ...headers }, { endStream: true });
        } else {
          response.writeHead(200, headers);
          response.end();
        }
        return;
      }
      response.writeHead(404, { "content-type": "text/plain" });
      response.end("not found\n");
    },
  });

  const h2 = http2.createServer({
    maxSessionMemory: 64,
    // Enough fields for any list under MAX_HEADER_BYTES to reach the check below.
    maxHeaderListPairs: 1024,
    settings: { maxConcurrentStreams: 1000, initialWindowSize: 1 << 20 },
  });
  const stopStallCheck = closeStalledHeaderBlocks(h2, { logger });
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    session.on("error", () => {});
    session.on("close", () => sessions.delete(session));
    try {
      session.setLocalWindowSize(16 << 20);
    } catch {}
  });
  h2.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, _flags: number, rawHeaders: string[]) => {
    if (refuseOversizedHeaders(stream, headers, rawHeaders, config.maxHeaderBytes, logger)) return;
    const method = relayedPaths.get(headers[":path"] as string);
    if (method !== undefined && isNativeGrpc(headers)) {
      relay(stream, headers, method);
      return;
    }
    stream.on("error", () => {});
    setPeer(headers, stream.session?.socket?.remoteAddress);
    const request = new http2.Http2ServerRequest(stream, headers, {}, rawHeaders);
    const response = new http2.Http2ServerResponse(stream);
    handler(request, response);
  });
  // Node answers a larger header block with 431 itself.
  const h1 = http.createServer({ maxHeaderSize: config.maxHeaderBytes }, (request, response) => {
    setPeer(request.headers, request.socket.remoteAddress);
    handler(request, response);
  });
  h1.keepAliveTimeout = 65_000;
  const frontDoorTls = config.tls !== undefined && material.tls !== undefined ? config.tls : undefined;
  const door = createFrontDoor({
    h2,
    h1,
    tls:
      frontDoorTls === undefined || material.tls === undefined
        ? undefined
        : {
            options: serverOptions(frontDoorTls, material.tls, ["h2", "http/1.1"]),
            refuseInvalidOptionalCertificate: frontDoorTls.clientAuth === "optional",
            onHandshakeFailure: (reason, peer) => logger.debug({ reason, peer }, "TLS handshake refused"),
          },
  });
  const stopWatching: (() => void)[] = [];

  return {
    store,
    pool,
    keeper,
    router,
    membership,
    waitingRoom,
    async start() {
      // A shared store connects in the background: give it a moment, so the first discovery
      // and probe round are written; if it stays down the gateway starts anyway, not ready.
      for (let waited = 0; !store.available() && waited < 5000; waited += 50) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      await membership.start();
      await waitingRoom.start();
      await pool.start();
      keeper.start();
      const bound = await listenOn(door, config.port, config.host, (reason) =>
        logger.warn({ reason: reason.message }, `no IPv6 on this host: listening on ${ipv4AnyHost} (IPv4 only) instead of ${config.host}`),
      );
      if (frontDoorTls !== undefined) {
        const files = [frontDoorTls.certFile, frontDoorTls.keyFile, ...(frontDoorTls.clientCaFile ? [frontDoorTls.clientCaFile] : [])];
        const reload = () => {
          const next = loadServerTls(frontDoorTls);
          (door as tls.Server).setSecureContext(next.context);
          return next.summary;
        };
        stopWatching.push(watchTlsFiles(files, frontDoorTls.reloadIntervalMs, reload, logger, "front door TLS"));
      }
      const upstreamConfig = config.upstreamTls;
      if (upstreamConfig !== undefined) {
        const files = [upstreamConfig.caFile, upstreamConfig.certFile, upstreamConfig.keyFile].filter((f) => f !== undefined);
        const reload = () => {
          upstreamTls.update(loadClientTls(upstreamConfig, upstreamTlsVariables));
          return { files };
        };
        stopWatching.push(watchTlsFiles(files, config.tlsReloadIntervalMs, reload, logger, "TLS to instances"));
      }
      return bound;
    },
    async close() {
      closing = true;
      stopStallCheck();
      for (const stop of stopWatching) stop();
      door.close();
      for (const session of sessions) session.close();
      h1.closeIdleConnections();
      await new Promise((resolve) => setTimeout(resolve, 100).unref());
      for (const session of sessions) session.destroy();
      h1.closeAllConnections();
      pool.stop();
      await waitingRoom.stop();
      await keeper.stop();
      await membership.stop();
      upstream.close();
      await store.close();
    },
  };
}

/** Where the gateway publishes its public token keys (JWKS, RFC 7517). */
export const jwksPath = "/.well-known/jwks.json";
/** Maps any error to its SPEC 5 status (`toConnectError`); logs the cause of what was not a deliberate refusal. */
function createErrorInterceptor(logger: Logger): Interceptor {
  return (next) => async (request) => {
    try {
      return await next(request);
    } catch (error) {
      if (!(error instanceof ConnectError) && !(error instanceof GatewayError)) {
        logger.error({ err: error, method: request.method.name }, "call failed");
      }
      throw toConnectError(error);
    }
  };
}

/** Login's peer address comes from the socket only: a client-sent value is overwritten. */
function setPeer(headers: http.IncomingHttpHeaders, remoteAddress: string | undefined): void {
  if (remoteAddress === undefined || remoteAddress === "") delete headers[peerHeader];
  // An IPv4 client of the dual-stack socket counts as its IPv4 address (throttling, logs).
  else headers[peerHeader] = plainAddress(remoteAddress);
}
