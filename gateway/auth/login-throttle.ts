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
  /**
   * Most attempts of one username (and, ×4, of one peer) in flight at once; more are refused at
   * once. Bounds a burst without refusing legitimate parallel logins. Default 16.
   */
  readonly maxConcurrent?: number;
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
 * Failed-login throttling per username and per client address (sliding windows of completed
 * failures). Attempts in flight are bounded too: at most `maxConcurrent` per user, and once a
 * user has a recent failure, failures plus attempts in flight never exceed the limit, so a
 * burst of concurrent wrong passwords cannot overrun it while their scrypt checks run — yet
 * parallel logins of a user with no failures all pass. Unknown and known usernames are
 * throttled alike (no user enumeration). Memory is bounded by `maxKeys`.
 */
export class LoginThrottle {
  private readonly users: FailureWindows;
  private readonly peers: FailureWindows;
  private readonly userLimit: ThrottleLimit;
  private readonly peerLimit: ThrottleLimit;
  private readonly inFlightUsers = new Map<string, number>();
  private readonly inFlightPeers = new Map<string, number>();
  private readonly maxConcurrent: number;
  private readonly now: () => number;

  constructor(options: LoginThrottleOptions = {}) {
    const maxKeys = options.maxKeys ?? 100_000;
    this.userLimit = options.perUser ?? { maxFailures: 5, windowMs: 5 * 60_000 };
    this.peerLimit = options.perPeer ?? { maxFailures: 20, windowMs: 60_000 };
    this.users = new FailureWindows(this.userLimit, maxKeys);
    this.peers = new FailureWindows(this.peerLimit, maxKeys);
    this.maxConcurrent = Math.max(1, options.maxConcurrent ?? 16);
    this.now = options.now ?? Date.now;
  }

  /** Admits an attempt of `username` from `peer` (`undefined` when unknown), or refuses it with a retry hint. */
  begin(username: string, peer: string | undefined): ThrottleDecision {
    const now = this.now();
    const userKey = username.length > maxKeyLength ? `${username.slice(0, maxKeyLength)}…${username.length}` : username;
    const peerKey = peer === undefined || peer === "" ? undefined : peer.slice(0, maxKeyLength);
    const userWait = this.users.waitMs(userKey, now, this.inFlightUsers.get(userKey) ?? 0);
    const peerWait = peerKey === undefined ? 0 : this.peers.waitMs(peerKey, now, this.inFlightPeers.get(peerKey) ?? 0);
    if (userWait > 0 || peerWait > 0) {
      return userWait >= peerWait
        ? { allowed: false, retryAfterMs: userWait, by: "user" }
        : { allowed: false, retryAfterMs: peerWait, by: "peer" };
    }
    // Bursts: a second or so is how long a scrypt check takes under load.
    if ((this.inFlightUsers.get(userKey) ?? 0) >= this.maxConcurrent) return { allowed: false, retryAfterMs: 1000, by: "user" };
    if (peerKey !== undefined && (this.inFlightPeers.get(peerKey) ?? 0) >= this.maxConcurrent * 4) {
      return { allowed: false, retryAfterMs: 1000, by: "peer" };
    }
    increment(this.inFlightUsers, userKey, 1);
    if (peerKey !== undefined) increment(this.inFlightPeers, peerKey, 1);
    let settled = false;
    const settle = () => {
      if (settled) return false;
      settled = true;
      increment(this.inFlightUsers, userKey, -1);
      if (peerKey !== undefined) increment(this.inFlightPeers, peerKey, -1);
      return true;
    };
    return {
      allowed: true,
      attempt: {
        succeeded: () => {
          if (settle()) this.users.forget(userKey);
        },
        failed: () => {
          if (!settle()) return;
          this.users.add(userKey, this.now());
          if (peerKey !== undefined) this.peers.add(peerKey, this.now());
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

  /**
   * Milliseconds until one more attempt is allowed for `key`; 0 when allowed now. With recent
   * failures, `inFlight` attempts count as failures (they may well be).
   */
  waitMs(key: string, now: number, inFlight = 0): number {
    if (this.limit.maxFailures <= 0) return 0;
    const list = this.prune(key, now);
    if (list === undefined || list.length === 0) return 0;
    if (list.length < this.limit.maxFailures) return list.length + inFlight < this.limit.maxFailures ? 0 : 1000;
    return Math.max(1, (list[list.length - this.limit.maxFailures] as number) + this.limit.windowMs - now);
  }

  /** Counts a failure now; returns its timestamp. */
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

function increment(map: Map<string, number>, key: string, by: number): void {
  const n = (map.get(key) ?? 0) + by;
  if (n <= 0) map.delete(key);
  else map.set(key, n);
}
