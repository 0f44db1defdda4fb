/** A session's lease on one instance (SPEC 4.3). Times are Unix milliseconds. */
export interface Lease {
  readonly sessionId: string;
  readonly instanceAddress: string;
  readonly podName: string;
  /** User who first leased the session; only this user may use it. */
  readonly owner: string;
  /** Boot id of the instance when leased: another boot id means the instance restarted. */
  readonly instanceBootId: string;
  readonly createdAt: number;
  readonly lastActivity: number;
  readonly expiresAt: number;
}

/** An instance as the store knows it. */
export interface InstanceRecord {
  readonly address: string;
  readonly podName: string;
  readonly bootId: string;
  /** Passed its last health probes. */
  readonly healthy: boolean;
  /** Taken out of allocation by an operator; its session (if any) stays. */
  readonly draining: boolean;
  /** Reported no session at its last probe since it was last released. */
  readonly clean: boolean;
  /** Session leasing it, or `null` when free. */
  readonly sessionId: string | null;
  /** When it last became free. */
  readonly freeSince: number;
  readonly updatedAt: number;
}

/** What an instance's status call reported. */
export interface InstanceStatus {
  readonly podName: string;
  readonly bootId: string;
  /** Session bound in the instance, `""` when none. */
  readonly sessionId: string;
  readonly shuttingDown: boolean;
}

export type AcquireResult =
  | { readonly kind: "existing"; readonly lease: Lease }
  | { readonly kind: "acquired"; readonly lease: Lease }
  /** Healthy instances exist, none is free. */
  | { readonly kind: "busy" }
  /** No healthy instance at all. */
  | { readonly kind: "unavailable" }
  /** The owner already holds `maxPerOwner` leases. */
  | { readonly kind: "user-limit" }
  /** Busy, and the request asked to wait: the session's entry in the queue (new, or the one it joined). */
  | { readonly kind: "queued"; readonly entry: QueueEntry; readonly joined: boolean }
  /** Busy, the request asked to wait, and the queue holds `wait.maxLength` entries already. */
  | { readonly kind: "queue-full"; readonly length: number };

/** One acquisition, for `acquireBatch`. */
export interface AcquireRequest {
  readonly sessionId: string;
  readonly owner: string;
  /** Idle expiry of the new lease, milliseconds. */
  readonly ttlMs: number;
  /** Skip this instance (a transfer away from it). */
  readonly avoidAddress?: string;
  /** Most leases one owner may hold; 0 or absent = no limit. */
  readonly maxPerOwner?: number;
  /** When every healthy instance is leased: enter the waiting queue instead of answering `busy` (SPEC 11). */
  readonly wait?: WaitRequest;
}

/** What `recordStatus` changed. */
export interface ReconcileOutcome {
  /** The lease released because the instance restarted (another boot) or holds another session. */
  readonly released?: Lease;
  /** A session the instance holds that no lease knows: it must be recycled before reuse. */
  readonly unknownSession?: string;
  /**
   * The free instance still runs the boot that served its last lease (e.g. its session never
   * reached it, so its Shutdown was refused): it must be recycled before reuse. An instance is
   * leased to another session only after a new boot, so the boot id fences stale routes.
   */
  readonly fenced?: boolean;
}

/** A gateway process registered in the store (membership, SPEC 10). */
export interface GatewayMember {
  /** `GATEWAY_ID`: unique among the gateways sharing the store. */
  readonly id: string;
  /** Where the gateway serves (for operators), e.g. `10.0.0.5:10000`. */
  readonly address: string;
  /** When this process registered, Unix milliseconds. */
  readonly startedAt: number;
  /** Its last heartbeat, Unix milliseconds (the store's clock of the writing gateway). */
  readonly heartbeatAt: number;
}

/**
 * A change committed to the store, delivered by `watch` after the commit. Lease caches drop
 * the session's entry; waiters for a free instance wake up. `resync` means changes may have
 * been missed (the channel was down): every cached lease must be dropped.
 */
export type LeaseChange =
  | { readonly kind: "lease"; readonly sessionId: string; readonly instanceAddress: string; readonly op: "acquired" | "released" }
  | { readonly kind: "instance"; readonly address: string }
  | { readonly kind: "members" }
  | { readonly kind: "resync" };

/**
 * The lease store as the gateway uses it (SPEC 4.3, 4.6, 4.7, 10): the port that every engine
 * (`SqliteLeaseStore`, `PostgresLeaseStore`) implements and `createLeaseStore` picks. Every
 * read-then-write is one transaction; an instance is never leased twice, also with several
 * gateways sharing the store. Knows nothing about gRPC.
 *
 * Everything is asynchronous except `lookup`, the per-call read of a leased session, which
 * answers without I/O when it can (a cache hit, or SQLite's synchronous indexed read).
 */
