import { type Client, Code, ConnectError, createClient, type HandlerContext } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { EchoRequest, EchoResponse, ShutdownResponse } from "../../gen/my_service/my_service_pb.js";
import { MyServiceAPI } from "../../gen/my_service/my_service_pb.js";
import { GatewayError, messages, toConnectError } from "../errors.js";
import type { LeaseKeeper } from "../leases/lease-keeper.js";
import type { Lease } from "../leases/lease-store.js";
import { queueHeaders, waitFromHeader } from "../queue/wait-header.js";
import { type ProxiedMethod, type SessionRouter, transferHeaders } from "../routing/session-router.js";
import { cleartextUpstream, type UpstreamTls } from "./upstream-tls.js";

/** Options of `createConnectProxy`. */
export interface ConnectProxyOptions {
  readonly router: SessionRouter;
  readonly keeper: LeaseKeeper;
  readonly maxMessageBytes: number;
  /** Cleartext or TLS to instances (default cleartext). */
  readonly upstreamTls?: UpstreamTls;
}

/**
 * MyService* for the Connect and gRPC-Web protocols (browsers, curl): the same routing as the
 * native relay, through a connect-node client per instance. Slower than the relay, which
 * serves every native gRPC call; instance errors pass through unchanged.
 */
export function createConnectProxy(options: ConnectProxyOptions) {
  const clients = new Map<string, Client<typeof MyServiceAPI>>();
  const upstreamTls = options.upstreamTls ?? cleartextUpstream();
  // Rotated TLS material: clients made from now on connect with it.
  upstreamTls.onChange(() => clients.clear());
  const clientFor = (address: string) => {
    let client = clients.get(address);
    if (client === undefined) {
      client = createClient(
        MyServiceAPI,
        createGrpcTransport({
          baseUrl: `${upstreamTls.scheme}//${address}`,
          nodeOptions: upstreamTls.sessionOptions(address),
          readMaxBytes: options.maxMessageBytes,
          writeMaxBytes: options.maxMessageBytes,
        }),
      );
      clients.set(address, client);
    }
    return client;
  };

  async function route(method: ProxiedMethod, context: HandlerContext) {
    try {
      const caller = options.router.authenticate(
        context.requestHeader.get("session-id") ?? undefined,
        context.requestHeader.get("authorization") ?? undefined,
      );
      const waitMs = method === "MyServiceShutdown" ? undefined : waitFromHeader(context.requestHeader.get(queueHeaders.wait));
      // The deadline (grpc-timeout, connect-timeout-ms) aborts `context.signal`: a waiting call
      // leaves the queue and ends with DEADLINE_EXCEEDED, as on the native relay.
      const wait = waitMs === undefined ? undefined : { requestedMs: waitMs, deadlineMs: context.timeoutMs(), signal: context.signal };
      const { lease, transfer, queued } = await options.router.route(method, caller, wait);
      if (transfer !== undefined) {
        context.responseHeader.set(transferHeaders.from, transfer.fromPod);
        context.responseHeader.set(transferHeaders.to, transfer.toPod);
        context.responseHeader.set(transferHeaders.reason, transfer.reason);
      }
      if (queued !== undefined) {
        context.responseHeader.set(queueHeaders.waitMs, String(Math.round(queued.waitedMs)));
        context.responseHeader.set(queueHeaders.position, String(queued.position));
      }
      return { caller, lease, queued: queued !== undefined };
    } catch (error) {
      throw toConnectError(error);
    }
  }

  /** A granted waiter that went away before its answer began gives its lease back (SPEC 11). */
  function abandoned(granted: { lease: Lease; queued: boolean }, context: HandlerContext): void {
    if (granted.queued && context.signal.aborted) void options.router.abandonGrant(granted.lease);
  }

  function callOptions(context: HandlerContext) {
    const headers = new Headers();
    for (const name of ["authorization", "session-id", "x-request-id"]) {
      const value = context.requestHeader.get(name);
      if (value !== null) headers.set(name, value);
    }
    return { headers, signal: context.signal, timeoutMs: context.timeoutMs() };
  }

  function upstreamError(error: unknown): ConnectError {
    // A reply this client could not decode is no error the instance returned: internal, cause logged.
    if (error instanceof ConnectError && error.code === Code.Internal && error.rawMessage.startsWith("parse binary: ")) {
      return toConnectError(new GatewayError(Code.Internal, messages.internal, { cause: error }));
    }
    if (error instanceof ConnectError && error.code !== Code.Unavailable) return error;
    return new ConnectError(messages.unavailable, Code.Unavailable, undefined, undefined, error);
  }

  return {
    async echo(request: EchoRequest, context: HandlerContext): Promise<EchoResponse> {
      const granted = await route("MyServiceEcho", context);
      try {
        return await clientFor(granted.lease.instanceAddress).myServiceEcho(request, callOptions(context));
      } catch (error) {
        abandoned(granted, context);
        throw upstreamError(error);
      }
    },
    async *subscribe(request: EchoRequest, context: HandlerContext): AsyncIterable<EchoResponse> {
      const granted = await route("MyServiceSubscribe", context);
      const { caller, lease } = granted;
      options.keeper.streamOpened(caller.sessionId);
      let answered = false;
      try {
        for await (const message of clientFor(lease.instanceAddress).myServiceSubscribe(request, callOptions(context))) {
          answered = true;
          yield message;
        }
      } catch (error) {
        if (!answered) abandoned(granted, context);
        if (context.signal.aborted) return;
        throw upstreamError(error);
      } finally {
        options.keeper.streamClosed(caller.sessionId);
      }
    },
    async shutdown(context: HandlerContext): Promise<ShutdownResponse> {
      const { lease } = await route("MyServiceShutdown", context);
      let reply: ShutdownResponse;
      try {
        reply = await clientFor(lease.instanceAddress).myServiceShutdown({}, callOptions(context));
      } catch (error) {
        throw upstreamError(error);
      }
      await options.router.releaseAfterShutdown(lease as Lease);
      return reply;
    },
  };
}
