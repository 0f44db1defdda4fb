/** One throttle dimension: at most `maxFailures` failed logins per key within `windowMs`. */
export interface ThrottleLimit {
  /** Failures allowed within the window; 0 disables this dimension. */
  readonly maxFailures: number;
  /** Sliding window, milliseconds. */
  readonly windowMs: number;
}

/** Options of `LoginThrottle`. */
export interface LoginThrottleOptions {
  /** Failures per username (`LOGIN_MAX_FAILURES_PER_USER` within `LOGIN_USER_FAILURE_WINDOW`). Default 5 in 5 min. */
  readonly perUser?: ThrottleLimit;
  /** Failures per client address (`LOGIN_MAX_FAILURES_PER_PEER` within `LOGIN_PEER_FAILURE_WINDOW`). Default 20 in 1 min. */
  readonly perPeer?: ThrottleLimit;
  /** Most keys remembered per dimension; the oldest go first, so memory stays bounded. Default 100,000. */
  readonly maxKeys?: number;
  /** Clock, Unix milliseconds; tests replace it. */
  readonly now?: () => number;
}

/** A login attempt admitted by `LoginThrottle.begin`: report its outcome exactly once. */
export interface LoginAttempt {
  /** The password was right: the attempt is not a failure, and the user's failures are forgotten. */
  succeeded(): void;
  /** The password was wrong (or the user unknown): the attempt stays counted. */
  failed(): void;
}

/** `begin`'s answer: the attempt may proceed, or is refused until `retryAfterMs` has passed. */
export type ThrottleDecision =
  | { readonly allowed: true; readonly attempt: LoginAttempt }
  | { readonly allowed: false; readonly retryAfterMs: number; readonly by: "user" | "peer" };

/** Longest part of a username used as a key: longer names cannot exhaust memory. */
const maxKeyLength = 256;

/**
 * Failed-login throttling per username and per client address (sliding windows). An attempt
 * counts as a failure from the moment it starts until it succeeds, so a burst of concurrent
 * wrong passwords cannot overrun the limit while their scrypt checks run. Unknown and known
 * usernames are throttled alike (no user enumeration). Memory is bounded by `maxKeys`.
 */
export class LoginThrottle {
  private readonly users: FailureWindows;
  private readonly peers: FailureWindows;
  private readonly now: () => number;

  constructor(options: LoginThrottleOptions = {}) {
    const maxKeys = options.maxKeys ?? 100_000;
    this.users = new FailureWindows(options.perUser ?? { maxFailures: 5, windowMs: 5 * 60_000 }, maxKeys);
    this.peers = new FailureWindows(options.perPeer ?? { maxFailures: 20, windowMs: 60_000 }, maxKeys);
    this.now = options.now ?? Date.now;
  }

  /** Admits an attempt of `username` from `peer` (`undefined` when unknown), or refuses it with a retry hint. */
  begin(username: string, peer: string | undefined): ThrottleDecision {
    const now = this.now();
    const userKey = username.length > maxKeyLength ? `${username.slice(0, maxKeyLength)}…${username.length}` : username;
    const peerKey = peer === undefined || peer === "" ? undefined : peer.slice(0, maxKeyLength);
    const userWait = this.users.waitMs(userKey, now);
    const peerWait = peerKey === undefined ? 0 : this.peers.waitMs(peerKey, now);
    if (userWait > 0 || peerWait > 0) {
      return userWait >= peerWait
        ? { allowed: false, retryAfterMs: userWait, by: "user" }
        : { allowed: false, retryAfterMs: peerWait, by: "peer" };
    }
    this.users.add(userKey, now);
    const peerEntry = peerKey === undefined ? undefined : this.peers.add(peerKey, now);
    let settled = false;
    return {
      allowed: true,
      attempt: {
        succeeded: () => {
          if (settled) return;
          settled = true;
          this.users.forget(userKey);
          if (peerKey !== undefined && peerEntry !== undefined) this.peers.remove(peerKey, peerEntry);
        },
        failed: () => {
          settled = true;
        },
      },
    };
  }

  /** Keys currently remembered (users, peers): for tests and metrics. */
  size(): { users: number; peers: number } {
    return { users: this.users.size, peers: this.peers.size };
  }
}

/** Failure timestamps per key, oldest first; at most `maxFailures` kept per key. */
class FailureWindows {
  private readonly byKey = new Map<string, number[]>();

  constructor(
    private readonly limit: ThrottleLimit,
    private readonly maxKeys: number,
  ) {}

  get size(): number {
    return this.byKey.size;
  }

  /** Milliseconds until one more attempt is allowed for `key`; 0 when allowed now. */
  waitMs(key: string, now: number): number {
    if (this.limit.maxFailures <= 0) return 0;
    const list = this.prune(key, now);
    if (list === undefined || list.length < this.limit.maxFailures) return 0;
    // Allowed again once the oldest failure counted leaves the window.
    return Math.max(1, (list[list.length - this.limit.maxFailures] as number) + this.limit.windowMs - now);
  }

  /** Counts an attempt now; returns its timestamp token (to remove it on success). */
  add(key: string, now: number): number | undefined {
    if (this.limit.maxFailures <= 0) return undefined;
    let list = this.byKey.get(key);
    if (list === undefined) {
      if (this.byKey.size >= this.maxKeys) {
        const oldest = this.byKey.keys().next();
        if (!oldest.done) this.byKey.delete(oldest.value);
      }
      list = [];
    } else {
      // Re-insert so the map's order stays "least recently failed first" for eviction.
      this.byKey.delete(key);
    }
    list.push(now);
    if (list.length > this.limit.maxFailures) list.splice(0, list.length - this.limit.maxFailures);
    this.byKey.set(key, list);
    return now;
  }

  remove(key: string, entry: number): void {
    const list = this.byKey.get(key);
    if (list === undefined) return;
    const i = list.lastIndexOf(entry);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.byKey.delete(key);
  }

  forget(key: string): void {
    this.byKey.delete(key);
  }

  private prune(key: string, now: number): number[] | undefined {
    const list = this.byKey.get(key);
    if (list === undefined) return undefined;
    const from = now - this.limit.windowMs;
    let drop = 0;
    while (drop < list.length && (list[drop] as number) <= from) drop++;
    if (drop > 0) list.splice(0, drop);
    if (list.length === 0) {
      this.byKey.delete(key);
      return undefined;
    }
    return list;
  }
}
