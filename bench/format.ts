/** Formats a number for tables: thousands separators, `n/a` for a missing figure. */
export function fmt(value: number | undefined, digits = 0): string {
  if (value === undefined || !Number.isFinite(value)) return "n/a";
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** A ratio as `0.93×`. */
export function fmtRatio(value: number | undefined): string {
  return value === undefined || !Number.isFinite(value) ? "n/a" : `${value.toFixed(2)}×`;
}

/** Bytes as MB (10^6 would confuse: MiB, printed `MB` as `ps` does). */
export function fmtMB(bytes: number | undefined): string {
  return bytes === undefined || !Number.isFinite(bytes) ? "n/a" : `${(bytes / 1048576).toFixed(1)} MB`;
}
