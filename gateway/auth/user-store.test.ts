import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { devUser } from "../../common/dev-defaults.js";
import { hashPassword } from "./passwords.js";
import { createUserStore, loadUserStore, parseUsers, type User } from "./user-store.js";

const fast = { N: 1024, r: 8, p: 1 } as const;
const devUsersFile = fileURLToPath(new URL("../dev-users.json", import.meta.url));

function usersFile(users: unknown[]): string {
  return JSON.stringify({ users });
}

describe("parseUsers()", () => {
  it("reads users with username, hash and role", async () => {
    const hash = await hashPassword("pw", fast);
    const users = parseUsers(
      usersFile([
        { username: "alice", passwordHash: hash, role: "admin" },
        { username: "bob", passwordHash: hash, role: "user" },
      ]),
      "users.json",
    );
    assert.deepEqual(users, [
      { username: "alice", passwordHash: hash, role: "admin" },
      { username: "bob", passwordHash: hash, role: "user" },
    ]);
    assert.ok(Object.isFrozen(users[0]));
  });

  it("rejects bad files with a message naming the file and the entry", async () => {
    const hash = await hashPassword("pw", fast);
    const cases: [string, string, RegExp][] = [
      ["not JSON", "{users: [", /^users\.json: not valid JSON/],
      ["no users array", '{"people": []}', /^users\.json: expected \{"users": \[\.\.\.\]\}$/],
      ["users not an array", '{"users": {}}', /^users\.json: expected \{"users"/],
      ["null", "null", /^users\.json: expected \{"users"/],
      ["missing username", usersFile([{ passwordHash: hash, role: "admin" }]), /^users\.json: users\[0\]\.username is missing$/],
      ["empty username", usersFile([{ username: "", passwordHash: hash, role: "admin" }]), /users\[0\]\.username is missing/],
      ["null entry", usersFile([null]), /users\[0\]\.username is missing/],
      [
        "duplicate user",
        usersFile([
          { username: "alice", passwordHash: hash, role: "admin" },
          { username: "alice", passwordHash: hash, role: "user" },
        ]),
        /^users\.json: users\[1\]: duplicate username alice$/,
      ],
      ["missing role", usersFile([{ username: "alice", passwordHash: hash }]), /^users\.json: users\[0\] \(alice\): role is missing$/],
      ["empty role", usersFile([{ username: "alice", passwordHash: hash, role: "" }]), /\(alice\): role is missing/],
      [
        "plain-text password",
        usersFile([{ username: "alice", password: "TestPassword", role: "admin" }]),
        /^users\.json: users\[0\] \(alice\): passwordHash must be an scrypt hash/,
      ],
      [
        "plain text in passwordHash",
        usersFile([{ username: "alice", passwordHash: "TestPassword", role: "admin" }]),
        /\(alice\): passwordHash must be an scrypt hash/,
      ],
    ];
    for (const [name, text, message] of cases) {
      assert.throws(() => parseUsers(text, "users.json"), { message }, name);
    }
  });
});

describe("createUserStore().authenticate()", () => {
  async function store() {
    const users: User[] = [
      { username: "alice", passwordHash: await hashPassword("alice-pw", fast), role: "admin" },
      { username: "bob", passwordHash: await hashPassword("bob-pw", fast), role: "user" },
    ];
    return { users, store: createUserStore(users) };
  }

  it("returns the user for the right password", async () => {
    const { users, store: s } = await store();
    assert.deepEqual(await s.authenticate("alice", "alice-pw"), users[0]);
    assert.deepEqual(await s.authenticate("bob", "bob-pw"), users[1]);
  });

  it("returns undefined for a wrong password, another user's password or an unknown user", async () => {
    const { store: s } = await store();
    assert.equal(await s.authenticate("alice", "wrong"), undefined);
    assert.equal(await s.authenticate("alice", ""), undefined);
    assert.equal(await s.authenticate("alice", "bob-pw"), undefined);
    assert.equal(await s.authenticate("carol", "alice-pw"), undefined);
    assert.equal(await s.authenticate("", ""), undefined);
    assert.equal(await s.authenticate("Alice", "alice-pw"), undefined, "usernames are case-sensitive");
  });

  it("knows its size and users", async () => {
    const { store: s } = await store();
    assert.equal(s.size, 2);
    assert.equal(s.has("alice"), true);
    assert.equal(s.has("carol"), false);
  });

  it("refuses everyone when it has no users", async () => {
    const empty = createUserStore([]);
    assert.equal(empty.size, 0);
    assert.equal(await empty.authenticate("alice", "alice-pw"), undefined);
  });
});

describe("gateway/dev-users.json", () => {
  it("authenticates TestUser / TestPassword with role admin, and nothing else", async () => {
    const users = loadUserStore(devUsersFile);
    assert.equal(users.size, 1);
    const user = await users.authenticate(devUser.username, devUser.password);
    assert.equal(user?.username, "TestUser");
    assert.equal(user?.role, "admin");
    assert.equal(await users.authenticate("TestUser", "testpassword"), undefined);
    assert.equal(await users.authenticate("testuser", "TestPassword"), undefined);
  });

  it("stores the password only as an scrypt hash", () => {
    const text = readFileSync(devUsersFile, "utf8");
    assert.ok(!text.includes(devUser.password));
    assert.deepEqual(
      parseUsers(text, devUsersFile).map((u) => [u.username, u.role]),
      [["TestUser", "admin"]],
    );
  });
});
