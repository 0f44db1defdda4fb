import { Code } from "@connectrpc/connect";
import type { Logger } from "../../common/logger.js";
import { type AuthFailure, authenticateCall } from "../../common/metadata-auth.js";
import type { TokenClaims, TokenVerifier } from "../../common/tokens.js";
import { busyError, GatewayError, messages, unavailableError } from "../errors.js";
import { AcquireQueue } from "../leases/acquire-queue.js";
import type { LeaseKeeper } from "../leases/lease-keeper.js";
import type { AcquireResult, Lease, LeaseStore } from "../leases/lease-store.js";
import { queueHeaders } from "../queue/wait-header.js";
import type { Admission, CallWait, QueueTicket, WaitingRoom } from "../queue/waiting-room.js";

/** The three proxied methods. */
export type ProxiedMethod = "MyServiceEcho" | "MyServiceSubscribe" | "MyServiceShutdown";

/** An authenticated caller. */
export interface Caller {
  readonly sessionId: string;
  readonly claims: TokenClaims;
}

/** A session moved to another instance (SPEC 4.8); sent to the client as metadata. */
export interface Transfer {
  readonly fromPod: string;
  readonly toPod: string;
  readonly reason: string;
}

/** Where a call goes. */
export interface Route {
  readonly lease: Lease;
  readonly transfer?: Transfer;
  /** The call waited in the queue for this lease (SPEC 11): for its response headers. */
  readonly queued?: QueueTicket;
}

/** Metadata keys naming a transfer on the response (headers, or trailers of an open stream). */
export const transferHeaders = {
  from: "x-session-transferred-from",
  to: "x-session-transferred-to",
  reason: "x-session-transfer-reason",
} as const;

/** Options of `SessionRouter`. */
export interface SessionRouterOptions {
  readonly store: LeaseStore;
  readonly keeper: LeaseKeeper;
  readonly verifyToken: TokenVerifier;
  readonly leaseIdleTtlMs: number;
  /** Most sessions one user may hold at once; 0 = no limit. */
  readonly maxSessionsPerUser?: number;
  /** Retry hint sent with RESOURCE_EXHAUSTED, milliseconds. */
  readonly busyRetryAfterMs?: number;
  /** Where failures of background store writes go (a release after Shutdown). */
  readonly logger?: Logger;
  /** Observes every allocation attempt (metrics). */
  readonly onAllocation?: (result: "acquired" | "busy" | "unavailable" | "user-limit", durationMs: number) => void;
  /** The waiting room, for calls that carry `x-wait-for-instance` (SPEC 11); without it they do not wait. */
  readonly waitingRoom?: WaitingRoom;
  /**
   * Called after `abandonGrant` released a lease a waiter got and left before using: its
   * instance may have seen the session, so it is recycled.
   */
  readonly onGrantAbandoned?: (lease: Lease) => void;
}

const authErrors: Record<AuthFailure, GatewayError> = {
  "missing-session-id": new GatewayError(Code.Unauthenticated, messages.missingSessionId),
  "invalid-token": new GatewayError(Code.Unauthenticated, messages.invalidToken),
};

/**
 * Decides where a MyService* call goes: authenticates it (SPEC 4.2), finds or acquires the
 * session's lease (4.3), applies the owner check, and moves a session whose instance died
 * (4.8). Shared by the native gRPC relay and the Connect/gRPC-Web proxy.
 */
export class SessionRouter {
  private readonly queue: AcquireQueue;
  /** Sessions whose lease was released because their instance died: the next call says so. */
  private readonly lostLeases = new Map<string, { pod: string; reason: string }>();

  constructor(private readonly options: SessionRouterOptions) {
    this.queue = new AcquireQueue(options.store);
  }

  /** Checks `session-id` then the token; returns the caller or throws UNAUTHENTICATED. */
  authenticate(sessionIdHeader: string | undefined, authorization: string | undefined): Caller {
    const result = authenticateCall(sessionIdHeader, authorization, this.options.verifyToken);
    if (!result.ok) throw authErrors[result.failure];
    return { sessionId: result.sessionId, claims: result.claims };
  }

