import { readFileSync } from "node:fs";
import { hashPassword, parsePasswordHash, verifyPassword } from "./passwords.js";

/** One user of the users file. */
export interface User {
  readonly username: string;
  readonly passwordHash: string;
  readonly role: string;
}

/** Users and password checks; unknown users cost the same as known ones. */
export interface UserStore {
  readonly size: number;
  /** The user if the password is right, otherwise `undefined` (same time either way). */
  authenticate(username: string, password: string): Promise<User | undefined>;
  has(username: string): boolean;
}

/**
 * Parses a users file: `{ "users": [{ "username", "passwordHash", "role" }] }` with hashes
 * made by `npm run hash-password`. Throws a message naming the first bad entry.
 */
export function parseUsers(text: string, source: string): User[] {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new Error(`${source}: not valid JSON (${(error as Error).message})`);
  }
  const list = (data as { users?: unknown })?.users;
  if (!Array.isArray(list)) throw new Error(`${source}: expected {"users": [...]}`);
  const seen = new Set<string>();
  return list.map((entry: unknown, i) => {
    const { username, passwordHash, role } = (entry ?? {}) as Record<string, unknown>;
    if (typeof username !== "string" || username === "") throw new Error(`${source}: users[${i}].username is missing`);
    if (seen.has(username)) throw new Error(`${source}: users[${i}]: duplicate username ${username}`);
    seen.add(username);
    if (typeof passwordHash !== "string" || parsePasswordHash(passwordHash) === undefined) {
      throw new Error(`${source}: users[${i}] (${username}): passwordHash must be an scrypt hash from npm run hash-password`);
    }
    if (typeof role !== "string" || role === "") throw new Error(`${source}: users[${i}] (${username}): role is missing`);
    return Object.freeze({ username, passwordHash, role });
  });
}

/** Loads the users file at `path` into a `UserStore`. */
export function loadUserStore(path: string): UserStore {
  return createUserStore(parseUsers(readFileSync(path, "utf8"), path));
}

/** Creates a store over `users`. */
export function createUserStore(users: readonly User[]): UserStore {
  const byName = new Map(users.map((u) => [u.username, u]));
  // Unknown users are checked against a hash with the cost of a real one, so the answer
  // takes as long as for a wrong password (SPEC 4.1: constant-time).
  const firstHash = users[0]?.passwordHash;
  const dummy = firstHash !== undefined ? firstHash : undefined;
  let dummyHash: Promise<string> | undefined;
  const dummyFor = () => {
    if (dummy !== undefined) return Promise.resolve(dummy);
    dummyHash ??= hashPassword("unused dummy password");
    return dummyHash;
  };
  return {
    size: byName.size,
    has: (username) => byName.has(username),
    async authenticate(username, password) {
      const user = byName.get(username);
      if (user === undefined) {
        await verifyPassword(password, await dummyFor());
        return undefined;
      }
      return (await verifyPassword(password, user.passwordHash)) ? user : undefined;
    },
  };
}
