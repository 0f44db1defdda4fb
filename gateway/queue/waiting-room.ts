import { Code } from "@connectrpc/connect";
import type { Logger } from "../../common/logger.js";
import { GatewayError, grpcStatusOf } from "../errors.js";
import { AcquireQueue } from "../leases/acquire-queue.js";
import type { AcquireRequest, AcquireResult, Lease, LeaseStore, QueueEntry, QueueStats } from "../leases/lease-store.js";

/** How a waiting call ended, for metrics (`mygateway_queue_wait_seconds{result}`). */
export type WaitOutcome = "granted" | "timeout" | "deadline" | "cancelled" | "full" | "error";

/** What a call asked for and how it can end (SPEC 11). */
export interface CallWait {
  /** The wait asked for in `x-wait-for-instance`, milliseconds; capped by `QUEUE_MAX_WAIT`. */
  readonly requestedMs: number;
  /** Time left before the call's deadline, milliseconds; `undefined` without a deadline. */
  readonly deadlineMs?: number | undefined;
  /**
   * Aborted when the call ends otherwise (client cancel, deadline): the session leaves the
   * queue at once and the call rejects with the abort reason.
   */
  readonly signal: AbortSignal;
}

/** Where a granted call stood, for its response headers. */
export interface QueueTicket {
  /** Time the call spent waiting, milliseconds. */
  readonly waitedMs: number;
  /** Its position when it entered, 1 = first. */
  readonly position: number;
}

/** The answer to a waiting acquisition. */
export type Admission =
  | { readonly kind: "existing" | "acquired"; readonly lease: Lease; readonly queued?: QueueTicket }
  | { readonly kind: "unavailable" }
  | { readonly kind: "user-limit" }
  /** Waited its full time: RESOURCE_EXHAUSTED with this retry hint (the estimated wait). */
  | { readonly kind: "waited-out"; readonly retryAfterMs: number }
  /** The queue holds `QUEUE_MAX_LENGTH` entries: refused at once. */
  | { readonly kind: "queue-full"; readonly retryAfterMs: number };

/** Options of `WaitingRoom`. */
export interface WaitingRoomOptions {
  readonly store: LeaseStore;
  /** This gateway's id (`GATEWAY_ID`): its entries are purged when it stops beating. */
  readonly gatewayId: string;
  /** `QUEUE_MAX_WAIT`: longest wait of one call, milliseconds. */
  readonly maxWaitMs: number;
  /** `QUEUE_MAX_LENGTH`: entries the queue holds at most, every gateway's together; 0 = waiting off. */
  readonly maxLength: number;
  /** Entries of gateways without a heartbeat this long are purged, milliseconds (the membership's window). */
  readonly liveWithinMs: number;
  /** Period of the purge, milliseconds; every `liveWithinMs` it also checks that this gateway's entries still exist. */
  readonly purgeIntervalMs: number;
  /** Retry hint before the first grant gives an estimate, milliseconds. */
  readonly defaultRetryAfterMs: number;
  readonly logger: Logger;
  /** Observes every call that entered the queue (or was refused by a full one), when it ends. */
  readonly onOutcome?: (outcome: WaitOutcome, waitedMs: number) => void;
  /** Entries of dead gateways purged by this gateway. */
  readonly onPurged?: (count: number) => void;
}

/**
 * Estimated wait of the entry at `position`: `position` times the mean time between recent
 * grants (SPEC 11), milliseconds; `undefined` before the first grant.
 */
export function estimateWaitMs(position: number, stats: QueueStats): number | undefined {
  if (stats.meanGrantIntervalMs === undefined) return undefined;
  return Math.max(1, Math.round(Math.max(1, position) * stats.meanGrantIntervalMs));
}

const deadlineExceeded = new GatewayError(Code.DeadlineExceeded, "deadline exceeded");

interface Call {
  readonly request: AcquireRequest;
  /** `performance.now()` when it asked. */
  readonly started: number;
  /** Longest wait, milliseconds: the header, `QUEUE_MAX_WAIT` and the deadline. */
  readonly limitMs: number;
  /** The deadline is what ends the wait (it is not longer than the header and `QUEUE_MAX_WAIT`). */
  readonly endsByDeadline: boolean;
  readonly signal: AbortSignal;
  /** Its acquisition answered `queued`: it holds a place. */
  entered: boolean;
  done: boolean;
  timer: NodeJS.Timeout | undefined;
  /** Why it ends when it was not aborted by the caller (its deadline, seen by this room's timer). */
  onAbortReason?: unknown;
  readonly resolve: (admission: Admission) => void;
  readonly reject: (error: unknown) => void;
  readonly onAbort: () => void;
}

