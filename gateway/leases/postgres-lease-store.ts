import pg from "pg";
import type { Logger } from "../../common/logger.js";
import { type InstanceColumns, instanceFromRow, type LeaseColumns, leaseFromRow } from "./lease-rows.js";
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
import { migrationLockKey, postgresMigrations } from "./postgres-schema.js";

/** Options of `PostgresLeaseStore`. */
export interface PostgresLeaseStoreOptions {
  /** `LEASE_DB_URL`: `postgres://user:pass@host:port/db`. */
  readonly url: string;
  /** Most connections of the query pool (the LISTEN connection is one more). Default 4. */
  readonly poolSize?: number;
  /** `statement_timeout` of every statement, milliseconds. Default 5000. */
  readonly statementTimeoutMs?: number;
  /** Bound for opening a connection, milliseconds. Default 2000. */
  readonly connectTimeoutMs?: number;
  /** First and largest delay between reconnection attempts, milliseconds. Default 100 and 5000. */
  readonly reconnectMinMs?: number;
  readonly reconnectMaxMs?: number;
  /**
   * Clock, Unix milliseconds, for tests. Without it, leases and instances carry the gateway's
   * clock (as with SQLite) and the queue and membership the database's (one clock for every
   * gateway: deadlines, the purge window, heartbeats); with it, everything carries this clock.
   */
  readonly now?: () => number;
  readonly logger?: Logger;
}

/** The store cannot be reached now; the cause is logged, clients see UNAVAILABLE (SPEC 10). */
export class StoreUnavailableError extends Error {
  override readonly name = "StoreUnavailableError";
  /** Answered UNAVAILABLE `backend service unavailable` (gateway/errors.ts). */
  readonly transient = true;
}

/** The server process id of a pool connection (pg sets it at connect; its types do not declare it). */
function backendPid(client: pg.PoolClient): number | undefined {
  const pid = (client as unknown as { processID?: number | null }).processID;
  return typeof pid === "number" ? pid : undefined;
}

/** Errors that mean "the server is not reachable" rather than "this statement failed". */
function isConnectionError(error: unknown): boolean {
  const e = error as { code?: string; message?: string };
  if (typeof e.code === "string" && /^(ECONN|ETIMEDOUT|EPIPE|ENOTFOUND|EHOSTUNREACH|ENETUNREACH|EAI_AGAIN)/.test(e.code)) return true;
  // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now, 08xxx connection exceptions.
  if (typeof e.code === "string" && (/^08/.test(e.code) || /^57P0[123]$/.test(e.code))) return true;
  return /Connection terminated|connection timeout|Client has encountered a connection error|not queryable/i.test(e.message ?? "");
}

/** A deadlock between two gateways' transactions (SQLSTATE 40P01): PostgreSQL rolled one back whole; it is run again. */
function isDeadlock(error: unknown): boolean {
  return (error as { code?: string }).code === "40P01";
}

/** A `waiters` row as the queue's functions return it (`lease_queue_entry`: with its position). */
interface WaiterColumns {
  readonly seq: number | string;
  readonly session_id: string;
  readonly owner: string;
  readonly gateway_id: string;
  readonly enqueued_at: number | string;
  readonly deadline_at: number | string;
  readonly entry_position: number;
  readonly granted_address: string | null;
  readonly position: number | string;
}

function entryFromRow(row: WaiterColumns): QueueEntry {
  return {
    sessionId: row.session_id,
    owner: row.owner,
    gatewayId: row.gateway_id,
    seq: Number(row.seq),
    enqueuedAt: Number(row.enqueued_at),
    deadlineAt: Number(row.deadline_at),
    entryPosition: row.entry_position,
    position: Number(row.position),
    grantedAddress: row.granted_address,
  };
}

