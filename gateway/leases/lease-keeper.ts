import type { Logger } from "../../common/logger.js";
import type { Lease, LeaseStore } from "./lease-store.js";

/** Options of `LeaseKeeper`. */
export interface LeaseKeeperOptions {
  readonly store: LeaseStore;
  /** `LEASE_IDLE_TTL`, milliseconds. */
  readonly idleTtlMs: number;
  /** How often batched activity is written, milliseconds. Default min(1 s, ttl/4). */
  readonly flushIntervalMs?: number;
  /** How often expired leases are swept, milliseconds. Default min(5 s, ttl/4), at least 100 ms. */
  readonly sweepIntervalMs?: number;
  /**
   * Leases are expired only this long after their expiry, milliseconds. Default 0. With several
   * gateways (SPEC 10) each renews in batches: a sweeper must not expire a lease another gateway
   * renewed but has not written yet (two flush periods).
   */
  readonly expireGraceMs?: number;
  /** Called for every expired lease after it was released (the instance must be recycled). */
  readonly onExpired: (lease: Lease) => void;
  readonly logger: Logger;
  readonly now?: () => number;
}

/**
 * Renews leases without a store write per call (SPEC 4.3: every routed call renews; an open
 * stream keeps its lease alive): calls mark activity in memory and one transaction per flush
 * interval writes it. A write that fails (database down, SPEC 10) keeps the activity in memory
 * for the next flush. A sweeper releases idle leases (SPEC 4.6) after flushing.
 */
export class LeaseKeeper {
  private pending = new Map<string, number>();
  private readonly openStreams = new Map<string, number>();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly now: () => number;
  private flushing: Promise<void> | undefined;
  private sweeping = false;

  constructor(private readonly options: LeaseKeeperOptions) {
    this.now = options.now ?? Date.now;
  }

  start(): void {
    const ttl = this.options.idleTtlMs;
    const flushMs = this.options.flushIntervalMs ?? Math.max(50, Math.min(1000, ttl / 4));
    const sweepMs = this.options.sweepIntervalMs ?? Math.max(100, Math.min(5000, ttl / 4));
    this.timers.push(setInterval(() => void this.safely(() => this.flush()), flushMs).unref());
    this.timers.push(setInterval(() => void this.safely(() => this.sweep()), sweepMs).unref());
  }

  /** Stops the timers and writes pending activity once more. */
  async stop(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    this.timers.length = 0;
    await this.safely(() => this.flush());
  }

  /** Records activity of a session (a routed call). */
  touch(sessionId: string): void {
    this.pending.set(sessionId, this.now());
  }

  /** A stream of the session opened: its lease stays alive until the stream closes. */
  streamOpened(sessionId: string): void {
    this.openStreams.set(sessionId, (this.openStreams.get(sessionId) ?? 0) + 1);
    this.touch(sessionId);
  }

  streamClosed(sessionId: string): void {
    const n = (this.openStreams.get(sessionId) ?? 1) - 1;
    if (n <= 0) this.openStreams.delete(sessionId);
    else this.openStreams.set(sessionId, n);
    this.touch(sessionId);
  }

  /**
   * Writes pending activity (and keeps sessions with open streams alive) in one transaction.
   * One flush at a time; on failure the activity stays pending (newest time per session).
   */
  flush(): Promise<void> {
    this.flushing ??= this.flushOnce().finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  private async flushOnce(): Promise<void> {
    const now = this.now();
    for (const sessionId of this.openStreams.keys()) this.pending.set(sessionId, now);
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    try {
      await this.options.store.touch(batch, this.options.idleTtlMs);
    } catch (error) {
      for (const [sessionId, last] of batch) {
        if ((this.pending.get(sessionId) ?? 0) < last) this.pending.set(sessionId, last);
      }
      throw error;
    }
  }

  /** Flushes, then releases every expired lease and reports it. One sweep at a time. */
  async sweep(): Promise<Lease[]> {
    if (this.sweeping) return [];
    this.sweeping = true;
    try {
      await this.flush();
      return this.report(await this.options.store.expire(this.now() - (this.options.expireGraceMs ?? 0)));
    } finally {
      this.sweeping = false;
    }
  }

  private report(expired: Lease[]): Lease[] {
    for (const lease of expired) {
      this.options.logger.info(
        { sessionId: lease.sessionId, pod: lease.podName, idleMs: this.now() - lease.lastActivity },
        "lease expired; recycling its instance",
      );
      this.options.onExpired(lease);
    }
    return expired;
  }

  private async safely(fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
    } catch (error) {
      this.options.logger.error({ err: error }, "lease keeper failed; will retry");
    }
  }
}