/** The calls of one session waiting on this gateway: they share one place in the queue. */
interface Waiter {
  readonly sessionId: string;
  readonly calls: Set<Call>;
  entry: QueueEntry | undefined;
  /** A grant claimed while some of its calls were still entering. */
  grant: { readonly lease: Lease; readonly position: number } | undefined;
}

/**
 * The gateway's side of the waiting room (SPEC 11). The queue itself lives in the lease store,
 * shared by every gateway; this keeps the calls waiting on this gateway, wakes them when the
 * store says something was granted (pushed: in-process events, `PRAGMA data_version` for other
 * processes on one SQLite file, `LISTEN/NOTIFY` on PostgreSQL), claims their grants, ends them
 * at their limit, and takes them out of the queue the moment they go away. Entries of gateways
 * that stopped beating are purged every `purgeIntervalMs`.
 */
export class WaitingRoom {
  private readonly waiters = new Map<string, Waiter>();
  private readonly acquisitions: AcquireQueue;
  private unwatch: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private checkScheduled = false;
  private checking = false;
  private checkAgain = false;
  /** The next check also asks about every entered session (are their entries still there?). */
  private verifyAll = false;
  private lastVerifyAt = 0;

  constructor(private readonly options: WaitingRoomOptions) {
    this.acquisitions = new AcquireQueue(options.store);
  }

  /** Removes entries a previous process of this gateway left, then purges every period. */
  async start(): Promise<void> {
    const left = await this.options.store.leaveQueueOf(this.options.gatewayId);
    if (left.length > 0) this.options.logger.warn({ entries: left.length }, "removed queue entries of this gateway's previous process");
    this.timer ??= setInterval(() => void this.tick(), this.options.purgeIntervalMs).unref();
  }