// Every statement that may grant passes the queue's clock last (NULL: the database's), and
// answers `g`, the number of grants it made, so this gateway's waiters wake after its commit.
const sql = {
  lease: "SELECT * FROM leases WHERE session_id = $1",
  leaseOfInstance: "SELECT * FROM leases WHERE instance_address = $1",
  leases: "SELECT * FROM leases ORDER BY created_at, session_id",
  countByOwner: "SELECT count(*)::int AS n FROM leases WHERE owner = $1",
  acquire: "SELECT lease_acquire_batch($1::jsonb, $2, $3) AS r",
  release: "SELECT lease_release($1, $2, $3, $4) AS r",
  expire: "SELECT lease_expire($1, $2, $3) AS r",
  settle: "SELECT lease_queue_settle($1::text[], $2, $3) AS g",
  touch: `UPDATE leases l SET last_activity = GREATEST(l.last_activity, v.last), expires_at = GREATEST(l.expires_at, v.last + $3)
            FROM unnest($1::text[], $2::bigint[]) AS v(s, last) WHERE l.session_id = v.s`,
  register: `INSERT INTO instances (address, free_since, updated_at) SELECT a, 0, $2 FROM unnest($1::text[]) AS a
               ON CONFLICT (address) DO NOTHING`,
  recordStatus: "SELECT lease_record_status($1, $2, $3, $4, $5, $6, $7, $8) AS r",
  setInstance: "SELECT lease_set_instance($1, $2, $3, $4, $5) AS r",
  instance: "SELECT * FROM instances WHERE address = $1",
  instances: "SELECT * FROM instances ORDER BY address",
  heartbeat: `INSERT INTO gateways (id, address, started_at, heartbeat_at) VALUES ($1, $2, lease_queue_now($3), lease_queue_now($3))
                ON CONFLICT (id) DO UPDATE SET address = excluded.address, heartbeat_at = excluded.heartbeat_at`,
  members: "SELECT * FROM gateways WHERE heartbeat_at >= lease_queue_now($1) - $2 ORDER BY id",
  leave: "DELETE FROM gateways WHERE id = $1",
  claim: "SELECT lease_queue_claim($1, $2::text[], $3, $4) AS r",
  leaveQueue: "SELECT lease_queue_leave($1, $2, $3, $4, $5) AS r",
  queue: `SELECT w.*, CASE WHEN w.granted_address IS NULL
                  THEN row_number() OVER (PARTITION BY w.granted_address IS NULL ORDER BY w.seq) ELSE 0 END AS position
            FROM waiters w ORDER BY w.seq`,
  queueEntry: "SELECT lease_queue_entry(w) AS e FROM waiters w WHERE session_id = $1",
  queueStats: `SELECT (SELECT count(*) FROM waiters WHERE granted_address IS NULL)::int AS length,
                      grants, last_grant_at, mean_interval_ms FROM queue_stats WHERE id = 1`,
} as const;

/**
 * The shared engine of the lease store (SPEC 10): PostgreSQL through `pg`, for any number of
 * gateways on any number of hosts. Allocations of one event-loop turn are one call of
 * `lease_acquire_batch` (one round trip, one transaction, one durable commit with
 * `synchronous_commit=on`), which takes free instances with `FOR UPDATE SKIP LOCKED`; both sides
 * of a lease are UNIQUE. A bounded pool, a statement timeout on every statement, and a
 * dedicated `LISTEN lease_changes` connection feeding `watch`.
 *
 * The waiting queue (SPEC 11) lives in the same database: every operation that grants, enters
 * the queue or can make an instance allocatable runs under one advisory lock (an acquisition
 * only while entries wait, or when one of its requests would), the grant inside the same
 * transaction as in SQLite's engine; `watchQueue` wakes on this store's own grants when their
 * answers arrive and on `NOTIFY lease_queue` from other gateways (docs/waiting-room.md).
 *
 * Failures: while the server cannot be reached, calls fail at once with `StoreUnavailableError`
 * (no queue of doomed queries) and one probe reconnects with exponential backoff; after a
 * reconnection `watch` reports `resync` and `watchQueue` wakes its listeners (notifications may
 * have been missed); a statement rolled back by a deadlock is run again. `lookup` never
 * reads (`undefined`): the per-gateway cache (`CachedLeaseStore`) answers it.
 */
export class PostgresLeaseStore implements LeaseStore {
  readonly engine = "postgres" as const;
  private readonly pool: pg.Pool;
  private readonly now: () => number;
  private readonly listeners = new Set<(change: LeaseChange) => void>();
  private readonly queueListeners = new Set<() => void>();
  /** Backend process ids of this store's pool: their notifications were already acted on here, after the commit. */
  private readonly ownBackends = new Set<number>();
  private readonly clientConfig: pg.ClientConfig;
  private up = false;
  private closed = false;
  private migrated = false;
  private reconnecting = false;
  private listener: pg.Client | undefined;
  private backoffMs: number;
  /** Resolves after the first successful connection (and migration), for tests and tools. */
  readonly firstConnection: Promise<void>;
  private resolveFirst: () => void = () => {};

