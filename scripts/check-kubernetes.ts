import { resolve } from "node:path";
import { checkKubernetes } from "./kubernetes-check.js";

/**
 * `npm run check:kubernetes [dir]`: renders every kustomization under `deploy/kubernetes/` and
 * validates each object against the Kubernetes schema (kubernetes-models, offline) and the
 * product's own rules (`scripts/kubernetes-check.ts`). Exits 1 listing every problem.
 */
const root = resolve(process.argv[2] ?? "deploy/kubernetes");
const reports = await checkKubernetes(root);
let failed = false;
for (const report of reports) {
  if (report.problems.length === 0) {
    process.stdout.write(`check-kubernetes: ${report.kustomization}: ${report.objects} objects valid\n`);
  } else {
    failed = true;
    process.stderr.write(`check-kubernetes: ${report.kustomization}:\n${report.problems.map((p) => `  - ${p}`).join("\n")}\n`);
  }
}
process.exit(failed ? 1 : 0);
