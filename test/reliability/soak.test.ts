// Soak (issue 7), bounded for CI: SOAK_DURATION (default 30s) of mixed traffic with instance
// recycling; no INTERNAL, no Session conflict, no reply for another session, no gateway
// restart; throughput, errors by code and the RSS slope are printed.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseDuration } from "../../common/duration.js";
import { runSoak } from "../../scripts/soak.js";
import { figure } from "./helpers.js";

const durationMs = parseDuration(process.env.SOAK_DURATION ?? "30s") ?? 30_000;

describe("soak", () => {
  it(`serves ${durationMs / 1000} s of mixed traffic with recycling, without violations or memory growth`, async () => {
    const report = await runSoak({ durationMs, instances: 4, clients: 8, leaseTtl: "2s", sampleMs: 2000 });
    figure(
      `soak: ${report.seconds} s, ${report.operations} ops (${report.opsPerSecond}/s); outcomes ${JSON.stringify(report.outcomes)}; ` +
        `gateway RSS ${report.rssStartMb} -> ${report.rssEndMb} MB (max ${report.rssMaxMb}), slope over 2nd half ${report.rssSlopeMbPerMin} MB/min; samples ${report.rssSamplesMb.join(",")}`,
    );
    assert.deepEqual(report.violations, []);
    assert.ok((report.outcomes["echo OK"] ?? 0) > 50, "traffic flowed");
    assert.ok((report.outcomes["shutdown OK"] ?? 0) > 5, "instances recycled");
    assert.ok(report.rssMaxMb - report.rssStartMb < 200, `RSS grew ${report.rssMaxMb - report.rssStartMb} MB`);
  });
});
