import type {
  AcquireRequest,
  AcquireResult,
  ClaimResult,
  GatewayMember,
  InstanceRecord,
  InstanceStatus,
  Lease,
  LeaseChange,
  LeaseStore,
  QueueEntry,
  QueueStats,
  ReconcileOutcome,
} from "./lease-store.js";

/** Options of `CachedLeaseStore`. */
export interface CachedLeaseStoreOptions {
  /** Most cached leases; the oldest entries leave first. Default 200,000. */
  readonly maxEntries?: number;
}

/**
 * A per-gateway lease cache in front of a shared store (SPEC 10): `lookup` answers a leased
 * session from memory, so the per-call path makes no database round trip in the steady state.
 *
 * Coherence: entries come from this gateway's own reads and acquisitions; every change another
 * gateway commits arrives through `watch` (`LISTEN/NOTIFY`) and drops the session's entry (an
 * acquisition of the same lease keeps it); `resync` (the channel was down) drops them all. A
 * read that was in flight while a change of its session arrived is not cached.
 *
 * The waiting queue passes through: a grant is a reservation, not a lease, so nothing of it is
 * cached; the leases a claim returns (this gateway's, or another's that a call here joined) are
 * remembered like any read, and another gateway's claim drops nothing here (its lease is new).
 *
 * What a stale entry can do: route one call to the instance of a lease that ended. It cannot
 * reach another session there: an instance is leased again only after a new boot (the store's
 * fence), and the relay sends a call only over a connection whose boot id is the lease's, so
 * such a call finds the instance "gone" and moves the session (docs/scale-out.md).
 */
export class CachedLeaseStore implements LeaseStore {
  readonly engine: LeaseStore["engine"];
  private readonly cache = new Map<string, Lease>();
  private readonly maxEntries: number;
  /** Reads in flight (count) and the sessions changed while any was in flight. */
  private inflight = 0;
  private readonly changedDuringReads = new Map<string, { released: boolean; acquiredOn: Set<string> }>();
  private resyncs = 0;
  private readonly unwatch: () => void;

  constructor(
    private readonly inner: LeaseStore,
    options: CachedLeaseStoreOptions = {},
  ) {
    this.engine = inner.engine;
    this.maxEntries = options.maxEntries ?? 200_000;
    this.unwatch = inner.watch((change) => this.onChange(change));
  }

  /** Number of cached leases (metrics, tests). */
  get size(): number {
    return this.cache.size;
  }

  private onChange(change: LeaseChange): void {
    if (change.kind === "resync") {
      this.resyncs++;
      this.cache.clear();
      return;
    }
    if (change.kind !== "lease") return;
    if (this.inflight > 0) {
      let changed = this.changedDuringReads.get(change.sessionId);
      if (changed === undefined) {
        changed = { released: false, acquiredOn: new Set() };
        this.changedDuringReads.set(change.sessionId, changed);
      }
      if (change.op === "released") changed.released = true;
      else changed.acquiredOn.add(change.instanceAddress);
    }
    const cached = this.cache.get(change.sessionId);
    // Our own acquisition, heard back: the entry is that lease.
    if (cached !== undefined && change.op === "acquired" && cached.instanceAddress === change.instanceAddress) return;
    this.cache.delete(change.sessionId);
  }

  private remember(lease: Lease): void {
    if (this.cache.size >= this.maxEntries && !this.cache.has(lease.sessionId)) {
      const oldest = this.cache.keys().next();
      if (!oldest.done) this.cache.delete(oldest.value);
    }
    this.cache.set(lease.sessionId, lease);
  }

  /** Runs a read; caches its leases unless their session changed (or a resync came) meanwhile. */
  private async read<T>(run: () => Promise<T>, leasesOf: (result: T) => readonly Lease[]): Promise<T> {
    const resyncs = this.resyncs;
    this.inflight++;
    try {
      const result = await run();
      if (this.resyncs === resyncs) {
        for (const lease of leasesOf(result)) {
          // Only the news of this very lease being created (our own acquisition) leaves it current.
          const changed = this.changedDuringReads.get(lease.sessionId);
          const current = changed === undefined || (!changed.released && [...changed.acquiredOn].every((a) => a === lease.instanceAddress));
          if (current) this.remember(lease);
        }
      }
      return result;
    } finally {
      if (--this.inflight === 0) this.changedDuringReads.clear();
    }
  }

