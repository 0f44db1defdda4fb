import type { ClientHttp2Session } from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Logger } from "../../common/logger.js";
import {
  HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "../../gen/grpc/health/v1/health_pb.js";
import { GetStatusResponseSchema, RecycleRequestSchema } from "../../gen/myservice/instance/v1/instance_pb.js";
import type { InstanceRecord, InstanceStatus, Lease, LeaseStore, ReconcileOutcome } from "../leases/lease-store.js";
import { rawUnary } from "../proxy/raw-unary.js";
import { ConnectFailure, type UpstreamConnection, type UpstreamPool } from "../proxy/upstream-pool.js";
import type { Discovery } from "./discovery.js";

const statusPath = "/myservice.instance.v1.InstanceService/GetStatus";
const healthPath = "/grpc.health.v1.Health/Check";
const recyclePath = "/myservice.instance.v1.InstanceService/Recycle";
/** Session id named when recycling an instance that holds no session (a fenced one). */
const noSession = "no-session";
const emptyRequest = new Uint8Array(0);
const healthRequest = toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, { service: "" }));

/** Why a lease was released other than by its own Shutdown. */
export type ReleaseReason = "expired" | "instance-restarted" | "instance-lost" | "transfer" | "admin";

/** Options of `InstancePool`. */
export interface InstancePoolOptions {
  readonly store: LeaseStore;
  readonly upstream: UpstreamPool;
  readonly discovery: Discovery;
  /** Period of probes per instance, milliseconds. */
  readonly healthIntervalMs: number;
  /**
   * Period of the full probe per instance (gRPC health Check + status call), milliseconds.
   * Probes in between are an HTTP/2 PING on the instance's identified connection: the
   * instance's HTTP/2 layer answers it without running a gRPC call, yet only while its event
   * loop runs. An instance that failed a probe, is not healthy, or is free but not yet clean
   * always gets the full probe. Default `healthIntervalMs` (every probe is a full one).
   */
  readonly fullProbeIntervalMs?: number;
  /** Bound of one probe, milliseconds. */
  readonly healthTimeoutMs: number;
  /** Consecutive failed probes before an instance is declared dead. */
  readonly failureThreshold: number;
  /** How often a dynamic discovery is resolved again, milliseconds. */
  readonly discoveryIntervalMs: number;
  /** Most probes in flight at once. Default 32. */
  readonly probeConcurrency?: number;
  /** A token for `sessionId`, to shut an instance down on the session's behalf (recycling; `createSystemTokens`). */
  readonly systemToken: (sessionId: string) => Promise<string>;
  readonly logger: Logger;
  /**
   * The live gateways sharing the store (SPEC 10): each instance is probed by one of them only,
   * chosen by rendezvous hashing of the gateway ids, so the probe load on an instance does not
   * grow with the number of gateways; a dead gateway's share moves as soon as the membership
   * drops it. Absent: this gateway probes every instance.
   */
  readonly membership?: { readonly id: string; liveIds(): readonly string[] };
  /** Called when a lease was released by reconciliation (SPEC 4.7). */
  readonly onLeaseReleased?: (lease: Lease, reason: ReleaseReason) => void;
  /** Called when an instance is declared dead or comes back. */
  readonly onHealthChange?: (address: string, healthy: boolean) => void;
  /** Called when a recycle finished: `ok` when the instance accepted the shutdown (metrics). */
  readonly onRecycled?: (address: string, ok: boolean) => void;
}

/** Live, in-memory view of one instance (the durable part is in the store). */
export interface InstanceProbeState {
  consecutiveFailures: number;
  lastProbeAt: number;
  lastError: string | undefined;
  inFlight: boolean;
  lastRecycleAt: number;
  /** Start of the last successful full probe (health Check + status), Unix milliseconds. */
  lastFullProbeAt: number;
}

/** Verdict of `diagnose`: `gone` when the session's process is dead or restarted. */
export type Diagnosis = "same" | "gone";