  constructor(private readonly options: PostgresLeaseStoreOptions) {
    this.now = options.now ?? Date.now;
    this.backoffMs = options.reconnectMinMs ?? 100;
    this.clientConfig = {
      connectionString: options.url,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 2000,
      statement_timeout: options.statementTimeoutMs ?? 5000,
      // A little longer than the server's own bound: the server's error wins when it answers.
      query_timeout: (options.statementTimeoutMs ?? 5000) + 1000,
      // Durable commits whatever the server's default (SPEC 10: no lease lost).
      options: "-c synchronous_commit=on",
      application_name: "mygateway",
      keepAlive: true,
    };
    this.pool = new pg.Pool({
      ...this.clientConfig,
      max: options.poolSize ?? 4,
      idleTimeoutMillis: 30_000,
      // pg-pool counts the wait for a free connection in this bound too: a burst of queries
      // (a probe round of thousands of instances) queues longer than one connect may take.
      // An unreachable server is refused at once anyway (`up`).
      connectionTimeoutMillis: (options.connectTimeoutMs ?? 2000) + (options.statementTimeoutMs ?? 5000) * 2,
    });
    this.pool.on("error", (error) => this.lost(error));
    this.pool.on("connect", (client) => {
      const pid = backendPid(client);
      if (pid !== undefined) this.ownBackends.add(pid);
    });
    this.pool.on("remove", (client) => {
      const pid = backendPid(client);
      if (pid !== undefined) this.ownBackends.delete(pid);
    });
    this.firstConnection = new Promise((resolve) => {
      this.resolveFirst = resolve;
    });
    this.reconnect();
  }

  available(): boolean {
    return this.up;
  }

  /** Starts (once) the loop that connects, migrates and listens, with exponential backoff. */
  private reconnect(): void {
    if (this.closed || this.reconnecting) return;
    this.reconnecting = true;
    void (async () => {
      let attempt = 0;
      while (!this.closed) {
        try {
          await this.connectOnce();
          const wasUp = this.migrated;
          this.migrated = true;
          this.up = true;
          this.backoffMs = this.options.reconnectMinMs ?? 100;
          if (attempt > 0 || wasUp) this.options.logger?.info("lease store (PostgreSQL) connected");
          this.resolveFirst();
          // Changes made while nobody listened are unknown: every cache must start over, and
          // every waiter looks again (a grant's notification may have been lost).
          if (wasUp) {
            this.emit({ kind: "resync" });
            this.wakeQueue();
          }
          return;
        } catch (error) {
          attempt++;
          if (attempt === 1 || attempt % 20 === 0) {
            this.options.logger?.warn({ err: error, attempt, retryInMs: this.backoffMs }, "lease store (PostgreSQL) unreachable; retrying");
          }
          await new Promise((resolve) => setTimeout(resolve, this.backoffMs).unref());
          this.backoffMs = Math.min(this.options.reconnectMaxMs ?? 5000, this.backoffMs * 2);
        }
      }
    })().finally(() => {
      this.reconnecting = false;
    });
  }

  private async connectOnce(): Promise<void> {
    if (!this.migrated) await this.migrate();
    const old = this.listener;
    this.listener = undefined;
    await old?.end().catch(() => {});
    const client = new pg.Client(this.clientConfig);
    client.on("error", (error) => this.lost(error));
    client.on("end", () => {
      if (this.listener === client) this.lost(new Error("LISTEN connection ended"));
    });
    client.on("notification", (message) => this.onNotification(message));
    try {
      await client.connect();
      await client.query("LISTEN lease_changes");
      await client.query("LISTEN lease_queue");
    } catch (error) {
      await client.end().catch(() => {});
      throw error;
    }
    this.listener = client;
  }

  /** The server went away (or a connection broke): mark unavailable and reconnect. */
  private lost(error: unknown): void {
    if (this.closed) return;
    if (this.up) this.options.logger?.warn({ err: error }, "lease store (PostgreSQL) connection lost; reconnecting");
    this.up = false;
    this.reconnect();
  }

