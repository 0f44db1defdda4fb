import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { authenticateCall, authFailureMessage } from "../common/metadata-auth.js";
import { type TokenVerifier, tokenFromAuthorization } from "../common/tokens.js";
import { Health, HealthCheckResponse_ServingStatus, HealthCheckResponseSchema } from "../gen/grpc/health/v1/health_pb.js";
import {
  type EchoRequest,
  type EchoResponse,
  EchoResponseSchema,
  MyServiceAPI,
  ShutdownResponseSchema,
} from "../gen/my_service/my_service_pb.js";
import { GetStatusResponseSchema, InstanceService, RecycleResponseSchema } from "../gen/myservice/instance/v1/instance_pb.js";

/** Role of the tokens gateways issue for themselves (recycling): only they may call Recycle. */
export const systemRole = "system";

/** Value of `server_value` in every EchoResponse (SPEC 4.9). */
export const serverValue = "my_service";

/** Options of `createMyServiceRoutes`. */
export interface MyServiceOptions {
  /** Pod name reported in replies and status. */
  readonly podName: string;
  /** Random id of this process start. */
  readonly bootId: string;
  /** Process start, Unix milliseconds. */
  readonly startedAtMs: number;
  /** Verifies tokens (HMAC secret, public keys, the gateway's JWKS). */
  readonly verifyToken: TokenVerifier;
  /**
   * For a refused token: refreshes the keys when it names an unknown `kid` (a rotation the
   * JWKS has not shown yet); resolves true when the token deserves another check.
   */
  readonly refreshKeysFor?: (token: string) => Promise<boolean>;
  /** Period between Subscribe messages, milliseconds. */
  readonly subscribeIntervalMs: number;
  /** Called once a Shutdown or Recycle was accepted; the caller exits after the reply is flushed. */
  readonly onShutdown: (sessionId: string) => void;
}

/** The instance's mutable state: at most one session, bound until the process exits. */
export interface InstanceState {
  sessionId: string | undefined;
  shuttingDown: boolean;
}

/**
 * Registers MyServiceAPI (Echo, Subscribe, Shutdown; Login is the gateway's), the internal
 * InstanceService status call, and gRPC health. Returns the state for inspection.
 */
export function createMyServiceRoutes(options: MyServiceOptions): {
  routes: (router: ConnectRouter) => void;
  state: InstanceState;
} {
  const state: InstanceState = { sessionId: undefined, shuttingDown: false };
  const healthWatchers = new Set<() => void>();

  async function authenticate(context: HandlerContext): Promise<string> {
    const sessionIdHeader = context.requestHeader.get("session-id") ?? undefined;
    const authorization = context.requestHeader.get("authorization") ?? undefined;
    let result = authenticateCall(sessionIdHeader, authorization, options.verifyToken);
    if (!result.ok && result.failure === "invalid-token" && options.refreshKeysFor !== undefined) {
      const token = tokenFromAuthorization(authorization);
      if (token !== undefined && (await options.refreshKeysFor(token))) {
        result = authenticateCall(sessionIdHeader, authorization, options.verifyToken);
      }
    }
    if (!result.ok) throw new ConnectError(authFailureMessage[result.failure], Code.Unauthenticated);
    return result.sessionId;
  }

  /** Binds the session on first use (SPEC 4.9); another session afterwards is a conflict. */
  function bind(sessionId: string): string {
    if (state.sessionId === undefined) state.sessionId = sessionId;
    else if (state.sessionId !== sessionId) {
      throw new ConnectError(`Session conflict: was=${state.sessionId}, now=${sessionId}`, Code.Internal);
    }
    return state.sessionId;
  }

  function echo(request: EchoRequest, sessionId: string, index: number, method: string): EchoResponse {
    return create(EchoResponseSchema, {
      clientValue: request.value,
      serverValue,
      podName: options.podName,
      serverSessionId: state.sessionId ?? "",
      clientSessionId: sessionId,
      index,
      serverMethod: method,
    });
  }

  function beginShutdown(sessionId: string): void {
    if (state.shuttingDown) return;
    state.shuttingDown = true;
    for (const notify of healthWatchers) notify();
    options.onShutdown(sessionId);
  }

  function servingStatus() {
    return state.shuttingDown ? HealthCheckResponse_ServingStatus.NOT_SERVING : HealthCheckResponse_ServingStatus.SERVING;
  }

  const routes = (router: ConnectRouter) => {
    router.service(MyServiceAPI, {
      async myServiceEcho(request, context) {
        const sessionId = await authenticate(context);
        bind(sessionId);
        return echo(request, sessionId, 0, "MyServiceEcho");
      },
      async *myServiceSubscribe(request, context) {
        const sessionId = await authenticate(context);
        bind(sessionId);
        for (let index = 0; ; index++) {
          yield echo(request, sessionId, index, "MyServiceSubscribe");
          await sleep(options.subscribeIntervalMs, context.signal);
          if (context.signal.aborted) return;
        }
      },
      async myServiceShutdown(_request, context) {
        const sessionId = await authenticate(context);
        if (state.sessionId === undefined) throw new ConnectError("Server session is not set", Code.PermissionDenied);
        if (state.sessionId !== sessionId) {
          throw new ConnectError(`Client session mismatch: client=${sessionId}, server=${state.sessionId}`, Code.PermissionDenied);
        }
        beginShutdown(sessionId);
        return create(ShutdownResponseSchema, {
          podName: options.podName,
          serverSessionId: state.sessionId,
          clientSessionId: sessionId,
          index: 0,
          serverMethod: "MyServiceShutdown",
        });
      },
    });
    router.service(InstanceService, {
      recycle(request, context) {
        const result = authenticateCall(
          context.requestHeader.get("session-id") ?? undefined,
          context.requestHeader.get("authorization") ?? undefined,
          options.verifyToken,
        );
        if (!result.ok) throw new ConnectError(authFailureMessage[result.failure], Code.Unauthenticated);
        if (result.claims.role !== systemRole) throw new ConnectError(`role ${systemRole} required`, Code.PermissionDenied);
        if (request.sessionId !== result.sessionId) throw new ConnectError("session_id differs from session-id", Code.InvalidArgument);
        if (state.sessionId !== undefined && state.sessionId !== request.sessionId) {
          throw new ConnectError(`bound to another session (${state.sessionId})`, Code.FailedPrecondition);
        }
        beginShutdown(request.sessionId);
        return create(RecycleResponseSchema, { podName: options.podName });
      },
      getStatus() {
        return create(GetStatusResponseSchema, {
          podName: options.podName,
          bootId: options.bootId,
          sessionId: state.sessionId ?? "",
          shuttingDown: state.shuttingDown,
          startedAtMs: BigInt(options.startedAtMs),
        });
      },
    });
    router.service(Health, {
      check(request) {
        if (request.service !== "" && request.service !== MyServiceAPI.typeName) {
          throw new ConnectError("unknown service", Code.NotFound);
        }
        return create(HealthCheckResponseSchema, { status: servingStatus() });
      },
      async *watch(_request, context) {
        let changed: () => void = () => {};
        const notify = () => changed();
        healthWatchers.add(notify);
        try {
          for (;;) {
            yield create(HealthCheckResponseSchema, { status: servingStatus() });
            await new Promise<void>((resolve) => {
              changed = resolve;
              context.signal.addEventListener("abort", () => resolve(), { once: true });
            });
            if (context.signal.aborted) return;
          }
        } finally {
          healthWatchers.delete(notify);
        }
      },
    });
  };
  return { routes, state };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