export interface LeaseStore extends QueueStore {
  /** Engine name for logs and metrics: `sqlite` or `postgres`. */
  readonly engine: "sqlite" | "postgres";
  /**
   * True while the store can answer writes: always for SQLite; for PostgreSQL while connected
   * (a gateway is not ready before its first connection, SPEC 10).
   */
  available(): boolean;

  /**
   * The session's lease when the engine knows it without waiting: the lease, `null` when it
   * knows there is none, `undefined` when only `get` (or an acquisition) can tell. Never
   * touches the event loop.
   */
  lookup(sessionId: string): Lease | null | undefined;
  /** The lease of a session, if any (a read of the store). */
  get(sessionId: string): Promise<Lease | undefined>;
  /** The lease held on an instance, if any. */
  leaseOfInstance(address: string): Promise<Lease | undefined>;
  /** Every lease, oldest first. */
  leases(): Promise<Lease[]>;
  /** Number of leases a user holds. */
  countByOwner(owner: string): Promise<number>;

  /**
   * Returns the session's lease, or leases it the allocatable instance free for the longest
   * time, in one write transaction. `avoidAddress` skips one instance (a transfer away from it).
   */
  acquire(sessionId: string, owner: string, ttlMs: number, avoidAddress?: string): Promise<AcquireResult>;
  /**
   * Several acquisitions in one write transaction, in order (group commit: one durable commit
   * for all of them). A session listed twice gets `existing` the second time.
   */
  acquireBatch(requests: readonly AcquireRequest[]): Promise<AcquireResult[]>;
  /**
   * Releases a session's lease (only if it is on `expectAddress`, when given). The instance
   * becomes allocatable again only after a probe shows it clean, on another boot than the one
   * that served the lease (the fence: a stale route to it can never reach another session).
   * Returns the released lease.
   */
  release(sessionId: string, expectAddress?: string): Promise<Lease | undefined>;
  /** Records activity of many sessions in one transaction: each expires `ttlMs` after its last activity. */
  touch(activity: ReadonlyMap<string, number>, ttlMs: number): Promise<void>;
  /**
   * Releases every lease whose expiry has passed and returns them (their instances need
   * recycling). Each lease is returned to exactly one caller, also across gateways.
   */
  expire(now?: number): Promise<Lease[]>;

  /** Adds instances found by discovery (no-op for known ones). */
  register(addresses: readonly string[]): Promise<void>;
  /**
   * Records a successful probe and reconciles (SPEC 4.7): a lease whose instance restarted
   * (another boot id) or holds another session is released; a free instance is allocatable
   * only while it reports no session. `probeStartedAt` (default now) tells a probe older than
   * the last lease or release apart. Writes only when something changes.
   */
  recordStatus(address: string, status: InstanceStatus, probeStartedAt?: number): Promise<ReconcileOutcome>;
  /** Marks an instance healthy or not (after enough failed probes). */
  setHealthy(address: string, healthy: boolean): Promise<void>;
  /** Drains (no new leases) or undrains an instance. Returns false for an unknown address. */
  setDraining(address: string, draining: boolean): Promise<boolean>;
  instance(address: string): Promise<InstanceRecord | undefined>;
  /** Every instance, by address. */
  instances(): Promise<InstanceRecord[]>;

  /** Registers or refreshes a gateway (its heartbeat, at the store's clock). */
  heartbeat(member: { readonly id: string; readonly address: string }): Promise<void>;
  /** Gateways whose last heartbeat is at most `liveWithinMs` old, by id. */
  members(liveWithinMs: number): Promise<GatewayMember[]>;
  /** Removes a gateway from the membership (clean stop). */
  leave(id: string): Promise<void>;

  /**
   * Subscribes to committed changes (in-process events for SQLite, `LISTEN/NOTIFY` for
   * PostgreSQL). Returns the unsubscribe function.
   */
  watch(listener: (change: LeaseChange) => void): () => void;

  close(): Promise<void>;
}

/** How a request that finds no free instance waits for one (`AcquireRequest.wait`, SPEC 11). */
export interface WaitRequest {
  /** The gateway whose call waits: its entries leave the queue when it dies. */
  readonly gatewayId: string;
  /** The entry is never granted later than this after it entered, milliseconds (the call's wait). */
  readonly maxWaitMs: number;
  /** Entries the queue may hold; at this length the request gets `queue-full`. */
  readonly maxLength: number;
}

