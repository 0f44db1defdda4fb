/**
 * Bench-only: one process serving many ports, each port one independent MyService instance
 * (its own session binding, boot id, status and health), so a pool of hundreds of instances
 * costs one process. Built from the real instance (`createMyServiceServer`, which is
 * `createMyServiceRoutes` on an HTTP/2 server). A Shutdown restarts that port's instance
 * with a new boot id, as the launcher's supervisor restarts an exited process.
 *
 * Environment: `JWT_SECRET` (required), `BENCH_INSTANCES` (count, default 100),
 * `SUBSCRIBE_INTERVAL_MS` (default 5000), `BENCH_POD_PREFIX` (default `bench`).
 * Prints one line `{"ports":[...]}` once every port listens.
 */
import type { AddressInfo } from "node:net";
import { createLogger } from "../common/logger.js";
import { createMyServiceServer } from "../myservice/server.js";

const jwtSecret = process.env.JWT_SECRET ?? "";
if (jwtSecret === "") {
  process.stderr.write("JWT_SECRET is required\n");
  process.exit(2);
}
const count = Number(process.env.BENCH_INSTANCES ?? "100");
const subscribeIntervalMs = Number(process.env.SUBSCRIBE_INTERVAL_MS ?? "5000");
const prefix = process.env.BENCH_POD_PREFIX ?? "bench";
const logger = createLogger({ name: "multi-instance", level: "warn", format: "json" });

function serve(port: number, index: number): Promise<number> {
  const instance = createMyServiceServer({ jwtSecret, podName: `${prefix}-${index}`, subscribeIntervalMs }, logger);
  void instance.shutdownFlushed.then(async () => {
    await instance.close();
    await serve(port, index);
  });
  return new Promise((resolve, reject) => {
    instance.server.once("error", reject);
    instance.server.listen(port, "127.0.0.1", () => resolve((instance.server.address() as AddressInfo).port));
  });
}

const ports: number[] = [];
for (let i = 0; i < count; i++) ports.push(await serve(0, i + 1));
process.stdout.write(`${JSON.stringify({ ports })}\n`);
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(0));
