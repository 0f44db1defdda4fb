/**
 * Shared by the bench's pool processes (`multi-instance-server.ts`, `lean-instance-pool.ts`):
 * one process serving many ports, each port one instance; an instance that served a Shutdown
 * is replaced on the same port by a fresh one (new boot id), as the launcher's supervisor
 * restarts an exited process. Prints one line `{"ports":[...]}` once every port listens.
 */
import type { Http2Server } from "node:http2";
import type { AddressInfo } from "node:net";

/** One instance of a pool process. */
export interface PoolMember {
  readonly server: Http2Server;
  /** Resolves once the instance has served its Shutdown and must be replaced. */
  readonly ended: Promise<unknown>;
  close(): Promise<void>;
}

/** Environment every pool process reads: `JWT_SECRET` (required) and `BENCH_INSTANCES` (default 100). */
export function poolEnv(): { jwtSecret: string; count: number } {
  const jwtSecret = process.env.JWT_SECRET ?? "";
  if (jwtSecret === "") {
    process.stderr.write("JWT_SECRET is required\n");
    process.exit(2);
  }
  return { jwtSecret, count: Number(process.env.BENCH_INSTANCES ?? "100") };
}

/** Serves `count` instances made by `create(index)` on free loopback ports, then prints the ports. */
export async function servePool(count: number, create: (index: number) => PoolMember): Promise<void> {
  const serve = (port: number, index: number): Promise<number> => {
    const member = create(index);
    void member.ended.then(async () => {
      await member.close();
      await serve(port, index);
    });
    return new Promise((resolve, reject) => {
      member.server.once("error", reject);
      member.server.listen(port, "127.0.0.1", () => resolve((member.server.address() as AddressInfo).port));
    });
  };
  const ports: number[] = [];
  for (let i = 0; i < count; i++) ports.push(await serve(0, i + 1));
  process.stdout.write(`${JSON.stringify({ ports })}\n`);
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(0));
}
