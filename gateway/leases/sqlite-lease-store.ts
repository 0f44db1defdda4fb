import Database from "better-sqlite3";
import { instanceFromRow, leaseFromRow } from "./lease-rows.js";
import type {
  AcquireRequest,
  AcquireResult,
  ClaimedGrant,
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

/** Options of `SqliteLeaseStore`. */
export interface SqliteLeaseStoreOptions {
  /** SQLite file path (`:memory:` only for tests that need no durability). */
  readonly path: string;
  /** `FULL` makes every commit durable (an fsync); `NORMAL` may lose the last commits on power loss. Default `FULL`. */
  readonly synchronous?: "FULL" | "NORMAL";
  /** How long a writer waits for another connection's lock, milliseconds. Default 5000. */
  readonly busyTimeoutMs?: number;
  /** Clock, Unix milliseconds. */
  readonly now?: () => number;
  /**
   * Period of WAL checkpoints, milliseconds. Default 1000. Checkpoints run on this timer, not
   * inside a commit (SQLite's automatic checkpoint would make one allocation in a few hundred
   * pay for copying the WAL into the database). 0 = SQLite's automatic checkpoints.
   */
  readonly checkpointIntervalMs?: number;
  /**
   * Period of the `PRAGMA data_version` check that wakes this process's waiters when another
   * process (another gateway on the same file) committed, milliseconds. It runs only while a
   * `watchQueue` listener is subscribed. Default 2.
   */
  readonly queuePollIntervalMs?: number;
}

interface LeaseRow {
  session_id: string;
  instance_address: string;
  pod_name: string;
  owner: string;
  instance_boot_id: string;
  created_at: number;
  last_activity: number;
  expires_at: number;
}

interface InstanceRow {
  address: string;
  pod_name: string;
  boot_id: string;
  healthy: number;
  draining: number;
  clean: number;
  session_id: string | null;
  free_since: number;
  released_at: number;
  updated_at: number;
  fence_boot_id: string;
}

const migrations: readonly string[] = [
  `CREATE TABLE instances (
     address     TEXT PRIMARY KEY,
     pod_name    TEXT NOT NULL DEFAULT '',
     boot_id     TEXT NOT NULL DEFAULT '',
     healthy     INTEGER NOT NULL DEFAULT 0,
     draining    INTEGER NOT NULL DEFAULT 0,
     clean       INTEGER NOT NULL DEFAULT 0,
     session_id  TEXT UNIQUE,
     free_since  INTEGER NOT NULL DEFAULT 0,
     released_at INTEGER NOT NULL DEFAULT 0,
     updated_at  INTEGER NOT NULL DEFAULT 0
   );
   -- Allocation reads only this index: flat cost from 3 to 10,000 instances.
   CREATE INDEX instances_allocatable ON instances(free_since)
     WHERE session_id IS NULL AND healthy = 1 AND clean = 1 AND draining = 0;
   CREATE TABLE leases (
     session_id        TEXT PRIMARY KEY,
     instance_address  TEXT NOT NULL UNIQUE REFERENCES instances(address),
     pod_name          TEXT NOT NULL,
     owner             TEXT NOT NULL,
     instance_boot_id  TEXT NOT NULL,
     created_at        INTEGER NOT NULL,
     last_activity     INTEGER NOT NULL,
     expires_at        INTEGER NOT NULL
   );
   CREATE INDEX leases_expiry ON leases(expires_at);
   CREATE INDEX leases_owner ON leases(owner);`,
  `CREATE TABLE gateways (
     id           TEXT PRIMARY KEY,
     address      TEXT NOT NULL,
     started_at   INTEGER NOT NULL,
     heartbeat_at INTEGER NOT NULL
   );`,
  // The boot that served the instance's last lease: it is clean again only on another boot.
  "ALTER TABLE instances ADD COLUMN fence_boot_id TEXT NOT NULL DEFAULT ''",
  // The waiting queue (SPEC 11). AUTOINCREMENT: a seq is never reused, so seq order is arrival
  // order for good. A granted entry's instance carries its session_id (reserved, no lease yet).
  `CREATE TABLE waiters (
     seq             INTEGER PRIMARY KEY AUTOINCREMENT,
     session_id      TEXT NOT NULL UNIQUE,
     owner           TEXT NOT NULL,
     gateway_id      TEXT NOT NULL,
     ttl_ms          INTEGER NOT NULL,
     max_per_owner   INTEGER NOT NULL DEFAULT 0,
     enqueued_at     INTEGER NOT NULL,
     deadline_at     INTEGER NOT NULL,
     entry_position  INTEGER NOT NULL,
     granted_address TEXT UNIQUE REFERENCES instances(address),
     granted_at      INTEGER
   );
   CREATE INDEX waiters_waiting ON waiters(seq) WHERE granted_address IS NULL;
   CREATE INDEX waiters_gateway ON waiters(gateway_id);
   CREATE TABLE queue_stats (
     id               INTEGER PRIMARY KEY CHECK (id = 1),
     grants           INTEGER NOT NULL,
     last_grant_at    INTEGER NOT NULL,
     mean_interval_ms REAL NOT NULL
   );
   INSERT INTO queue_stats (id, grants, last_grant_at, mean_interval_ms) VALUES (1, 0, 0, 0);`,
];

/** Number of schema migrations: the database's `user_version` once migrated. */
export const sqliteSchemaVersion = migrations.length;

interface WaiterRow {
  seq: number;
  session_id: string;
  owner: string;
  gateway_id: string;
  ttl_ms: number;
  max_per_owner: number;
  enqueued_at: number;
  deadline_at: number;
  entry_position: number;
  granted_address: string | null;
  granted_at: number | null;
}

interface QueueStatsRow {
  grants: number;
  last_grant_at: number;
  mean_interval_ms: number;
}

/** Weight of the newest interval in the mean time between grants (about the last ten count). */
const grantIntervalWeight = 0.2;

interface MemberRow {
  id: string;
  address: string;
  started_at: number;
  heartbeat_at: number;
}

/**
 * The embedded engine of the lease store (SPEC 4.3, 4.6, 4.7): SQLite in WAL mode, every
 * read-then-write in one `BEGIN IMMEDIATE` transaction, so two sessions (or two gateway
 * processes sharing the file) can never lease one instance; `instances.session_id` and
 * `leases.instance_address` are both UNIQUE as a second guard. The work is synchronous (an
 * indexed read is ~30 µs); the port's promises resolve at once. `lookup` reads the file, so
 * two gateway processes on one file never serve a stale lease. `watch` delivers this
 * process's own changes only: another process's show in reads.
 */
export class SqliteLeaseStore implements LeaseStore {
  readonly engine = "sqlite" as const;
  private readonly listeners = new Set<(change: LeaseChange) => void>();
  private readonly queueListeners = new Set<() => void>();
  private readonly queuePollMs: number;
  private queuePoll: NodeJS.Timeout | undefined;
  private dataVersion = 0;
  /** A transaction of this process granted: wake the queue's listeners after it committed. */
  private grantedSinceWake = false;
  private readonly db: Database.Database;
  private readonly now: () => number;
  private readonly stmts;
  private readonly acquireTx;
  private readonly releaseTx;
  private readonly touchTx;
  private readonly expireTx;
  private readonly recordStatusTx;
  private readonly q;
  private readonly claimTx;
  private readonly leaveTx;
  private readonly purgeTx;
  private readonly allocatableTx;
  private readonly checkpointTimer: NodeJS.Timeout | undefined;

  constructor(options: SqliteLeaseStoreOptions) {
    this.now = options.now ?? Date.now;
    this.queuePollMs = options.queuePollIntervalMs ?? 2;
    this.db = new Database(options.path);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma(`synchronous = ${options.synchronous ?? "FULL"}`);
    this.db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
    this.db.pragma("foreign_keys = ON");
    const checkpointMs = options.checkpointIntervalMs ?? 1000;
    if (checkpointMs > 0) {
      this.db.pragma("wal_autocheckpoint = 0");
      this.checkpointTimer = setInterval(() => this.checkpoint(), checkpointMs).unref();
    }
    this.migrate();
    const db = this.db;
    this.stmts = {
      lease: db.prepare<[string], LeaseRow>("SELECT * FROM leases WHERE session_id = ?"),
      leaseOfInstance: db.prepare<[string], LeaseRow>("SELECT * FROM leases WHERE instance_address = ?"),
      leases: db.prepare<[], LeaseRow>("SELECT * FROM leases ORDER BY created_at"),
      countByOwner: db.prepare<[string], { n: number }>("SELECT COUNT(*) AS n FROM leases WHERE owner = ?"),
      instance: db.prepare<[string], InstanceRow>("SELECT * FROM instances WHERE address = ?"),
      instances: db.prepare<[], InstanceRow>("SELECT * FROM instances ORDER BY address"),
      pickFree: db.prepare<[], InstanceRow>(
        `SELECT * FROM instances INDEXED BY instances_allocatable
          WHERE session_id IS NULL AND healthy = 1 AND clean = 1 AND draining = 0
          ORDER BY free_since LIMIT 1`,
      ),
      pickFreeExcept: db.prepare<[string], InstanceRow>(
        `SELECT * FROM instances INDEXED BY instances_allocatable
          WHERE session_id IS NULL AND healthy = 1 AND clean = 1 AND draining = 0 AND address <> ?
          ORDER BY free_since LIMIT 1`,
      ),
      anyHealthy: db.prepare<[], { one: number }>("SELECT 1 AS one FROM instances WHERE healthy = 1 LIMIT 1"),
      insertLease: db.prepare(
        `INSERT INTO leases (session_id, instance_address, pod_name, owner, instance_boot_id, created_at, last_activity, expires_at)
         VALUES (@session_id, @instance_address, @pod_name, @owner, @instance_boot_id, @created_at, @last_activity, @expires_at)`,
      ),
      deleteLease: db.prepare<[string]>("DELETE FROM leases WHERE session_id = ?"),
      occupy: db.prepare<[string, number, string]>(
        "UPDATE instances SET session_id = ?, clean = 0, updated_at = ? WHERE address = ? AND session_id IS NULL",
      ),
      vacate: db.prepare<{ address: string; now: number; fence: string }>(
        `UPDATE instances SET session_id = NULL, clean = 0, free_since = @now, released_at = @now, updated_at = @now,
                              fence_boot_id = @fence
          WHERE address = @address`,
      ),
      touch: db.prepare<{ session_id: string; last: number; expires: number }>(
        `UPDATE leases SET last_activity = MAX(last_activity, @last), expires_at = MAX(expires_at, @expires)
          WHERE session_id = @session_id`,
      ),
      expiredLeases: db.prepare<[number], LeaseRow>("SELECT * FROM leases WHERE expires_at <= ? ORDER BY expires_at"),
      registerInstance: db.prepare<{ address: string; now: number }>(
        "INSERT INTO instances (address, free_since, updated_at) VALUES (@address, 0, @now) ON CONFLICT(address) DO NOTHING",
      ),
      updateStatus: db.prepare<{
        address: string;
        pod_name: string;
        boot_id: string;
        clean: number;
        now: number;
      }>(
        `UPDATE instances SET healthy = 1, pod_name = @pod_name, boot_id = @boot_id, clean = @clean, updated_at = @now
          WHERE address = @address`,
      ),
      setHealthy: db.prepare<[number, number, string]>("UPDATE instances SET healthy = ?, updated_at = ? WHERE address = ?"),
      setDraining: db.prepare<[number, number, string]>("UPDATE instances SET draining = ?, updated_at = ? WHERE address = ?"),
      heartbeat: db.prepare<{ id: string; address: string; now: number }>(
        `INSERT INTO gateways (id, address, started_at, heartbeat_at) VALUES (@id, @address, @now, @now)
           ON CONFLICT(id) DO UPDATE SET address = excluded.address, heartbeat_at = excluded.heartbeat_at`,
      ),
      members: db.prepare<[number], MemberRow>("SELECT * FROM gateways WHERE heartbeat_at >= ? ORDER BY id"),
      leave: db.prepare<[string]>("DELETE FROM gateways WHERE id = ?"),
    };

    this.q = {
      waiterOf: db.prepare<[string], WaiterRow>("SELECT * FROM waiters WHERE session_id = ?"),
      nextWaiting: db.prepare<[number], WaiterRow>(
        "SELECT * FROM waiters INDEXED BY waiters_waiting WHERE granted_address IS NULL AND seq > ? ORDER BY seq LIMIT 1",
      ),
      waitingBefore: db.prepare<[number], { n: number }>(
        "SELECT COUNT(*) AS n FROM waiters INDEXED BY waiters_waiting WHERE granted_address IS NULL AND seq < ?",
      ),
      countAll: db.prepare<[], { n: number }>("SELECT COUNT(*) AS n FROM waiters"),
      countWaiting: db.prepare<[], { n: number }>("SELECT COUNT(*) AS n FROM waiters WHERE granted_address IS NULL"),
      all: db.prepare<[], WaiterRow>("SELECT * FROM waiters ORDER BY seq"),
      ofGateway: db.prepare<[string], WaiterRow>("SELECT * FROM waiters WHERE gateway_id = ? ORDER BY seq"),
      grantedOf: db.prepare<[string], WaiterRow>("SELECT * FROM waiters WHERE gateway_id = ? AND granted_address IS NOT NULL ORDER BY seq"),
      stale: db.prepare<{ live: number; expired: number }, WaiterRow>(
        `SELECT w.* FROM waiters w LEFT JOIN gateways g ON g.id = w.gateway_id
          WHERE g.id IS NULL OR g.heartbeat_at < @live OR w.deadline_at < @expired ORDER BY w.seq`,
      ),
      insert: db.prepare<Omit<WaiterRow, "seq" | "granted_address" | "granted_at">>(
        `INSERT INTO waiters (session_id, owner, gateway_id, ttl_ms, max_per_owner, enqueued_at, deadline_at, entry_position)
         VALUES (@session_id, @owner, @gateway_id, @ttl_ms, @max_per_owner, @enqueued_at, @deadline_at, @entry_position)`,
      ),
      extend: db.prepare<[number, number, string]>(
        "UPDATE waiters SET deadline_at = MAX(deadline_at, ?), max_per_owner = ? WHERE session_id = ?",
      ),
      remove: db.prepare<[number]>("DELETE FROM waiters WHERE seq = ?"),
      markGranted: db.prepare<[string, number, number]>("UPDATE waiters SET granted_address = ?, granted_at = ? WHERE seq = ?"),
      ungrant: db.prepare<[number]>("UPDATE waiters SET granted_address = NULL, granted_at = NULL WHERE seq = ?"),
      // A reservation: the instance carries the waiter's session (out of allocation), no lease yet.
      reserve: db.prepare<[string, number, string]>(
        "UPDATE instances SET session_id = ?, updated_at = ? WHERE address = ? AND session_id IS NULL",
      ),
      // Given back untouched: clean and free since when it was before the grant.
      unreserve: db.prepare<[number, string, string]>(
        "UPDATE instances SET session_id = NULL, updated_at = ? WHERE address = ? AND session_id = ?",
      ),
      occupyReserved: db.prepare<[number, string, string]>(
        "UPDATE instances SET clean = 0, updated_at = ? WHERE address = ? AND session_id = ?",
      ),
      heldByOwner: db.prepare<[string, string], { n: number }>(
        `SELECT (SELECT COUNT(*) FROM leases WHERE owner = ?)
              + (SELECT COUNT(*) FROM waiters WHERE owner = ? AND granted_address IS NOT NULL) AS n`,
      ),
      stats: db.prepare<[], QueueStatsRow>("SELECT grants, last_grant_at, mean_interval_ms FROM queue_stats WHERE id = 1"),
      dataVersion: db.prepare<[], number>("PRAGMA data_version").pluck(),
      countGrant: db.prepare<[number, number]>(
        "UPDATE queue_stats SET grants = grants + 1, last_grant_at = ?, mean_interval_ms = ? WHERE id = 1",
      ),
    };

    this.acquireTx = db.transaction((requests: readonly AcquireRequest[]): AcquireResult[] => {
      // Older waiters first: a free instance belongs to the head of the queue (SPEC 11).
      this.grantInTransaction();
      return requests.map((request) => this.acquireInTransaction(request));
    });

    this.claimTx = db.transaction((gatewayId: string): { claimed: ClaimedGrant[] } => {
      const now = this.now();
      const claimed: ClaimedGrant[] = [];
      let wentBack = false;
      for (const row of this.q.grantedOf.all(gatewayId)) {
        const entry = this.entryFromRow(row, 0);
        const lease = this.claimRow(row, now);
        if (lease === undefined) wentBack = true;
        else claimed.push({ lease, entry });
      }
      if (wentBack) this.grantInTransaction();
      return { claimed };
    });

    this.leaveTx = db.transaction((rows: readonly WaiterRow[]): QueueEntry[] => {
      const now = this.now();
      const entries = this.entriesFromRows(rows);
      for (const row of rows) this.removeRow(row, now);
      if (rows.length > 0) this.grantInTransaction();
      return entries;
    });

    this.purgeTx = db.transaction((liveWithinMs: number): QueueEntry[] => {
      const now = this.now();
      const rows = this.q.stale.all({ live: now - liveWithinMs, expired: now - liveWithinMs });
      const entries = this.entriesFromRows(rows);
      for (const row of rows) this.removeRow(row, now);
      if (rows.length > 0) this.grantInTransaction();
      return entries;
    });

    // A single-row change that can make an instance allocatable, then the grant.
    this.allocatableTx = db.transaction((change: () => boolean): boolean => {
      const changed = change();
      if (changed) this.grantInTransaction();
      return changed;
    });

    this.releaseTx = db.transaction((sessionId: string, expectAddress: string | undefined): Lease | undefined => {
      const row = this.stmts.lease.get(sessionId);
      if (row === undefined) return undefined;
      if (expectAddress !== undefined && row.instance_address !== expectAddress) return undefined;
      this.stmts.deleteLease.run(sessionId);
      this.stmts.vacate.run({ address: row.instance_address, now: this.now(), fence: row.instance_boot_id });
      // The owner holds one lease less: a waiter of theirs held back by maxPerOwner may go.
      this.grantInTransaction();
      return leaseFromRow(row);
    });

    this.touchTx = db.transaction((activity: ReadonlyMap<string, number>, ttlMs: number) => {
      for (const [sessionId, last] of activity) {
        this.stmts.touch.run({ session_id: sessionId, last, expires: last + ttlMs });
      }
    });

    this.expireTx = db.transaction((now: number): Lease[] => {
      const expired = this.stmts.expiredLeases.all(now);
      for (const row of expired) {
        this.stmts.deleteLease.run(row.session_id);
        this.stmts.vacate.run({ address: row.instance_address, now, fence: row.instance_boot_id });
      }
      if (expired.length > 0) this.grantInTransaction();
      return expired.map(leaseFromRow);
    });

    this.recordStatusTx = db.transaction((address: string, status: InstanceStatus, probeStartedAt: number): ReconcileOutcome => {
      const instance = this.stmts.instance.get(address);
      if (instance === undefined || probeStartedAt < instance.updated_at) return {};
      const now = this.now();
      let released: Lease | undefined;
      const leaseRow = this.stmts.leaseOfInstance.get(address);
      if (leaseRow !== undefined) {
        const restarted = leaseRow.instance_boot_id !== "" && leaseRow.instance_boot_id !== status.bootId;
        const foreign = status.sessionId !== "" && status.sessionId !== leaseRow.session_id;
        // A probe older than the lease describes the instance before it was leased.
        if ((restarted || foreign) && probeStartedAt >= leaseRow.created_at) {
          this.stmts.deleteLease.run(leaseRow.session_id);
          this.stmts.vacate.run({ address, now, fence: leaseRow.instance_boot_id });
          released = leaseFromRow(leaseRow);
        }
      }
      const stillLeased = leaseRow !== undefined && released === undefined;
      // A probe that started before the last release may describe the instance before its
      // session bound: it cannot prove the instance clean.
      const staleProbe = probeStartedAt < (released !== undefined ? now : instance.released_at);
      const fence = released !== undefined ? released.instanceBootId : instance.fence_boot_id;
      const clean = !stillLeased && status.sessionId === "" && !status.shuttingDown && !staleProbe && status.bootId !== fence ? 1 : 0;
      this.stmts.updateStatus.run({
        address,
        pod_name: status.podName,
        boot_id: status.bootId,
        clean,
        now,
      });
      const unknownSession = !stillLeased && status.sessionId !== "" ? status.sessionId : undefined;
      const fenced = !stillLeased && status.sessionId === "" && !status.shuttingDown && status.bootId === fence;
      // The instance may have become allocatable (clean, healthy again): the oldest waiter gets it.
      this.grantInTransaction();
      return { ...(released ? { released } : {}), ...(unknownSession ? { unknownSession } : {}), ...(fenced ? { fenced } : {}) };
    });
  }

  private acquireInTransaction(request: AcquireRequest): AcquireResult {
    const { sessionId, owner, ttlMs, avoidAddress, maxPerOwner, wait } = request;
    const existing = this.stmts.lease.get(sessionId);
    if (existing !== undefined) return { kind: "existing", lease: leaseFromRow(existing) };
    const entry = this.q.waiterOf.get(sessionId);
    if (entry !== undefined) {
      // The session waits already (SPEC 11: at most once): a waiting call joins its place (and
      // may extend its deadline); a call that does not wait is busy, it cannot pass the queue.
      if (wait === undefined) return { kind: "busy" };
      this.q.extend.run(this.now() + wait.maxWaitMs, maxPerOwner ?? 0, sessionId);
      const joined = this.q.waiterOf.get(sessionId) as WaiterRow;
      return { kind: "queued", entry: this.entryFromRow(joined), joined: true };
    }
    if (maxPerOwner !== undefined && maxPerOwner > 0 && (this.stmts.countByOwner.get(owner)?.n ?? 0) >= maxPerOwner) {
      return { kind: "user-limit" };
    }
    const instance = avoidAddress === undefined ? this.stmts.pickFree.get() : this.stmts.pickFreeExcept.get(avoidAddress);
    if (instance === undefined) {
      if (this.stmts.anyHealthy.get() === undefined) return { kind: "unavailable" };
      return wait === undefined ? { kind: "busy" } : this.enqueue(request, wait);
    }
    const now = this.now();
    const row: LeaseRow = {
      session_id: sessionId,
      instance_address: instance.address,
      pod_name: instance.pod_name,
      owner,
      instance_boot_id: instance.boot_id,
      created_at: now,
      last_activity: now,
      expires_at: now + ttlMs,
    };
    this.stmts.insertLease.run(row);
    this.stmts.occupy.run(sessionId, now, instance.address);
    return { kind: "acquired", lease: leaseFromRow(row) };
  }

  private enqueue(request: AcquireRequest, wait: NonNullable<AcquireRequest["wait"]>): AcquireResult {
    const length = this.q.countAll.get()?.n ?? 0;
    if (length >= wait.maxLength) return { kind: "queue-full", length };
    const now = this.now();
    this.q.insert.run({
      session_id: request.sessionId,
      owner: request.owner,
      gateway_id: wait.gatewayId,
      ttl_ms: request.ttlMs,
      max_per_owner: request.maxPerOwner ?? 0,
      enqueued_at: now,
      deadline_at: now + wait.maxWaitMs,
      entry_position: (this.q.countWaiting.get()?.n ?? 0) + 1,
    });
    return { kind: "queued", entry: this.entryFromRow(this.q.waiterOf.get(request.sessionId) as WaiterRow), joined: false };
  }

  /**
   * Grants free allocatable instances to the oldest waiting entries, in this write transaction
   * (SPEC 11): the instance free for longest goes to the entry that waits longest. Skips (leaves
   * in place) an entry past its deadline or whose owner holds `max_per_owner` already.
   */
  private grantInTransaction(): number {
    let granted = 0;
    let after = 0;
    let now: number | undefined;
    for (;;) {
      const waiter = this.q.nextWaiting.get(after);
      if (waiter === undefined) break;
      after = waiter.seq;
      now ??= this.now();
      if (waiter.deadline_at <= now) continue;
      if (waiter.max_per_owner > 0 && (this.q.heldByOwner.get(waiter.owner, waiter.owner)?.n ?? 0) >= waiter.max_per_owner) continue;
      const instance = this.stmts.pickFree.get();
      if (instance === undefined) break;
      this.q.reserve.run(waiter.session_id, now, instance.address);
      this.q.markGranted.run(instance.address, now, waiter.seq);
      const stats = this.q.stats.get() as QueueStatsRow;
      // Time the head waited for this grant: since the previous grant, or since it arrived if later.
      const interval = Math.max(0, now - Math.max(stats.last_grant_at, waiter.enqueued_at));
      const mean = stats.grants === 0 ? interval : stats.mean_interval_ms + grantIntervalWeight * (interval - stats.mean_interval_ms);
      this.q.countGrant.run(now, mean);
      granted++;
    }
    if (granted > 0) this.grantedSinceWake = true;
    return granted;
  }

  /**
   * Turns a granted entry's reservation into its lease, or gives the reservation back (the entry
   * waits again in its place) when the instance is no longer healthy, clean and undrained.
   */
  private claimRow(row: WaiterRow, now: number): Lease | undefined {
    const address = row.granted_address as string;
    const instance = this.stmts.instance.get(address);
    const usable =
      instance !== undefined &&
      instance.session_id === row.session_id &&
      instance.healthy === 1 &&
      instance.clean === 1 &&
      instance.draining === 0 &&
      this.stmts.lease.get(row.session_id) === undefined;
    if (!usable) {
      this.q.unreserve.run(now, address, row.session_id);
      this.q.ungrant.run(row.seq);
      return undefined;
    }
    const lease: LeaseRow = {
      session_id: row.session_id,
      instance_address: address,
      pod_name: instance.pod_name,
      owner: row.owner,
      instance_boot_id: instance.boot_id,
      created_at: now,
      last_activity: now,
      expires_at: now + row.ttl_ms,
    };
    this.stmts.insertLease.run(lease);
    this.q.occupyReserved.run(now, address, row.session_id);
    this.q.remove.run(row.seq);
    return leaseFromRow(lease);
  }

  /** Deletes an entry; a reservation it held is given back (the caller grants afterwards). */
  private removeRow(row: WaiterRow, now: number): void {
    if (row.granted_address !== null) this.q.unreserve.run(now, row.granted_address, row.session_id);
    this.q.remove.run(row.seq);
  }

  /** An entry; `position` is counted unless given (the number of waiting entries before it, plus one). */
  private entryFromRow(row: WaiterRow, position?: number): QueueEntry {
    return {
      sessionId: row.session_id,
      owner: row.owner,
      gatewayId: row.gateway_id,
      seq: row.seq,
      enqueuedAt: row.enqueued_at,
      deadlineAt: row.deadline_at,
      entryPosition: row.entry_position,
      position: position ?? (row.granted_address !== null ? 0 : (this.q.waitingBefore.get(row.seq)?.n ?? 0) + 1),
      grantedAddress: row.granted_address,
    };
  }

  private entriesFromRows(rows: readonly WaiterRow[]): QueueEntry[] {
    return rows.map((row) => this.entryFromRow(row));
  }

  private wakeQueue(): void {
    if (!this.grantedSinceWake) return;
    this.grantedSinceWake = false;
    for (const listener of this.queueListeners) {
      try {
        listener();
      } catch {
        // A listener's failure is its own.
      }
    }
  }

  private startQueuePoll(): void {
    if (this.queuePoll !== undefined || !this.db.open) return;
    const read = this.q.dataVersion;
    this.dataVersion = read.get() as number;
    // data_version changes when another connection (another gateway process) committed: a read
    // of shared memory (~10 µs prepared, on a loaded machine), cheap enough to run every few
    // milliseconds while someone waits.
    this.queuePoll = setInterval(() => {
      let version: number;
      try {
        version = read.get() as number;
      } catch {
        return;
      }
      if (version === this.dataVersion) return;
      this.dataVersion = version;
      this.grantedSinceWake = true;
      this.wakeQueue();
    }, this.queuePollMs).unref();
  }

  private migrate(): void {
    // The version is read inside the write transaction: two gateways opening a new file at
    // once must not both run a migration.
    for (;;) {
      const done = this.db
        .transaction(() => {
          const version = this.db.pragma("user_version", { simple: true }) as number;
          if (version >= migrations.length) return true;
          this.db.exec(migrations[version] as string);
          this.db.pragma(`user_version = ${version + 1}`);
          return false;
        })
        .immediate();
      if (done) return;
    }
  }

  private emit(change: LeaseChange): void {
    for (const listener of this.listeners) {
      try {
        listener(change);
      } catch {
        // A listener's failure is its own; the change is committed.
      }
    }
  }

  private emitReleased(lease: Lease): void {
    this.emit({ kind: "lease", sessionId: lease.sessionId, instanceAddress: lease.instanceAddress, op: "released" });
  }

  available(): boolean {
    return this.db.open;
  }

  /** A synchronous indexed read: the answer is always definite (`null` = no lease). */
  lookup(sessionId: string): Lease | null {
    const row = this.stmts.lease.get(sessionId);
    return row === undefined ? null : leaseFromRow(row);
  }

  async get(sessionId: string): Promise<Lease | undefined> {
    return this.lookup(sessionId) ?? undefined;
  }

  async leaseOfInstance(address: string): Promise<Lease | undefined> {
    const row = this.stmts.leaseOfInstance.get(address);
    return row === undefined ? undefined : leaseFromRow(row);
  }

  async acquire(sessionId: string, owner: string, ttlMs: number, avoidAddress?: string): Promise<AcquireResult> {
    const existing = this.lookup(sessionId);
    if (existing !== null) return { kind: "existing", lease: existing };
    return (await this.acquireBatch([{ sessionId, owner, ttlMs, avoidAddress }]))[0] as AcquireResult;
  }

  async acquireBatch(requests: readonly AcquireRequest[]): Promise<AcquireResult[]> {
    if (requests.length === 0) return [];
    const results = this.acquireTx.immediate(requests);
    for (const r of results) {
      if (r.kind === "acquired") {
        this.emit({ kind: "lease", sessionId: r.lease.sessionId, instanceAddress: r.lease.instanceAddress, op: "acquired" });
      }
    }
    this.wakeQueue();
    return results;
  }

  async countByOwner(owner: string): Promise<number> {
    return this.stmts.countByOwner.get(owner)?.n ?? 0;
  }

  async release(sessionId: string, expectAddress?: string): Promise<Lease | undefined> {
    const released = this.releaseTx.immediate(sessionId, expectAddress);
    if (released !== undefined) this.emitReleased(released);
    this.wakeQueue();
    return released;
  }

  async touch(activity: ReadonlyMap<string, number>, ttlMs: number): Promise<void> {
    if (activity.size > 0) this.touchTx.immediate(activity, ttlMs);
  }

  async expire(now: number = this.now()): Promise<Lease[]> {
    const expired = this.expireTx.immediate(now);
    for (const lease of expired) this.emitReleased(lease);
    this.wakeQueue();
    return expired;
  }

  async register(addresses: readonly string[]): Promise<void> {
    const now = this.now();
    this.db
      .transaction(() => {
        for (const address of addresses) this.stmts.registerInstance.run({ address, now });
      })
      .immediate();
    for (const address of addresses) this.emit({ kind: "instance", address });
  }

  async recordStatus(address: string, status: InstanceStatus, probeStartedAt: number = this.now()): Promise<ReconcileOutcome> {
    const instance = this.stmts.instance.get(address);
    if (instance === undefined) return {};
    // The row changed after this probe started (another gateway's newer probe, a lease, a
    // release): this status may describe an older process; the next probe tells.
    if (probeStartedAt < instance.updated_at) return {};
    const lease = instance.session_id === null ? undefined : this.stmts.lease.get(instance.session_id);
    const leaseOk =
      lease === undefined ||
      probeStartedAt < lease.created_at ||
      ((lease.instance_boot_id === "" || lease.instance_boot_id === status.bootId) &&
        (status.sessionId === "" || status.sessionId === lease.session_id));
    const fenced = lease === undefined && status.sessionId === "" && !status.shuttingDown && status.bootId === instance.fence_boot_id;
    const wantClean =
      lease === undefined && status.sessionId === "" && !status.shuttingDown && probeStartedAt >= instance.released_at && !fenced;
    const unchanged =
      leaseOk &&
      instance.healthy === 1 &&
      instance.pod_name === status.podName &&
      instance.boot_id === status.bootId &&
      (lease !== undefined || instance.clean === (wantClean ? 1 : 0));
    if (unchanged) {
      if (lease === undefined && status.sessionId !== "") return { unknownSession: status.sessionId };
      return fenced ? { fenced } : {};
    }
    const outcome = this.recordStatusTx.immediate(address, status, probeStartedAt);
    if (outcome.released !== undefined) this.emitReleased(outcome.released);
    this.emit({ kind: "instance", address });
    this.wakeQueue();
    return outcome;
  }

  async setHealthy(address: string, healthy: boolean): Promise<void> {
    const instance = this.stmts.instance.get(address);
    if (instance !== undefined && instance.healthy !== (healthy ? 1 : 0)) {
      if (healthy) this.allocatableTx.immediate(() => this.stmts.setHealthy.run(1, this.now(), address).changes === 1);
      else this.stmts.setHealthy.run(0, this.now(), address);
      this.emit({ kind: "instance", address });
      this.wakeQueue();
    }
  }

  async setDraining(address: string, draining: boolean): Promise<boolean> {
    const changed = draining
      ? this.stmts.setDraining.run(1, this.now(), address).changes === 1
      : this.allocatableTx.immediate(() => this.stmts.setDraining.run(0, this.now(), address).changes === 1);
    if (changed) this.emit({ kind: "instance", address });
    this.wakeQueue();
    return changed;
  }

  async instance(address: string): Promise<InstanceRecord | undefined> {
    const row = this.stmts.instance.get(address);
    return row === undefined ? undefined : instanceFromRow(row);
  }

  async instances(): Promise<InstanceRecord[]> {
    return this.stmts.instances.all().map(instanceFromRow);
  }

  async leases(): Promise<Lease[]> {
    return this.stmts.leases.all().map(leaseFromRow);
  }

  async heartbeat(member: { readonly id: string; readonly address: string }): Promise<void> {
    const isNew = this.stmts.members.all(0).every((m) => m.id !== member.id);
    this.stmts.heartbeat.run({ id: member.id, address: member.address, now: this.now() });
    if (isNew) this.emit({ kind: "members" });
  }

  async members(liveWithinMs: number): Promise<GatewayMember[]> {
    return this.stmts.members.all(this.now() - liveWithinMs).map((row) => ({
      id: row.id,
      address: row.address,
      startedAt: row.started_at,
      heartbeatAt: row.heartbeat_at,
    }));
  }

  async leave(id: string): Promise<void> {
    if (this.stmts.leave.run(id).changes > 0) this.emit({ kind: "members" });
  }

  async claimGranted(gatewayId: string, sessions: readonly string[] = []): Promise<ClaimResult> {
    // Read first: most wake-ups find nothing granted here, and need no write transaction.
    const claimed = this.q.grantedOf.all(gatewayId).length === 0 ? [] : this.claimTx.immediate(gatewayId).claimed;
    for (const { lease } of claimed) {
      this.emit({ kind: "lease", sessionId: lease.sessionId, instanceAddress: lease.instanceAddress, op: "acquired" });
    }
    this.wakeQueue();
    // Reads only: an entry is read before the lease, so a claim committed in between shows as
    // a lease (never as gone).
    const leased: Lease[] = [];
    const gone: string[] = [];
    const justClaimed = new Set(claimed.map((c) => c.lease.sessionId));
    for (const sessionId of sessions) {
      if (justClaimed.has(sessionId) || this.q.waiterOf.get(sessionId) !== undefined) continue;
      const lease = this.stmts.lease.get(sessionId);
      if (lease === undefined) gone.push(sessionId);
      else leased.push(leaseFromRow(lease));
    }
    return { claimed, leased, gone };
  }

  async leaveQueue(sessionId: string): Promise<QueueEntry | undefined> {
    const row = this.q.waiterOf.get(sessionId);
    if (row === undefined) return undefined;
    const [entry] = this.leaveTx.immediate([row]);
    this.wakeQueue();
    return entry;
  }

  async leaveQueueOf(gatewayId: string): Promise<QueueEntry[]> {
    const rows = this.q.ofGateway.all(gatewayId);
    if (rows.length === 0) return [];
    const entries = this.leaveTx.immediate(rows);
    this.wakeQueue();
    return entries;
  }

  async purgeQueue(liveWithinMs: number): Promise<QueueEntry[]> {
    const now = this.now();
    // Read first: a purge that finds nothing writes nothing.
    if (this.q.stale.all({ live: now - liveWithinMs, expired: now - liveWithinMs }).length === 0) return [];
    const entries = this.purgeTx.immediate(liveWithinMs);
    this.wakeQueue();
    return entries;
  }

  async queue(): Promise<QueueEntry[]> {
    let waiting = 0;
    return this.q.all.all().map((row) => this.entryFromRow(row, row.granted_address === null ? ++waiting : 0));
  }

  async queueEntry(sessionId: string): Promise<QueueEntry | undefined> {
    const row = this.q.waiterOf.get(sessionId);
    return row === undefined ? undefined : this.entryFromRow(row);
  }

  async queueStats(): Promise<QueueStats> {
    const stats = this.q.stats.get() as QueueStatsRow;
    return {
      length: this.q.countWaiting.get()?.n ?? 0,
      grants: stats.grants,
      lastGrantAt: stats.last_grant_at,
      meanGrantIntervalMs: stats.grants === 0 ? undefined : stats.mean_interval_ms,
    };
  }

  watchQueue(listener: () => void): () => void {
    this.queueListeners.add(listener);
    this.startQueuePoll();
    return () => {
      this.queueListeners.delete(listener);
      if (this.queueListeners.size === 0 && this.queuePoll !== undefined) {
        clearInterval(this.queuePoll);
        this.queuePoll = undefined;
      }
    };
  }

  watch(listener: (change: LeaseChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Copies the WAL into the database file as far as no reader needs it (PASSIVE: never waits
   * for other connections), so the WAL stays small. Runs on the store's timer.
   */
  checkpoint(): void {
    try {
      this.db.pragma("wal_checkpoint(PASSIVE)");
    } catch {
      // Busy or closing: the next period tries again.
    }
  }

  async close(): Promise<void> {
    if (this.checkpointTimer !== undefined) clearInterval(this.checkpointTimer);
    if (this.queuePoll !== undefined) clearInterval(this.queuePoll);
    this.queuePoll = undefined;
    this.listeners.clear();
    this.queueListeners.clear();
    if (this.db.open) this.db.close();
  }
}
