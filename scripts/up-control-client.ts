import { readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { ControlAction, ProcessInfo, UpState } from "./up-protocol.js";

export type {
  ControlAction,
  ControlSignal,
  ProcessInfo,
  ProcessKind,
  ProcessState,
  RestartPolicy,
  UpState,
  UpTlsState,
} from "./up-protocol.js";
export { allGatewaysName, allInstancesName, controlActions, controlSignals, restartPolicies } from "./up-protocol.js";

/** Repository root (the folder above `scripts/`). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** State file written by `npm run up` with default options: `<repo>/data/up-stack.json`. */
export const defaultStateFile = join(repoRoot, "data", "up-stack.json");

/** Control API of `npm run up` with its default `--control-port`. */
export const defaultControlUrl = "http://127.0.0.1:10099";

/** A control API reply other than 200, or a reply that is not the expected JSON. */
export class ControlApiError extends Error {
  constructor(
    message: string,
    /** HTTP status, or 0 when the API could not be reached. */
    readonly status: number,
  ) {
    super(message);
    this.name = "ControlApiError";
  }
}

/** Options of `createControlClient`. */
export interface ControlClientOptions {
  /** Longest wait for one reply, milliseconds. Default 15,000 (a `stop` may take ~3 s per process). */
  readonly timeoutMs?: number;
}

/** Typed client of the launcher's control API (`scripts/up.ts`). */
export interface ControlClient {
  /** Base URL, e.g. `http://127.0.0.1:10099`. */
  readonly url: string;
  /** `GET /processes`. */
  processes(): Promise<ProcessInfo[]>;
  /** `GET /state`: the same document as the state file. */
  state(): Promise<UpState>;
  /** `POST /processes/<name>/<action>`; `name` may be `instances` or `gateway`. Returns the list after the action. */
  control(name: string, action: ControlAction): Promise<ProcessInfo[]>;
  /** `POST /processes/<name>/signal?sig=<sig>`; no change to the hold. */
  signal(name: string, sig: string): Promise<ProcessInfo[]>;
}

/** Creates a control API client for `controlUrl` (fetch-based, no keep-alive state of its own). */
export function createControlClient(controlUrl: string, options: ControlClientOptions = {}): ControlClient {
  const url = controlUrl.replace(/\/+$/, "");
  const timeoutMs = options.timeoutMs ?? 15_000;

  async function call<T>(method: "GET" | "POST", path: string): Promise<T> {
    let response: Response;
    try {
      response = await fetch(`${url}${path}`, { method, signal: AbortSignal.timeout(timeoutMs) });
    } catch (error) {
      throw new ControlApiError(`control API ${url} unreachable (${method} ${path}): ${String(error)}`, 0);
    }
    const text = await response.text();
    if (response.status !== 200) {
      throw new ControlApiError(`${method} ${path} -> ${response.status}: ${text.trim()}`, response.status);
    }
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ControlApiError(`${method} ${path}: reply is not JSON: ${text.slice(0, 200)}`, response.status);
    }
  }

  const processPath = (name: string) => `/processes/${encodeURIComponent(name)}`;
  return {
    url,
    processes: () => call<ProcessInfo[]>("GET", "/processes"),
    state: () => call<UpState>("GET", "/state"),
    control: (name, action) => call<ProcessInfo[]>("POST", `${processPath(name)}/${action}`),
    signal: (name, sig) => call<ProcessInfo[]>("POST", `${processPath(name)}/signal?sig=${encodeURIComponent(sig)}`),
  };
}

/** Reads a launcher state file (default: the one of `npm run up` with default options). */
export async function readUpState(file: string = defaultStateFile): Promise<UpState> {
  return JSON.parse(await readFile(file, "utf8")) as UpState;
}
