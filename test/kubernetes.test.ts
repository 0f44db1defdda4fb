// The Kubernetes manifests (SPEC 13) without a cluster: every kustomization renders, every
// object passes the Kubernetes schema (kubernetes-models, offline) with no unknown field, and
// the product's own rules hold. Each rule is also shown to catch a broken manifest.
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import {
  applyJsonPatch,
  checkKubernetes,
  checkObjects,
  type K8sObject,
  renderKustomization,
  validateObject,
} from "../scripts/kubernetes-check.js";
import { processVariables } from "../scripts/process-variables.js";
import { repoRoot } from "../scripts/up-control-client.js";

const root = join(repoRoot, "deploy", "kubernetes");
const rendered = (overlay: string) => renderKustomization(join(root, overlay)).objects;
const clone = <T>(v: T): T => structuredClone(v);
const byName = (objects: K8sObject[], kind: string, name: string) =>
  objects.find((o) => o.kind === kind && o.metadata.name === name) as K8sObject;
// biome-ignore lint/suspicious/noExplicitAny: tests reach into manifests freely
type Any = any;

describe("deploy/kubernetes", () => {
  it("every kustomization renders and every object is valid", async () => {
    const reports = await checkKubernetes(root);
    const problems = reports.flatMap((r) => r.problems.map((p) => `${r.kustomization}: ${p}`));
    assert.deepEqual(problems, []);
    assert.deepEqual(
      reports.map((r) => r.kustomization),
      ["base", "overlays/postgres", "overlays/postgres-tls", "overlays/sqlite"],
    );
  });

  it("has both shapes: one gateway on SQLite with a volume, two gateways on PostgreSQL from a Secret", () => {
    const sqlite = byName(rendered("overlays/sqlite"), "Deployment", "myservice-gateway") as Any;
    assert.equal(sqlite.spec.replicas, 1);
    assert.equal(sqlite.spec.strategy.type, "Recreate");
    assert.ok(sqlite.spec.template.spec.volumes.some((v: Any) => v.persistentVolumeClaim?.claimName === "myservice-lease-db"));
    const postgres = rendered("overlays/postgres");
    const gateway = byName(postgres, "Deployment", "myservice-gateway") as Any;
    assert.ok(gateway.spec.replicas >= 2);
    const url = gateway.spec.template.spec.containers[0].env.find((e: Any) => e.name === "LEASE_DB_URL");
    assert.deepEqual(url.valueFrom.secretKeyRef, { name: "myservice-lease-db", key: "url" });
    const service = byName(postgres, "Service", "myservice-gateway") as Any;
    assert.equal(service.spec.ports[0].appProtocol, "kubernetes.io/h2c");
    assert.equal(service.spec.ports[0].port, 10000);
    const pdb = byName(postgres, "PodDisruptionBudget", "myservice-gateway");
    assert.ok(pdb);
    const headless = byName(postgres, "Service", "myservice") as Any;
    assert.equal(headless.spec.clusterIP, "None");
  });

  it("instances hold no signing material and only gateways reach them; TLS adds certificates from Secrets", () => {
    for (const overlay of ["overlays/sqlite", "overlays/postgres-tls"]) {
      const objects = rendered(overlay);
      const instance = (byName(objects, "Deployment", "myservice") as Any).spec.template.spec;
      const names = instance.containers[0].env.map((e: Any) => e.name);
      for (const secret of ["JWT_SECRET", "JWT_PRIVATE_KEY_FILE"]) assert.ok(!names.includes(secret), `${overlay}: ${secret}`);
      assert.ok(names.includes("JWT_JWKS_URL"));
      assert.ok(!instance.volumes.some((v: Any) => v.secret?.secretName === "myservice-token-key"), "the token key is not mounted");
      const policy = byName(objects, "NetworkPolicy", "myservice") as Any;
      assert.deepEqual(policy.spec.ingress[0].from[0].podSelector.matchLabels["app.kubernetes.io/name"], "gateway");
    }
    const tls = rendered("overlays/postgres-tls");
    const gateway = (byName(tls, "Deployment", "myservice-gateway") as Any).spec.template.spec.containers[0];
    const env = Object.fromEntries(gateway.env.map((e: Any) => [e.name, e.value]));
    assert.equal(env.TLS_CERT_FILE, "/etc/myservice/tls/tls.crt");
    assert.equal(env.UPSTREAM_TLS_CA_FILE, "/etc/myservice/upstream-tls/ca.crt");
    assert.equal(gateway.readinessProbe.httpGet.scheme, "HTTPS");
    const jwks = (byName(tls, "Deployment", "myservice") as Any).spec.template.spec.containers[0].env.find(
      (e: Any) => e.name === "JWT_JWKS_URL",
    );
    assert.match(jwks.value, /^https:/);
  });

  it("the processes read every variable the manifests set; LEASE_DB_URL is the one pending (scale-out work)", () => {
    const gateway = processVariables("gateway");
    for (const name of [
      "JWT_PRIVATE_KEY_FILE",
      "JWT_PREVIOUS_KEYS",
      "TLS_CERT_FILE",
      "TLS_CLIENT_AUTH",
      "UPSTREAM_TLS_CA_FILE",
      "NODE_ENV",
    ]) {
      assert.ok(gateway.has(name), name);
    }
    const myservice = processVariables("myservice");
    for (const name of ["JWT_JWKS_URL", "JWT_PUBLIC_KEY_FILE", "HOSTNAME", "TLS_CLIENT_CA_FILE"]) assert.ok(myservice.has(name), name);
    assert.ok(!myservice.has("JWT_PRIVATE_KEY_FILE"));
    assert.ok(gateway.has("LEASE_DB_URL"), "LEASE_DB_URL");
  });
});

