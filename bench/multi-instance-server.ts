/**
 * Bench-only: one process serving many ports, each port one independent MyService instance
 * (its own session binding, boot id, status and health), so a pool of hundreds of instances
 * costs one process. Built from the real instance (`createMyServiceServer`, which is
 * `createMyServiceRoutes` on an HTTP/2 server). A Shutdown restarts that port's instance
 * with a new boot id, as the launcher's supervisor restarts an exited process.
 *
 * Environment: `JWT_SECRET` or `JWT_PUBLIC_KEY_FILE` (required), `BENCH_INSTANCES` (count, default 100),
 * `SUBSCRIBE_INTERVAL_MS` (default 5000), `BENCH_POD_PREFIX` (default `bench`).
 * Prints one line `{"ports":[...]}` once every port listens.
 */
import { createLogger } from "../common/logger.js";
import { createMyServiceServer } from "../myservice/server.js";
import { poolEnv, servePool } from "./pool-process.js";

const { keys, count } = poolEnv();
const subscribeIntervalMs = Number(process.env.SUBSCRIBE_INTERVAL_MS ?? "5000");
const prefix = process.env.BENCH_POD_PREFIX ?? "bench";
const logger = createLogger({ name: "multi-instance", level: "warn", format: "json" });

await servePool(count, (index) => {
  const instance = createMyServiceServer({ keys, podName: `${prefix}-${index}`, subscribeIntervalMs }, logger);
  return { server: instance.server, ended: instance.shutdownFlushed, close: () => instance.close() };
});
