import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type CertFiles, createCa, issueCertificate } from "../../scripts/dev-certs.js";
import { pickFreePorts } from "../../scripts/net-util.js";
import { fmt, fmtMB, fmtRatio } from "../format.js";
import { type BenchSession, echo, echoBody, echoReplyBytes, h2connect, mintSession, paths } from "../grpc.js";
import { type H2loadResult, runH2load } from "../h2load.js";
import { type Nginx, startNginx } from "../nginx.js";
import { cpuSeconds, rssBytes } from "../proc.js";
import { type BenchGateway, startGateway, startInstances } from "../stack.js";
import { median, ratio } from "../stats.js";
import type { BenchContext, ProfileResult, Table } from "../types.js";

type Target = "direct" | "nginx" | "gateway";

/** Concurrency levels: total concurrent streams = connections × streams per connection. */
const allLevels = [
  { streams: 1, connections: 1, perConnection: 1 },
  { streams: 16, connections: 2, perConnection: 8 },
  { streams: 128, connections: 8, perConnection: 16 },
] as const;
type Level = (typeof allLevels)[number];

/** How one proxy-path profile runs: cleartext (h2c) everywhere, or TLS on every hop. */
interface PathSetup {
  readonly id: string;
  readonly title: string;
  readonly levels: readonly Level[];
  /** TLS files (a CA made for the run): h2load → proxy → instance all over TLS. */
  readonly tls?: { readonly dir: string; readonly ca: CertFiles; readonly server: CertFiles };
}

interface Cell {
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  /** CPU seconds of the proxy (nginx master + worker, or the gateway) per 1,000 calls. */
  proxyCpuPer1k: number;
  /** CPU seconds of the instance per 1,000 calls. */
  backendCpuPer1k: number;
}

/**
 * Profile 1: unary Echo of one leased session, through h2load, straight to the instance,
 * through nginx `grpc_pass`, and through the gateway (auth + lease check included).
 */
export function proxyProfile(ctx: BenchContext): Promise<ProfileResult> {
  return proxyPath(ctx, { id: "proxy", title: "1. Proxy path", levels: allLevels });
}

/**
 * Profile 1b: the same over TLS on every hop — h2load → proxy (TLS front door) → instance
 * (TLS, the proxy verifies its certificate against a CA made for the run) — beside nginx
 * `grpc_pass grpcs://`, at 16 and 128 streams.
 */
