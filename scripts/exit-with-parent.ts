import { watchParentPipe } from "./parent-watch.js";

/**
 * Preloaded into every process the launcher starts (`node --import tsx --import
 * <repo>/scripts/exit-with-parent.ts ...`). The launcher keeps the child's stdin open as a
 * pipe; when the launcher dies, even by SIGKILL, the pipe closes and this hook stops the child
 * with SIGTERM (its own graceful path), then by force if that takes too long. Without it a
 * killed launcher would leave orphans holding the ports.
 */
const forceExitAfterMs = 5000;

watchParentPipe(() => {
  process.kill(process.pid, "SIGTERM");
  setTimeout(() => process.exit(1), forceExitAfterMs).unref();
});
