import { randomBytes } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { type ClientTls, createOwnedTransport, type MyServiceClient, myServiceClient, type OwnedTransport } from "./client.js";
import type { Reporter, StepResult } from "./results.js";
import type { StackControl } from "./stack-control.js";

/** Settings every scenario reads; resolved once by the CLI or the test. */
export interface ScenarioOptions {
  /** Gateway `host:port`. Default `localhost:10000` (`--gateway`, `GATEWAY_ADDR`). */
  readonly gateway: string;
  /** Test user. Default `TestUser` (`--username`, `TEST_USERNAME`). */
  readonly username: string;
  /** Its password. Default `TestPassword` (`--password`, `TEST_PASSWORD`). */
  readonly password: string;
  /** Role Login must return for the test user. Default `admin` (`--role`, `TEST_ROLE`). */
  readonly role: string;
  /** Number of MyService instances in the pool. Default 3 (`--instances`). */
  readonly instances: number;
  /** The stack's `SUBSCRIBE_INTERVAL_MS`, milliseconds; bounds stream waits. Default 5000. */
  readonly subscribeIntervalMs: number;
  /** HMAC key used to mint expired or foreign tokens (`JWT_SECRET`). Default the dev secret. */
  readonly jwtSecret: string;
  /** The stack's token signing key (a PEM private key file), used instead of `jwtSecret` when set. */
  readonly tokenSigningKeyFile?: string;
  /** TLS towards the gateway (`--tls`, `--ca`, `--cert`/`--key`); cleartext (h2c) when absent. */
  readonly gatewayTls?: ClientTls;
  /** TLS towards instances reached directly (an `npm run up -- --tls` stack); cleartext when absent. */
  readonly instanceTls?: ClientTls;
  /** How long a scenario waits for a free instance after others were recycled, ms. Default 20,000. */
  readonly capacityWaitMs: number;
  /** Deadline of each unary call, ms. Default 10,000. */
  readonly callTimeoutMs: number;
  /** The stack controller, or why there is none; created on first use. */
  readonly stackControl: () => StackControl;
}

/** A comparison that did not hold; `expected`/`received` are printed under the step. */
export class CheckFailure extends Error {
  override readonly name = "CheckFailure";
  constructor(
    message: string,
    readonly expected?: string,
    readonly received?: string,
  ) {
    super(message);
  }
}

/** Thrown by `step()` after a failed step was recorded; ends the scenario. */
export class StepFailed extends Error {
  override readonly name = "StepFailed";
  constructor(readonly step: StepResult) {
    super(`${step.title}: ${step.error ?? "failed"}`);
  }
}

/** An error a step expects: exact code and exact message, or a message predicate. */
export interface ExpectedError {
  readonly code: Code;
  /** The exact `rawMessage`, or a predicate with a description (for "clear text" rows of SPEC 5). */
  readonly message: string | { readonly describe: string; readonly test: (message: string) => boolean };
}

/** A session that may hold a lease; cleanup shuts down every one still marked leased. */
export interface LeaseHolder {
  readonly id: string;
  readonly token: string;
  /** Last pod seen for the session. */
  pod: string | undefined;
}

/** `CODE (n) "message"`, the way expected errors are printed. */
export function formatStatus(code: Code, message: string): string {
  return `${codeName(code)} (${code}) ${JSON.stringify(message)}`;
}