describe("the checks catch broken manifests", () => {
  const objects = rendered("overlays/sqlite");
  const gatewayOf = (o: K8sObject[]) => (byName(o, "Deployment", "myservice-gateway") as Any).spec.template.spec;

  it("schema: an unknown field, a wrong type, a missing required field, an unknown kind", async () => {
    const deployment = byName(objects, "Deployment", "myservice-gateway");
    const typo = clone(deployment) as Any;
    typo.spec.replicass = 2;
    typo.spec.template.spec.containers[0].imagePullPolcy = "Always";
    assert.deepEqual((await validateObject(typo)).sort(), [
      "Deployment/myservice-gateway: unknown field /spec/replicass",
      "Deployment/myservice-gateway: unknown field /spec/template/spec/containers/0/imagePullPolcy",
    ]);
    const wrongType = clone(deployment) as Any;
    wrongType.spec.replicas = "two";
    assert.match((await validateObject(wrongType)).join("\n"), /spec\/replicas must be integer/);
    const noContainers = clone(deployment) as Any;
    delete noContainers.spec.template.spec.containers;
    assert.match((await validateObject(noContainers)).join("\n"), /must have required property containers/);
    assert.match((await validateObject({ ...clone(deployment), kind: "Deploymnet" })).join("\n"), /not a Kubernetes 1\.27 kind/);
  });

  it("environment: a variable no process reads, a value loadConfig refuses, a file outside the mounts", () => {
    const broken = clone(objects);
    const container = gatewayOf(broken).containers[0];
    container.env.push({ name: "JWT_SECRETT", value: "x".repeat(40) });
    container.env.push({ name: "UPSTREAM_TLS_CA_FILE", value: "/nowhere/ca.crt" });
    (byName(broken, "ConfigMap", "myservice-gateway-config") as Any).data.LEASE_IDLE_TTL = "forever";
    const problems = checkObjects(broken).join("\n");
    assert.match(problems, /sets JWT_SECRETT, which the gateway does not read/);
    assert.match(problems, /the gateway would refuse this environment: .*LEASE_IDLE_TTL="forever"/);
    assert.match(problems, /UPSTREAM_TLS_CA_FILE=\/nowhere\/ca\.crt is not inside a mounted volume/);
  });

  it("references and security: a missing Secret, a selector that matches nothing, a root pod, no probes", () => {
    const broken = clone(objects);
    const pod = gatewayOf(broken);
    pod.volumes.find((v: Any) => v.name === "users").secret.secretName = "no-such-secret";
    delete pod.securityContext.runAsNonRoot;
    delete pod.containers[0].livenessProbe;
    pod.containers[0].securityContext.readOnlyRootFilesystem = false;
    (byName(broken, "Service", "myservice-gateway") as Any).spec.selector["app.kubernetes.io/name"] = "gatewy";
    const problems = checkObjects(broken).join("\n");
    assert.match(problems, /uses Secret no-such-secret, which is not defined/);
    assert.match(problems, /runAsNonRoot: true/);
    assert.match(problems, /needs readiness and liveness probes/);
    assert.match(problems, /readOnlyRootFilesystem: true/);
    assert.match(problems, /Service\/myservice-gateway: its selector matches no pod/);
  });

  it("rendering: a patch of a path that does not exist, an unsupported kustomization field, a file no kustomization uses", async () => {
    assert.throws(
      () => applyJsonPatch({ spec: {} }, [{ op: "replace", path: "/spec/replicas", value: 1 }], "t"),
      /replicas does not exist/,
    );
    const dir = mkdtempSync(join(tmpdir(), "k8s-broken-"));
    after(() => rmSync(dir, { recursive: true, force: true }));
    cpSync(root, dir, { recursive: true });
    const sqlite = join(dir, "overlays", "sqlite", "kustomization.yaml");
    writeFileSync(sqlite, `${readFileSync(sqlite, "utf8")}namePrefix: prod-\n`);
    writeFileSync(join(dir, "base", "forgotten.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: forgotten\n");
    const reports = await checkKubernetes(dir);
    const problems = reports.flatMap((r) => r.problems).join("\n");
    assert.match(problems, /namePrefix is not supported by this checker/);
    assert.match(problems, /base\/forgotten\.yaml: no kustomization uses it/);
  });
});
