import { parseDuration } from "./duration.js";

/** Thrown by `EnvReader.done()` when one or more variables are invalid; lists all of them. */
export class ConfigError extends Error {
  constructor(
    readonly process: string,
    readonly problems: readonly string[],
  ) {
    super(`invalid ${process} configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

/**
 * Reads typed settings from an environment map, collecting every problem so that a bad
 * configuration is reported in one message rather than one variable per restart.
 */
export class EnvReader {
  private readonly problems: string[] = [];

  constructor(
    private readonly env: Readonly<Record<string, string | undefined>>,
    private readonly process: string,
  ) {}

  /** The raw value, or `undefined` when unset or empty. */
  raw(name: string): string | undefined {
    const value = this.env[name];
    return value === undefined || value.trim() === "" ? undefined : value.trim();
  }

  string(name: string, fallback: string): string {
    return this.raw(name) ?? fallback;
  }

  optionalString(name: string): string | undefined {
    return this.raw(name);
  }

  /** A required value; records a problem (with `hint`) when missing. */
  required(name: string, hint: string): string {
    const value = this.raw(name);
    if (value === undefined) {
      this.problems.push(`${name} is required: ${hint}`);
      return "";
    }
    return value;
  }

  integer(name: string, fallback: number, min: number, max: number): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const n = Number(value);
    if (!/^-?\d+$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
      this.problems.push(`${name}=${JSON.stringify(value)}: expected a whole number from ${min} to ${max}`);
      return fallback;
    }
    return n;
  }

  port(name: string, fallback: number): number {
    return this.integer(name, fallback, 0, 65535);
  }

  /** A duration (`500ms`, `30s`, `5m`, `1h`) in milliseconds, bounded to [minMs, maxMs]. */
  duration(name: string, fallbackMs: number, minMs: number, maxMs: number): number {
    const value = this.raw(name);
    if (value === undefined) return fallbackMs;
    const ms = parseDuration(value);
    if (ms === undefined || ms < minMs || ms > maxMs) {
      this.problems.push(
        `${name}=${JSON.stringify(value)}: expected a duration such as 500ms, 30s, 5m or 1h, from ${minMs}ms to ${maxMs}ms`,
      );
      return fallbackMs;
    }
    return ms;
  }

  boolean(name: string, fallback: boolean): boolean {
    const value = this.raw(name)?.toLowerCase();
    if (value === undefined) return fallback;
    if (["1", "true", "yes", "on"].includes(value)) return true;
    if (["0", "false", "no", "off"].includes(value)) return false;
    this.problems.push(`${name}=${JSON.stringify(value)}: expected true or false`);
    return fallback;
  }

  oneOf<T extends string>(name: string, fallback: T, allowed: readonly T[]): T {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (!(allowed as readonly string[]).includes(value)) {
      this.problems.push(`${name}=${JSON.stringify(value)}: expected one of ${allowed.join(", ")}`);
      return fallback;
    }
    return value as T;
  }

  /** Records a problem found by a cross-field check. */
  problem(message: string): void {
    this.problems.push(message);
  }

  /** Throws a `ConfigError` listing every problem, if any. */
  done(): void {
    if (this.problems.length > 0) throw new ConfigError(this.process, this.problems);
  }
}

/**
 * For a process entry point: loads the configuration, or prints every problem and exits with
 * code 2 (a configuration error, not a crash).
 */
export function loadConfigOrExit<T>(load: (env: NodeJS.ProcessEnv) => T, env: NodeJS.ProcessEnv = process.env): T {
  try {
    return load(env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
}
