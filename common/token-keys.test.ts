import assert from "node:assert/strict";
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { calculateJwkThumbprint, type JWK } from "jose";
import {
  hmacSigningKey,
  jwksOf,
  KeyError,
  keysFromJwks,
  loadPreviousKey,
  loadPrivateKeyFile,
  loadPublicKeyFile,
  publicVerificationKey,
} from "./token-keys.js";

const dir = mkdtempSync(join(tmpdir(), "token-keys-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function pem(key: KeyObject): string {
  return key.type === "private"
    ? (key.export({ format: "pem", type: "pkcs8" }) as string)
    : (key.export({ format: "pem", type: "spki" }) as string);
}

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const ed = generateKeyPairSync("ed25519");
const p256 = generateKeyPairSync("ec", { namedCurve: "P-256" });

describe("loadPrivateKeyFile()", () => {
  it("loads Ed25519 as EdDSA and P-256 as ES256, kid = RFC 7638 thumbprint of the public key", async () => {
    for (const [pair, alg] of [
      [ed, "EdDSA"],
      [p256, "ES256"],
    ] as const) {
      const key = loadPrivateKeyFile(file(`${alg}.pem`, pem(pair.privateKey)));
      assert.equal(key.alg, alg);
      assert.equal(key.kid, await calculateJwkThumbprint(pair.publicKey.export({ format: "jwk" }) as JWK));
      assert.equal(key.verification.kid, key.kid);
      assert.equal((key.verification.key as KeyObject).type, "public");
    }
  });

  it("refuses other key types, public keys, garbage and missing files with a clear message", () => {
    const cases: [string, string, RegExp][] = [
      ["rsa.pem", pem(generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey), /unsupported key type rsa/],
      ["p384.pem", pem(generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey), /unsupported key type ECDSA secp384r1/],
      ["public.pem", pem(ed.publicKey), /not a PEM private key/],
      ["garbage.pem", "hello", /not a PEM private key/],
    ];
    for (const [name, text, message] of cases) {
      assert.throws(
        () => loadPrivateKeyFile(file(name, text)),
        (e: Error) => e instanceof KeyError && message.test(e.message),
        name,
      );
    }
    assert.throws(() => loadPrivateKeyFile(join(dir, "missing.pem")), /JWT_PRIVATE_KEY_FILE .*missing\.pem: cannot read/);
  });
});

describe("loadPublicKeyFile()", () => {
  it("loads every PEM public key in the file", () => {
    const keys = loadPublicKeyFile(file("two.pub.pem", `${pem(ed.publicKey)}\n${pem(p256.publicKey)}`));
    assert.deepEqual(
      keys.map((k) => k.alg),
      ["EdDSA", "ES256"],
    );
  });

  it("refuses a private key: an instance must hold nothing that signs", () => {
    assert.throws(() => loadPublicKeyFile(file("private-as-public.pem", pem(ed.privateKey))), /holds a private key/);
    assert.throws(() => loadPublicKeyFile(file("empty.pem", "")), /no PEM public key/);
  });
});

describe("loadPreviousKey()", () => {
  it("takes secret:<value>, a PEM file (public part only) or a secret file", () => {
    const secret = "s".repeat(32);
    assert.deepEqual(loadPreviousKey(`secret:${secret}`, 32), [hmacSigningKey(secret).verification]);
    assert.deepEqual(loadPreviousKey(file("secret.txt", `${secret}\n`), 32), [hmacSigningKey(secret).verification]);
    const [fromPrivate] = loadPreviousKey(file("prev.pem", pem(ed.privateKey)), 32);
    assert.equal((fromPrivate?.key as KeyObject).type, "public", "the private part is not kept");
    assert.equal(fromPrivate?.kid, publicVerificationKey(ed.publicKey).kid);
    assert.equal(loadPreviousKey(file("prev.pub.pem", pem(p256.publicKey)), 32)[0]?.alg, "ES256");
  });

  it("refuses a short secret and an unreadable file", () => {
    assert.throws(() => loadPreviousKey("secret:short", 32), /too short: use at least 32 bytes/);
    assert.throws(() => loadPreviousKey(join(dir, "nope"), 32), /cannot read/);
  });
});

describe("jwksOf() and keysFromJwks()", () => {
  it("publishes public keys only, and reads them back with the same kids", () => {
    const keys = [publicVerificationKey(ed.publicKey), publicVerificationKey(p256.publicKey), hmacSigningKey("x".repeat(32)).verification];
    const jwks = jwksOf(keys);
    assert.equal(jwks.keys.length, 2, "the HMAC secret is not published");
    assert.ok(!JSON.stringify(jwks).includes('"d"'), "no private member");
    assert.deepEqual(
      keysFromJwks(JSON.parse(JSON.stringify(jwks))).map((k) => [k.kid, k.alg]),
      keys.slice(0, 2).map((k) => [k.kid, k.alg]),
    );
  });

  it("skips symmetric, private, mislabelled and foreign entries", () => {
    const good = jwksOf([publicVerificationKey(ed.publicKey)]).keys[0];
    const privateJwk = { ...(ed.privateKey.export({ format: "jwk" }) as object), kid: good?.kid };
    const doc = {
      keys: [
        { kty: "oct", k: Buffer.from("x".repeat(32)).toString("base64url"), kid: "hmac", alg: "HS256" },
        privateJwk,
        { ...good, alg: "ES256" },
        { ...good, kid: "not-its-thumbprint" },
        { ...good, use: "enc" },
        { kty: "RSA", n: "AQAB", e: "AQAB", kid: "rsa" },
        "garbage",
        good,
      ],
    };
    assert.deepEqual(
      keysFromJwks(doc).map((k) => k.kid),
      [good?.kid],
    );
    assert.throws(() => keysFromJwks({ nokeys: [] }), /not a JWKS document/);
  });
});
