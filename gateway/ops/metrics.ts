import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { Counter, collectDefaultMetrics, Gauge, Histogram, type Registry } from "prom-client";
import type { InstanceRecord, Lease, QueueStats } from "../leases/lease-store.js";
import { WindowCounter } from "./window-counter.js";

/** Outcome of one allocation attempt (`SessionRouter` option `onAllocation`). */
export type AllocationResult = "acquired" | "busy" | "unavailable" | "user-limit";

/** Outcome of one Login (`createLogin` option `onResult`). */
export type LoginResult = "ok" | "invalid_argument" | "denied" | "throttled";

/** What the state gauges read at scrape time. */
export interface PoolStateSource {
  instances(): Promise<InstanceRecord[]>;
  leases(): Promise<Lease[]>;
  /** The waiting queue (SPEC 11), for `mygateway_queue_length`. */
  queueStats?(): Promise<QueueStats>;
}

/** How a call that waited (or was refused by a full queue) ended. */
export type QueueWaitResult = "granted" | "timeout" | "deadline" | "cancelled" | "full" | "error";

/** Options of `createGatewayMetrics`. */
export interface GatewayMetricsOptions {
  /** Read at scrape time for active leases, lease ages and instance health (never per call). */
  readonly state: PoolStateSource;
  /** Also register prom-client's process and Node.js metrics (`process_*`, `nodejs_*`). Default true. */
  readonly defaultMetrics?: boolean;
  /** Clock, Unix milliseconds. */
  readonly now?: () => number;
}

/** Counters since start, for the admin API and the dashboard (plain numbers, no scrape). */
export interface PoolStats {
  readonly startedAt: number;
  readonly allocations: Readonly<Record<AllocationResult, number>>;
  /** Allocation attempts of the last minute, by result (see `WindowCounter`). */
  readonly allocationsLastMinute: Readonly<Record<AllocationResult, number>>;
  readonly leaseExpiries: number;
  readonly recycles: number;
  readonly proxiedCalls: number;
  readonly logins: Readonly<Record<LoginResult, number>>;
}

/** Typed hooks the gateway calls; each is cheap (label children are cached). */
export interface GatewayMetrics {
  readonly registry: Registry;
  /** An allocation attempt finished. */
  allocation(result: AllocationResult, durationMs: number): void;
  /** A Login finished. */
  login(result: LoginResult): void;
  /** A proxied MyService* call finished with gRPC `code` (-1: the client went away, counted as CANCELLED). */
  proxiedCall(method: string, code: number, durationMs: number): void;
  /** An instance was declared dead or out of allocation (`false`) or came back (`true`); repeats are ignored. */
  healthChange(address: string, healthy: boolean): void;
  /** A lease was ended other than by its session's own Shutdown. */
  leaseRevoked(reason: string): void;
  /** A lease expired (idle sweeper). Also counts as revoked with reason `expired`. */
  leaseExpired(): void;
  /** An instance was shut down on a session's behalf (`ok`: it accepted). */
  recycled(ok: boolean): void;
  /** A call that waited in the queue ended (or a full queue refused it: `full`, 0 ms). */
  queueWait(result: QueueWaitResult, waitedMs: number): void;
  /** Entries of dead gateways were purged from the queue. */
  queuePurged(count: number): void;
  stats(): PoolStats;
}

/** Canonical gRPC status names by code, as Prometheus label values (`grpc_code` convention). */
export const grpcCodeNames: readonly string[] = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

/** Label value of a gRPC status code; -1 (client went away) is `CANCELLED`. */
export function grpcCodeName(code: number): string {
  if (code === -1) return "CANCELLED";
  return grpcCodeNames[code] ?? "UNKNOWN";
}

const callBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const allocationBuckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
const allocationResults: readonly AllocationResult[] = ["acquired", "busy", "unavailable", "user-limit"];
const queueWaitBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const queueWaitResults: readonly QueueWaitResult[] = ["granted", "timeout", "deadline", "cancelled", "full", "error"];
const loginResults: readonly LoginResult[] = ["ok", "invalid_argument", "denied", "throttled"];

type InstanceCondition = "free" | "leased" | "recycling" | "unhealthy";

