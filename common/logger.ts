import { type Logger, pino } from "pino";

export type { Logger };

/** Options of `createLogger`. */
export interface LoggerOptions {
  /** Process name, logged as `name` on every line. */
  readonly name: string;
  /** pino level (`debug`, `info`, `warn`, ...). Default `info`. */
  readonly level?: string;
  /** `json` (production) or `pretty` (readable, for `npm run up`). Default `json`. */
  readonly format?: "json" | "pretty";
}

/** Fields that must never reach a log line, wherever they appear. */
export const redactedPaths = [
  "authorization",
  "password",
  "token",
  "secret",
  "jwtSecret",
  "*.authorization",
  "*.password",
  "*.token",
  "*.secret",
  "*.jwtSecret",
  "headers.authorization",
  "req.headers.authorization",
];

/** Creates the process logger: JSON lines by default, a readable single line per event in dev. */
export function createLogger(options: LoggerOptions): Logger {
  const base = {
    name: options.name,
    level: options.level ?? "info",
    redact: { paths: redactedPaths, censor: "[redacted]" },
  };
  if (options.format === "pretty") {
    return pino({
      ...base,
      transport: {
        target: "pino-pretty",
        options: { colorize: false, singleLine: true, translateTime: "HH:MM:ss.l", ignore: "pid,hostname,name" },
      },
    });
  }
  return pino(base);
}
