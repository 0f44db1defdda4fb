import { resolve } from "node:path";
import { checkCompose, checkComposePostgres, loadYaml } from "./compose-check.js";

const file = resolve(process.argv[2] ?? "compose.yaml");
try {
  const doc = loadYaml(file);
  const problems = /postgres/.test(file) ? checkComposePostgres(doc) : checkCompose(doc);
  if (problems.length > 0) {
    process.stderr.write(`check-compose: ${file}:\n${problems.map((p) => `  - ${p}`).join("\n")}\n`);
    process.exit(1);
  }
  process.stdout.write(`check-compose: ${file}: structure and environment in step with npm run up: ok\n`);
} catch (error) {
  process.stderr.write(`check-compose: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
}