  /**
   * The lease a call of `caller` must use; acquires one for Echo/Subscribe of a session
   * without a lease (asynchronously: acquisitions are group-committed), waiting in the queue
   * when `wait` is given and every instance is leased (SPEC 11). Also returns a transfer when
   * the session's previous instance was lost.
   */
  route(method: ProxiedMethod, caller: Caller, wait?: CallWait): Route | Promise<Route> {
    const { store } = this.options;
    // The hot path: a leased session is answered without waiting (no await, no extra turn).
    const known = store.lookup(caller.sessionId);
    if (known) return this.routeTo(known, caller);
    if (method === "MyServiceShutdown") {
      if (known === null) throw new GatewayError(Code.PermissionDenied, messages.sessionNotSet);
      return store.get(caller.sessionId).then(
        (lease) => {
          if (lease === undefined) throw new GatewayError(Code.PermissionDenied, messages.sessionNotSet);
          return this.routeTo(lease, caller);
        },
        (error: unknown) => {
          throw unavailableError(error);
        },
      );
    }
    // No lease, or none known without a read: the acquisition returns an existing one.
    if (wait === undefined || this.options.waitingRoom === undefined)
      return this.acquire(caller).then((lease) => this.afterLoss(caller, lease));
    return this.acquireWaiting(caller, wait).then(({ lease, queued }) => {
      const route = this.afterLoss(caller, lease);
      return queued === undefined ? route : { ...route, queued };
    });
  }

  /** The route of a newly acquired lease: names the transfer when the session had lost its instance. */
  private afterLoss(caller: Caller, lease: Lease): Route {
    const lost = this.lostLeases.get(caller.sessionId);
    if (lost === undefined) return { lease };
    this.lostLeases.delete(caller.sessionId);
    return { lease, transfer: { fromPod: lost.pod, toPod: lease.podName, reason: lost.reason } };
  }

  private routeTo(lease: Lease, caller: Caller): Route {
    this.checkOwner(lease, caller);
    this.options.keeper.touch(caller.sessionId);
    return { lease };
  }

  /** The acquisition of a call that may wait in the queue (SPEC 11). */
  private async acquireWaiting(caller: Caller, wait: CallWait): Promise<{ lease: Lease; queued?: QueueTicket }> {
    const room = this.options.waitingRoom as WaitingRoom;
    const started = performance.now();
    const done = (result: "acquired" | "busy" | "unavailable" | "user-limit") =>
      this.options.onAllocation?.(result, performance.now() - started);
    let admission: Admission;
    try {
      admission = await room.acquire(
        {
          sessionId: caller.sessionId,
          owner: caller.claims.sub,
          ttlMs: this.options.leaseIdleTtlMs,
          maxPerOwner: this.options.maxSessionsPerUser,
        },
        wait,
      );
    } catch (error) {
      // The call went away or its deadline passed (that is what it ends with), or the store failed.
      if (wait.signal.aborted || (error instanceof GatewayError && error.code === Code.DeadlineExceeded)) throw error;
      done("unavailable");
      throw unavailableError(error);
    }
    switch (admission.kind) {
      case "existing":
      case "acquired":
        if (admission.kind === "existing") this.checkOwner(admission.lease, caller);
        else done("acquired");
        this.options.keeper.touch(caller.sessionId);
        return admission.queued === undefined ? { lease: admission.lease } : { lease: admission.lease, queued: admission.queued };
      case "waited-out":
        done("busy");
        throw busyError(admission.retryAfterMs);
      case "queue-full":
        done("busy");
        throw busyError(admission.retryAfterMs, { [queueHeaders.full]: "true" });
      default:
        return this.refuse(admission, caller, done);
    }
  }

  private async acquire(caller: Caller, avoidAddress?: string): Promise<Lease> {
    const { maxSessionsPerUser } = this.options;
    const started = performance.now();
    const done = (result: "acquired" | "busy" | "unavailable" | "user-limit") =>
      this.options.onAllocation?.(result, performance.now() - started);
    let result: AcquireResult;
    try {
      result = await this.queue.acquire({
        sessionId: caller.sessionId,
        owner: caller.claims.sub,
        ttlMs: this.options.leaseIdleTtlMs,
        avoidAddress,
        maxPerOwner: maxSessionsPerUser,
      });
    } catch (error) {
      // The store cannot be written (database down, SPEC 10): a new session cannot be placed.
      done("unavailable");
      throw unavailableError(error);
    }
    switch (result.kind) {
      case "existing":
        this.checkOwner(result.lease, caller);
        this.options.keeper.touch(caller.sessionId);
        return result.lease;
      case "acquired":
        done("acquired");
        this.options.keeper.touch(caller.sessionId);
        return result.lease;
      case "busy":
      case "queued":
      case "queue-full":
        // A request without `wait` is never queued.
        done("busy");
        throw busyError(this.options.busyRetryAfterMs ?? 1000);
      default:
        return this.refuse(result, caller, done);
    }
  }

