import { fmt, fmtMB, fmtRatio } from "./format.js";
import type { ProfileResult, Table } from "./types.js";

/** Run metadata printed above the tables. */
export interface RunMeta {
  readonly date: string;
  readonly quick: boolean;
  readonly rounds: number;
  readonly node: string;
  readonly cores: number;
  readonly cpu: string;
  readonly nginx: string;
  readonly seconds: number;
}

/** One target of issues 6 and 13, checked against this run's figures. */
export interface TargetCheck {
  readonly target: string;
  readonly figure: string;
  /** `undefined` when the figure is missing (profile skipped or nginx absent). */
  readonly met: boolean | undefined;
}

function metric(results: readonly ProfileResult[], id: string, name: string): number | undefined {
  const v = results.find((r) => r.id === id)?.metrics[name];
  return v !== undefined && Number.isFinite(v) ? v : undefined;
}

/** Checks the targets of issues 6, 12, 13 and 14 against the figures of this run. */
export function evaluateTargets(results: readonly ProfileResult[]): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const add = (target: string, value: number | undefined, ok: (v: number) => boolean, show: (v: number) => string) =>
    checks.push({ target, figure: value === undefined ? "n/a" : show(value), met: value === undefined ? undefined : ok(value) });
  for (const s of [16, 128]) {
    add(`gateway calls/s ≥ 0.8× nginx at ${s} streams`, metric(results, "proxy", `ratio@${s}.throughput`), (v) => v >= 0.8, fmtRatio);
  }
  for (const s of [1, 16, 128]) {
    add(`gateway p50 ≤ 1.25× nginx at ${s} stream(s)`, metric(results, "proxy", `ratio@${s}.p50`), (v) => v <= 1.25, fmtRatio);
  }
  // Issue 14: the relay over TLS (front door and to the instance) beside nginx grpcs://.
  for (const s of [16, 128]) {
    add(
      `over TLS: gateway calls/s ≥ 0.8× nginx at ${s} streams`,
      metric(results, "proxy-tls", `ratio@${s}.throughput`),
      (v) => v >= 0.8,
      fmtRatio,
    );
  }
  for (const alg of ["EdDSA", "ES256"]) {
    add(
      `allocation adds ≤ 1 ms at p50 with ${alg} tokens`,
      metric(results, "token-keys", `${alg}.allocationAddsP50Ms`),
      (v) => v <= 1,
      (v) => `${fmt(v, 3)} ms`,
    );
  }
  add(
    "allocation adds ≤ 1 ms at p50 over a leased call",
    metric(results, "allocation", "allocationAddsP50Ms"),
    (v) => v <= 1,
    (v) => `${fmt(v, 3)} ms`,
  );
  add("acquire p99 at 10,000 instances ≤ 1.5× at 3", metric(results, "lease-store", "acquireP99Ratio10kTo3"), (v) => v <= 1.5, fmtRatio);
  add(
    "sessions allocated/s through the gateway (≥ 100 free, durable) ≥ 1,200",
    metric(results, "allocation", "sessionsPerSec"),
    (v) => v >= 1200,
    (v) => `${fmt(v)}/s`,
  );
  add(
    "lease store alone ≥ 1,500 durable acquire+release cycles/s",
    metric(results, "lease-store", "minCyclesPerSec"),
    (v) => v >= 1500,
    (v) => `${fmt(v)}/s`,
  );
  // Issue 12 (scale-out): PostgreSQL beside SQLite.
  add(
    "allocations through 2 gateways on one PostgreSQL (synchronous_commit=on, lean pool) ≥ 1,200/s",
    metric(results, "scale-out", "postgres-2gw.sessionsPerSec"),
    (v) => v >= 1200,
    (v) => `${fmt(v)}/s`,
  );
  add(
    "leased Echo p50 on PostgreSQL ≤ 1.1× SQLite at 1 stream",
    metric(results, "scale-out", "leasedEchoP50RatioPgToSqlite"),
    (v) => v <= 1.1,
    fmtRatio,
  );
  for (const engine of ["sqlite", "postgres"]) {
    add(
      `acquire p99 at 10,000 instances ≤ 1.5× at 3 (${engine})`,
      metric(results, "scale-out", `${engine}.acquireP99Ratio10kTo3`),
      (v) => v <= 1.5,
      fmtRatio,
    );
  }
  add(
    "probe load per instance with 2 gateways ≤ 1.1× with 1",
    metric(results, "scale-out", "probeLoadRatio2To1"),
    (v) => v <= 1.1,
    fmtRatio,
  );
  const ms = (v: number) => `${fmt(v, 1)} ms`;
  add("queue: grant latency p50 ≤ 20 ms, one gateway", metric(results, "queue", "grantP50OneMs"), (v) => v <= 20, ms);
  add("queue: grant latency p99 ≤ 100 ms, one gateway", metric(results, "queue", "grantP99OneMs"), (v) => v <= 100, ms);
  add("queue: grant latency p99 ≤ 150 ms, two gateways", metric(results, "queue", "grantP99TwoMs"), (v) => v <= 150, ms);
  add(
    "queue: 0 FIFO violations",
    metric(results, "queue", "fifoViolations"),
    (v) => v === 0,
    (v) => String(v),
  );
  const streams = metric(results, "streams", "streams");
  add(
    "1,000 open streams through the gateway < 200 MB RSS",
    metric(results, "streams", "gatewayRssOpenBytes"),
    (v) => v < 200 * 1048576,
    (v) => (streams === 1000 ? fmtMB(v) : `${fmtMB(v)} (${streams} streams)`),
  );
  return checks;
}