export async function proxyTlsProfile(ctx: BenchContext): Promise<ProfileResult> {
  const dir = await mkdtemp(join(ctx.tmpDir, "tls-"));
  const ca = createCa(dir, "ca", "bench CA");
  const server = issueCertificate(ca, dir, "server", { commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
  return proxyPath(ctx, {
    id: "proxy-tls",
    title: "1b. Proxy path over TLS",
    levels: [allLevels[1], allLevels[2]],
    tls: { dir, ca, server },
  });
}

async function proxyPath(ctx: BenchContext, setup: PathSetup): Promise<ProfileResult> {
  const { levels, tls } = setup;
  const scheme = tls ? "https" : "http";
  const caPem = tls ? await readFile(tls.ca.cert) : undefined;
  // The instance and the gateway's front door serve the run's certificate; the gateway checks
  // the instance against the run's CA (as nginx does), no client certificates.
  const serverTls: Record<string, string> = tls ? { TLS_CERT_FILE: tls.server.cert, TLS_KEY_FILE: tls.server.key } : {};
  const { children, addresses } = await startInstances(1, serverTls);
  const instance = children[0]!;
  const backend = addresses[0]!;
  let gateway: BenchGateway | undefined;
  let nginx: Nginx | undefined;
  try {
    gateway = await startGateway(addresses, tls ? { ...serverTls, UPSTREAM_TLS_CA_FILE: tls.ca.cert } : {});
    await new Promise((r) => setTimeout(r, 1000));
    const idleRss = rssBytes(gateway.pid);
    if (ctx.nginx) {
      const [port] = await pickFreePorts(1);
      nginx = await startNginx(
        port as number,
        backend,
        tls ? { cert: tls.server.cert, key: tls.server.key, ca: tls.ca.cert, backendName: "localhost" } : undefined,
      );
    }
    const session = await mintSession(`bench-${setup.id}-${process.pid}`);
    const client = await h2connect(gateway.address, caPem);
    const reply = await echo(client, session); // leases the instance to the session
    client.close();
    const expectedBytes = echoReplyBytes(reply);
    const bodyFile = join(ctx.tmpDir, "echo-body.bin");
    await writeFile(bodyFile, echoBody("bench"));

    const targets: { name: Target; address: string; pids: () => number[] }[] = [
      { name: "direct", address: backend, pids: () => [] },
      ...(nginx ? [{ name: "nginx" as const, address: `127.0.0.1:${nginx.port}`, pids: () => nginx!.pids() }] : []),
      { name: "gateway", address: gateway.address, pids: () => [gateway!.pid] },
    ];
    // Every target answers this session correctly before the load (h2load cannot read grpc-status).
    for (const t of targets) await check(t.address, session, reply.podName, caPem);

    const countByStreams: Record<number, number> = ctx.quick ? { 1: 300, 16: 1000, 128: 1500 } : { 1: 1500, 16: 5000, 128: 6000 };
    const counts = levels.map((l) => countByStreams[l.streams] as number);
    const run = async (t: (typeof targets)[number], level: Level, requests: number): Promise<Cell & { ok: boolean; why?: string }> => {
      const pids = t.pids();
      const cpu0 = pids.reduce((a, p) => a + cpuSeconds(p), 0);
      const back0 = cpuSeconds(instance.pid);
      const r: H2loadResult = await runH2load({
        url: `${scheme}://${t.address}${paths.echo}`,
        bodyFile,
        headers: { "content-type": "application/grpc", te: "trailers", ...session.headers },
        requests,
        connections: level.connections,
        streamsPerConnection: level.perConnection,
        logFile: join(ctx.tmpDir, "h2load.log"),
        timeoutMs: ctx.quick ? 20_000 : 60_000,
      });
      const cpu1 = pids.reduce((a, p) => a + cpuSeconds(p), 0);
      const back1 = cpuSeconds(instance.pid);
      // Each OK call carries exactly one EchoResponse; an error status (trailers-only) carries none.
      const ok = r.succeeded === requests && r.status2xx === requests && r.dataBytes === requests * expectedBytes;
      const why = ok
        ? undefined
        : `${r.succeeded}/${requests} succeeded, ${r.status2xx} 2xx, ${r.dataBytes} data bytes (want ${requests * expectedBytes})`;
      return {
        ok,
        ...(why ? { why } : {}),
        reqPerSec: r.reqPerSec,
        p50Ms: r.p50Ms,
        p99Ms: r.p99Ms,
        proxyCpuPer1k: pids.length === 0 ? Number.NaN : (cpu1 - cpu0) / (r.succeeded / 1000),
        backendCpuPer1k: (back1 - back0) / (r.succeeded / 1000),
      };
    };

    // Warm-up: JIT, connection pools (nginx's upstream keepalive), token caches.
    for (const t of targets) {
      ctx.progress(`${setup.id}: warm-up ${t.name}`);
      await run(t, levels.at(-1) as Level, ctx.quick ? 1000 : 3000);
    }
    const raw: Record<string, Cell[]> = {};
    const failures: string[] = [];
    for (let li = 0; li < levels.length; li++) {
      const level = levels[li]!;
      for (let round = 1; round <= ctx.rounds; round++) {
        // Targets interleaved within a round, so drift hits all alike.
        for (const t of targets) {
          const cell = await run(t, level, counts[li]!);
          if (!cell.ok) failures.push(`${t.name} @${level.streams}: ${cell.why}`);
          const key = `${t.name}@${level.streams}`;
          raw[key] ??= [];
          raw[key].push(cell);
          ctx.progress(
            `${setup.id}: ${level.streams} streams, round ${round}/${ctx.rounds}, ${t.name}: ${fmt(cell.reqPerSec)} calls/s, p50 ${fmt(cell.p50Ms, 2)} ms, p99 ${fmt(cell.p99Ms, 2)} ms${cell.ok ? "" : " (FAILED)"}`,
          );
        }
      }
    }
    for (const t of targets) await check(t.address, session, reply.podName, caPem);
    if (failures.length > 0) throw new Error(`${setup.id} profile: calls failed:\n${failures.join("\n")}`);

    const med = (key: string, field: keyof Cell) => median((raw[key] ?? []).map((c) => c[field]));
    const metrics: Record<string, number> = { gatewayIdleRssBytes: idleRss, expectedReplyBytes: expectedBytes };
    const rows: (string | number)[][] = [];
    for (const level of levels) {
      for (const t of targets) {
        const k = `${t.name}@${level.streams}`;
        for (const f of ["reqPerSec", "p50Ms", "p99Ms", "proxyCpuPer1k", "backendCpuPer1k"] as const) metrics[`${k}.${f}`] = med(k, f);
        rows.push([
          level.streams,
          t.name,
          fmt(med(k, "reqPerSec")),
          fmt(med(k, "p50Ms"), 2),
          fmt(med(k, "p99Ms"), 2),
          fmt(med(k, "proxyCpuPer1k"), 3),
          fmt(med(k, "backendCpuPer1k"), 3),
        ]);
      }
    }
    const ratioRows: (string | number)[][] = [];
    for (const level of levels) {
      const g = (f: keyof Cell) => metrics[`gateway@${level.streams}.${f}`];
      const n = (f: keyof Cell) => metrics[`nginx@${level.streams}.${f}`];
      const d = (f: keyof Cell) => metrics[`direct@${level.streams}.${f}`];
      metrics[`ratio@${level.streams}.throughput`] = ratio(g("reqPerSec"), n("reqPerSec"));
      metrics[`ratio@${level.streams}.p50`] = ratio(g("p50Ms"), n("p50Ms"));
      metrics[`ratio@${level.streams}.cpu`] = ratio(g("proxyCpuPer1k"), n("proxyCpuPer1k"));
      ratioRows.push([
        level.streams,
        fmtRatio(metrics[`ratio@${level.streams}.throughput`]),
        fmtRatio(metrics[`ratio@${level.streams}.p50`]),
        fmtRatio(ratio(g("p99Ms"), n("p99Ms"))),
        fmtRatio(metrics[`ratio@${level.streams}.cpu`]),
        fmtRatio(ratio(g("reqPerSec"), d("reqPerSec"))),
        fmtRatio(ratio(n("reqPerSec"), d("reqPerSec"))),
      ]);
    }
    const tables: Table[] = [
      {
        title: `${setup.title}: unary Echo, one leased session (medians)`,
        columns: ["streams", "target", "calls/s", "p50 ms", "p99 ms", "proxy CPU s/1k calls", "instance CPU s/1k calls"],
        rows,
      },
      {
        title: `${setup.title}: ratios in this run`,
        columns: [
          "streams",
          "gw/nginx calls/s",
          "gw/nginx p50",
          "gw/nginx p99",
          "gw/nginx CPU/call",
          "gw/direct calls/s",
          "nginx/direct calls/s",
        ],
        rows: ratioRows,
      },
    ];
    return {
      id: setup.id,
      title: setup.title,
      tables,
      metrics,
      notes: [
        `h2load (nghttp2) -n ${counts.join("/")} per run at ${levels.map((l) => `${l.streams} (${l.connections}×${l.perConnection})`).join(", ")} streams (connections × streams each), ${ctx.rounds} round(s), targets interleaved, one warm-up run each.`,
        ...(tls
          ? [
              "TLS on every hop: h2load → proxy over TLS (ALPN h2, P-256 certificate of a CA made for the run); proxy → instance over TLS, the instance's certificate verified against that CA (the gateway: UPSTREAM_TLS_CA_FILE; nginx: grpc_pass grpcs:// with grpc_ssl_verify, session reuse); no client certificates. Connections are long-lived, so the figures are of TLS records, not handshakes.",
            ]
          : []),
        `Each run checked: every call 2xx and exactly ${expectedBytes} DATA bytes per call (one EchoResponse, so grpc-status 0); real Echo calls through every target before and after.`,
        nginx
          ? "nginx: 1 worker, upstream keepalive 128, keepalive_requests 1e6, grpc timeouts 1h."
          : "nginx not installed: its rows are skipped (ratios n/a).",
        `Gateway idle RSS at start (1 instance): ${fmtMB(idleRss)}.`,
      ],
      raw,
    };
  } finally {
    await nginx?.stop();
    await gateway?.stop();
    await Promise.all(children.map((c) => c.stop()));
  }
}

async function check(address: string, session: BenchSession, podName: string, ca?: Buffer): Promise<void> {
  const client = await h2connect(address, ca);
  try {
    for (let i = 0; i < 3; i++) {
      const r = await echo(client, session, `check-${i}`);
      if (r.serverSessionId !== session.id || r.podName !== podName || r.clientValue !== `check-${i}`) {
        throw new Error(`wrong Echo reply via ${address}: ${JSON.stringify(r)}`);
      }
    }
  } finally {
    client.close();
  }
}
