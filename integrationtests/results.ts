/** Outcome of one step of a scenario. */
export type StepStatus = "passed" | "failed" | "skipped";

/** One step as it ran: what the output prints and `--json` reports. */
export interface StepResult {
  readonly title: string;
  readonly status: StepStatus;
  /** Wall time of the step, milliseconds. */
  readonly durationMs: number;
  /** What was observed, e.g. `→ pod myservice-2` or `→ UNAUTHENTICATED (16) "missing session-id"`. */
  readonly detail?: string;
  /** Why the step failed or was skipped. */
  readonly error?: string;
  /** What the step expected, when it failed on a comparison. */
  readonly expected?: string;
  /** What it received instead. */
  readonly received?: string;
  /** For steps that expected an error: the status the gateway answered. */
  readonly receivedError?: { readonly code: string; readonly codeNumber: number; readonly message: string };
  /** `cleanup` for steps run after the scenario to give back what it leased. */
  readonly phase?: "scenario" | "restore" | "cleanup";
}

/** Outcome of one scenario. */
export interface ScenarioResult {
  readonly name: string;
  readonly status: "passed" | "failed";
  readonly durationMs: number;
  readonly steps: readonly StepResult[];
  readonly notes: readonly string[];
  /** First failure, one line. */
  readonly error?: string;
  /** Cleanup after the scenario (sessions it left leased); failed cleanup fails the run. */
  readonly cleanup: { readonly status: "passed" | "failed" | "none" | "kept"; readonly steps: readonly StepResult[] };
}

/** Outcome of a CLI run (one scenario or `all`). */
export interface RunResult {
  readonly gateway: string;
  readonly startedAt: string;
  readonly durationMs: number;
  readonly passed: boolean;
  readonly scenarios: readonly ScenarioResult[];
}

/** Receives progress as it happens (the text output, the node:test diagnostics). */
export interface Reporter {
  scenarioStarted(name: string, description: string): void;
  step(step: StepResult): void;
  note(text: string): void;
  scenarioFinished(result: ScenarioResult): void;
  cleanupFinished(result: ScenarioResult): void;
}
