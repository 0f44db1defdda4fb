import * as http from "node:http";
import * as https from "node:https";
import type { Logger } from "../common/logger.js";
import { keysFromJwks, type VerificationKey } from "../common/token-keys.js";

/** Options of `createJwksClient`. */
export interface JwksClientOptions {
  /** The gateway's key set, `http(s)://.../.well-known/jwks.json`. */
  readonly url: string;
  /** PEM CA(s) for an `https:` URL. Default the system's CAs. */
  readonly ca?: Buffer;
  /** Least time between two fetches, milliseconds. */
  readonly cooldownMs: number;
  /** Period of refreshes once keys were fetched, milliseconds. */
  readonly refreshIntervalMs: number;
  /** Bound of one fetch, milliseconds. Default 5000. */
  readonly timeoutMs?: number;
  readonly logger: Logger;
}

/** The gateway's public keys, fetched and kept fresh. */
export interface JwksClient {
  /** The keys of the last successful fetch (none before it). */
  keys(): readonly VerificationKey[];
  /** Calls `listener` with every fetched key set whose kids differ from the last. */
  onKeys(listener: (keys: readonly VerificationKey[]) => void): void;
  /** Fetches now, retries every cooldown until a fetch succeeds, then refreshes every interval. */
  start(): void;
  stop(): void;
  /**
   * A token named `kid`, which the keys lack (a rotation): fetches again, at once when the last
   * fetch is older than the cooldown, else when the cooldown ends; callers in between share that
   * one fetch. Resolves whether `kid` is known then.
   */
  refreshFor(kid: string): Promise<boolean>;
  /** Fetches started so far. */
  fetchCount(): number;
}

const maxBodyBytes = 256 * 1024;

/**
 * Keeps the gateway's JWKS (`GET /.well-known/jwks.json`) for an instance that verifies tokens
 * with public keys only. An unknown `kid` triggers a refresh, but never more than one fetch
 * per `cooldownMs`: tokens with made-up kids cannot make an instance hammer the gateway.
 */
export function createJwksClient(options: JwksClientOptions): JwksClient {
  const { logger } = options;
  const timeoutMs = options.timeoutMs ?? 5000;
  let keys: readonly VerificationKey[] = [];
  const listeners: ((keys: readonly VerificationKey[]) => void)[] = [];
  let lastFetchAt = Number.NEGATIVE_INFINITY;
  let fetches = 0;
  let pending: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;

  function get(): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const client = options.url.startsWith("https:") ? https : http;
      const request = client.get(options.url, { timeout: timeoutMs, ...(options.ca ? { ca: options.ca } : {}) }, (response) => {
        if (response.statusCode !== 200) {
          response.resume();
          reject(new Error(`HTTP ${response.statusCode}`));
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        response.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBodyBytes) request.destroy(new Error(`key set larger than ${maxBodyBytes} bytes`));
          else chunks.push(chunk);
        });
        response.on("end", () => {
          try {
            resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
          } catch {
            reject(new Error("key set is not JSON"));
          }
        });
        response.on("error", reject);
      });
      request.on("timeout", () => request.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      request.on("error", reject);
    });
  }

  async function fetchOnce(): Promise<boolean> {
    lastFetchAt = performance.now();
    fetches++;
    try {
      const next = keysFromJwks(await get());
      const kids = (list: readonly VerificationKey[]) => list.map((k) => k.kid).join(",");
      if (kids(next) !== kids(keys)) {
        keys = next;
        logger.info({ url: options.url, kids: next.map((k) => k.kid) }, "token keys fetched from the gateway's JWKS");
        for (const listener of listeners) listener(keys);
      }
      return true;
    } catch (error) {
      logger.warn({ url: options.url, err: error }, "cannot fetch the gateway's JWKS; keeping the keys I have");
      return false;
    }
  }

  /** One fetch no sooner than the cooldown allows, shared by everyone who asks meanwhile. */
  function fetchSoon(): Promise<void> {
    pending ??= (async () => {
      const wait = lastFetchAt + options.cooldownMs - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait).unref());
      await fetchOnce();
    })().finally(() => {
      pending = undefined;
    });
    return pending;
  }

  function schedule(ok: boolean): void {
    if (stopped) return;
    timer = setTimeout(() => void fetchSoon().then(() => schedule(keys.length > 0)), ok ? options.refreshIntervalMs : options.cooldownMs);
    timer.unref();
  }

  return {
    keys: () => keys,
    onKeys: (listener) => listeners.push(listener),
    start() {
      void fetchSoon().then(() => schedule(keys.length > 0));
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
    async refreshFor(kid) {
      if (keys.some((k) => k.kid === kid)) return true;
      await fetchSoon();
      return keys.some((k) => k.kid === kid);
    },
    fetchCount: () => fetches,
  };
}
