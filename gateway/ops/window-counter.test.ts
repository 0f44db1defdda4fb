import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { WindowCounter } from "./window-counter.js";

describe("WindowCounter", () => {
  it("counts the events of the last minute and forgets older ones", () => {
    let now = 1_000_000;
    const counter = new WindowCounter(() => now);
    assert.equal(counter.total(), 0);
    counter.add();
    counter.add(2);
    now += 30_000;
    counter.add();
    assert.equal(counter.total(), 4);
    now += 29_000; // 59 s after the first events: still inside
    assert.equal(counter.total(), 4);
    now += 1_000; // 60 s: the first three are out
    assert.equal(counter.total(), 1);
    now += 30_000;
    assert.equal(counter.total(), 0);
  });

  it("reuses a slot for a later minute without carrying its old count", () => {
    let now = 0;
    const counter = new WindowCounter(() => now);
    counter.add(5);
    now = 60_000; // the same slot, one window later
    counter.add();
    assert.equal(counter.total(), 1);
  });
});