  /** Ends every waiting call with UNAVAILABLE and removes this gateway's entries. */
  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    for (const waiter of [...this.waiters.values()]) {
      for (const call of [...waiter.calls]) {
        if (this.finishCall(waiter, call)) call.reject(new GatewayError(Code.Unavailable, "backend service unavailable"));
      }
    }
    try {
      await this.options.store.leaveQueueOf(this.options.gatewayId);
    } catch (error) {
      this.options.logger.warn({ err: error }, "could not remove this gateway's queue entries; they are purged by the others");
    }
  }

  /** Sessions waiting on this gateway. */
  get size(): number {
    return this.waiters.size;
  }

  /**
   * Acquires an instance for `request`, waiting in the queue when every healthy instance is
   * leased (SPEC 11): at most `wait.requestedMs`, `QUEUE_MAX_WAIT` and the call's deadline.
   * Rejects with the signal's reason when the call goes away; its place is freed at once.
   */
  acquire(request: Omit<AcquireRequest, "wait">, wait: CallWait): Promise<Admission> {
    if (wait.signal.aborted) return Promise.reject(wait.signal.reason);
    const waitMs = Math.min(wait.requestedMs, this.options.maxWaitMs);
    const endsByDeadline = wait.deadlineMs !== undefined && wait.deadlineMs <= waitMs;
    const limitMs = Math.max(0, endsByDeadline ? (wait.deadlineMs as number) : waitMs);
    let waiter = this.waiters.get(request.sessionId);
    if (waiter === undefined) {
      waiter = { sessionId: request.sessionId, calls: new Set(), entry: undefined, grant: undefined };
      this.waiters.set(request.sessionId, waiter);
      this.unwatch ??= this.options.store.watchQueue(() => this.scheduleCheck());
    }
    const w = waiter;
    return new Promise<Admission>((resolve, reject) => {
      const call: Call = {
        request,
        started: performance.now(),
        limitMs,
        endsByDeadline,
        signal: wait.signal,
        entered: false,
        done: false,
        timer: undefined,
        resolve,
        reject,
        onAbort: () => void this.abandon(w, call),
      };
      wait.signal.addEventListener("abort", call.onAbort, { once: true });
      w.calls.add(call);
      this.enter(w, call);
    });
  }

  /** Asks the store for a place (or an instance at once); group-committed with other acquisitions. */
  private enter(waiter: Waiter, call: Call): void {
    const leftMs = call.limitMs - (performance.now() - call.started);
    const { gatewayId, maxLength } = this.options;
    this.acquisitions.acquire({ ...call.request, wait: { gatewayId, maxWaitMs: Math.max(1, Math.ceil(leftMs)), maxLength } }).then(
      (result) => void this.entered(waiter, call, result),
      (error: unknown) => {
        if (this.finishCall(waiter, call)) call.reject(error);
      },
    );
  }

  private async entered(waiter: Waiter, call: Call, result: AcquireResult): Promise<void> {
    if (call.done) {
      // The call left while its acquisition ran: a place it took is given back.
      if (result.kind === "queued" && this.waiters.get(waiter.sessionId) === undefined) await this.leave(waiter.sessionId, result.entry);
      return;
    }
    switch (result.kind) {
      case "existing":
      case "acquired": {
        // `existing` after a grant this session's other call claimed: it waited too.
        const grant = waiter.grant?.lease.instanceAddress === result.lease.instanceAddress ? waiter.grant : undefined;
        const queued = grant ? this.ticket(call, grant.position) : undefined;
        if (this.finishCall(waiter, call)) call.resolve({ kind: result.kind, lease: result.lease, ...(queued ? { queued } : {}) });
        return;
      }
      case "unavailable":
      case "user-limit":
        if (this.finishCall(waiter, call)) call.resolve({ kind: result.kind });
        return;
      case "busy":
        // Not answered to a request that waits; treated as a wait of zero.
        await this.waitedOut(waiter, call);
        return;
      case "queue-full": {
        if (!this.finishCall(waiter, call)) return;
        this.options.onOutcome?.("full", 0);
        call.resolve({ kind: "queue-full", retryAfterMs: await this.retryAfterMs(result.length + 1) });
        return;
      }
      case "queued":
        break;
    }
    waiter.entry = result.entry;
    call.entered = true;
    if (waiter.grant !== undefined) {
      this.grantCall(waiter, call, waiter.grant.lease, waiter.grant.position);
      return;
    }
    const leftMs = call.limitMs - (performance.now() - call.started);
    call.timer = setTimeout(() => void this.waitedOut(waiter, call), Math.max(0, leftMs));
  }

  private ticket(call: Call, position: number): QueueTicket {
    return { waitedMs: performance.now() - call.started, position };
  }

  private grantCall(waiter: Waiter, call: Call, lease: Lease, position: number): void {
    if (!this.finishCall(waiter, call)) return;
    const queued = this.ticket(call, position);
    this.options.onOutcome?.("granted", queued.waitedMs);
    call.resolve({ kind: "acquired", lease, queued });
  }

  /**
   * The call waited its full time: it leaves, with the estimated wait as its retry hint. When
   * its deadline is what ended the wait, it ends as its deadline would (DEADLINE_EXCEEDED),
   * whichever of this timer and the caller's own comes first.
   */
  private async waitedOut(waiter: Waiter, call: Call): Promise<void> {
    if (call.endsByDeadline && !call.done) {
      call.onAbortReason = deadlineExceeded;
      await this.abandon(waiter, call);
      return;
    }
    if (!this.finishCall(waiter, call)) return;
    const waitedMs = performance.now() - call.started;
    let position = waiter.entry?.position ?? 1;
    if (waiter.calls.size === 0) position = (await this.leave(waiter.sessionId, waiter.entry))?.position || position;
    this.options.onOutcome?.("timeout", waitedMs);
    call.resolve({ kind: "waited-out", retryAfterMs: await this.retryAfterMs(position) });
  }

  /** The call went away (cancel, deadline): its place is freed at once, the call rejects. */
  private async abandon(waiter: Waiter, call: Call): Promise<void> {
    const entered = call.entered;
    if (!this.finishCall(waiter, call)) return;
    const reason = call.onAbortReason ?? call.signal.reason;
    const outcome = grpcStatusOf(reason).code === Code.DeadlineExceeded ? "deadline" : "cancelled";
    if (entered) this.options.onOutcome?.(outcome, performance.now() - call.started);
    call.reject(reason);
    if (entered && waiter.calls.size === 0) await this.leave(waiter.sessionId, waiter.entry);
  }

  /** Removes the session's entry if this gateway made it (a joined entry belongs to its gateway). */
  private async leave(sessionId: string, entry: QueueEntry | undefined): Promise<QueueEntry | undefined> {
    if (entry !== undefined && entry.gatewayId !== this.options.gatewayId) return undefined;
    try {
      return await this.options.store.leaveQueue(sessionId);
    } catch (error) {
      this.options.logger.warn({ err: error, sessionId }, "could not leave the queue; the entry is purged after its deadline");
      return undefined;
    }
  }

  /** Marks a call done and forgets it; false if it was done already. */
  private finishCall(waiter: Waiter, call: Call): boolean {
    if (call.done) return false;
    call.done = true;
    if (call.timer !== undefined) clearTimeout(call.timer);
    call.signal.removeEventListener("abort", call.onAbort);
    waiter.calls.delete(call);
    if (waiter.calls.size === 0 && this.waiters.get(waiter.sessionId) === waiter) {
      this.waiters.delete(waiter.sessionId);
      if (this.waiters.size === 0 && this.unwatch !== undefined) {
        this.unwatch();
        this.unwatch = undefined;
      }
    }
    return true;
  }

  private async retryAfterMs(position: number): Promise<number> {
    try {
      return estimateWaitMs(position, await this.options.store.queueStats()) ?? this.options.defaultRetryAfterMs;
    } catch {
      return this.options.defaultRetryAfterMs;
    }
  }

  /** Coalesces wake-ups: one check per turn of the event loop, after the calls of this turn registered. */
  private scheduleCheck(verifyAll = false): void {
    if (verifyAll) this.verifyAll = true;
    if (this.checkScheduled) return;
    this.checkScheduled = true;
    setImmediate(() => {
      this.checkScheduled = false;
      void this.check();
    });
  }

  /** Claims this gateway's grants and hands them to their calls (one at a time; repeats if woken meanwhile). */
  private async check(): Promise<void> {
    if (this.checking) {
      this.checkAgain = true;
      return;
    }
    this.checking = true;
    try {
      do {
        this.checkAgain = false;
        const verifyAll = this.verifyAll;
        this.verifyAll = false;
        const sessions: string[] = [];
        for (const waiter of this.waiters.values()) {
          if (waiter.entry === undefined) continue;
          if (verifyAll || waiter.entry.gatewayId !== this.options.gatewayId) sessions.push(waiter.sessionId);
        }
        if (this.waiters.size === 0) break;
        const { claimed, leased, gone } = await this.options.store.claimGranted(this.options.gatewayId, sessions);
        for (const { lease, entry } of claimed) await this.granted(lease, entry.entryPosition, true);
        for (const lease of leased) await this.granted(lease, this.waiters.get(lease.sessionId)?.entry?.entryPosition ?? 0, false);
        for (const sessionId of gone) this.reenter(sessionId);
      } while (this.checkAgain);
    } catch (error) {
      this.options.logger.warn({ err: error }, "waiting room: could not claim grants; retried at the next wake-up");
    } finally {
      this.checking = false;
    }
  }

  /** A lease for a session of this gateway's calls: `claimedHere` when this gateway turned the grant into it. */
  private async granted(lease: Lease, position: number, claimedHere: boolean): Promise<void> {
    const waiter = this.waiters.get(lease.sessionId);
    if (waiter === undefined) {
      // A lease another gateway's claim made is that session's to use: not ours to give back.
      if (!claimedHere) return;
      // Every call of the session left while its grant was being claimed (SPEC 11: a waiter
      // that went away never holds an instance): the lease is given back.
      this.options.logger.warn({ sessionId: lease.sessionId, pod: lease.podName }, "grant claimed after its calls left; releasing it");
      try {
        await this.options.store.release(lease.sessionId, lease.instanceAddress);
      } catch (error) {
        this.options.logger.warn({ err: error, sessionId: lease.sessionId }, "could not release an abandoned grant; it expires");
      }
      return;
    }
    for (const call of [...waiter.calls]) if (call.entered) this.grantCall(waiter, call, lease, position);
    // Calls still entering get `existing` (or `queued`, then this grant) from their acquisition.
    if (waiter.calls.size > 0) waiter.grant = { lease, position };
  }

  /** The session's entry is gone without a lease (purged, or its gateway left): its calls enter again. */
  private reenter(sessionId: string): void {
    const waiter = this.waiters.get(sessionId);
    if (waiter === undefined) return;
    this.options.logger.warn({ sessionId }, "queue entry removed while calls still wait; entering again");
    waiter.entry = undefined;
    for (const call of waiter.calls) {
      if (!call.entered || call.done) continue;
      call.entered = false;
      if (call.timer !== undefined) clearTimeout(call.timer);
      call.timer = undefined;
      this.enter(waiter, call);
    }
  }

  private async tick(): Promise<void> {
    try {
      const purged = await this.options.store.purgeQueue(this.options.liveWithinMs);
      if (purged.length > 0) {
        this.options.logger.warn(
          { entries: purged.length, gateways: [...new Set(purged.map((e) => e.gatewayId))] },
          "purged queue entries of gateways that stopped beating (or long past their deadline)",
        );
        this.options.onPurged?.(purged.length);
      }
    } catch (error) {
      this.options.logger.warn({ err: error }, "queue purge failed; retried next period");
    }
    // Once per membership window: did another gateway purge an entry of this one (it looked dead)?
    if (this.waiters.size > 0 && Date.now() - this.lastVerifyAt >= this.options.liveWithinMs) {
      this.lastVerifyAt = Date.now();
      this.scheduleCheck(true);
    }
  }
}
