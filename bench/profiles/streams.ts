import type { ClientHttp2Session, ClientHttp2Stream } from "node:http2";
import { setTimeout as sleep } from "node:timers/promises";
import { fmt, fmtMB, fmtRatio } from "../format.js";
import { type BenchSession, echo, echoBody, h2connect, mintSession, paths } from "../grpc.js";
import { cpuSeconds, rssBytes } from "../proc.js";
import { startGateway, startInstances } from "../stack.js";
import { ratio } from "../stats.js";
import type { BenchContext, ProfileResult } from "../types.js";

const intervalMs = 100;

/** Open Subscribe streams with a count of the gRPC messages each delivered. */
interface OpenStreams {
  readonly counts: Int32Array;
  readonly errors: () => number;
  close(): void;
}

/** Opens `total` Subscribe streams to `address` over `connections` HTTP/2 connections; sessions round robin. */
async function openStreams(address: string, sessions: readonly BenchSession[], total: number, connections: number): Promise<OpenStreams> {
  const clients: ClientHttp2Session[] = [];
  for (let i = 0; i < connections; i++) clients.push(await h2connect(address));
  const counts = new Int32Array(total);
  let errors = 0;
  const streams: ClientHttp2Stream[] = [];
  const body = echoBody("stream");
  for (let i = 0; i < total; i++) {
    const s = sessions[i % sessions.length] as BenchSession;
    const stream = (clients[i % connections] as ClientHttp2Session).request({
      ":method": "POST",
      ":path": paths.subscribe,
      "content-type": "application/grpc",
      te: "trailers",
      ...s.headers,
    });
    // Count whole gRPC messages (5-byte prefix + length) across DATA chunk boundaries.
    let need = 5;
    let header = true;
    let prefix = Buffer.alloc(0);
    stream.on("data", (chunk: Buffer) => {
      let off = 0;
      while (off < chunk.length) {
        if (header) {
          const take = Math.min(need, chunk.length - off);
          prefix = Buffer.concat([prefix, chunk.subarray(off, off + take)]);
          off += take;
          need -= take;
          if (need === 0) {
            need = prefix.readUInt32BE(1);
            prefix = Buffer.alloc(0);
            header = false;
            if (need === 0) {
              counts[i]!++;
              header = true;
              need = 5;
            }
          }
        } else {
          const take = Math.min(need, chunk.length - off);
          off += take;
          need -= take;
          if (need === 0) {
            counts[i]!++;
            header = true;
            need = 5;
          }
        }
      }
    });
    stream.on("trailers", (t) => {
      if (t["grpc-status"] !== "0") errors++;
    });
    stream.on("response", (h) => {
      if (h["grpc-status"] !== undefined) errors++;
    });
    stream.on("error", () => {});
    stream.end(body);
    streams.push(stream);
  }
  return {
    counts,
    errors: () => errors,
    close() {
      for (const s of streams) if (!s.destroyed) s.close(8);
      for (const c of clients) c.close();
    },
  };
}

async function waitAllStarted(open: OpenStreams, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (open.counts.every((c) => c > 0)) return true;
    await sleep(50);
  }
  return false;
}

/**
 * Profile 2: many concurrent Subscribe streams (a few sessions, many streams each), straight
 * to the instances and through the gateway: delivered messages/s, gateway CPU and memory.
 */
