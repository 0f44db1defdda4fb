import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { checkCompose, checkComposePostgres, loadYaml } from "../scripts/compose-check.js";
import { repoRoot } from "../scripts/up-control-client.js";

interface ServiceDoc {
  environment: Record<string, string>;
  restart?: string;
  container_name?: string;
  deploy?: { replicas: number };
}
interface ComposeDoc {
  services: Record<"gateway" | "myservice", ServiceDoc>;
}

function loadRepoCompose(): ComposeDoc | undefined {
  try {
    return loadYaml(join(repoRoot, "compose.yaml")) as ComposeDoc;
  } catch {
    return undefined;
  }
}

const doc = loadRepoCompose();
const skip = doc === undefined ? "no python3-yaml here (apt-get install -y docker-compose)" : false;

describe("checkCompose()", () => {
  it("accepts the repository's compose.yaml", { skip }, () => {
    assert.deepEqual(checkCompose(doc), []);
  });

  it("fails when compose sets a variable npm run up does not", { skip }, () => {
    const drifted = structuredClone(doc) as ComposeDoc;
    drifted.services.gateway.environment.NEW_KNOB = "1";
    delete drifted.services.myservice.environment.SUBSCRIBE_INTERVAL_MS;
    const problems = checkCompose(drifted);
    assert.ok(
      problems.some((p) => p.includes("gateway: compose sets NEW_KNOB")),
      problems.join("\n"),
    );
    assert.ok(
      problems.some((p) => p.includes("myservice: compose does not set SUBSCRIBE_INTERVAL_MS")),
      problems.join("\n"),
    );
  });

  it("fails when a default differs from the launcher's", { skip }, () => {
    const drifted = structuredClone(doc) as ComposeDoc;
    // biome-ignore lint/suspicious/noTemplateCurlyInString: compose interpolation, not a template
    drifted.services.gateway.environment.LEASE_IDLE_TTL = "${LEASE_IDLE_TTL:-10m}";
    drifted.services.myservice.restart = "on-failure";
    drifted.services.myservice.container_name = "ms";
    const problems = checkCompose(drifted);
    assert.equal(problems.length, 3, problems.join("\n"));
  });
});

describe("checkComposePostgres()", () => {
  const pgDoc = (() => {
    try {
      return loadYaml(join(repoRoot, "compose.postgres.yaml")) as ComposeDoc & {
        services: Record<string, ServiceDoc & { deploy?: { replicas: number } }>;
      };
    } catch {
      return undefined;
    }
  })();

  it("accepts the repository's compose.postgres.yaml", { skip }, () => {
    assert.deepEqual(checkComposePostgres(pgDoc), []);
  });

  it("fails without a shared store, with one gateway, or with a variable npm run up does not set", { skip }, () => {
    const drifted = structuredClone(pgDoc)!;
    delete drifted.services.gateway!.environment.LEASE_DB_URL;
    drifted.services.gateway!.deploy = { replicas: 1 };
    drifted.services.gateway!.environment.NEW_KNOB = "1";
    const problems = checkComposePostgres(drifted);
    for (const needle of ["LEASE_DB_URL", "replicas must be at least 2", "compose sets NEW_KNOB"]) {
      assert.ok(
        problems.some((p) => p.includes(needle)),
        `${needle} not reported:\n${problems.join("\n")}`,
      );
    }
  });
});
