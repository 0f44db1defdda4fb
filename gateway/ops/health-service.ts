import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus, HealthCheckResponseSchema } from "../../gen/grpc/health/v1/health_pb.js";
import { MyServiceAPI } from "../../gen/my_service/my_service_pb.js";

const { SERVING, NOT_SERVING, SERVICE_UNKNOWN } = HealthCheckResponse_ServingStatus;

/** Options of `registerHealthService`. */
export interface HealthServiceOptions {
  /** True while the gateway runs and is not shutting down. */
  readonly live: () => boolean;
  /** True while at least one instance is healthy: MyServiceAPI can be served. */
  readonly ready: () => boolean;
  /** How often Watch re-evaluates, milliseconds. Default 1000. */
  readonly watchIntervalMs?: number;
}

/**
 * `grpc.health.v1.Health` on the gateway: service `""` is the gateway process itself;
 * `my_service.MyServiceAPI` is SERVING only while some instance is healthy (readiness).
 */
export function registerHealthService(router: ConnectRouter, options: HealthServiceOptions): void {
  const statusOf = (service: string) => {
    if (service === "") return options.live() ? SERVING : NOT_SERVING;
    if (service === MyServiceAPI.typeName) return options.live() && options.ready() ? SERVING : NOT_SERVING;
    return undefined;
  };
  router.service(Health, {
    check(request) {
      const status = statusOf(request.service);
      if (status === undefined) throw new ConnectError(`unknown service ${request.service}`, Code.NotFound);
      return create(HealthCheckResponseSchema, { status });
    },
    async *watch(request, context) {
      let last: HealthCheckResponse_ServingStatus | undefined;
      while (!context.signal.aborted) {
        const status = statusOf(request.service) ?? SERVICE_UNKNOWN;
        if (status !== last) {
          last = status;
          yield create(HealthCheckResponseSchema, { status });
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, options.watchIntervalMs ?? 1000);
          context.signal.addEventListener(
            "abort",
            () => {
              clearTimeout(timer);
              resolve();
            },
            { once: true },
          );
        });
      }
    },
  });
}