  private refuse(
    result: { readonly kind: "unavailable" | "user-limit" },
    caller: Caller,
    done: (result: "unavailable" | "user-limit") => void,
  ): never {
    done(result.kind);
    if (result.kind === "unavailable") throw unavailableError();
    throw new GatewayError(
      Code.ResourceExhausted,
      `user ${caller.claims.sub} already holds ${this.options.maxSessionsPerUser} sessions (the per-user limit)`,
    );
  }

  private checkOwner(lease: Lease, caller: Caller): void {
    if (lease.owner !== caller.claims.sub) {
      throw new GatewayError(Code.PermissionDenied, `session ${caller.sessionId} belongs to another user`);
    }
  }

  /**
   * Moves a session off `lost` (its instance died or restarted) to the free instance free for
   * longest, once. Throws RESOURCE_EXHAUSTED / UNAVAILABLE as in SPEC 4.3 when none is free.
   */
  async transfer(caller: Caller, lost: Lease, reason: string): Promise<{ lease: Lease; transfer: Transfer }> {
    const { store } = this.options;
    let released: Lease | undefined;
    let current: Lease | undefined;
    try {
      released = await store.release(lost.sessionId, lost.instanceAddress);
      // Someone else ended or moved the lease meanwhile (Shutdown, expiry, admin, another call).
      if (released === undefined) current = await store.get(lost.sessionId);
    } catch (error) {
      throw unavailableError(error);
    }
    if (released === undefined) {
      // The lease ended elsewhere (e.g. a Shutdown through another gateway, seen late by this
      // gateway's cache): the session continues on a new instance, as its next call would.
      if (current === undefined) {
        const lease = await this.acquire(caller, lost.instanceAddress);
        return { lease, transfer: { fromPod: lost.podName, toPod: lease.podName, reason } };
      }
      return { lease: current, transfer: { fromPod: lost.podName, toPod: current.podName, reason } };
    }
    this.lostLeases.delete(lost.sessionId);
    const lease = await this.acquire(caller, lost.instanceAddress);
    return { lease, transfer: { fromPod: lost.podName, toPod: lease.podName, reason } };
  }

  /** Remembers that a session lost its instance, so its next call reports the transfer. */
  noteLostLease(lease: Lease, reason: string): void {
    if (this.lostLeases.size >= 100_000) {
      const oldest = this.lostLeases.keys().next();
      if (!oldest.done) this.lostLeases.delete(oldest.value);
    }
    this.lostLeases.set(lease.sessionId, { pod: lease.podName, reason });
  }

  /**
   * A call that waited in the queue went away (cancel, deadline) after its grant but before
   * its response began (SPEC 11: a waiter that left never holds an instance): its lease is
   * released and the instance recycled, as the request may have reached it.
   */
  async abandonGrant(lease: Lease): Promise<void> {
    let released: Lease | undefined;
    try {
      released = await this.options.store.release(lease.sessionId, lease.instanceAddress);
    } catch (error) {
      this.options.logger?.warn({ err: error, sessionId: lease.sessionId }, "release of an abandoned grant failed; the lease expires");
      return;
    }
    if (released === undefined) return;
    this.options.logger?.info({ sessionId: lease.sessionId, pod: lease.podName }, "waiter left right after its grant; lease released");
    this.options.onGrantAbandoned?.(released);
  }

  /**
   * Releases the lease after a successful Shutdown (SPEC 4.5). Resolves once written; a
   * failure is logged (the lease then expires or is reconciled when the instance restarts).
   */
  async releaseAfterShutdown(lease: Lease): Promise<void> {
    try {
      await this.options.store.release(lease.sessionId, lease.instanceAddress);
    } catch (error) {
      this.options.logger?.warn({ err: error, sessionId: lease.sessionId }, "release after Shutdown failed");
    }
  }
}
