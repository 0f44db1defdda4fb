import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { repoRoot } from "./up-control-client.js";

// The production build (`npm run build`: tsc with `tsconfig.build.json` into `dist/`), which
// the launcher's `--compiled` (what `npm run up` passes), the bench and the container images run.

/** Where the build puts the JavaScript of `script`, a `.ts` path relative to the repository root. */
export function builtPath(script: string): string {
  return join(repoRoot, "dist", script.replace(/\.ts$/, ".js"));
}

/** Runs `npm run build` in the repository; throws with its output when it fails. */
export function runBuild(): void {
  const build = spawnSync("npm", ["run", "build", "--silent"], { cwd: repoRoot, encoding: "utf8" });
  if (build.status !== 0) throw new Error(`npm run build failed:\n${build.stdout}\n${build.stderr}`);
}
