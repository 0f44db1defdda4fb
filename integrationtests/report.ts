import type { Reporter, RunResult, ScenarioResult, StepResult } from "./results.js";

/** Where the text output goes, and whether to colour it. */
export interface TextReporterOptions {
  readonly write: (text: string) => void;
  readonly color?: boolean;
}

/**
 * The readable output: each step as it finishes with its timing, the received status of every
 * expected error, expected vs received on failures, a PASSED/FAILED block per scenario.
 */
export function createTextReporter(options: TextReporterOptions): Reporter {
  const paint = (code: number, text: string) => (options.color ? `\x1b[${code}m${text}\x1b[0m` : text);
  const green = (t: string) => paint(32, t);
  const red = (t: string) => paint(31, t);
  const dim = (t: string) => paint(2, t);
  const line = (text: string) => options.write(`${text}\n`);
  return {
    scenarioStarted(name, description) {
      line("");
      line(`▶ ${name}: ${dim(description)}`);
    },
    step(step) {
      for (const text of formatStep(step)) {
        line(step.status === "failed" ? red(text) : step.status === "skipped" ? dim(text) : text.replace("✓", green("✓")));
      }
    },
    note(text) {
      line(dim(`  · ${text}`));
    },
    scenarioFinished(result) {
      const verdict = result.status === "passed" ? green("PASSED") : red("FAILED");
      line(`==== ${verdict}: ${result.name} (${seconds(result.durationMs)}) ====`);
      if (result.error !== undefined) line(red(`  failed at: ${result.error}`));
    },
    cleanupFinished(result) {
      if (result.cleanup.status === "failed") line(red(`  cleanup after ${result.name} FAILED: the stack may still hold its sessions`));
    },
  };
}

/** The lines of one step: `  ✓ title detail  12 ms`, plus expected/received on failure. */
export function formatStep(step: StepResult): string[] {
  const mark = step.status === "passed" ? "✓" : step.status === "failed" ? "✗" : "-";
  const detail = step.detail ? ` ${step.detail}` : "";
  const timing = step.status === "skipped" ? "" : `  ${milliseconds(step.durationMs)}`;
  const lines = [`  ${mark} ${step.title}${detail}${timing}`];
  if (step.status === "skipped") lines.push(`      skipped: ${step.error ?? ""}`);
  if (step.status === "failed") {
    if (step.error) lines.push(`      ${step.error}`);
    if (step.expected !== undefined) lines.push(`      expected: ${step.expected}`);
    if (step.received !== undefined) lines.push(`      received: ${step.received}`);
  }
  return lines;
}

/** The summary block of a run of several scenarios. */
export function formatSummary(run: RunResult): string {
  const passed = run.scenarios.filter((s) => s.status === "passed").length;
  const failed = run.scenarios.length - passed;
  const width = Math.max(...run.scenarios.map((s) => s.name.length));
  const rows = run.scenarios.map((s) => {
    const cleanup = s.cleanup.status === "failed" ? "  (cleanup FAILED)" : s.cleanup.status === "kept" ? "  (sessions kept)" : "";
    const why = s.error !== undefined ? `  ${s.error}` : "";
    return `  ${s.status === "passed" ? "PASSED" : "FAILED"}  ${s.name.padEnd(width)}  ${seconds(s.durationMs).padStart(7)}${cleanup}${why}`;
  });
  return [
    "",
    `==== SUMMARY: ${passed} passed, ${failed} failed (${seconds(run.durationMs)}) ====`,
    ...rows,
    `==== ${run.passed ? "PASSED" : "FAILED"} ====`,
    "",
  ].join("\n");
}

/** The `--json` document. */
export function toJson(run: RunResult): string {
  return `${JSON.stringify(run, null, 2)}\n`;
}

/** A JUnit XML report: one test suite, one test case per scenario, steps in system-out. */
export function toJunitXml(run: RunResult): string {
  const failures = run.scenarios.filter((s) => s.status === "failed" || s.cleanup.status === "failed").length;
  const cases = run.scenarios.map((s) => junitCase(s)).join("\n");
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites name="integrationtests" tests="${run.scenarios.length}" failures="${failures}" time="${run.durationMs / 1000}">`,
    `  <testsuite name="integrationtests" tests="${run.scenarios.length}" failures="${failures}" errors="0" skipped="0" time="${run.durationMs / 1000}" timestamp="${run.startedAt}">`,
    `    <properties><property name="gateway" value="${xml(run.gateway)}"/></properties>`,
    cases,
    "  </testsuite>",
    "</testsuites>",
    "",
  ].join("\n");
}

function junitCase(s: ScenarioResult): string {
  const steps = [...s.steps, ...s.cleanup.steps].flatMap(formatStep).join("\n");
  const failed = s.status === "failed" || s.cleanup.status === "failed";
  const message = s.error ?? (s.cleanup.status === "failed" ? "cleanup failed" : "");
  const failure = failed
    ? `\n      <failure message="${xml(message)}" type="ScenarioFailure">${xml(
        [...s.steps, ...s.cleanup.steps]
          .filter((st) => st.status === "failed")
          .flatMap(formatStep)
          .join("\n"),
      )}</failure>`
    : "";
  return `    <testcase classname="integrationtests" name="${xml(s.name)}" time="${s.durationMs / 1000}">${failure}
      <system-out>${xml([...steps.split("\n"), ...s.notes.map((n) => `  · ${n}`)].join("\n"))}</system-out>
    </testcase>`;
}

function xml(text: string): string {
  return (
    text
      // biome-ignore lint/suspicious/noControlCharactersInRegex: XML 1.0 forbids these characters.
      .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, "")
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;")
  );
}

function milliseconds(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}