  private async migrate(): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      await client.query("SELECT pg_advisory_xact_lock($1)", [migrationLockKey]);
      await client.query("CREATE TABLE IF NOT EXISTS lease_schema (version int NOT NULL)");
      const { rows } = await client.query<{ version: number }>("SELECT version FROM lease_schema");
      let version = rows[0]?.version ?? 0;
      if (rows.length === 0) await client.query("INSERT INTO lease_schema (version) VALUES (0)");
      for (; version < postgresMigrations.length; version++) {
        await client.query(postgresMigrations[version] as string);
        await client.query("UPDATE lease_schema SET version = $1", [version + 1]);
      }
      await client.query("COMMIT");
    } catch (error) {
      await client.query("ROLLBACK").catch(() => {});
      throw error;
    } finally {
      client.release();
    }
  }

  private onNotification(message: pg.Notification): void {
    if (message.channel === "lease_queue") {
      // This gateway's own commits woke its waiters already, when their results arrived.
      if (!this.ownBackends.has(message.processId)) this.wakeQueue();
      return;
    }
    const payload = message.payload;
    if (payload === undefined) return;
    let change: LeaseChange;
    try {
      const p = JSON.parse(payload) as { k: string; op?: "acquired" | "released"; s?: string; a?: string };
      if (p.k === "lease") change = { kind: "lease", sessionId: p.s ?? "", instanceAddress: p.a ?? "", op: p.op ?? "released" };
      else if (p.k === "instance") change = { kind: "instance", address: p.a ?? "" };
      else change = { kind: "members" };
    } catch {
      return;
    }
    this.emit(change);
  }

  private emit(change: LeaseChange): void {
    for (const listener of this.listeners) {
      try {
        listener(change);
      } catch {
        // A listener's failure is its own.
      }
    }
  }

  private wakeQueue(): void {
    for (const listener of this.queueListeners) {
      try {
        listener();
      } catch {
        // A listener's failure is its own.
      }
    }
  }

  /** After a commit of this store that granted (`g` in its answer): wake this gateway's waiters. */
  private granted(g: number | undefined): void {
    if (g !== undefined && g > 0) this.wakeQueue();
  }

  /** The queue's clock for the database: the test's, or `null` (the database's own). */
  private clock(): number | null {
    return this.options.now === undefined ? null : this.now();
  }

  /**
   * One statement through the pool; fails fast while the server is unreachable. Every statement
   * is its own transaction, so one that PostgreSQL rolled back to break a deadlock is run again.
   */
  private async query<R extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<pg.QueryResult<R>> {
    for (let attempt = 1; ; attempt++) {
      if (this.closed) throw new StoreUnavailableError("lease store closed");
      if (!this.up) throw new StoreUnavailableError("lease store (PostgreSQL) unreachable", { cause: undefined });
      try {
        return await this.pool.query<R>(text, values);
      } catch (error) {
        if (isConnectionError(error)) {
          this.lost(error);
          throw new StoreUnavailableError("lease store (PostgreSQL) unreachable", { cause: error });
        }
        if (isDeadlock(error) && attempt < 3) {
          this.options.logger?.warn({ err: error, attempt }, "lease store (PostgreSQL): deadlock, running the statement again");
          continue;
        }
        throw error;
      }
    }
  }

  lookup(_sessionId: string): undefined {
    return undefined;
  }

  async get(sessionId: string): Promise<Lease | undefined> {
    const { rows } = await this.query<LeaseColumns>(sql.lease, [sessionId]);
    return rows[0] === undefined ? undefined : leaseFromRow(rows[0]);
  }

  async leaseOfInstance(address: string): Promise<Lease | undefined> {
    const { rows } = await this.query<LeaseColumns>(sql.leaseOfInstance, [address]);
    return rows[0] === undefined ? undefined : leaseFromRow(rows[0]);
  }

  async leases(): Promise<Lease[]> {
    return (await this.query<LeaseColumns>(sql.leases)).rows.map(leaseFromRow);
  }

  async countByOwner(owner: string): Promise<number> {
    return (await this.query<{ n: number }>(sql.countByOwner, [owner])).rows[0]?.n ?? 0;
  }

  async acquire(sessionId: string, owner: string, ttlMs: number, avoidAddress?: string): Promise<AcquireResult> {
    return (await this.acquireBatch([{ sessionId, owner, ttlMs, avoidAddress }]))[0] as AcquireResult;
  }

  async acquireBatch(requests: readonly AcquireRequest[]): Promise<AcquireResult[]> {
    if (requests.length === 0) return [];
    const payload = requests.map((r) => ({
      s: r.sessionId,
      o: r.owner,
      t: r.ttlMs,
      ...(r.avoidAddress !== undefined ? { a: r.avoidAddress } : {}),
      ...(r.maxPerOwner ? { m: r.maxPerOwner } : {}),
      ...(r.wait !== undefined ? { w: { g: r.wait.gatewayId, t: r.wait.maxWaitMs, n: r.wait.maxLength } } : {}),
    }));
    type Row = { k: string; l?: LeaseColumns; e?: WaiterColumns; j?: boolean; n?: number };
    const { rows } = await this.query<{ r: { r: Row[]; g: number } }>(sql.acquire, [JSON.stringify(payload), this.now(), this.clock()]);
    const answer = rows[0]?.r;
    this.granted(answer?.g);
    return (answer?.r ?? []).map((x): AcquireResult => {
      if (x.k === "acquired" || x.k === "existing") return { kind: x.k, lease: leaseFromRow(x.l as LeaseColumns) };
      if (x.k === "queued") return { kind: "queued", entry: entryFromRow(x.e as WaiterColumns), joined: x.j === true };
      if (x.k === "queue-full") return { kind: "queue-full", length: Number(x.n) };
      return { kind: x.k as "busy" | "unavailable" | "user-limit" };
    });
  }

  async release(sessionId: string, expectAddress?: string): Promise<Lease | undefined> {
    const { rows } = await this.query<{ r: { l?: LeaseColumns; g: number; locked?: boolean } }>(sql.release, [
      sessionId,
      expectAddress ?? null,
      this.now(),
      this.clock(),
    ]);
    const answer = rows[0]?.r;
    this.granted(answer?.g);
    if (answer?.l === undefined) return undefined;
    const lease = leaseFromRow(answer.l);
    if (answer.locked !== true) await this.settle([lease.owner]);
    return lease;
  }

  /**
   * After a release or expiry committed without the queue's lock (nobody waited when it began):
   * an entry of these owners held back by their per-owner limit may go now (decision 0047).
   */
  private async settle(owners: readonly string[]): Promise<void> {
    const { rows } = await this.query<{ g: number }>(sql.settle, [[...new Set(owners)], this.now(), this.clock()]);
    this.granted(rows[0]?.g);
  }

  async touch(activity: ReadonlyMap<string, number>, ttlMs: number): Promise<void> {
    if (activity.size === 0) return;
    // One lock order for every writer (sorted): two gateways renewing the same sessions never deadlock.
    const sessions = [...activity.keys()].sort();
    await this.query(sql.touch, [sessions, sessions.map((s) => activity.get(s)), ttlMs]);
  }

  async expire(now: number = this.now()): Promise<Lease[]> {
    const { rows } = await this.query<{ r: { l: LeaseColumns[]; g: number; locked: boolean } }>(sql.expire, [now, now, this.clock()]);
    const answer = rows[0]?.r;
    this.granted(answer?.g);
    const expired = (answer?.l ?? []).map(leaseFromRow);
    if (expired.length > 0 && answer?.locked !== true) await this.settle(expired.map((l) => l.owner));
    return expired;
  }

  async register(addresses: readonly string[]): Promise<void> {
    if (addresses.length > 0) await this.query(sql.register, [[...addresses], this.now()]);
  }

  async recordStatus(address: string, status: InstanceStatus, probeStartedAt: number = this.now()): Promise<ReconcileOutcome> {
    const { rows } = await this.query<{ r: { released?: LeaseColumns; unknown?: string; fenced?: boolean; g?: number } }>(
      sql.recordStatus,
      [address, status.podName, status.bootId, status.sessionId, status.shuttingDown, probeStartedAt, this.now(), this.clock()],
    );
    const r = rows[0]?.r ?? {};
    this.granted(r.g);
    return {
      ...(r.released ? { released: leaseFromRow(r.released) } : {}),
      ...(r.unknown ? { unknownSession: r.unknown } : {}),
      ...(r.fenced ? { fenced: true } : {}),
    };
  }

  async setHealthy(address: string, healthy: boolean): Promise<void> {
    await this.setInstance(address, healthy, null);
  }

  async setDraining(address: string, draining: boolean): Promise<boolean> {
    return this.setInstance(address, null, draining);
  }

  private async setInstance(address: string, healthy: boolean | null, draining: boolean | null): Promise<boolean> {
    const { rows } = await this.query<{ r: { changed: boolean; g: number } }>(sql.setInstance, [
      address,
      healthy,
      draining,
      this.now(),
      this.clock(),
    ]);
    this.granted(rows[0]?.r.g);
    return rows[0]?.r.changed === true;
  }

  async instance(address: string): Promise<InstanceRecord | undefined> {
    const { rows } = await this.query<InstanceColumns>(sql.instance, [address]);
    return rows[0] === undefined ? undefined : instanceFromRow(rows[0]);
  }

  async instances(): Promise<InstanceRecord[]> {
    return (await this.query<InstanceColumns>(sql.instances)).rows.map(instanceFromRow);
  }

  async heartbeat(member: { readonly id: string; readonly address: string }): Promise<void> {
    await this.query(sql.heartbeat, [member.id, member.address, this.clock()]);
  }

  async members(liveWithinMs: number): Promise<GatewayMember[]> {
    const { rows } = await this.query<{ id: string; address: string; started_at: string; heartbeat_at: string }>(sql.members, [
      this.clock(),
      liveWithinMs,
    ]);
    return rows.map((r) => ({ id: r.id, address: r.address, startedAt: Number(r.started_at), heartbeatAt: Number(r.heartbeat_at) }));
  }

  async leave(id: string): Promise<void> {
    await this.query(sql.leave, [id]);
  }

  watch(listener: (change: LeaseChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async claimGranted(gatewayId: string, sessions: readonly string[] = []): Promise<ClaimResult> {
    type Row = { claimed: { lease: LeaseColumns; entry: WaiterColumns }[]; leased: LeaseColumns[]; gone: string[]; g: number };
    const { rows } = await this.query<{ r: Row }>(sql.claim, [gatewayId, [...sessions], this.now(), this.clock()]);
    const answer = rows[0]?.r;
    this.granted(answer?.g);
    const claimed: ClaimedGrant[] = (answer?.claimed ?? []).map((c) => ({ lease: leaseFromRow(c.lease), entry: entryFromRow(c.entry) }));
    return { claimed, leased: (answer?.leased ?? []).map(leaseFromRow), gone: answer?.gone ?? [] };
  }

  /** Removes entries (`lease_queue_leave`: by session, by gateway, or stale) and passes their reservations on. */
  private async leaveBy(kind: "session" | "gateway" | "stale", key: string, liveWithinMs = 0): Promise<QueueEntry[]> {
    const { rows } = await this.query<{ r: { entries: WaiterColumns[]; g: number } }>(sql.leaveQueue, [
      kind,
      key,
      liveWithinMs,
      this.now(),
      this.clock(),
    ]);
    const answer = rows[0]?.r;
    this.granted(answer?.g);
    return (answer?.entries ?? []).map(entryFromRow);
  }

  async leaveQueue(sessionId: string): Promise<QueueEntry | undefined> {
    return (await this.leaveBy("session", sessionId))[0];
  }

  leaveQueueOf(gatewayId: string): Promise<QueueEntry[]> {
    return this.leaveBy("gateway", gatewayId);
  }

  purgeQueue(liveWithinMs: number): Promise<QueueEntry[]> {
    return this.leaveBy("stale", "", liveWithinMs);
  }

  async queue(): Promise<QueueEntry[]> {
    return (await this.query<WaiterColumns>(sql.queue)).rows.map(entryFromRow);
  }

  async queueEntry(sessionId: string): Promise<QueueEntry | undefined> {
    const { rows } = await this.query<{ e: WaiterColumns }>(sql.queueEntry, [sessionId]);
    return rows[0] === undefined ? undefined : entryFromRow(rows[0].e);
  }

  async queueStats(): Promise<QueueStats> {
    const { rows } = await this.query<{ length: number; grants: string; last_grant_at: string; mean_interval_ms: number }>(sql.queueStats);
    const row = rows[0];
    const grants = Number(row?.grants ?? 0);
    return {
      length: row?.length ?? 0,
      grants,
      lastGrantAt: Number(row?.last_grant_at ?? 0),
      meanGrantIntervalMs: grants === 0 ? undefined : Number(row?.mean_interval_ms),
    };
  }

  /**
   * Wakes `listener` after this store's own commits that granted (when their answer arrives)
   * and on `NOTIFY lease_queue` from other gateways' commits that granted, claimed or removed
   * entries; once more after a reconnection (notifications may have been lost).
   */
  watchQueue(listener: () => void): () => void {
    this.queueListeners.add(listener);
    return () => this.queueListeners.delete(listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.up = false;
    this.listeners.clear();
    this.queueListeners.clear();
    const listener = this.listener;
    this.listener = undefined;
    await Promise.all([listener?.end().catch(() => {}), this.pool.end().catch(() => {})]);
  }
}
