import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, EnvReader } from "./env.js";

function problemsOf(fn: () => void): readonly string[] {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    return error.problems;
  }
  assert.fail("expected a ConfigError");
}

describe("EnvReader", () => {
  it("returns defaults for unset and blank variables and throws nothing", () => {
    const r = new EnvReader({ BLANK: "  " }, "test");
    assert.equal(r.raw("UNSET"), undefined);
    assert.equal(r.raw("BLANK"), undefined);
    assert.equal(r.string("BLANK", "fallback"), "fallback");
    assert.equal(r.optionalString("UNSET"), undefined);
    assert.equal(r.integer("UNSET", 7, 0, 10), 7);
    assert.equal(r.port("UNSET", 5000), 5000);
    assert.equal(r.duration("UNSET", 1234, 0, 10_000), 1234);
    assert.equal(r.boolean("UNSET", true), true);
    assert.equal(r.oneOf("UNSET", "a", ["a", "b"]), "a");
    r.done();
  });

  it("reads valid values, trimmed", () => {
    const r = new EnvReader({ S: " text ", I: "42", NEG: "-3", P: "8080", D: "5m", B1: "yes", B0: "OFF", O: "b", REQ: "here" }, "test");
    assert.equal(r.string("S", "x"), "text");
    assert.equal(r.integer("I", 0, 0, 100), 42);
    assert.equal(r.integer("NEG", 0, -10, 10), -3);
    assert.equal(r.port("P", 1), 8080);
    assert.equal(r.duration("D", 0, 1, 3_600_000), 300_000);
    assert.equal(r.boolean("B1", false), true);
    assert.equal(r.boolean("B0", true), false);
    assert.equal(r.oneOf("O", "a", ["a", "b"]), "b");
    assert.equal(r.required("REQ", "hint"), "here");
    r.done();
  });

  it("reports every bad variable at once, in one ConfigError", () => {
    const r = new EnvReader(
      {
        INT: "12abc",
        RANGE: "101",
        PORT: "70000",
        DUR: "5x",
        SHORT: "10ms",
        BOOL: "maybe",
        ONE: "c",
      },
      "myproc",
    );
    assert.equal(r.integer("INT", 1, 0, 100), 1, "falls back while collecting");
    r.integer("RANGE", 1, 0, 100);
    r.port("PORT", 1);
    r.duration("DUR", 1, 1, 10_000);
    r.duration("SHORT", 1, 1_000, 10_000);
    r.boolean("BOOL", false);
    r.oneOf("ONE", "a", ["a", "b"]);
    assert.equal(r.required("MISSING", "what it is for"), "");
    r.problem("a cross-field problem");
    let thrown: unknown;
    try {
      r.done();
    } catch (error) {
      thrown = error;
    }
    assert.ok(thrown instanceof ConfigError);
    assert.equal(thrown.name, "ConfigError");
    assert.equal(thrown.process, "myproc");
    assert.deepEqual(thrown.problems, [
      'INT="12abc": expected a whole number from 0 to 100',
      'RANGE="101": expected a whole number from 0 to 100',
      'PORT="70000": expected a whole number from 0 to 65535',
      'DUR="5x": expected a duration such as 500ms, 30s, 5m or 1h, from 1ms to 10000ms',
      'SHORT="10ms": expected a duration such as 500ms, 30s, 5m or 1h, from 1000ms to 10000ms',
      'BOOL="maybe": expected true or false',
      'ONE="c": expected one of a, b',
      "MISSING is required: what it is for",
      "a cross-field problem",
    ]);
    assert.match(thrown.message, /^invalid myproc configuration:\n/);
    for (const problem of thrown.problems) assert.ok(thrown.message.includes(`  - ${problem}`), problem);
  });

  it("refuses integers that are not whole decimal numbers", () => {
    for (const value of ["1.5", "1e3", "0x10", "+5", "9007199254740993", "ten"]) {
      const problems = problemsOf(() => {
        const r = new EnvReader({ N: value }, "t");
        r.integer("N", 0, -1e18, 1e18);
        r.done();
      });
      assert.equal(problems.length, 1, value);
    }
  });

  it("accepts the boolean spellings 1/0, true/false, yes/no, on/off in any case", () => {
    const r = new EnvReader({ A: "1", B: "TRUE", C: "Yes", D: "on", E: "0", F: "False", G: "NO", H: "off" }, "t");
    assert.deepEqual(
      ["A", "B", "C", "D"].map((n) => r.boolean(n, false)),
      [true, true, true, true],
    );
    assert.deepEqual(
      ["E", "F", "G", "H"].map((n) => r.boolean(n, true)),
      [false, false, false, false],
    );
    r.done();
  });
});
