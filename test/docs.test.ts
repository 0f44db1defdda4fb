import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { describe, it } from "node:test";
import { repoRoot } from "../scripts/up-control-client.js";

/** Markdown files tracked by git (generated and vendored files have none). */
function markdownFiles(): string[] {
  const out = execFileSync("git", ["ls-files", "*.md", "**/*.md"], { cwd: repoRoot, encoding: "utf8" });
  return [...new Set(out.split("\n").filter((f) => f !== ""))];
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  let inFence = false;
  for (const line of markdown.split("\n")) {
    if (line.startsWith("```")) inFence = !inFence;
    const match = inFence ? null : /^#{1,6}\s+(.*)$/.exec(line);
    if (match === null) continue;
    const base = (match[1] ?? "")
      .trim()
      .toLowerCase()
      .replace(/`/g, "")
      .replace(/[^\p{L}\p{N}\s_-]/gu, "")
      .replace(/\s/g, "-");
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

/** Relative links `[text](target)` outside code fences and inline code. */
function linksOf(markdown: string): string[] {
  const links: string[] = [];
  let inFence = false;
  for (const line of markdown.split("\n")) {
    if (line.startsWith("```")) {
      inFence = !inFence;
      continue;
    }
    if (inFence) continue;
    const text = line.replace(/`[^`]*`/g, "");
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) links.push(m[1] as string);
  }
  return links;
}

describe("documentation", () => {
  it("keeps the README a front page under 12,000 characters with both quick-start commands", () => {
    const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
    assert.ok(readme.length < 12_000, `README.md has ${readme.length} characters`);
    assert.match(readme, /npm run up/);
    assert.match(readme, /npm test/);
  });

  it("resolves every relative link and anchor inside the repository", () => {
    const broken: string[] = [];
    for (const file of markdownFiles()) {
      const text = readFileSync(join(repoRoot, file), "utf8");
      for (const link of linksOf(text)) {
        if (/^[a-z]+:/i.test(link)) continue; // http:, https:, mailto:
        const [path = "", anchor] = link.split("#");
        const target = path === "" ? join(repoRoot, file) : resolve(repoRoot, dirname(file), path);
        if (!target.startsWith(repoRoot) || !existsSync(target)) {
          broken.push(`${file}: ${link} (no such file in the repository)`);
          continue;
        }
        if (anchor !== undefined && anchor !== "" && statSync(target).isFile() && target.endsWith(".md")) {
          if (!anchorsOf(readFileSync(target, "utf8")).has(anchor)) broken.push(`${file}: ${link} (no heading #${anchor})`);
        }
      }
    }
    assert.deepEqual(broken, []);
  });

  it("refers to no file outside the repository", () => {
    let out = "";
    try {
      out = execFileSync("git", ["grep", "-l", "-e", "\\.\\./shared", "-e", "/work/", "--", ".", ":!test/docs.test.ts"], {
        cwd: repoRoot,
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
      }).trim();
    } catch (error) {
      // git grep exits 1 when nothing matches.
      if ((error as { status?: number }).status !== 1) throw error;
    }
    assert.equal(out, "", `files pointing outside the repository:\n${out}`);
  });
});
