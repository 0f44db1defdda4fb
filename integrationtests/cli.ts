import { readFileSync, writeFileSync } from "node:fs";
import { createControlClient, type UpTlsState } from "../scripts/up-control-client.js";
import { type CliSettings, parseCli, usage } from "./cli-options.js";
import type { ClientTls } from "./client.js";
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

/** What an `npm run up -- --tls` stack reports about its TLS files (`GET /state`), when the CLI controls one. */
async function upStackTls(settings: CliSettings): Promise<UpTlsState | undefined> {
  if (settings.composeFile !== undefined) return undefined;
  try {
    return (await createControlClient(settings.controlUrl, { timeoutMs: 2000 }).state()).tls;
  } catch {
    return undefined;
  }
}

async function run(settings: CliSettings): Promise<number> {
  let control: StackControl | undefined;
  const upTls = await upStackTls(settings);
  let gatewayTls: ClientTls | undefined;
  try {
    gatewayTls = settings.tls
      ? {
          ...(settings.caFile !== undefined ? { ca: readFileSync(settings.caFile) } : {}),
          ...(settings.certFile !== undefined && settings.keyFile !== undefined
            ? { cert: readFileSync(settings.certFile), key: readFileSync(settings.keyFile) }
            : {}),
        }
      : undefined;
  } catch (error) {
    process.stderr.write(`integrationtests: ${(error as Error).message}\n`);
    return 2;
  }
  const instanceTls: ClientTls | undefined =
    upTls === undefined
      ? undefined
      : { ca: readFileSync(upTls.ca), cert: readFileSync(upTls.instanceClient.cert), key: readFileSync(upTls.instanceClient.key) };
  const tokenSigningKeyFile = settings.jwtPrivateKeyFile ?? upTls?.tokenSigningKey;
  const options: ScenarioOptions = {
    gateway: settings.gateway,
    ...(gatewayTls !== undefined ? { gatewayTls } : {}),
    ...(instanceTls !== undefined ? { instanceTls } : {}),
    ...(tokenSigningKeyFile !== undefined ? { tokenSigningKeyFile } : {}),
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
    `integrationtests → gateway ${settings.gateway}${settings.tls ? ` over TLS${settings.caFile ? ` (CA ${settings.caFile})` : ""}` : ""} as ${settings.username}; ${settings.instances} instances; ` +
      (tokenSigningKeyFile !== undefined ? `test tokens signed with ${tokenSigningKeyFile}; ` : "") +
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
