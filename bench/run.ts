/**
 * `npm run bench`: starts what each profile needs on free loopback ports, runs bounded load,
 * prints a table of medians plus ratios measured in the same run, and writes JSON, markdown
 * and an SVG chart under `bench/results/`. `--quick`: one short round (CI proves it works).
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { haveH2load } from "./h2load.js";
import { haveNginx, nginxVersion } from "./nginx.js";
import { buildProduct, repoRoot, stopAll } from "./proc.js";
import { allocationProfile } from "./profiles/allocation.js";
import { footprintProfile } from "./profiles/footprint.js";
import { leaseStoreProfile } from "./profiles/lease-store.js";
import { loginProfile } from "./profiles/login.js";
import { proxyProfile, proxyTlsProfile } from "./profiles/proxy.js";
import { queueProfile } from "./profiles/queue.js";
import { scaleOutProfile } from "./profiles/scale-out.js";
import { streamsProfile } from "./profiles/streams.js";
import { tokenKeysProfile } from "./profiles/token-keys.js";
import { evaluateTargets, renderMarkdown, renderSvg, renderText } from "./report.js";
import { gatewayNodeArgs } from "./stack.js";
import type { BenchContext, ProfileResult } from "./types.js";

const usage = `usage: npm run bench -- [--quick] [--rounds N] [--only proxy,proxy-tls,streams,allocation,token-keys,lease-store,login,footprint,scale-out,queue] [--gateway-node-args "--cpu-prof ..."]`;

const allProfiles = {
  proxy: proxyProfile,
  "proxy-tls": proxyTlsProfile,
  streams: streamsProfile,
  allocation: allocationProfile,
  "token-keys": tokenKeysProfile,
  "lease-store": leaseStoreProfile,
  login: loginProfile,
  footprint: footprintProfile,
  "scale-out": scaleOutProfile,
  queue: queueProfile,
} as const;
type ProfileId = keyof typeof allProfiles;

function parseArgs(argv: readonly string[]) {
  let quick = false;
  let rounds: number | undefined;
  let only: ProfileId[] = Object.keys(allProfiles) as ProfileId[];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--quick") quick = true;
    else if (arg === "--rounds") rounds = Number(argv[++i]);
    else if (arg === "--only") {
      only = String(argv[++i]).split(",") as ProfileId[];
      for (const id of only) if (!(id in allProfiles)) throw new Error(`unknown profile ${id}\n${usage}`);
    } else if (arg === "--gateway-node-args") gatewayNodeArgs.push(...String(argv[++i]).split(/\s+/).filter(Boolean));
    else if (arg === "--help" || arg === "-h") {
      process.stdout.write(`${usage}\n`);
      process.exit(0);
    } else throw new Error(`unknown argument ${arg}\n${usage}`);
  }
  if (rounds !== undefined && !(Number.isInteger(rounds) && rounds >= 1 && rounds <= 20)) throw new Error("--rounds: 1..20");
  return { quick, rounds: rounds ?? (quick ? 1 : 3), only };
}

async function main(): Promise<number> {
  const started = Date.now();
  const args = parseArgs(process.argv.slice(2));
  const ci = process.env.CI === "true";
  if (!haveH2load()) {
    process.stderr.write("bench: h2load not found: apt-get install nghttp2-client\n");
    return 1;
  }
  const nginx = haveNginx();
  if (!nginx) {
    process.stderr.write("bench: nginx not installed: its rows are skipped and ratios are n/a (apt-get install nginx)\n");
    if (ci) {
      process.stderr.write("bench: CI requires nginx\n");
      return 1;
    }
  }
  process.stderr.write("bench: npm run build (the gateway and myservice run from dist/, as npm run up and the images run them)\n");
  buildProduct();
  const tmpDir = await mkdtemp(join(tmpdir(), "bench-"));
  const ctx: BenchContext = {
    quick: args.quick,
    rounds: args.rounds,
    nginx,
    tmpDir,
    progress: (m) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${m}\n`),
  };
  ctx.progress(
    `bench ${args.quick ? "(quick) " : ""}rounds=${args.rounds} profiles=${args.only.join(",")} on ${cpus().length} cores, node ${process.version}${nginx ? `, ${nginxVersion()}` : ""}`,
  );
  const results: ProfileResult[] = [];
  const failures: string[] = [];
  try {
    for (const id of args.only) {
      ctx.progress(`== profile ${id}`);
      try {
        results.push(await allProfiles[id](ctx));
      } catch (error) {
        failures.push(`${id}: ${(error as Error).stack ?? error}`);
        ctx.progress(`profile ${id} FAILED: ${(error as Error).message}`);
        await stopAll();
      }
    }
  } finally {
    await stopAll();
    await rm(tmpDir, { recursive: true, force: true });
  }
  const targets = evaluateTargets(results);
  const meta = {
    date: new Date().toISOString(),
    quick: args.quick,
    rounds: args.rounds,
    node: process.version,
    cores: cpus().length,
    cpu: cpus()[0]?.model ?? "?",
    nginx: nginx ? nginxVersion() : "not installed",
    seconds: Math.round((Date.now() - started) / 1000),
  };
  process.stdout.write(renderText(meta, results, targets));
  const dir = join(repoRoot, "bench", "results");
  await mkdir(dir, { recursive: true });
  const stamp = meta.date.replace(/[:.]/g, "-");
  const json = JSON.stringify({ meta, targets, profiles: results, failures }, null, 2);
  const md = renderMarkdown(meta, results, targets);
  const svg = renderSvg(results);
  for (const name of [`bench-${stamp}`, "latest"]) {
    await writeFile(join(dir, `${name}.json`), json);
    await writeFile(join(dir, `${name}.md`), md);
    await writeFile(join(dir, `${name}.svg`), svg);
  }
  process.stdout.write(`\nreports: bench/results/latest.{json,md,svg} (and bench-${stamp}.*), ${meta.seconds} s\n`);
  if (failures.length > 0) {
    process.stderr.write(`\n${failures.length} profile(s) failed:\n${failures.join("\n\n")}\n`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  async (error) => {
    process.stderr.write(`bench: ${(error as Error).message}\n`);
    await stopAll();
    process.exit(1);
  },
);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    void stopAll().then(() => process.exit(130));
  });
}
