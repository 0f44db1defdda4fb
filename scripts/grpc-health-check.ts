import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";

/**
 * Container health check: one gRPC `grpc.health.v1.Health/Check` to `host:port` (argument, or
 * `127.0.0.1:$SERVICE_PORT_GRPC`). Exits 0 when SERVING, 1 otherwise.
 * Usage: node dist/scripts/grpc-health-check.js [host:port] (after npm run build), or
 * node --import tsx scripts/grpc-health-check.ts [host:port]
 */
const target = process.argv[2] ?? `127.0.0.1:${process.env.SERVICE_PORT_GRPC ?? "10000"}`;
try {
  const transport = createGrpcTransport({ baseUrl: `http://${target}` });
  const { status } = await createClient(Health, transport).check({}, { timeoutMs: 3000 });
  const serving = status === HealthCheckResponse_ServingStatus.SERVING;
  process.stdout.write(`${target}: ${HealthCheckResponse_ServingStatus[status]}\n`);
  process.exit(serving ? 0 : 1);
} catch (error) {
  process.stdout.write(`${target}: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
}