export async function streamsProfile(ctx: BenchContext): Promise<ProfileResult> {
  const total = ctx.quick ? 200 : 1000;
  const sessionCount = 4;
  const windowMs = ctx.quick ? 2000 : 8000;
  const { children, addresses } = await startInstances(sessionCount, { SUBSCRIBE_INTERVAL_MS: String(intervalMs) });
  const gateway = await startGateway(addresses);
  try {
    const sessions: BenchSession[] = [];
    const instanceOf = new Map<string, string>();
    const client = await h2connect(gateway.address);
    for (let i = 0; i < sessionCount; i++) {
      const s = await mintSession(`bench-streams-${process.pid}-${i}`);
      const reply = await echo(client, s); // leases one instance per session
      sessions.push(s);
      instanceOf.set(s.id, `127.0.0.1:${reply.podName.replace("myservice-", "")}`);
    }
    // Warm the gateway's relay path a little, as the proxy profile does.
    for (let i = 0; i < 200; i++) await echo(client, sessions[i % sessionCount] as BenchSession);
    client.close();
    const expected = (total * 1000) / intervalMs;

    const measure = async (label: string, open: () => Promise<OpenStreams>) => {
      await sleep(500);
      const rssBefore = rssBytes(gateway.pid);
      const t0 = performance.now();
      const streams = await open();
      const started = await waitAllStarted(streams, 20_000);
      const openMs = performance.now() - t0;
      if (!started) throw new Error(`${label}: not every stream got its first message within 20 s`);
      const before = Array.from(streams.counts).reduce((a, b) => a + b, 0);
      const cpu0 = cpuSeconds(gateway.pid);
      const gen0 = process.cpuUsage();
      const w0 = performance.now();
      await sleep(windowMs);
      const elapsed = (performance.now() - w0) / 1000;
      const after = Array.from(streams.counts).reduce((a, b) => a + b, 0);
      const gatewayCpu = (cpuSeconds(gateway.pid) - cpu0) / elapsed;
      const gen = process.cpuUsage(gen0);
      const rssOpen = rssBytes(gateway.pid);
      const errors = streams.errors();
      streams.close();
      if (errors > 0) throw new Error(`${label}: ${errors} streams ended with an error status`);
      const result = {
        messagesPerSec: (after - before) / elapsed,
        gatewayCpuPerSec: gatewayCpu,
        generatorCpuPerSec: (gen.user + gen.system) / 1e6 / elapsed,
        rssBefore,
        rssOpen,
        openMs,
      };
      ctx.progress(
        `streams: ${label}: ${total} streams, ${fmt(result.messagesPerSec)} msgs/s (ideal ${fmt(expected)}), gateway CPU ${fmt(gatewayCpu * 100)}%, RSS ${fmtMB(rssOpen)}`,
      );
      return result;
    };
    const connections = 4;
    const direct = await measure("direct", async () => {
      // Each session's streams go straight to its own instance.
      const parts = await Promise.all(sessions.map((s) => openStreams(instanceOf.get(s.id) as string, [s], total / sessionCount, 1)));
      const counts = new Int32Array(total);
      return {
        get counts() {
          for (const [i, p] of parts.entries()) counts.set(p.counts, i * (total / sessionCount));
          return counts;
        },
        errors: () => parts.reduce((a, p) => a + p.errors(), 0),
        close: () => {
          for (const p of parts) p.close();
        },
      };
    });
    const through = await measure("gateway", () => openStreams(gateway.address, sessions, total, connections));
    await sleep(1000);
    const rssAfterClose = rssBytes(gateway.pid);
    const perStream = (through.rssOpen - through.rssBefore) / total;
    const metrics = {
      streams: total,
      directMessagesPerSec: direct.messagesPerSec,
      gatewayMessagesPerSec: through.messagesPerSec,
      deliveredRatio: ratio(through.messagesPerSec, direct.messagesPerSec),
      gatewayCpuPerSec: through.gatewayCpuPerSec,
      gatewayRssBeforeBytes: through.rssBefore,
      gatewayRssOpenBytes: through.rssOpen,
      gatewayRssAfterCloseBytes: rssAfterClose,
      gatewayBytesPerStream: perStream,
      generatorCpuPerSec: through.generatorCpuPerSec,
    };
    return {
      id: "streams",
      title: "2. Streams",
      tables: [
        {
          title: `Streams: ${total} concurrent Subscribe streams, ${sessionCount} sessions, one message per ${intervalMs} ms per stream`,
          columns: ["path", "", "msgs/s", "ideal msgs/s", "gateway CPU", "gateway RSS open", "RSS/stream", "load-gen CPU"],
          rows: [
            ["direct", "", fmt(direct.messagesPerSec), fmt(expected), "", "", "", `${fmt(direct.generatorCpuPerSec * 100)}%`],
            [
              "gateway",
              "",
              fmt(through.messagesPerSec),
              fmt(expected),
              `${fmt(through.gatewayCpuPerSec * 100)}% of a core`,
              fmtMB(through.rssOpen),
              `${fmt(perStream / 1024, 1)} KB`,
              `${fmt(through.generatorCpuPerSec * 100)}%`,
            ],
            ["gateway/direct", "", fmtRatio(metrics.deliveredRatio), "", "", "", "", ""],
          ],
        },
      ],
      metrics,
      notes: [
        `Generator: raw node:http2 client in the bench process (counts whole gRPC messages); its CPU is shown so it is seen not to saturate.`,
        `Window ${windowMs / 1000} s after every stream delivered its first message; gateway RSS ${fmtMB(through.rssBefore)} before opening, ${fmtMB(through.rssOpen)} with ${total} open, ${fmtMB(rssAfterClose)} 1 s after closing.`,
      ],
    };
  } finally {
    await gateway.stop();
    await Promise.all(children.map((c) => c.stop()));
  }
}