/** Where an instance stands: unhealthy, leased, free (allocatable unless draining) or recycling. */
export function instanceCondition(instance: InstanceRecord): InstanceCondition {
  if (!instance.healthy) return "unhealthy";
  if (instance.sessionId !== null) return "leased";
  return instance.clean ? "free" : "recycling";
}

/**
 * Registers the gateway's metrics (SPEC 9) in `registry`, all prefixed `mygateway_`. Event
 * counters and histograms are fed by the hooks; state gauges (active leases, lease age,
 * instance health) read the lease store in `collect()`, at scrape time only.
 */
export function createGatewayMetrics(registry: Registry, options: GatewayMetricsOptions): GatewayMetrics {
  const now = options.now ?? Date.now;
  const registers = [registry];
  if (options.defaultMetrics ?? true) {
    collectDefaultMetrics({ register: registry });
    // Gauges named like counters: Prometheus naming (and `promtool check metrics`) refuses
    // them; `nodejs_active_handles` / `_requests` / `_resources` carry the same counts by type.
    for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) {
      registry.removeSingleMetric(name);
    }
  }

  const allocations = new Counter({
    name: "mygateway_allocations_total",
    help: "Instance allocation attempts for new sessions, by result (acquired, busy, unavailable, user-limit).",
    labelNames: ["result"] as const,
    registers,
  });
  const allocationSeconds = new Histogram({
    name: "mygateway_allocation_duration_seconds",
    help: "Time to allocate an instance to a new session (one write transaction of the lease store), by result.",
    labelNames: ["result"] as const,
    buckets: allocationBuckets,
    registers,
  });
  const logins = new Counter({
    name: "mygateway_logins_total",
    help: "Login calls, by result (ok, invalid_argument, denied, throttled).",
    labelNames: ["result"] as const,
    registers,
  });
  const calls = new Counter({
    name: "mygateway_proxied_calls_total",
    help: "Proxied MyService* calls finished, by method and gRPC status code.",
    labelNames: ["method", "code"] as const,
    registers,
  });
  const callSeconds = new Histogram({
    name: "mygateway_proxied_call_duration_seconds",
    help: "Duration of proxied MyService* calls (a Subscribe stream counts until it ends), by method and gRPC status code.",
    labelNames: ["method", "code"] as const,
    buckets: callBuckets,
    registers,
  });
  const expiries = new Counter({
    name: "mygateway_lease_expiries_total",
    help: "Leases released by the idle sweeper (LEASE_IDLE_TTL).",
    registers,
  });
  const revoked = new Counter({
    name: "mygateway_leases_revoked_total",
    help: "Leases ended other than by the session's own Shutdown, by reason (expired, instance-restarted, admin, ...).",
    labelNames: ["reason"] as const,
    registers,
  });
  const recycles = new Counter({
    name: "mygateway_instance_recycles_total",
    help: "Instances shut down on a session's behalf so they restart clean, by result (ok, failed).",
    labelNames: ["result"] as const,
    registers,
  });
  const healthTransitions = new Counter({
    name: "mygateway_instance_health_transitions_total",
    help: "Instances declared unhealthy or healthy again, by new state.",
    labelNames: ["state"] as const,
    registers,
  });

  // One read of the store per scrape, shared by every state gauge: prom-client starts every collect() of a scrape in one turn, so they share one read. While
  // the store cannot be read (database down, SPEC 10) the gauges show the last state read.
  type Snapshot = { instances: InstanceRecord[]; leases: Lease[] };
  let snapshot: Promise<Snapshot> | undefined;
  let lastGood: Snapshot = { instances: [], leases: [] };
  const read = () => {
    snapshot ??= Promise.all([options.state.instances(), options.state.leases()]).then(
      ([instances, leases]) => {
        lastGood = { instances, leases };
        return lastGood;
      },
      () => lastGood,
    );
    const current = snapshot;
    setImmediate(() => {
      if (snapshot === current) snapshot = undefined;
    });
    return current;
  };
  const podOf = (instances: InstanceRecord[], address: string) => instances.find((i) => i.address === address)?.podName ?? "";

  new Gauge({
    name: "mygateway_active_leases",
    help: "Sessions currently holding an instance.",
    registers,
    async collect() {
      this.set((await read()).leases.length);
    },
  });
  /** A gauge with one series per lease, valued from the lease at scrape time. */
  const perLeaseGauge = (name: string, help: string, valueFor: (lease: Lease, nowMs: number) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ["pod", "address"] as const,
      registers,
      async collect() {
        const { instances, leases } = await read();
        const t = now();
        this.reset();
        for (const lease of leases) {
          const labels = { pod: podOf(instances, lease.instanceAddress) || lease.podName, address: lease.instanceAddress };
          this.set(labels, valueFor(lease, t));
        }
      },
    });
  perLeaseGauge(
    "mygateway_lease_age_seconds",
    "Age of the lease on each leased instance (since the session got it).",
    (lease, t) => (t - lease.createdAt) / 1000,
  );
  perLeaseGauge(
    "mygateway_lease_idle_seconds",
    "Time since the last call of the session on each leased instance (renewals are batched, about 1 s).",
    (lease, t) => Math.max(0, (t - lease.lastActivity) / 1000),
  );
  /** A gauge with one 0/1 series per instance, read from the store at scrape time. */
  const perInstanceFlag = (name: string, help: string, flag: (instance: InstanceRecord) => boolean) =>
    new Gauge({
      name,
      help,
      labelNames: ["pod", "address"] as const,
      registers,
      async collect() {
        this.reset();
        for (const i of (await read()).instances) this.set({ pod: i.podName, address: i.address }, flag(i) ? 1 : 0);
      },
    });
  perInstanceFlag("mygateway_instance_up", "1 while the instance passes its health probes, else 0.", (i) => i.healthy);
  perInstanceFlag(
    "mygateway_instance_draining",
    "1 while an operator has taken the instance out of allocation, else 0.",
    (i) => i.draining,
  );
  new Gauge({
    name: "mygateway_instances",
    help: "Instances by state: free (allocatable unless draining), leased, recycling (not yet seen clean), unhealthy.",
    labelNames: ["state"] as const,
    registers,
    async collect() {
      const counts: Record<InstanceCondition, number> = {
        free: 0,
        leased: 0,
        recycling: 0,
        unhealthy: 0,
      };
      for (const i of (await read()).instances) counts[instanceCondition(i)]++;
      for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
    },
  });

  const queueWaitSeconds = new Histogram({
    name: "mygateway_queue_wait_seconds",
    help: "Time calls with x-wait-for-instance spent in the waiting queue, by result (granted, timeout, deadline, cancelled, full, error).",
    labelNames: ["result"] as const,
    buckets: queueWaitBuckets,
    registers,
  });
  const queuePurged = new Counter({
    name: "mygateway_queue_purged_total",
    help: "Queue entries of gateways that stopped beating (or long past their deadline), removed by this gateway.",
    registers,
  });
  let lastQueueLength = 0;
  new Gauge({
    name: "mygateway_queue_length",
    help: "Sessions waiting for an instance, on every gateway sharing the lease store.",
    registers,
    async collect() {
      if (options.state.queueStats === undefined) return;
      try {
        lastQueueLength = (await options.state.queueStats()).length;
      } catch {
        // The store is down: the last length read.
      }
      this.set(lastQueueLength);
    },
  });
  const queueWaitChildren = new Map(queueWaitResults.map((r) => [r, queueWaitSeconds.labels(r)] as const));
  queuePurged.inc(0);

  // Label children created once and reused: the relay calls `proxiedCall` on every call.
  const allocationChildren = new Map(
    allocationResults.map(
      (r) =>
        [
          r,
          {
            count: allocations.labels(r),
            seconds: allocationSeconds.labels(r),
          },
        ] as const,
    ),
  );
  const loginChildren = new Map(loginResults.map((r) => [r, logins.labels(r)] as const));
  const callChildren = new Map<
    string,
    Array<
      | {
          count: Counter.Internal;
          seconds: Histogram.Internal<"method" | "code">;
        }
      | undefined
    >
  >();
  const recycleChildren = {
    ok: recycles.labels("ok"),
    failed: recycles.labels("failed"),
  };
  const healthChildren = {
    healthy: healthTransitions.labels("healthy"),
    unhealthy: healthTransitions.labels("unhealthy"),
  };
  // Series exist at 0 from the start, so `increase()` and rate queries see the first event.
  for (const r of ["acquired", "busy", "unavailable"] as const) allocationChildren.get(r)?.count.inc(0);
  for (const r of ["ok", "denied"] as const) loginChildren.get(r)?.inc(0);
  recycleChildren.ok.inc(0);

  const lastHealth = new Map<string, boolean>();
  const recentAllocations = new Map(allocationResults.map((r) => [r, new WindowCounter(now)] as const));
  const stats = {
    startedAt: now(),
    allocations: {
      acquired: 0,
      busy: 0,
      unavailable: 0,
      "user-limit": 0,
    } as Record<AllocationResult, number>,
    leaseExpiries: 0,
    recycles: 0,
    proxiedCalls: 0,
    logins: { ok: 0, invalid_argument: 0, denied: 0, throttled: 0 } as Record<LoginResult, number>,
  };

  return {
    registry,
    allocation(result, durationMs) {
      let child = allocationChildren.get(result);
      if (child === undefined) {
        child = {
          count: allocations.labels(result),
          seconds: allocationSeconds.labels(result),
        };
        allocationChildren.set(result, child);
      }
      child.count.inc();
      child.seconds.observe(durationMs / 1000);
      stats.allocations[result] = (stats.allocations[result] ?? 0) + 1;
      recentAllocations.get(result)?.add();
    },
    login(result) {
      let child = loginChildren.get(result);
      if (child === undefined) {
        child = logins.labels(result);
        loginChildren.set(result, child);
      }
      child.inc();
      stats.logins[result] = (stats.logins[result] ?? 0) + 1;
    },
    proxiedCall(method, code, durationMs) {
      let byCode = callChildren.get(method);
      if (byCode === undefined) {
        byCode = [];
        callChildren.set(method, byCode);
      }
      const index = code === -1 ? Code.Canceled : code;
      let child = byCode[index];
      if (child === undefined) {
        const name = grpcCodeName(code);
        child = {
          count: calls.labels(method, name),
          seconds: callSeconds.labels(method, name),
        };
        byCode[index] = child;
      }
      child.count.inc();
      child.seconds.observe(durationMs / 1000);
      stats.proxiedCalls++;
    },
    healthChange(address, healthy) {
      if (lastHealth.get(address) === healthy) return;
      lastHealth.set(address, healthy);
      (healthy ? healthChildren.healthy : healthChildren.unhealthy).inc();
    },
    leaseRevoked(reason) {
      revoked.labels(reason).inc();
    },
    leaseExpired() {
      expiries.inc();
      revoked.labels("expired").inc();
      stats.leaseExpiries++;
    },
    recycled(ok) {
      (ok ? recycleChildren.ok : recycleChildren.failed).inc();
      stats.recycles++;
    },
    queueWait(result, waitedMs) {
      (queueWaitChildren.get(result) ?? queueWaitSeconds.labels(result)).observe(waitedMs / 1000);
    },
    queuePurged(count) {
      queuePurged.inc(count);
    },
    stats() {
      return {
        ...stats,
        allocations: { ...stats.allocations },
        allocationsLastMinute: Object.fromEntries(allocationResults.map((r) => [r, recentAllocations.get(r)?.total() ?? 0])) as Record<
          AllocationResult,
          number
        >,
        logins: { ...stats.logins },
      };
    },
  };
}

/**
 * Observes MyService* calls served through connect-node (Connect and gRPC-Web protocols; the
 * native gRPC relay reports its calls itself), including server streams until they end.
 */
export function createCallMetricsInterceptor(
  serviceTypeName: string,
  observe: (method: string, code: number, durationMs: number) => void,
  exclude: ReadonlySet<string> = new Set(["Login"]),
): Interceptor {
  return (next) => async (request) => {
    if (request.service.typeName !== serviceTypeName || exclude.has(request.method.name)) return next(request);
    const method = request.method.name;
    const started = performance.now();
    let response: Awaited<ReturnType<typeof next>>;
    try {
      response = await next(request);
    } catch (error) {
      observe(method, ConnectError.from(error).code, performance.now() - started);
      throw error;
    }
    if (!response.stream) {
      observe(method, 0, performance.now() - started);
      return response;
    }
    const messages = response.message;
    async function* observed() {
      let code: number = 0;
      try {
        yield* messages;
      } catch (error) {
        code = ConnectError.from(error).code;
        throw error;
      } finally {
        if (code === 0 && request.signal.aborted) code = Code.Canceled;
        observe(method, code, performance.now() - started);
      }
    }
    return { ...response, message: observed() };
  };
}
