import { fstatSync, readFileSync } from "node:fs";

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

/** A process this one watches: its pid and start time (so a reused pid is not mistaken for it). */
interface Watched {
  readonly pid: number;
  readonly startTime: string;
  readonly label: string;
}

/** Parent pid and start time (clock ticks since boot) of `pid` from /proc, or `undefined`. */
function procStat(pid: number): { ppid: number; startTime: string; zombie: boolean } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name, which is in parentheses and may contain anything.
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return { ppid: Number(fields[1]), startTime: fields[19] ?? "", zombie: fields[0] === "Z" || fields[0] === "X" };
  } catch {
    return undefined;
  }
}

/** npm shows itself as `npm run up` (it sets its process title), or as `node <npm_execpath> ...`. */
function looksLikeNpm(commandLine: string, npmExecPath: string): boolean {
  const program = commandLine.split(" ")[0] ?? "";
  return program === "npm" || program.endsWith("/npm") || commandLine.includes(npmExecPath);
}

function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return "";
  }
}

/**
 * The processes whose end must end this one: the parent, and, when npm ran this script
 * (`npm_execpath` set), every ancestor up to and including npm itself. `npm run up` runs
 * `sh -c "... && node scripts/up.ts"`: a `kill -9` of npm leaves that shell alive (our parent),
 * so the parent alone is not enough. Empty without /proc (then only the parent pid is watched).
 */
function ancestorsToWatch(env: NodeJS.ProcessEnv): Watched[] {
  const watched: Watched[] = [];
  const npm = env.npm_execpath;
  let pid = process.ppid;
  for (let depth = 0; depth < 5 && pid > 1; depth++) {
    const stat = procStat(pid);
    if (stat === undefined) break;
    const isNpm = npm !== undefined && npm !== "" && looksLikeNpm(commandLine(pid), npm);
    watched.push({ pid, startTime: stat.startTime, label: depth === 0 ? "parent process" : isNpm ? "npm" : "ancestor process" });
    if (npm === undefined || npm === "" || isNpm) break;
    pid = stat.ppid;
  }
  // Not run by npm after all (no npm among the ancestors): the parent is what counts.
  if (npm !== undefined && npm !== "" && !watched.some((w) => w.label === "npm")) watched.splice(1);
  return watched;
}

/** Options of `watchParentProcesses`. */
export interface ParentWatchOptions {
  /** Period of the check, milliseconds. Default 250. */
  readonly intervalMs?: number;
  readonly env?: NodeJS.ProcessEnv;
  /**
   * This process is the script npm itself runs (e.g. `npm run up`): npm must be among its
   * ancestors, so when it is not, it is gone already (killed while the build ran).
   */
  readonly ranByNpm?: boolean;
}

/**
 * Calls `onGone` once when the process that started this one goes away, whatever ended it
 * (SIGTERM, SIGKILL): this process was re-parented, or a watched ancestor (see
 * `ancestorsToWatch`) is gone. Checks every `intervalMs`; the timer does not keep the process
 * alive. Returns a function that stops watching.
 */
export function watchParentProcesses(onGone: (why: string) => void, options: ParentWatchOptions = {}): () => void {
  const parent = process.ppid;
  const watched = ancestorsToWatch(options.env ?? process.env);
  // Only where /proc tells (procStat answers): elsewhere no ancestor is ever found.
  const npmMissing = options.ranByNpm === true && !watched.some((w) => w.label === "npm") && procStat(parent) !== undefined;
  const timer = setInterval(() => {
    let why: string | undefined;
    if (npmMissing) why = "npm exited before the launcher started";
    else if (process.ppid !== parent) why = `parent process ${parent} exited`;
    for (const w of watched) {
      if (why !== undefined) break;
      const now = procStat(w.pid);
      if (now === undefined || now.zombie || now.startTime !== w.startTime) why = `${w.label} ${w.pid} exited`;
    }
    if (why === undefined) return;
    clearInterval(timer);
    onGone(why);
  }, options.intervalMs ?? 250);
  timer.unref();
  return () => clearInterval(timer);
}
