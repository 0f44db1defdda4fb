import type { Scenario } from "../scenario.js";
import { basicWorkflow } from "./basic-workflow.js";
import { gatewayErrorUnauthenticated } from "./gateway-error-unauthenticated.js";
import { gatewayErrorUnavailable } from "./gateway-error-unavailable.js";
import { loginErrors } from "./login-errors.js";
import { myserviceAuthenticationErrors } from "./myservice-authentication-errors.js";
import { myserviceShutdownErrors } from "./myservice-shutdown-errors.js";
import { noInstancesAvailable } from "./no-instances-available.js";
import { sessionTransfer } from "./session-transfer.js";
import { stickySession } from "./sticky-session.js";
import { streamSubscription } from "./stream-subscription.js";
import { streamSubscriptionMyserviceStop } from "./stream-subscription-myservice-stop.js";
import { systemOverload } from "./system-overload.js";
import { waitingRoom } from "./waiting-room.js";

/**
 * Every scenario of SPEC section 8 (and 11), in the order `all` runs them: the ones that lease
 * nothing first, then the ones that lease and shut down, then the ones that fill the pool (the
 * waiting room among them: it needs every instance free and frees them all again), and last the
 * ones that kill or stop instances, so a slow recovery can only affect what comes after it.
 */
export const allScenarios: readonly Scenario[] = [
  loginErrors,
  gatewayErrorUnauthenticated,
  myserviceAuthenticationErrors,
  basicWorkflow,
  stickySession,
  streamSubscription,
  sessionTransfer,
  myserviceShutdownErrors,
  noInstancesAvailable,
  systemOverload,
  waitingRoom,
  streamSubscriptionMyserviceStop,
  gatewayErrorUnavailable,
];

/** The scenario with this name, if any. */
export function findScenario(name: string): Scenario | undefined {
  return allScenarios.find((s) => s.name === name);
}
