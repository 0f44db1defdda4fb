import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";

/** scrypt parameters of new hashes: N=2^15, r=8, p=1 (32 MiB, ~50–100 ms on one core). */
export const defaultScryptParams: ScryptParams = Object.freeze({ N: 32768, r: 8, p: 1 });

/** scrypt cost: N (CPU/memory, a power of two), r (block size), p (parallelism). */
export interface ScryptParams {
  readonly N: number;
  readonly r: number;
  readonly p: number;
}

const keyLength = 32;

function scryptAsync(password: string, salt: Buffer, N: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keyLength, { N, r, p, maxmem: 256 * N * r + 1024 * 1024 }, (error, key) =>
      error ? reject(error) : resolve(key),
    );
  });
}

/** Hashes a password as `scrypt$N$r$p$<salt b64>$<hash b64>`. */
export async function hashPassword(password: string, params: ScryptParams = defaultScryptParams): Promise<string> {
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt, params.N, params.r, params.p);
  return `scrypt$${params.N}$${params.r}$${params.p}$${salt.toString("base64")}$${key.toString("base64")}`;
}

/** A parsed hash, or `undefined` when the text is not one of ours. */
export function parsePasswordHash(text: string) {
  const parts = text.split("$");
  if (parts.length !== 6 || parts[0] !== "scrypt") return undefined;
  const [N, r, p] = [Number(parts[1]), Number(parts[2]), Number(parts[3])];
  const salt = Buffer.from(parts[4] as string, "base64");
  const key = Buffer.from(parts[5] as string, "base64");
  const powerOfTwo = Number.isInteger(N) && N >= 2 && (N & (N - 1)) === 0;
  if (
    !powerOfTwo ||
    N > 2 ** 20 ||
    !(Number.isInteger(r) && r >= 1 && r <= 32) ||
    !(Number.isInteger(p) && p >= 1 && p <= 16) ||
    salt.length < 8 ||
    key.length !== keyLength
  ) {
    return undefined;
  }
  return { N, r, p, salt, key };
}

/** Checks a password against a hash in constant time (for a given hash). */
export async function verifyPassword(password: string, hash: string): Promise<boolean> {
  const parsed = parsePasswordHash(hash);
  if (parsed === undefined) return false;
  const key = await scryptAsync(password, parsed.salt, parsed.N, parsed.r, parsed.p);
  return timingSafeEqual(key, parsed.key);
}
