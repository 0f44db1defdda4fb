import { writeFileSync } from "node:fs";
import { type CliSettings, parseCli, usage } from "./cli-options.js";
import type { ScenarioOptions } from "./context.js";
import { createTextReporter, formatSummary, toJson, toJunitXml } from "./report.js";
import { runScenarios } from "./runner.js";
import { allScenarios, findScenario } from "./scenarios/index.js";
import { createComposeStackControl, createUpStackControl, type StackControl } from "./stack-control.js";

const names = allScenarios.map((s) => s.name);
const command = parseCli(process.argv.slice(2), process.env, names);

switch (command.kind) {
  case "help":
    process.stdout.write(usage(names));
    process.exit(0);
    break;
  case "list":
    process.stdout.write(`${names.join("\n")}\n`);
    process.exit(0);
    break;
  case "usage-error":
    process.stderr.write(`integrationtests: ${command.message}\n\n${usage(names)}`);
    process.exit(2);
    break;
  case "run":
    process.exitCode = await run(command.settings);
    // Open HTTP/2 sessions are closed by the runner; exit anyway so a stray handle cannot hang CI.
    process.exit();
}

async function run(settings: CliSettings): Promise<number> {
  let control: StackControl | undefined;
  const options: ScenarioOptions = {
    gateway: settings.gateway,
    username: settings.username,
    password: settings.password,
    role: settings.role,
    instances: settings.instances,
    subscribeIntervalMs: settings.subscribeIntervalMs,
    jwtSecret: settings.jwtSecret,
    capacityWaitMs: settings.capacityWaitMs,
    callTimeoutMs: 10_000,
    stackControl: () => {
      control ??=
        settings.composeFile !== undefined ? createComposeStackControl(settings.composeFile) : createUpStackControl(settings.controlUrl);
      return control;
    },
  };
  const progress = settings.json ? process.stderr : process.stdout;
  const reporter = createTextReporter({
    write: (text) => progress.write(text),
    color: settings.color ?? (progress.isTTY === true && process.env.NO_COLOR === undefined),
  });
  progress.write(
    `integrationtests → gateway ${settings.gateway} as ${settings.username}; ${settings.instances} instances; ` +
      `stack control: ${settings.composeFile !== undefined ? `compose ${settings.composeFile}` : settings.controlUrl}\n`,
  );
  const scenarios = settings.scenarios.map((name) => findScenario(name)).filter((s) => s !== undefined);
  const result = await runScenarios(scenarios, options, reporter, {
    keep: settings.keep,
    settle: settings.all || scenarios.length > 1,
    settleMs: settings.settleMs,
  });
  if (scenarios.length > 1) await write(progress, formatSummary(result));
  if (settings.json) await write(process.stdout, toJson(result));
  if (settings.junitFile !== undefined) {
    try {
      writeFileSync(settings.junitFile, toJunitXml(result));
      progress.write(`JUnit report written to ${settings.junitFile}\n`);
    } catch (error) {
      process.stderr.write(`cannot write ${settings.junitFile}: ${error instanceof Error ? error.message : String(error)}\n`);
      return 1;
    }
  }
  return result.passed ? 0 : 1;
}

/** Writes and waits until the text is handed to the OS (the CLI exits right after). */
function write(stream: NodeJS.WriteStream, text: string): Promise<void> {
  return new Promise((resolve) => stream.write(text, () => resolve()));
}
