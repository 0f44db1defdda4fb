import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatDuration, parseDuration } from "./duration.js";

describe("parseDuration()", () => {
  it("reads each unit into milliseconds", () => {
    assert.equal(parseDuration("500ms"), 500);
    assert.equal(parseDuration("30s"), 30_000);
    assert.equal(parseDuration("5m"), 300_000);
    assert.equal(parseDuration("1h"), 3_600_000);
    assert.equal(parseDuration("2d"), 172_800_000);
  });

  it("reads composites and fractions", () => {
    assert.equal(parseDuration("1h30m"), 5_400_000);
    assert.equal(parseDuration("1m30s"), 90_000);
    assert.equal(parseDuration("1s500ms"), 1_500);
    assert.equal(parseDuration("1.5s"), 1_500);
    assert.equal(parseDuration("0.5h"), 1_800_000);
  });

  it("takes a bare number as seconds", () => {
    assert.equal(parseDuration("30"), 30_000);
    assert.equal(parseDuration("1"), 1_000);
    assert.equal(parseDuration("2.5"), 2_500);
  });

  it("ignores surrounding whitespace", () => {
    assert.equal(parseDuration("  5m "), 300_000);
  });

  it("refuses empty, negative, zero, unitless-unit and unknown-unit values", () => {
    for (const text of [
      "",
      "   ",
      "-1s",
      "-5",
      "5x",
      "s",
      "ms",
      "0s",
      "0",
      "0ms",
      "0h0m",
      "1 h",
      "1h 30m",
      "h1",
      "1.s",
      ".5s",
      "1e3",
      "5M",
      "5S",
      "1h-30m",
      "Infinity",
      "NaN",
      "1hh",
      "5m!",
    ]) {
      assert.equal(parseDuration(text), undefined, JSON.stringify(text));
    }
  });
});

describe("formatDuration()", () => {
  it("writes the largest whole unit", () => {
    assert.equal(formatDuration(86_400_000), "1d");
    assert.equal(formatDuration(3_600_000), "1h");
    assert.equal(formatDuration(300_000), "5m");
    assert.equal(formatDuration(90_000), "90s");
    assert.equal(formatDuration(30_000), "30s");
    assert.equal(formatDuration(250), "250ms");
    assert.equal(formatDuration(1_500), "1500ms");
  });

  it("round-trips through parseDuration", () => {
    for (const ms of [1, 250, 1_000, 1_500, 60_000, 5_400_000, 86_400_000]) {
      assert.equal(parseDuration(formatDuration(ms)), ms);
    }
  });
});