/**
 * One session waiting for an instance (SPEC 11). Times are Unix milliseconds of the store's
 * clock. An entry is *granted* when an instance was reserved for it (`grantedAddress`): the
 * instance is taken out of allocation but no lease exists yet; `claimGranted` turns the
 * reservation into the session's lease. Until then no call can reach the instance for this
 * session, so a reservation whose waiter left passes to the next waiter without a restart.
 */
export interface QueueEntry {
  readonly sessionId: string;
  readonly owner: string;
  /** Gateway whose call waits for it. */
  readonly gatewayId: string;
  /** Arrival order across every gateway sharing the store (strictly increasing). */
  readonly seq: number;
  readonly enqueuedAt: number;
  /** Never granted after this time. */
  readonly deadlineAt: number;
  /** Position when it entered, 1 = first. */
  readonly entryPosition: number;
  /** Position now among the entries still waiting (1 = next to be granted); 0 once granted. */
  readonly position: number;
  /** Instance reserved for it and not yet claimed, or `null` while it waits. */
  readonly grantedAddress: string | null;
}

/** A reservation turned into a lease by `claimGranted`. */
export interface ClaimedGrant {
  readonly lease: Lease;
  /** The entry as it was when claimed (arrival, position at entry). */
  readonly entry: QueueEntry;
}

/** What `claimGranted` found. */
export interface ClaimResult {
  /** This gateway's granted entries, now leases. */
  readonly claimed: readonly ClaimedGrant[];
  /** Sessions asked for by name (and not in `claimed`) whose entry is gone because they hold a lease now. */
  readonly leased: readonly Lease[];
  /** Sessions asked for by name that have neither an entry nor a lease any more (their entry was removed). */
  readonly gone: readonly string[];
}

/** The queue as a whole, for estimates (SPEC 11). */
export interface QueueStats {
  /** Entries still waiting (not granted). */
  readonly length: number;
  /** Grants so far (since the database was created). */
  readonly grants: number;
  /** When the last grant happened, Unix milliseconds; 0 = never. */
  readonly lastGrantAt: number;
  /**
   * Mean time between grants while someone waited, milliseconds (exponentially weighted over
   * about the last ten grants); `undefined` before the first grant.
   */
  readonly meanGrantIntervalMs: number | undefined;
}

/**
 * The waiting queue's part of the lease store (SPEC 11): one queue in arrival order for every
 * gateway sharing the store. Every transaction that can make an instance allocatable (a probe
 * finding it clean, healthy again, undrained, a reservation given back) and every acquisition
 * first grants free allocatable instances to the oldest waiting entries, inside the same write
 * transaction, so no gateway can take a free instance past an older waiter. An entry is
 * skipped (stays in place) while its deadline has passed or its owner holds `maxPerOwner`.
 */
export interface QueueStore {
  /**
   * Turns the reservations granted to this gateway's entries into leases, in one write
   * transaction, and removes those entries (only the gateway whose call waits claims). A
   * reservation on an instance that is no longer healthy, clean and undrained goes back: the
   * entry waits again in its place. For `sessions` (entries of other gateways that calls of
   * this gateway joined) it reports which hold a lease now and which are gone.
   */
  claimGranted(gatewayId: string, sessions?: readonly string[]): Promise<ClaimResult>;
  /**
   * Removes a session's entry (its waiting calls left: cancelled, deadline, waited out). A
   * reservation it held passes to the next waiter in the same transaction, or the instance
   * is free again. Returns the removed entry.
   */
  leaveQueue(sessionId: string): Promise<QueueEntry | undefined>;
  /** Removes every entry of a gateway (its previous process died, or it stops), as `leaveQueue` does. */
  leaveQueueOf(gatewayId: string): Promise<QueueEntry[]>;
  /**
   * Removes the entries of gateways without a heartbeat within `liveWithinMs`, and entries
   * whose deadline passed more than `liveWithinMs` ago (their calls ended), as `leaveQueue`
   * does. Returns them.
   */
  purgeQueue(liveWithinMs: number): Promise<QueueEntry[]>;
  /** Every entry, in arrival order. */
  queue(): Promise<QueueEntry[]>;
  /** A session's entry, if it has one. */
  queueEntry(sessionId: string): Promise<QueueEntry | undefined>;
  queueStats(): Promise<QueueStats>;
  /**
   * Calls `listener` after a change that may concern waiters: at once after a commit of this
   * store that granted, and for commits of other gateways as soon as the engine learns of them
   * (SQLite: `PRAGMA data_version` polled every few milliseconds while someone listens;
   * PostgreSQL: `LISTEN/NOTIFY`). A wake-up carries no data: the listener reads what it needs.
   * Returns the unsubscribe function.
   */
  watchQueue(listener: () => void): () => void;
}
