import type { ClientHttp2Session } from "node:http2";
import { fmt } from "../format.js";
import { h2connect, login } from "../grpc.js";
import { cpuSeconds } from "../proc.js";
import { startGateway, startInstances } from "../stack.js";
import { quantile } from "../stats.js";
import type { BenchContext, ProfileResult } from "../types.js";

/** Profile 4: Login through the gateway with the production password hash (scrypt N=2^15, r=8, p=1). */
export async function loginProfile(ctx: BenchContext): Promise<ProfileResult> {
  const total = ctx.quick ? 12 : 80;
  const concurrency = 4;
  const { children, addresses } = await startInstances(1);
  const gateway = await startGateway(addresses);
  try {
    const clients: ClientHttp2Session[] = [];
    for (let i = 0; i < concurrency; i++) clients.push(await h2connect(gateway.address));
    await login(clients[0] as ClientHttp2Session, `bench-login-warm-${process.pid}`);
    const latencies: number[] = [];
    let next = 0;
    const cpu0 = cpuSeconds(gateway.pid);
    const t0 = performance.now();
    await Promise.all(
      clients.map(async (c) => {
        for (let i = next++; i < total; i = next++) {
          const s = performance.now();
          await login(c, `bench-login-${process.pid}-${i}`);
          latencies.push(performance.now() - s);
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    const cpuMs = ((cpuSeconds(gateway.pid) - cpu0) / total) * 1000;
    for (const c of clients) c.close();
    const metrics = {
      loginsPerSec: total / seconds,
      p50Ms: quantile(latencies, 0.5),
      p99Ms: quantile(latencies, 0.99),
      gatewayCpuMsPerLogin: cpuMs,
    };
    ctx.progress(`login: ${fmt(metrics.loginsPerSec, 1)} logins/s, p99 ${fmt(metrics.p99Ms)} ms`);
    return {
      id: "login",
      title: "4. Login",
      tables: [
        {
          title: `Login through the gateway (scrypt N=2^15 r=8 p=1, gateway/dev-users.json), ${total} logins, ${concurrency} concurrent`,
          columns: ["measure", "", "logins/s", "p50 ms", "p99 ms", "gateway CPU ms/login"],
          rows: [["Login", "", fmt(metrics.loginsPerSec, 1), fmt(metrics.p50Ms, 1), fmt(metrics.p99Ms, 1), fmt(cpuMs, 1)]],
        },
      ],
      metrics,
      notes: ["scrypt runs on libuv's thread pool (4 threads by default) on 2 cores: the CPU, not the event loop, bounds logins/s."],
    };
  } finally {
    await gateway.stop();
    await Promise.all(children.map((c) => c.stop()));
  }
}
