import { fstatSync } from "node:fs";

/**
 * Calls `onGone` once when this process's stdin, a pipe held open by the parent, closes:
 * that happens when the parent dies, even by SIGKILL. Does nothing (returns `false`) when
 * stdin is a terminal, a file or `/dev/null`, so an interactive run is never stopped by it.
 * Reading stdin does not keep the process alive.
 */
export function watchParentPipe(onGone: () => void): boolean {
  let stat: ReturnType<typeof fstatSync>;
  try {
    stat = fstatSync(0);
  } catch {
    return false;
  }
  if (!stat.isFIFO() && !stat.isSocket()) return false;
  let fired = false;
  const once = () => {
    if (fired) return;
    fired = true;
    onGone();
  };
  const stdin = process.stdin;
  stdin.on("end", once);
  stdin.on("close", once);
  stdin.on("error", once);
  stdin.on("data", () => {});
  (stdin as unknown as { unref?: () => void }).unref?.();
  return true;
}