/** `RESOURCE_EXHAUSTED` for `Code.ResourceExhausted`. */
export function codeName(code: Code): string {
  const name = Code[code] ?? `CODE_${code}`;
  return name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** How an unexpected error is shown: the gRPC status for a ConnectError, the message otherwise. */
export function describeError(error: unknown): string {
  if (error instanceof ConnectError) return formatStatus(error.code, error.rawMessage);
  if (error instanceof Error) return error.message;
  return String(error);
}

/**
 * What one scenario run owns: its steps, its connections, the sessions it leased and the
 * restore actions it registered. Scenario functions receive it and call the helpers with it.
 */
export class ScenarioContext {
  readonly steps: StepResult[] = [];
  readonly notes: string[] = [];
  /** Sessions that hold (or may hold) a lease, by id. */
  readonly leases = new Map<string, LeaseHolder>();
  /** Instances this scenario made restart (Shutdown, kill, stop); `all` waits for them. */
  recycled = 0;
  private readonly transports: OwnedTransport[] = [];
  private readonly restores: { title: string; run: () => Promise<unknown> }[] = [];
  private readonly runTag = randomBytes(3).toString("hex");
  private sessionCounter = 0;
  private phase: "scenario" | "restore" | "cleanup" = "scenario";

  constructor(
    readonly scenario: string,
    readonly options: ScenarioOptions,
    private readonly reporter: Reporter,
  ) {}

  /**
   * Runs one step, times it and reports it. `describe` turns the result into the detail
   * printed after the title. A failure is reported with expected/received and ends the scenario.
   */
  async step<T>(title: string, run: () => Promise<T>, describe?: (value: T) => string | undefined): Promise<T> {
    const started = performance.now();
    let value: T;
    try {
      value = await run();
    } catch (error) {
      if (error instanceof StepFailed) throw error;
      const record: StepResult = {
        title,
        status: "failed",
        durationMs: elapsed(started),
        phase: this.phase,
        ...failureFields(error),
      };
      this.record(record);
      throw new StepFailed(record);
    }
    const detail = describe?.(value);
    this.record({
      title,
      status: "passed",
      durationMs: elapsed(started),
      phase: this.phase,
      ...(detail ? { detail } : {}),
    });
    return value;
  }

  /**
   * Runs `call`, which must fail with exactly `expected`; prints the received code and message.
   * Returns the error. A success is a failure of the step (and what it returned is shown).
   */
  async expectError(title: string, expected: ExpectedError, call: () => Promise<unknown>): Promise<ConnectError> {
    const started = performance.now();
    const wanted =
      typeof expected.message === "string"
        ? formatStatus(expected.code, expected.message)
        : `${codeName(expected.code)} (${expected.code}) ${expected.message.describe}`;
    let outcome: { ok: true; value: unknown } | { ok: false; error: unknown };
    try {
      outcome = { ok: true, value: await call() };
    } catch (error) {
      outcome = { ok: false, error };
    }
    const durationMs = elapsed(started);
    if (!outcome.ok && outcome.error instanceof ConnectError) {
      const error = outcome.error;
      const messageOk =
        typeof expected.message === "string" ? error.rawMessage === expected.message : expected.message.test(error.rawMessage);
      const receivedError = { code: codeName(error.code), codeNumber: error.code, message: error.rawMessage };
      const received = formatStatus(error.code, error.rawMessage);
      if (error.code === expected.code && messageOk) {
        this.record({ title, status: "passed", durationMs, detail: `→ ${received}`, receivedError, phase: this.phase });
        return error;
      }
      const record: StepResult = {
        title,
        status: "failed",
        durationMs,
        error: "wrong status",
        expected: wanted,
        received,
        receivedError,
        phase: this.phase,
      };
      this.record(record);
      throw new StepFailed(record);
    }
    if (!outcome.ok && outcome.error instanceof StepFailed) throw outcome.error;
    const record: StepResult = {
      title,
      status: "failed",
      durationMs,
      error: outcome.ok ? "the call succeeded" : "the call failed without a gRPC status",
      expected: wanted,
      received: outcome.ok ? `success: ${summarize(outcome.value)}` : describeError(outcome.error),
      phase: this.phase,
    };
    this.record(record);
    throw new StepFailed(record);
  }

  /** Records a step that was not run, with the reason (printed, counted as neither pass nor fail). */
  skip(title: string, reason: string): void {
    this.record({ title, status: "skipped", durationMs: 0, error: reason, phase: this.phase });
  }

  /** Prints an informational line under the steps. */
  note(text: string): void {
    this.notes.push(text);
    this.reporter.note(text);
  }

  /** A session id unique to this run: `it-<label>-<random>-<n>`. */
  sessionId(label: string): string {
    this.sessionCounter += 1;
    return `it-${label}-${this.runTag}-${this.sessionCounter}`;
  }

  /** A MyServiceAPI client on a fresh connection to the gateway, closed when the scenario ends. */
  client(): MyServiceClient {
    return myServiceClient(this.transport(this.options.gateway).transport);
  }

  /** A fresh connection to `address` (the gateway or, for direct checks, an instance). */
  transport(address: string): OwnedTransport {
    const owned = createOwnedTransport(address, address === this.options.gateway ? this.options.gatewayTls : this.options.instanceTls);
    this.transports.push(owned);
    return owned;
  }

  /** The stack controller; fails the step with the reason when there is none. */
  stack(): StackControl {
    return this.options.stackControl();
  }

  /** Registers an action that puts the stack back; run after the scenario body, even on failure. */
  onRestore(title: string, run: () => Promise<unknown>): void {
    this.restores.push({ title, run });
  }

  /** Marks a session as holding a lease (cleanup shuts it down unless it is released first). */
  leased(session: LeaseHolder): void {
    this.leases.set(session.id, session);
  }

  /** Marks a session's lease as given back (Shutdown succeeded). */
  released(session: LeaseHolder): void {
    this.leases.delete(session.id);
  }

  /** Runs the registered restore actions, newest first; returns false if one failed. */
  async runRestores(): Promise<boolean> {
    this.phase = "restore";
    let ok = true;
    while (this.restores.length > 0) {
      const restore = this.restores.pop() as { title: string; run: () => Promise<unknown> };
      try {
        await this.step(restore.title, restore.run);
      } catch {
        ok = false;
      }
    }
    this.phase = "scenario";
    return ok;
  }

  /** Switches step recording to the cleanup phase. */
  enterCleanup(): void {
    this.phase = "cleanup";
  }

  /** Closes every connection the scenario opened. */
  closeConnections(): void {
    for (const owned of this.transports.splice(0)) owned.close();
  }

  private record(step: StepResult): void {
    this.steps.push(step);
    this.reporter.step(step);
  }
}

/** Waits `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}

function failureFields(error: unknown): Pick<StepResult, "error" | "expected" | "received" | "receivedError"> {
  if (error instanceof CheckFailure) {
    return {
      error: error.message,
      ...(error.expected !== undefined ? { expected: error.expected } : {}),
      ...(error.received !== undefined ? { received: error.received } : {}),
    };
  }
  if (error instanceof ConnectError) {
    return {
      error: "unexpected error",
      received: formatStatus(error.code, error.rawMessage),
      receivedError: { code: codeName(error.code), codeNumber: error.code, message: error.rawMessage },
    };
  }
  return { error: describeError(error) };
}

function summarize(value: unknown): string {
  if (value === undefined) return "(no value)";
  try {
    const text = JSON.stringify(value, (_key, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
    return text.length > 300 ? `${text.slice(0, 300)}…` : text;
  } catch {
    return String(value);
  }
}
