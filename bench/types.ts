/** Settings every profile gets from `bench/run.ts`. */
export interface BenchContext {
  /** `--quick`: one short round per cell, small counts (CI proves the bench works). */
  readonly quick: boolean;
  /** Rounds per cell; the table shows the median. */
  readonly rounds: number;
  /** nginx is installed: run its rows. */
  readonly nginx: boolean;
  /** Scratch folder of this run (removed at the end). */
  readonly tmpDir: string;
  /** One progress line on stderr. */
  progress(message: string): void;
}

/** A printed table: a header row and rows of cells. */
export interface Table {
  readonly title: string;
  readonly columns: readonly string[];
  readonly rows: readonly (readonly (string | number)[])[];
}

/** What one profile measured. */
export interface ProfileResult {
  readonly id: string;
  readonly title: string;
  readonly tables: Table[];
  /** Named figures the targets and the report read (units in the name). */
  readonly metrics: Record<string, number>;
  /** How it was measured: settings, counts, caveats. */
  readonly notes: string[];
  /** Every round's figures, for the JSON report. */
  readonly raw?: unknown;
}
