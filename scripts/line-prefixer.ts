import { StringDecoder } from "node:string_decoder";

/** Longest partial line kept before it is written anyway, characters. */
const maxPendingChars = 64 * 1024;

/**
 * Returns a function that takes raw output chunks and calls `write` with whole lines only,
 * each prefixed by `prefix`, so lines of different processes never interleave mid-line.
 * Call the returned function with `null` at end of stream to flush an unterminated line.
 */
export function createLinePrefixer(prefix: string, write: (text: string) => void): (chunk: Buffer | null) => void {
  const decoder = new StringDecoder("utf8");
  let pending = "";
  return (chunk) => {
    pending += chunk === null ? decoder.end() : decoder.write(chunk);
    const lastNewline = pending.lastIndexOf("\n");
    let complete = "";
    if (lastNewline >= 0) {
      complete = pending.slice(0, lastNewline);
      pending = pending.slice(lastNewline + 1);
    }
    // A line that never ends must not grow without bound, nor be lost at end of stream.
    if (chunk === null || pending.length > maxPendingChars) {
      complete = complete === "" && lastNewline < 0 ? pending : complete + (pending === "" ? "" : `\n${pending}`);
      pending = "";
    }
    if (complete === "" && lastNewline < 0) return;
    write(
      complete
        .split("\n")
        .map((line) => `${prefix}${line.replace(/\r$/, "")}\n`)
        .join(""),
    );
  };
}

/** Pads process names to one width and adds the `|` separator: `gateway    | `. */
export function prefixFor(name: string, width: number): string {
  return `${name.padEnd(width)}| `;
}
