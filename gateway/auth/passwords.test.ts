import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { defaultScryptParams, hashPassword, parsePasswordHash, verifyPassword } from "./passwords.js";

// Cheap scrypt parameters keep the tests fast; the default is covered once.
const fast = { N: 1024, r: 8, p: 1 } as const;

describe("hashPassword()", () => {
  it("writes scrypt$N$r$p$salt$hash with a fresh 16-byte salt and a 32-byte key", async () => {
    const hash = await hashPassword("secret", fast);
    assert.match(hash, /^scrypt\$1024\$8\$1\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}$/);
    const parsed = parsePasswordHash(hash);
    assert.ok(parsed);
    assert.equal(parsed.salt.length, 16);
    assert.equal(parsed.key.length, 32);
    assert.notEqual(await hashPassword("secret", fast), hash, "salted");
  });

  it("uses N=2^15, r=8, p=1 by default", async () => {
    assert.deepEqual(defaultScryptParams, { N: 32768, r: 8, p: 1 });
    assert.match(await hashPassword("secret"), /^scrypt\$32768\$8\$1\$/);
  });
});

describe("verifyPassword()", () => {
  it("accepts the right password and refuses any other", async () => {
    const hash = await hashPassword("correct horse", fast);
    assert.equal(await verifyPassword("correct horse", hash), true);
    for (const wrong of ["", "correct horse ", "Correct horse", "correct hors", "correct horse battery"]) {
      assert.equal(await verifyPassword(wrong, hash), false, JSON.stringify(wrong));
    }
  });

  it("handles unicode passwords", async () => {
    const hash = await hashPassword("pässwörd 🔑", fast);
    assert.equal(await verifyPassword("pässwörd 🔑", hash), true);
    assert.equal(await verifyPassword("passwort 🔑", hash), false);
  });

  it("refuses any password against a malformed hash, without throwing", async () => {
    for (const hash of ["", "TestPassword", "scrypt$1024$8$1", "bcrypt$1024$8$1$AAAAAAAAAAA=$AAAA"]) {
      assert.equal(await verifyPassword("TestPassword", hash), false, hash);
    }
  });
});

describe("parsePasswordHash()", () => {
  const salt = Buffer.alloc(16, 1).toString("base64");
  const key = Buffer.alloc(32, 2).toString("base64");
  const make = (N: unknown, r: unknown, p: unknown, s = salt, k = key) => `scrypt$${N}$${r}$${p}$${s}$${k}`;

  it("parses a well-formed hash", () => {
    const parsed = parsePasswordHash(make(16384, 8, 1));
    assert.ok(parsed);
    assert.equal(parsed.N, 16384);
    assert.equal(parsed.r, 8);
    assert.equal(parsed.p, 1);
    assert.deepEqual(parsed.salt, Buffer.alloc(16, 1));
    assert.deepEqual(parsed.key, Buffer.alloc(32, 2));
  });

  it("rejects malformed hashes", () => {
    const cases: Record<string, string> = {
      empty: "",
      "plain text": "TestPassword",
      "other scheme": `bcrypt$16384$8$1$${salt}$${key}`,
      "too few parts": `scrypt$16384$8$1$${salt}`,
      "too many parts": `${make(16384, 8, 1)}$extra`,
      "N not a power of two": make(1000, 8, 1),
      "N of 1": make(1, 8, 1),
      "N of 0": make(0, 8, 1),
      "N above 2^20": make(2 ** 21, 8, 1),
      "N not a number": make("x", 8, 1),
      "N negative": make(-1024, 8, 1),
      "r of 0": make(16384, 0, 1),
      "r above 32": make(16384, 33, 1),
      "p of 0": make(16384, 8, 0),
      "p above 16": make(16384, 8, 17),
      "salt under 8 bytes": make(16384, 8, 1, Buffer.alloc(7).toString("base64")),
      "empty salt": make(16384, 8, 1, ""),
      "key too short": make(16384, 8, 1, salt, Buffer.alloc(31).toString("base64")),
      "key too long": make(16384, 8, 1, salt, Buffer.alloc(33).toString("base64")),
      "empty key": make(16384, 8, 1, salt, ""),
    };
    for (const [name, hash] of Object.entries(cases)) {
      assert.equal(parsePasswordHash(hash), undefined, name);
    }
  });

  it("rejects fractional r or p, which scrypt cannot use", async () => {
    for (const hash of [make(1024, 1.5, 1), make(1024, 8, 1.5)]) {
      assert.equal(parsePasswordHash(hash), undefined, hash);
      // verifyPassword must answer false, not throw ERR_OUT_OF_RANGE from crypto.scrypt.
      assert.equal(await verifyPassword("pw", hash), false, hash);
    }
  });
});
