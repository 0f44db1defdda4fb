import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { configLoader, type ProcessName, processVariables } from "./process-variables.js";
import { loadYamlDocuments } from "./yaml.js";

/** A Kubernetes object as read from YAML. */
export interface K8sObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly labels?: Record<string, string> };
  readonly [field: string]: unknown;
}

/** A kustomization this checker cannot render faithfully, or a manifest that is not an object. */
export class KustomizeError extends Error {
  override readonly name = "KustomizeError";
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const kustomizationKeys = new Set(["apiVersion", "kind", "resources", "components", "patches"]);

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Applies RFC 6902 `add`, `replace` and `remove` operations (what the kustomizations use). */
export function applyJsonPatch(document: Json, operations: unknown, where: string): Json {
  if (!Array.isArray(operations)) throw new KustomizeError(`${where}: a patch must be a list of JSON 6902 operations`);
  for (const op of operations) {
    if (!isObject(op) || typeof op.path !== "string" || !["add", "replace", "remove"].includes(String(op.op))) {
      throw new KustomizeError(`${where}: unsupported patch operation ${JSON.stringify(op)}`);
    }
    const parts = op.path
      .split("/")
      .slice(1)
      .map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
    const last = parts.pop();
    if (last === undefined) throw new KustomizeError(`${where}: empty path`);
    let parent: Json = document;
    for (const part of parts) {
      const next: Json | undefined = Array.isArray(parent) ? parent[Number(part)] : isObject(parent) ? parent[part] : undefined;
      if (next === undefined) throw new KustomizeError(`${where}: ${op.op} ${op.path}: ${part} does not exist`);
      parent = next;
    }
    const value = structuredClone(op.value) as Json;
    if (Array.isArray(parent)) {
      const index = last === "-" ? parent.length : Number(last);
      if (!Number.isInteger(index) || index < 0 || index > parent.length || (op.op !== "add" && index >= parent.length)) {
        throw new KustomizeError(`${where}: ${op.op} ${op.path}: no index ${last}`);
      }
      if (op.op === "add") parent.splice(index, 0, value);
      else if (op.op === "replace") parent[index] = value;
      else parent.splice(index, 1);
    } else if (isObject(parent)) {
      if (op.op !== "add" && !(last in parent)) throw new KustomizeError(`${where}: ${op.op} ${op.path}: ${last} does not exist`);
      if (op.op === "remove") delete parent[last];
      else parent[last] = value;
    } else {
      throw new KustomizeError(`${where}: ${op.op} ${op.path}: the parent is not an object or a list`);
    }
  }
  return document;
}

function readKustomization(dir: string): JsonObject {
  const file = join(dir, "kustomization.yaml");
  const [doc] = loadYamlDocuments(file);
  if (!isObject(doc)) throw new KustomizeError(`${file}: not a mapping`);
  for (const key of Object.keys(doc)) {
    if (!kustomizationKeys.has(key))
      throw new KustomizeError(`${file}: ${key} is not supported by this checker (resources, components, patches only)`);
  }
  return doc;
}

function applyPatches(objects: JsonObject[], kustomization: JsonObject, dir: string): void {
  for (const [i, entry] of ((kustomization.patches as Json[] | undefined) ?? []).entries()) {
    const where = `${join(dir, "kustomization.yaml")} patches[${i}]`;
    if (!isObject(entry) || !isObject(entry.target) || typeof entry.patch !== "string") {
      throw new KustomizeError(`${where}: expected { target: { kind, name }, patch: <JSON 6902 operations> }`);
    }
    const { kind, name } = entry.target;
    const targets = objects.filter((o) => o.kind === kind && isObject(o.metadata) && o.metadata.name === name);
    if (targets.length !== 1) throw new KustomizeError(`${where}: targets ${targets.length} objects (${kind}/${name}), not one`);
    const operations = loadYamlString(entry.patch, where);
    applyJsonPatch(targets[0] as Json, operations, where);
  }
}

function loadYamlString(text: string, where: string): unknown {
  // The patch text is YAML too: parse it with the same parser, through a temporary file.
  const dir = mkdtempSync(join(tmpdir(), "kustomize-patch-"));
  try {
    const file = join(dir, "patch.yaml");
    writeFileSync(file, text);
    return loadYamlDocuments(file)[0];
  } catch (error) {
    throw new KustomizeError(`${where}: ${(error as Error).message}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Renders a kustomization as `kubectl apply -k` would for the fields the manifests use:
 * `resources` (files, or directories with their own kustomization), then `components` (their
 * resources and patches), then `patches` (JSON 6902, by kind and name). Anything else is
 * refused, so the checker never validates something other than what a cluster would get.
 * Also returns every file it read.
 */
export function renderKustomization(dir: string): { objects: K8sObject[]; files: string[] } {
  const kustomization = readKustomization(dir);
  const files = [join(dir, "kustomization.yaml")];
  const objects: JsonObject[] = [];
  const include = (entry: Json, what: string) => {
    if (typeof entry !== "string") throw new KustomizeError(`${dir}: ${what} entries are paths`);
    const path = resolve(dir, entry);
    if (statSync(path).isDirectory()) {
      const sub = renderKustomization(path);
      objects.push(...(sub.objects as unknown as JsonObject[]));
      files.push(...sub.files);
      return;
    }
    files.push(path);
    for (const doc of loadYamlDocuments(path)) {
      if (doc === null) continue;
      if (!isObject(doc) || typeof doc.kind !== "string" || !isObject(doc.metadata))
        throw new KustomizeError(`${path}: not a Kubernetes object`);
      objects.push(doc);
    }
  };
  if (kustomization.kind !== "Kustomization")
    throw new KustomizeError(`${dir}: kind ${String(kustomization.kind)} cannot be rendered alone`);
  for (const entry of (kustomization.resources as Json[] | undefined) ?? []) include(entry, "resources");
  for (const entry of (kustomization.components as Json[] | undefined) ?? []) {
    const componentDir = resolve(dir, String(entry));
    const component = readKustomization(componentDir);
    if (component.kind !== "Component") throw new KustomizeError(`${componentDir}: a component must be kind Component`);
    files.push(join(componentDir, "kustomization.yaml"));
    for (const resource of (component.resources as Json[] | undefined) ?? []) include(resolve(componentDir, String(resource)), "resources");
    applyPatches(objects, component, componentDir);
  }
  applyPatches(objects, kustomization, dir);
  const seen = new Set<string>();
  for (const o of objects) {
    const id = `${o.kind}/${(o.metadata as JsonObject).name}`;
    if (seen.has(id)) throw new KustomizeError(`${dir}: ${id} is defined twice`);
    seen.add(id);
  }
  return { objects: objects as unknown as K8sObject[], files };
}

/** The kubernetes-models class of an object (`apps/v1` + `Deployment` → `kubernetes-models/apps/v1/Deployment`). */
async function modelOf(object: K8sObject): Promise<{ prototype: { validate(): void } } | undefined> {
  try {
    const module = (await import(`kubernetes-models/${object.apiVersion}/${object.kind}`)) as Record<
      string,
      { prototype: { validate(): void } }
    >;
    return module[object.kind];
  } catch {
    return undefined;
  }
}

/**
 * Validates `object` against the Kubernetes 1.27 schema kubernetes-models ships (types,
 * required fields, formats, enums), and refuses fields the schema does not know: the schema
 * alone accepts `replicass: 3`, a typo the API server would drop silently. Unknown fields are
 * found by watching which properties the validator reads (a field it never asks for is not in
 * the schema; a map it enumerates, such as labels, is open).
 */
export async function validateObject(object: K8sObject): Promise<string[]> {
  const id = `${object.kind}/${object.metadata?.name}`;
  const model = await modelOf(object);
  if (model === undefined) return [`${id}: ${object.apiVersion} ${object.kind} is not a Kubernetes 1.27 kind`];
  const read = new WeakMap<object, Set<string>>();
  const open = new WeakSet<object>();
  const note = (target: object, key: string | symbol) => {
    if (typeof key !== "string") return;
    const keys = read.get(target) ?? new Set<string>();
    read.set(target, keys);
    keys.add(key);
  };
  const watch = (value: unknown): unknown =>
    value === null || typeof value !== "object"
      ? value
      : new Proxy(value, {
          get(target, key, receiver) {
            note(target, key);
            return watch(Reflect.get(target, key, receiver));
          },
          has(target, key) {
            note(target, key);
            return Reflect.has(target, key);
          },
          ownKeys(target) {
            open.add(target);
            return Reflect.ownKeys(target);
          },
        });
  const problems: string[] = [];
  try {
    model.prototype.validate.call(watch(object));
  } catch (error) {
    problems.push(`${id}: ${(error as Error).message.replace(/\s+/g, " ")}`);
  }
  const walk = (value: unknown, path: string) => {
    if (value === null || typeof value !== "object") return;
    if (Array.isArray(value)) {
      for (const [i, item] of value.entries()) walk(item, `${path}/${i}`);
      return;
    }
    for (const [key, child] of Object.entries(value)) {
      if (!open.has(value) && !read.get(value)?.has(key)) problems.push(`${id}: unknown field ${path}/${key}`);
      walk(child, `${path}/${key}`);
    }
  };
  walk(object, "");
  return problems;
}

/** Secrets made outside the manifests (cert-manager Certificates, docs/kubernetes.md). */
export const externalSecrets: ReadonlySet<string> = new Set([
  "myservice-gateway-tls",
  "myservice-gateway-client-tls",
  "myservice-instance-tls",
]);

interface Container {
  name: string;
  image: string;
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string }; fieldRef?: unknown } }[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  volumeMounts?: { name: string; mountPath: string }[];
  securityContext?: { readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean; capabilities?: { drop?: string[] } };
  readinessProbe?: unknown;
  livenessProbe?: unknown;
  resources?: { requests?: unknown; limits?: unknown };
}

interface PodSpec {
  containers: Container[];
  volumes?: {
    name: string;
    secret?: { secretName: string };
    configMap?: { name: string };
    persistentVolumeClaim?: { claimName: string };
  }[];
  securityContext?: { runAsNonRoot?: boolean };
}

/** The process an image runs: ours by name, or `undefined` for another image (PostgreSQL). */
function processOf(image: string): ProcessName | undefined {
  if (/\/gateway(:|@|$)/.test(image)) return "gateway";
  if (/\/myservice(:|@|$)/.test(image)) return "myservice";
  return undefined;
}

function find(objects: readonly K8sObject[], kind: string, name: string): K8sObject | undefined {
  return objects.find((o) => o.kind === kind && o.metadata.name === name);
}

function secretValue(objects: readonly K8sObject[], name: string, key: string): string | undefined {
  const secret = find(objects, "Secret", name);
  const stringData = secret?.stringData as Record<string, string> | undefined;
  const data = secret?.data as Record<string, string> | undefined;
  return stringData?.[key] ?? (data?.[key] !== undefined ? Buffer.from(data[key] as string, "base64").toString() : undefined);
}

function matches(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  return selector !== undefined && Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

/**
 * What the schema cannot see: every variable a container of ours sets is one its process reads
 * (`loadConfig`; pending ones from other work listed in `process-variables.ts`), and the whole
 * environment passes that `loadConfig`; every Secret, ConfigMap and claim a pod uses exists (or
 * is one cert-manager makes); every file a variable names lies in a mounted volume; pods run
 * as non-root with a read-only root filesystem, dropped capabilities, probes and resources;
 * Services, PodDisruptionBudgets and NetworkPolicies select pods that exist.
 */
export function checkObjects(objects: readonly K8sObject[]): string[] {
  const problems: string[] = [];
  const workloads = objects.filter((o) => o.kind === "Deployment" || o.kind === "StatefulSet");
  const podLabels = workloads.map(
    (w) => (w.spec as { template: { metadata: { labels: Record<string, string> } } }).template.metadata.labels ?? {},
  );
  for (const workload of workloads) {
    const id = `${workload.kind}/${workload.metadata.name}`;
    const pod = (workload.spec as { template: { spec: PodSpec } }).template.spec;
    const claimTemplates = ((workload.spec as { volumeClaimTemplates?: { metadata: { name: string } }[] }).volumeClaimTemplates ?? []).map(
      (t) => t.metadata.name,
    );
    if (pod.securityContext?.runAsNonRoot !== true) problems.push(`${id}: the pod must set securityContext.runAsNonRoot: true`);
    for (const volume of pod.volumes ?? []) {
      const secret = volume.secret?.secretName;
      if (secret !== undefined && find(objects, "Secret", secret) === undefined && !externalSecrets.has(secret)) {
        problems.push(`${id}: volume ${volume.name} uses Secret ${secret}, which is not defined`);
      }
      const claim = volume.persistentVolumeClaim?.claimName;
      if (claim !== undefined && find(objects, "PersistentVolumeClaim", claim) === undefined) {
        problems.push(`${id}: volume ${volume.name} uses claim ${claim}, which is not defined`);
      }
    }
    for (const container of pod.containers) {
      const cid = `${id} container ${container.name}`;
      const sc = container.securityContext;
      if (sc?.readOnlyRootFilesystem !== true || sc.allowPrivilegeEscalation !== false || !sc.capabilities?.drop?.includes("ALL")) {
        problems.push(`${cid}: needs readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities.drop: [ALL]`);
      }
      if (container.readinessProbe === undefined || container.livenessProbe === undefined)
        problems.push(`${cid}: needs readiness and liveness probes`);
      if (container.resources?.requests === undefined || container.resources.limits === undefined)
        problems.push(`${cid}: needs resource requests and limits`);
      for (const mount of container.volumeMounts ?? []) {
        if (!(pod.volumes ?? []).some((v) => v.name === mount.name) && !claimTemplates.includes(mount.name))
          problems.push(`${cid}: mounts ${mount.name}, which is not a volume of the pod`);
      }
      const process = processOf(container.image);
      if (process === undefined) continue;
      const env: Record<string, string> = {};
      for (const from of container.envFrom ?? []) {
        if (from.configMapRef !== undefined) {
          const map = find(objects, "ConfigMap", from.configMapRef.name);
          if (map === undefined) problems.push(`${cid}: envFrom ConfigMap ${from.configMapRef.name} is not defined`);
          Object.assign(env, map?.data ?? {});
        }
        if (from.secretRef !== undefined) problems.push(`${cid}: envFrom a Secret hides which variables it sets; name them in env`);
      }
      for (const variable of container.env ?? []) {
        const ref = variable.valueFrom?.secretKeyRef;
        if (ref !== undefined) {
          const value = secretValue(objects, ref.name, ref.key);
          if (value === undefined) problems.push(`${cid}: ${variable.name} reads ${ref.key} of Secret ${ref.name}, which is not defined`);
          env[variable.name] = value ?? "";
        } else {
          env[variable.name] = variable.value ?? "";
        }
      }
      const known = processVariables(process);
      for (const name of Object.keys(env)) {
        if (!known.has(name)) problems.push(`${cid}: sets ${name}, which the ${process} does not read`);
      }
      try {
        configLoader(process)({ HOSTNAME: "pod-name", ...env });
      } catch (error) {
        problems.push(`${cid}: the ${process} would refuse this environment: ${(error as Error).message.replace(/\s+/g, " ")}`);
      }
      for (const [name, value] of Object.entries(env)) {
        if (!/_FILE$/.test(name)) continue;
        if (!(container.volumeMounts ?? []).some((m) => value.startsWith(`${m.mountPath.replace(/\/$/, "")}/`))) {
          problems.push(`${cid}: ${name}=${value} is not inside a mounted volume`);
        }
      }
    }
  }
  for (const o of objects) {
    const id = `${o.kind}/${o.metadata.name}`;
    const spec = o.spec as Record<string, unknown> | undefined;
    const selector =
      o.kind === "Service"
        ? (spec?.selector as Record<string, string> | undefined)
        : o.kind === "PodDisruptionBudget" || o.kind === "NetworkPolicy"
          ? ((spec?.selector ?? spec?.podSelector) as { matchLabels?: Record<string, string> } | undefined)?.matchLabels
          : undefined;
    if (["Service", "PodDisruptionBudget", "NetworkPolicy"].includes(o.kind) && !podLabels.some((labels) => matches(selector, labels))) {
      problems.push(`${id}: its selector matches no pod of the manifests`);
    }
    if (o.kind === "NetworkPolicy") {
      for (const rule of (spec?.ingress as { from?: { podSelector?: { matchLabels?: Record<string, string> } }[] }[] | undefined) ?? []) {
        for (const peer of rule.from ?? []) {
          if (peer.podSelector !== undefined && !podLabels.some((labels) => matches(peer.podSelector?.matchLabels, labels))) {
            problems.push(`${id}: an ingress rule allows pods that do not exist`);
          }
        }
      }
    }
  }
  return problems;
}

/** Result of checking one kustomization. */
export interface KustomizationReport {
  readonly kustomization: string;
  readonly objects: number;
  readonly problems: readonly string[];
}

/** Directories under `root` holding a `kustomization.yaml`. */
function kustomizationDirs(root: string): string[] {
  const found: string[] = [];
  const visit = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) visit(join(dir, entry.name));
      else if (entry.name === "kustomization.yaml") found.push(dir);
    }
  };
  visit(root);
  return found.sort();
}

/**
 * Renders and checks every kustomization under `root` (components through the overlays that
 * use them); also fails for a YAML file no kustomization uses (it would escape validation).
 */
export async function checkKubernetes(root: string): Promise<KustomizationReport[]> {
  const reports: KustomizationReport[] = [];
  const used = new Set<string>();
  for (const dir of kustomizationDirs(root)) {
    const [doc] = loadYamlDocuments(join(dir, "kustomization.yaml"));
    if (isObject(doc) && doc.kind === "Component") continue;
    const name = relative(root, dir) || ".";
    try {
      const { objects, files } = renderKustomization(dir);
      for (const f of files) used.add(resolve(f));
      const problems = [...(await Promise.all(objects.map(validateObject))).flat(), ...checkObjects(objects)];
      reports.push({ kustomization: name, objects: objects.length, problems });
    } catch (error) {
      reports.push({ kustomization: name, objects: 0, problems: [(error as Error).message] });
    }
  }
  const orphans: string[] = [];
  const visit = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) visit(path);
      else if (/\.ya?ml$/.test(entry.name) && !used.has(resolve(path))) orphans.push(relative(root, path));
    }
  };
  visit(root);
  if (orphans.length > 0)
    reports.push({ kustomization: "(files)", objects: 0, problems: orphans.map((f) => `${f}: no kustomization uses it`) });
  return reports;
}