function pad(cells: readonly string[], widths: readonly number[]): string {
  return cells.map((c, i) => (i < 2 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number))).join("  ");
}

function textTable(t: Table): string {
  const cells = [t.columns.map(String), ...t.rows.map((r) => r.map(String))];
  const widths = t.columns.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  const lines = [`\n${t.title}`, pad(cells[0] as string[], widths), widths.map((w) => "-".repeat(w)).join("  ")];
  for (const row of cells.slice(1)) lines.push(pad(row, widths));
  return `${lines.join("\n")}\n`;
}

function metaLine(meta: RunMeta): string {
  return `${meta.date}  ${meta.quick ? "QUICK (1 short round: proves it works, figures are rough)" : `${meta.rounds} rounds, medians`}  node ${meta.node}, ${meta.cores} cores (${meta.cpu}), nginx ${meta.nginx}, ${meta.seconds} s`;
}

function mark(met: boolean | undefined): string {
  return met === undefined ? "n/a" : met ? "met" : "MISSED";
}

/** The console report: every table, then the targets. */
export function renderText(meta: RunMeta, results: readonly ProfileResult[], targets: readonly TargetCheck[]): string {
  let out = `\n=== bench: ${metaLine(meta)}\n`;
  for (const r of results) for (const t of r.tables) out += textTable(t);
  out += textTable({
    title: "Targets (issues 6 and 13)",
    columns: ["target", "this run", "status"],
    rows: targets.map((t) => [t.target, t.figure, mark(t.met)]),
  });
  return out;
}

function mdTable(t: Table): string {
  const esc = (c: string | number) => String(c).replace(/\|/g, "\\|");
  return [
    `**${t.title}**`,
    "",
    `| ${t.columns.map(esc).join(" | ")} |`,
    `|${t.columns.map((_, i) => (i < 2 ? "---" : "---:")).join("|")}|`,
    ...t.rows.map((r) => `| ${r.map(esc).join(" | ")} |`),
    "",
  ].join("\n");
}

/** The markdown report: tables, notes per profile, targets. */
export function renderMarkdown(meta: RunMeta, results: readonly ProfileResult[], targets: readonly TargetCheck[]): string {
  const parts = [`# Benchmark results`, "", metaLine(meta), "", "![proxy path](latest.svg)", ""];
  for (const r of results) {
    parts.push(`## ${r.title}`, "");
    for (const t of r.tables) parts.push(mdTable(t));
    for (const n of r.notes) parts.push(`- ${n}`);
    parts.push("");
  }
  parts.push(
    "## Targets",
    "",
    mdTable({
      title: "Targets (issues 6 and 13)",
      columns: ["target", "this run", "status"],
      rows: targets.map((t) => [t.target, t.figure, mark(t.met)]),
    }),
  );
  return parts.join("\n");
}

const colors: Record<string, string> = { direct: "#8c8c8c", nginx: "#2f7ed8", gateway: "#e4572e" };

/** A hand-written SVG: proxy-path calls/s and p50 per concurrency level and target. */
export function renderSvg(results: readonly ProfileResult[]): string {
  const proxy = results.find((r) => r.id === "proxy");
  const levels = [1, 16, 128];
  const targets = ["direct", "nginx", "gateway"];
  const panels = [
    { title: "unary Echo calls/s (higher is better)", field: "reqPerSec", digits: 0 },
    { title: "p50 latency, ms (lower is better)", field: "p50Ms", digits: 2 },
  ];
  const W = 820;
  const H = 330;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
  ];
  panels.forEach((panel, pi) => {
    const x0 = 50 + pi * 400;
    const y0 = 40;
    const h = 230;
    const values = levels.flatMap((l) => targets.map((t) => proxy?.metrics[`${t}@${l}.${panel.field}`] ?? Number.NaN));
    const max = Math.max(1e-9, ...values.filter(Number.isFinite)) * 1.15;
    out.push(`<text x="${x0}" y="24" font-size="13" font-weight="bold">${panel.title}</text>`);
    out.push(`<line x1="${x0}" y1="${y0 + h}" x2="${x0 + 340}" y2="${y0 + h}" stroke="#333"/>`);
    levels.forEach((l, li) => {
      const gx = x0 + 10 + li * 112;
      targets.forEach((t, ti) => {
        const v = proxy?.metrics[`${t}@${l}.${panel.field}`] ?? Number.NaN;
        if (!Number.isFinite(v)) return;
        const bh = (v / max) * h;
        const x = gx + ti * 32;
        out.push(`<rect x="${x}" y="${(y0 + h - bh).toFixed(1)}" width="28" height="${bh.toFixed(1)}" fill="${colors[t]}"/>`);
        out.push(
          `<text x="${x + 14}" y="${(y0 + h - bh - 3).toFixed(1)}" text-anchor="middle" font-size="9">${fmt(v, panel.digits)}</text>`,
        );
      });
      out.push(`<text x="${gx + 46}" y="${y0 + h + 15}" text-anchor="middle">${l} stream${l === 1 ? "" : "s"}</text>`);
    });
  });
  targets.forEach((t, i) => {
    out.push(`<rect x="${50 + i * 110}" y="${H - 22}" width="12" height="12" fill="${colors[t]}"/>`);
    out.push(`<text x="${66 + i * 110}" y="${H - 12}">${t}</text>`);
  });
  out.push("</svg>\n");
  return out.join("\n");
}
