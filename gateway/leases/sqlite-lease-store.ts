import Database from "better-sqlite3";
import { instanceFromRow, leaseFromRow } from "./lease-rows.js";
import type {
  AcquireRequest,
  AcquireResult,
  GatewayMember,
  InstanceRecord,
  InstanceStatus,
  Lease,
  LeaseChange,
  LeaseStore,
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
];

/** Number of schema migrations: the database's `user_version` once migrated. */
export const sqliteSchemaVersion = migrations.length;

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
  private readonly db: Database.Database;
  private readonly now: () => number;
  private readonly stmts;
  private readonly acquireTx;
  private readonly releaseTx;
  private readonly touchTx;
  private readonly expireTx;
  private readonly recordStatusTx;
  private readonly checkpointTimer: NodeJS.Timeout | undefined;

  constructor(options: SqliteLeaseStoreOptions) {
    this.now = options.now ?? Date.now;
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

    this.acquireTx = db.transaction((requests: readonly AcquireRequest[]): AcquireResult[] =>
      requests.map((request) => this.acquireInTransaction(request)),
    );

    this.releaseTx = db.transaction((sessionId: string, expectAddress: string | undefined): Lease | undefined => {
      const row = this.stmts.lease.get(sessionId);
      if (row === undefined) return undefined;
      if (expectAddress !== undefined && row.instance_address !== expectAddress) return undefined;
      this.stmts.deleteLease.run(sessionId);
      this.stmts.vacate.run({ address: row.instance_address, now: this.now(), fence: row.instance_boot_id });
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
      return expired.map(leaseFromRow);
    });

    this.recordStatusTx = db.transaction((address: string, status: InstanceStatus, probeStartedAt: number): ReconcileOutcome => {
      const instance = this.stmts.instance.get(address);
      if (instance === undefined) return {};
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
      return { ...(released ? { released } : {}), ...(unknownSession ? { unknownSession } : {}), ...(fenced ? { fenced } : {}) };
    });
  }

  private acquireInTransaction(request: AcquireRequest): AcquireResult {
    const { sessionId, owner, ttlMs, avoidAddress, maxPerOwner } = request;
    const existing = this.stmts.lease.get(sessionId);
    if (existing !== undefined) return { kind: "existing", lease: leaseFromRow(existing) };
    if (maxPerOwner !== undefined && maxPerOwner > 0 && (this.stmts.countByOwner.get(owner)?.n ?? 0) >= maxPerOwner) {
      return { kind: "user-limit" };
    }
    const instance = avoidAddress === undefined ? this.stmts.pickFree.get() : this.stmts.pickFreeExcept.get(avoidAddress);
    if (instance === undefined) {
      return this.stmts.anyHealthy.get() === undefined ? { kind: "unavailable" } : { kind: "busy" };
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
    return results;
  }

  async countByOwner(owner: string): Promise<number> {
    return this.stmts.countByOwner.get(owner)?.n ?? 0;
  }

  async release(sessionId: string, expectAddress?: string): Promise<Lease | undefined> {
    const released = this.releaseTx.immediate(sessionId, expectAddress);
    if (released !== undefined) this.emitReleased(released);
    return released;
  }

  async touch(activity: ReadonlyMap<string, number>, ttlMs: number): Promise<void> {
    if (activity.size > 0) this.touchTx.immediate(activity, ttlMs);
  }

  async expire(now: number = this.now()): Promise<Lease[]> {
    const expired = this.expireTx.immediate(now);
    for (const lease of expired) this.emitReleased(lease);
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
    return outcome;
  }

  async setHealthy(address: string, healthy: boolean): Promise<void> {
    const instance = this.stmts.instance.get(address);
    if (instance !== undefined && instance.healthy !== (healthy ? 1 : 0)) {
      this.stmts.setHealthy.run(healthy ? 1 : 0, this.now(), address);
      this.emit({ kind: "instance", address });
    }
  }

  async setDraining(address: string, draining: boolean): Promise<boolean> {
    const changed = this.stmts.setDraining.run(draining ? 1 : 0, this.now(), address).changes === 1;
    if (changed) this.emit({ kind: "instance", address });
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
    this.listeners.clear();
    if (this.db.open) this.db.close();
  }
}
