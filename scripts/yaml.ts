import { spawnSync } from "node:child_process";

/**
 * Parses every document of a YAML file with PyYAML (Debian `python3-yaml`, which the
 * `docker-compose` package depends on), as JSON; throws when no Python with PyYAML is found.
 */
export function loadYamlDocuments(file: string): unknown[] {
  const program = "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)";
  for (const python of ["/usr/bin/python3", "python3"]) {
    const run = spawnSync(python, ["-c", program, file], { encoding: "utf8" });
    if (run.status === 0) return JSON.parse(run.stdout) as unknown[];
    if (run.status !== null && !/No module named .?yaml/.test(run.stderr)) {
      throw new Error(`cannot parse ${file}: ${run.stderr.trim()}`);
    }
  }
  throw new Error("no YAML parser: install Debian's python3-yaml (apt-get install -y docker-compose brings it)");
}

/** The one document of a YAML file. */
export function loadYaml(file: string): unknown {
  return loadYamlDocuments(file)[0];
}