/**
 * Discovers instances, probes each one every interval with a bounded timeout (a full probe —
 * gRPC health + status call — every `fullProbeIntervalMs`, an HTTP/2 PING in between),
 * declares it dead only after `failureThreshold` consecutive failures and back as soon as it
 * answers, reconciles leases with what instances report (SPEC 4.7, 4.8),
 * and recycles instances on a session's behalf (expiry, unknown sessions).
 */
export class InstancePool {
  private readonly probes = new Map<string, InstanceProbeState>();
  private known: string[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  /** The store's instance rows, read once per probe round (not once per probe). */
  private records = new Map<string, InstanceRecord>();

  constructor(private readonly options: InstancePoolOptions) {}

  /** Discovers, probes every instance once (reconciliation on start), then keeps probing. */
  async start(): Promise<void> {
    await this.discover();
    await this.probeAll();
    this.timers.push(setInterval(() => void this.probeAll(), this.options.healthIntervalMs).unref());
    if (this.options.discovery.dynamic) {
      this.timers.push(setInterval(() => void this.discover(), this.options.discoveryIntervalMs).unref());
    }
  }

  stop(): void {
    for (const timer of this.timers) clearInterval(timer);
    this.timers.length = 0;
  }

  /** Number of instances seen healthy: by this gateway's probes, or in the store for the instances others probe. */
  healthyCount(): number {
    let n = 0;
    for (const address of this.known) {
      if (!this.probesItself(address)) {
        if (this.records.get(address)?.healthy === true) n++;
      } else if (this.probes.get(address)?.consecutiveFailures === 0 && this.probes.get(address)?.lastProbeAt !== 0) n++;
    }
    return n;
  }

  /**
   * True when this gateway probes `address`: the live gateway whose rendezvous score for it is
   * highest (ties cannot matter: ids are unique). Always true without a membership.
   */
  probesItself(address: string): boolean {
    const membership = this.options.membership;
    if (membership === undefined) return true;
    let best = "";
    let bestScore = -1;
    for (const id of membership.liveIds()) {
      const score = rendezvousScore(id, address);
      if (score > bestScore || (score === bestScore && id > best)) {
        best = id;
        bestScore = score;
      }
    }
    return best === "" || best === membership.id;
  }

  /** Addresses currently discovered. */
  addresses(): readonly string[] {
    return this.known;
  }

  /**
   * True while the instance is declared dead. An instance this gateway probes: by its own
   * probes; with `unlessHealthySince` (a lease's creation time), false when its last probe ended
   * before it — the store saw the instance healthy and clean after that, so it is back. An
   * instance another gateway probes: by that gateway's verdict in the store (this gateway's own
   * probe state may be from before the share moved, and is reset each round, see `probeAll`).
   */
  isDown(address: string, unlessHealthySince?: number): boolean {
    if (this.probesItself(address)) {
      const state = this.probes.get(address);
      if (state === undefined || state.consecutiveFailures < this.options.failureThreshold) return false;
      return unlessHealthySince === undefined || state.lastProbeAt >= unlessHealthySince;
    }
    const record = this.records.get(address);
    return record !== undefined && !record.healthy && record.sessionId !== null;
  }

  probeState(address: string): InstanceProbeState | undefined {
    return this.probes.get(address);
  }

  private async discover(): Promise<void> {
    const { discovery, store, logger } = this.options;
    let found: string[];
    try {
      found = await discovery.resolve();
    } catch (error) {
      logger.warn({ err: error, source: discovery.description }, "instance discovery failed; keeping the last list");
      return;
    }
    const gone = this.known.filter((a) => !found.includes(a));
    const added = found.filter((a) => !this.known.includes(a));
    try {
      if (added.length > 0) {
        await store.register(added);
        logger.info({ added }, "instances discovered");
      }
      for (const address of gone) await store.setHealthy(address, false);
    } catch (error) {
      // Probe rounds register what the store does not know yet once it is back.
      logger.warn({ err: error }, "lease store unavailable; instances registered once it is back");
    }
    for (const address of gone) {
      this.probes.delete(address);
      this.options.upstream.destroy(address);
      logger.warn({ address }, "instance no longer discovered; taken out of the pool");
    }
    this.known = found;
    for (const address of found) {
      if (!this.probes.has(address)) {
        this.probes.set(address, {
          consecutiveFailures: 0,
          lastProbeAt: 0,
          lastError: undefined,
          inFlight: false,
          lastRecycleAt: 0,
          lastFullProbeAt: 0,
        });
      }
    }
  }

  /**
   * Probes every instance, at most `probeConcurrency` at a time: a pool of hundreds must not
   * open hundreds of connections at once and time every probe out (each probe has its own
   * timeout, counted from its own start).
   */
  private async probeAll(): Promise<void> {
    try {
      this.records = new Map((await this.options.store.instances()).map((r) => [r.address, r] as const));
    } catch (error) {
      // The store is down (SPEC 10): PINGs still show which instances live; state is written
      // once it is back.
      this.options.logger.warn({ err: error }, "lease store unavailable; probing from the last known state");
    }
    // Instances added to discovery while the store was down are registered once it is back.
    const unregistered = this.known.filter((a) => !this.records.has(a));
    if (unregistered.length > 0) await this.options.store.register(unregistered).catch(() => {});
    const queue: string[] = [];
    for (const address of this.known) {
      if (this.probesItself(address)) {
        queue.push(address);
        continue;
      }
      // Another gateway probes it now: forget what this gateway's own probes saw, so a share
      // that comes back starts from a full probe and never from failures counted before.
      const state = this.probes.get(address);
      if (state !== undefined && !state.inFlight) {
        state.consecutiveFailures = 0;
        state.lastError = undefined;
        state.lastFullProbeAt = 0;
      }
    }
    const worker = async () => {
      for (let address = queue.shift(); address !== undefined; address = queue.shift()) await this.probe(address);
    };
    const workers = Math.min(queue.length, this.options.probeConcurrency ?? 32);
    await Promise.all(Array.from({ length: workers }, worker));
  }

  /** Reads status and health of one instance over `conn` (default: a pooled connection). */
  async status(address: string, conn?: UpstreamConnection, timeoutMs = this.options.healthTimeoutMs): Promise<InstanceStatus> {
    const c = conn ?? this.options.upstream.get(address);
    if (!c.isConnected()) await c.connected;
    const [statusReply, healthReply] = await Promise.all([
      rawUnary(c.session, statusPath, emptyRequest, {}, timeoutMs),
      rawUnary(c.session, healthPath, healthRequest, {}, timeoutMs),
    ]);
    if (statusReply.status !== 0) throw new Error(`status call failed: ${statusReply.status} ${statusReply.message}`);
    const status = fromBinary(GetStatusResponseSchema, statusReply.data);
    c.bootId = status.bootId;
    const serving =
      healthReply.status === 0 &&
      fromBinary(HealthCheckResponseSchema, healthReply.data).status === HealthCheckResponse_ServingStatus.SERVING;
    return {
      podName: status.podName,
      bootId: status.bootId,
      sessionId: status.sessionId,
      shuttingDown: status.shuttingDown || !serving,
    };
  }

  /** Learns which process a connection reaches (once per connection). */
  identify(conn: UpstreamConnection): Promise<string> {
    conn.identity ??= this.status(conn.address, conn).then((s) => s.bootId);
    return conn.identity;
  }

  private async probe(address: string): Promise<void> {
    const state = this.probes.get(address);
    if (state === undefined || state.inFlight) return;
    state.inFlight = true;
    const startedAt = Date.now();
    const { store, logger } = this.options;
    try {
      const live = this.pingable(address, state, startedAt);
      if (live !== undefined) {
        await ping(live.session, this.options.healthTimeoutMs);
        state.consecutiveFailures = 0;
        state.lastError = undefined;
        return;
      }
      const status = await this.status(address);
      if (!this.probes.has(address)) return;
      state.lastFullProbeAt = startedAt;
      const wasDown = state.consecutiveFailures >= this.options.failureThreshold;
      state.consecutiveFailures = 0;
      state.lastError = undefined;
      const before = this.records.get(address);
      let outcome: ReconcileOutcome;
      try {
        outcome = await store.recordStatus(address, status, startedAt);
      } catch (error) {
        // The instance answered; only the store did not (SPEC 10): not a probe failure.
        logger.warn({ err: error, address }, "lease store unavailable; probe result not written");
        return;
      }
      if (wasDown || before?.healthy === false) {
        logger.info({ address, pod: status.podName }, "instance healthy");
        this.options.onHealthChange?.(address, true);
      }
      if (outcome.released !== undefined) {
        logger.warn(
          { sessionId: outcome.released.sessionId, pod: status.podName, address },
          "instance restarted or holds another session: its lease was released",
        );
        this.options.onLeaseReleased?.(outcome.released, "instance-restarted");
      }
      if ((outcome.unknownSession !== undefined || outcome.fenced) && !status.shuttingDown) {
        // SPEC 4.7: kept out of the pool until recycled; recycle it (at most every 5 s). A
        // fenced instance served a lease that ended without a restart (its session never
        // reached it): it too restarts before anyone else gets it.
        if (Date.now() - state.lastRecycleAt > 5000) {
          state.lastRecycleAt = Date.now();
          logger.warn(
            { address, pod: status.podName, sessionId: outcome.unknownSession },
            outcome.fenced
              ? "instance served a lease and never restarted; recycling it"
              : "instance holds a session no lease knows; recycling it",
          );
          void this.recycle(address, outcome.unknownSession ?? noSession);
        }
      }
    } catch (error) {
      if (!this.probes.has(address)) return;
      if (await this.seenHealthySince(address, startedAt)) {
        // Another gateway's probe found it healthy after this one started (it came back from a
        // restart meanwhile): a late failure is no evidence against it (test/queue/order).
        return;
      }
      state.consecutiveFailures++;
      state.lastError = (error as Error).message;
      const record = this.records.get(address);
      if (state.consecutiveFailures === 1 && record?.healthy === true && record.sessionId === null) {
        // A free instance holds no session a blip could kill: out of allocation at once, so a
        // pool that is down answers UNAVAILABLE within one probe (SPEC 4.8).
        this.records.set(address, { ...record, healthy: false });
        await this.markUnhealthy(address);
        logger.info({ address, pod: record.podName, error: state.lastError }, "free instance not answering; not allocatable");
        this.options.onHealthChange?.(address, false);
      }
      if (state.consecutiveFailures === this.options.failureThreshold) {
        if (record !== undefined) this.records.set(address, { ...record, healthy: false });
        await this.markUnhealthy(address);
        // Streams to a dead instance fail now instead of hanging (SPEC 4.8).
        this.options.upstream.destroy(address);
        logger.warn({ address, pod: record?.podName, error: state.lastError }, "instance declared dead");
        this.options.onHealthChange?.(address, false);
      }
    } finally {
      state.lastProbeAt = Date.now();
      state.inFlight = false;
    }
  }

  /** The store holds the instance healthy, written (by any gateway) at or after `since`. */
  private async seenHealthySince(address: string, since: number): Promise<boolean> {
    try {
      const record = await this.options.store.instance(address);
      return record?.healthy === true && record.updatedAt >= since;
    } catch {
      return false; // the store is down: this gateway's probes decide
    }
  }

  private async markUnhealthy(address: string): Promise<void> {
    try {
      await this.options.store.setHealthy(address, false);
    } catch (error) {
      this.options.logger.warn({ err: error, address }, "lease store unavailable; instance health not written");
    }
  }

  /**
   * The connection a PING may stand in for the full probe on, or `undefined` when the full probe
   * is due: its period passed, the last probe failed, the store does not see the instance
   * healthy, it is free but not yet clean (only a status call can show it clean), or no pooled
   * connection is up and identified as the boot the store knows. A restarted process is always
   * a new connection, so a PING on the identified one cannot miss a restart.
   */
  private pingable(address: string, state: InstanceProbeState, now: number): UpstreamConnection | undefined {
    const fullEvery = this.options.fullProbeIntervalMs ?? this.options.healthIntervalMs;
    if (fullEvery <= this.options.healthIntervalMs) return undefined; // every probe a full one
    // Half an interval of slack: probe rounds start a little late or early.
    const due = now - state.lastFullProbeAt >= fullEvery - this.options.healthIntervalMs / 2;
    if (due || state.consecutiveFailures > 0) return undefined;
    const record = this.records.get(address);
    if (record === undefined || !record.healthy || (record.sessionId === null && !record.clean)) return undefined;
    const conn = this.options.upstream.identified(address);
    return conn !== undefined && conn.bootId === record.bootId ? conn : undefined;
  }

  /**
   * After a call to `address` failed at the transport level: is the session's process
   * (`bootId`) gone — declared dead, refusing connections, or restarted — or still there?
   */
  async diagnose(address: string, bootId: string): Promise<Diagnosis> {
    // Up to `failureThreshold` probes, each on a new connection: one slow answer must not end
    // a live session, and a process that is gone shows it at once (refused, or a new boot id).
    for (let attempt = 0; attempt < this.options.failureThreshold; attempt++) {
      if (this.isDown(address) || (await this.storeSaysUnhealthy(address))) return "gone";
      const conn = this.options.upstream.dedicated(address);
      try {
        const status = await this.status(address, conn, this.options.healthTimeoutMs);
        return status.bootId === bootId ? "same" : "gone";
      } catch (error) {
        if (error instanceof ConnectFailure && error.refused) return "gone";
      } finally {
        conn.session.close();
      }
    }
    return "same";
  }

  private async storeSaysUnhealthy(address: string): Promise<boolean> {
    try {
      return (await this.options.store.instance(address))?.healthy === false;
    } catch {
      return false; // the store is down: the probe below decides
    }
  }

  /**
   * Makes an instance exit on `sessionId`'s behalf so its supervisor restarts it clean (SPEC
   * 4.6): `InstanceService/Recycle` with a token of role `system`, accepted whether the instance
   * bound the session or never saw it; refused if it holds another session.
   */
  async recycle(address: string, sessionId: string): Promise<boolean> {
    const ok = await this.shutDownFor(address, sessionId);
    this.options.onRecycled?.(address, ok);
    return ok;
  }

  private async shutDownFor(address: string, sessionId: string): Promise<boolean> {
    const { logger } = this.options;
    try {
      const token = await this.options.systemToken(sessionId);
      const conn = this.options.upstream.get(address);
      const reply = await rawUnary(
        conn.session,
        recyclePath,
        toBinary(RecycleRequestSchema, create(RecycleRequestSchema, { sessionId })),
        { authorization: token, "session-id": sessionId },
        this.options.healthTimeoutMs * 2,
      );
      if (reply.status !== 0) {
        logger.info({ address, sessionId, status: reply.status, message: reply.message }, "recycle: instance did not shut down");
        return false;
      }
      return true;
    } catch (error) {
      logger.warn({ address, sessionId, err: error }, "recycle failed");
      return false;
    }
  }
}

/** Sends an HTTP/2 PING and waits for its ACK, at most `timeoutMs`. */
function ping(session: ClientHttp2Session, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`PING not answered within ${timeoutMs} ms`)), timeoutMs);
    const done = (error: Error | null) => {
      clearTimeout(timer);
      if (error === null) resolve();
      else reject(error);
    };
    try {
      // false: too many PINGs unanswered already (node keeps at most 10 outstanding).
      if (!session.ping(done)) done(new Error("PING not sent: too many unanswered"));
    } catch (error) {
      done(error as Error);
    }
  });
}

/** Rendezvous (highest random weight) score of a gateway for an instance: FNV-1a of both. */
function rendezvousScore(gatewayId: string, address: string): number {
  let h = 0x811c9dc5;
  const text = `${gatewayId}|${address}`;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  // One more mixing round: FNV's low bits alone spread short, similar strings poorly.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  return h >>> 0;
}