  available(): boolean {
    return this.inner.available();
  }

  lookup(sessionId: string): Lease | null | undefined {
    return this.cache.get(sessionId) ?? this.inner.lookup(sessionId);
  }

  get(sessionId: string): Promise<Lease | undefined> {
    return this.read(
      () => this.inner.get(sessionId),
      (lease) => (lease === undefined ? [] : [lease]),
    );
  }

  leaseOfInstance(address: string): Promise<Lease | undefined> {
    return this.inner.leaseOfInstance(address);
  }

  leases(): Promise<Lease[]> {
    return this.inner.leases();
  }

  countByOwner(owner: string): Promise<number> {
    return this.inner.countByOwner(owner);
  }

  async acquire(sessionId: string, owner: string, ttlMs: number, avoidAddress?: string): Promise<AcquireResult> {
    return (await this.acquireBatch([{ sessionId, owner, ttlMs, avoidAddress }]))[0] as AcquireResult;
  }

  acquireBatch(requests: readonly AcquireRequest[]): Promise<AcquireResult[]> {
    return this.read(
      () => this.inner.acquireBatch(requests),
      (results) => results.flatMap((r) => (r.kind === "acquired" || r.kind === "existing" ? [r.lease] : [])),
    );
  }

  async release(sessionId: string, expectAddress?: string): Promise<Lease | undefined> {
    const released = await this.inner.release(sessionId, expectAddress);
    if (released !== undefined) this.cache.delete(sessionId);
    return released;
  }

  touch(activity: ReadonlyMap<string, number>, ttlMs: number): Promise<void> {
    return this.inner.touch(activity, ttlMs);
  }

  async expire(now?: number): Promise<Lease[]> {
    const expired = await this.inner.expire(now);
    for (const lease of expired) this.cache.delete(lease.sessionId);
    return expired;
  }

  register(addresses: readonly string[]): Promise<void> {
    return this.inner.register(addresses);
  }

  async recordStatus(address: string, status: InstanceStatus, probeStartedAt?: number): Promise<ReconcileOutcome> {
    const outcome = await this.inner.recordStatus(address, status, probeStartedAt);
    if (outcome.released !== undefined) this.cache.delete(outcome.released.sessionId);
    return outcome;
  }

  setHealthy(address: string, healthy: boolean): Promise<void> {
    return this.inner.setHealthy(address, healthy);
  }

  setDraining(address: string, draining: boolean): Promise<boolean> {
    return this.inner.setDraining(address, draining);
  }

  instance(address: string): Promise<InstanceRecord | undefined> {
    return this.inner.instance(address);
  }

  instances(): Promise<InstanceRecord[]> {
    return this.inner.instances();
  }

  heartbeat(member: { readonly id: string; readonly address: string }): Promise<void> {
    return this.inner.heartbeat(member);
  }

  members(liveWithinMs: number): Promise<GatewayMember[]> {
    return this.inner.members(liveWithinMs);
  }

  leave(id: string): Promise<void> {
    return this.inner.leave(id);
  }

  watch(listener: (change: LeaseChange) => void): () => void {
    return this.inner.watch(listener);
  }

  claimGranted(gatewayId: string, sessions?: readonly string[]): Promise<ClaimResult> {
    return this.read(
      () => this.inner.claimGranted(gatewayId, sessions),
      (result) => [...result.claimed.map((c) => c.lease), ...result.leased],
    );
  }

  leaveQueue(sessionId: string): Promise<QueueEntry | undefined> {
    return this.inner.leaveQueue(sessionId);
  }

  leaveQueueOf(gatewayId: string): Promise<QueueEntry[]> {
    return this.inner.leaveQueueOf(gatewayId);
  }

  purgeQueue(liveWithinMs: number): Promise<QueueEntry[]> {
    return this.inner.purgeQueue(liveWithinMs);
  }

  queue(): Promise<QueueEntry[]> {
    return this.inner.queue();
  }

  queueEntry(sessionId: string): Promise<QueueEntry | undefined> {
    return this.inner.queueEntry(sessionId);
  }

  queueStats(): Promise<QueueStats> {
    return this.inner.queueStats();
  }

  watchQueue(listener: () => void): () => void {
    return this.inner.watchQueue(listener);
  }

  async close(): Promise<void> {
    this.unwatch();
    this.cache.clear();
    await this.inner.close();
  }
}
