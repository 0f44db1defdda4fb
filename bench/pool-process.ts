/**
 * Shared by the bench's pool processes (`multi-instance-server.ts`, `lean-instance-pool.ts`):
 * one process serving many ports, each port one instance; an instance that served a Shutdown
 * is replaced on the same port by a fresh one (new boot id), as the launcher's supervisor
 * restarts an exited process. Prints one line `{"ports":[...]}` once every port listens.
 */
import type { Http2Server } from "node:http2";
import type { AddressInfo } from "node:net";
import { hmacSigningKey, loadPublicKeyFile, type VerificationKey } from "../common/token-keys.js";

/** One instance of a pool process. */
export interface PoolMember {
  readonly server: Http2Server;
  /** Resolves once the instance has served its Shutdown and must be replaced. */
  readonly ended: Promise<unknown>;
  close(): Promise<void>;
}

/**
 * Environment every pool process reads: `JWT_SECRET` and/or `JWT_PUBLIC_KEY_FILE` (one is
 * required: the keys tokens are verified with) and `BENCH_INSTANCES` (default 100).
 */
export function poolEnv(): { keys: VerificationKey[]; count: number } {
  const secret = process.env.JWT_SECRET ?? "";
  const publicKeyFile = process.env.JWT_PUBLIC_KEY_FILE ?? "";
  if (secret === "" && publicKeyFile === "") {
    process.stderr.write("JWT_SECRET or JWT_PUBLIC_KEY_FILE is required\n");
    process.exit(2);
  }
  const keys = [
    ...(secret !== "" ? [hmacSigningKey(secret).verification] : []),
    ...(publicKeyFile !== "" ? loadPublicKeyFile(publicKeyFile) : []),
  ];
  return { keys, count: Number(process.env.BENCH_INSTANCES ?? "100") };
}

/** Serves `count` instances made by `create(index)` on free loopback ports, then prints the ports. */
export async function servePool(count: number, create: (index: number) => PoolMember): Promise<void> {
  const serve = (port: number, index: number): Promise<number> => {
    const member = create(index);
    const listening = new Promise<number>((resolve, reject) => {
      member.server.once("error", reject);
      member.server.listen(port, "127.0.0.1", () => resolve((member.server.address() as AddressInfo).port));
    });
    // The replacement listens on the port this one got (not on `port`, which is 0 the first time).
    void Promise.all([listening, member.ended]).then(async ([bound]) => {
      await member.close();
      await serve(bound, index);
    });
    return listening;
  };
  const ports: number[] = [];
  for (let i = 0; i < count; i++) ports.push(await serve(0, i + 1));
  process.stdout.write(`${JSON.stringify({ ports })}\n`);
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(0));
}
