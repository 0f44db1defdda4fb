import type { ScenarioContext } from "./context.js";

/** A named integration scenario of SPEC section 8. */
export interface Scenario {
  /** Name on the command line, e.g. `basic_workflow`. */
  readonly name: string;
  /** One line: what it proves. */
  readonly description: string;
  /** True when it stops or kills instances through the stack controller. */
  readonly controlsStack?: boolean;
  /** The steps; throws (through `ctx.step`) on the first failure. */
  run(ctx: ScenarioContext): Promise<void>;
}
