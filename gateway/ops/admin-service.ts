import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import type { Logger } from "../../common/logger.js";
import { type TokenClaims, type TokenVerifier, tokenFromAuthorization } from "../../common/tokens.js";
import {
  AdminService,
  type Instance,
  InstanceSchema,
  InstanceState,
  QueueEntrySchema,
  type Session,
  SessionSchema,
} from "../../gen/mygateway/admin/v1/admin_pb.js";
import { messages } from "../errors.js";
import type { InstanceRecord, Lease, LeaseStore } from "../leases/lease-store.js";
import type { InstancePool } from "../pool/instance-pool.js";
import { estimateWaitMs } from "../queue/waiting-room.js";
import type { SessionRouter } from "../routing/session-router.js";
import { instanceCondition, type PoolStats } from "./metrics.js";
import { requestIdOf } from "./request-id.js";

/** Role a token must carry to use the admin API. */
export const adminRole = "admin";

/** Options of `registerAdminService`. */
export interface AdminServiceOptions {
  readonly store: LeaseStore;
  readonly pool: InstancePool;
  readonly router: SessionRouter;
  /** The gateway's token verifier (same secret as Login). */
  readonly verifyToken: TokenVerifier;
  readonly logger: Logger;
  /** Counters since start, for `GetPoolStats`. */
  readonly stats: () => PoolStats;
  /** Called after a session was force-released (metrics). */
  readonly onReleased?: (lease: Lease) => void;
}

const conditionStates = {
  free: InstanceState.FREE,
  leased: InstanceState.LEASED,
  recycling: InstanceState.RECYCLING,
  unhealthy: InstanceState.UNHEALTHY,
} as const;

/** The admin principal of a call: a valid Login token whose role is `admin`, else UNAUTHENTICATED / PERMISSION_DENIED. */
export async function requireAdmin(verifyToken: TokenVerifier, context: HandlerContext): Promise<TokenClaims> {
  const token = tokenFromAuthorization(context.requestHeader.get("authorization") ?? undefined);
  const claims = token === undefined ? undefined : verifyToken(token);
  if (claims === undefined) throw new ConnectError(messages.invalidToken, Code.Unauthenticated);
  if (claims.role !== adminRole) {
    throw new ConnectError(`role ${adminRole} required (token role: ${claims.role})`, Code.PermissionDenied);
  }
  return claims;
}

/**
 * `mygateway.admin.v1.AdminService` (SPEC 9): lets an operator see the pool (instances,
 * sessions, counters) and steer it (force-release a session, drain an instance). Role `admin`
 * only; every change is logged with the operator and the request id.
 */
export function registerAdminService(router: ConnectRouter, options: AdminServiceOptions): void {
  const { store, pool, verifyToken } = options;

  const toSession = (lease: Lease): Session =>
    create(SessionSchema, {
      sessionId: lease.sessionId,
      owner: lease.owner,
      instanceAddress: lease.instanceAddress,
      podName: lease.podName,
      createTime: timestampFromMs(lease.createdAt),
      lastActivityTime: timestampFromMs(lease.lastActivity),
      expireTime: timestampFromMs(lease.expiresAt),
    });

  const toInstance = (record: InstanceRecord, leases: ReadonlyMap<string, Lease>): Instance => {
    const lease = leases.get(record.address);
    const probe = pool.probeState(record.address);
    const since = lease?.createdAt ?? (record.freeSince > 0 ? record.freeSince : record.updatedAt);
    return create(InstanceSchema, {
      address: record.address,
      podName: record.podName,
      state: conditionStates[instanceCondition(record)],
      healthy: record.healthy,
      draining: record.draining,
      sessionId: record.sessionId ?? "",
      since: timestampFromMs(since),
      consecutiveFailures: probe?.consecutiveFailures ?? 0,
      lastError: probe?.lastError ?? "",
    });
  };

  const leasesByAddress = async () => new Map((await store.leases()).map((l) => [l.instanceAddress, l] as const));

  /** An instance by address (`host:port`) or pod name. */
  const findInstance = async (name: string): Promise<InstanceRecord> => {
    const all = await store.instances();
    const found = all.find((i) => i.address === name) ?? all.find((i) => i.podName !== "" && i.podName === name);
    if (found === undefined) throw new ConnectError(`instance ${name} not found`, Code.NotFound);
    return found;
  };

  const setDraining = async (instance: string, draining: boolean, context: HandlerContext) => {
    const admin = await requireAdmin(verifyToken, context);
    const record = await findInstance(instance);
    await store.setDraining(record.address, draining);
    options.logger.info(
      {
        requestId: requestIdOf(context.requestHeader),
        admin: admin.sub,
        address: record.address,
        pod: record.podName,
      },
      draining ? "admin: instance drained" : "admin: instance undrained",
    );
    return {
      instance: toInstance((await store.instance(record.address)) ?? record, await leasesByAddress()),
    };
  };

  router.service(AdminService, {
    async listInstances(_request, context) {
      await requireAdmin(verifyToken, context);
      const leases = await leasesByAddress();
      return { instances: (await store.instances()).map((i) => toInstance(i, leases)) };
    },
    async listSessions(_request, context) {
      await requireAdmin(verifyToken, context);
      return { sessions: (await store.leases()).map(toSession) };
    },
    async releaseSession(request, context) {
      const admin = await requireAdmin(verifyToken, context);
      const log = options.logger.child({
        requestId: requestIdOf(context.requestHeader),
        sessionId: request.sessionId,
      });
      const lease = await store.get(request.sessionId);
      const released = lease === undefined ? undefined : await store.release(lease.sessionId, lease.instanceAddress);
      if (released === undefined) throw new ConnectError(`session ${request.sessionId} holds no lease`, Code.NotFound);
      // The session's next call is told it moved (transfer metadata, reason `admin`).
      options.router.noteLostLease(released, "admin");
      options.onReleased?.(released);
      log.info(
        {
          admin: admin.sub,
          pod: released.podName,
          address: released.instanceAddress,
        },
        "admin: session released; recycling its instance",
      );
      const recycled = await pool.recycle(released.instanceAddress, released.sessionId);
      return { session: toSession(released), recycled };
    },
    drainInstance: (request, context) => setDraining(request.instance, true, context),
    undrainInstance: (request, context) => setDraining(request.instance, false, context),
    async getPoolStats(_request, context) {
      await requireAdmin(verifyToken, context);
      const s = options.stats();
      return {
        startTime: timestampFromMs(s.startedAt),
        allocationsAcquired: BigInt(s.allocations.acquired),
        allocationsBusy: BigInt(s.allocations.busy),
        allocationsUnavailable: BigInt(s.allocations.unavailable),
        leaseExpiries: BigInt(s.leaseExpiries),
        recycles: BigInt(s.recycles),
        proxiedCalls: BigInt(s.proxiedCalls),
        loginsOk: BigInt(s.logins.ok),
        loginsDenied: BigInt(s.logins.denied),
        allocationsAcquiredLastMinute: BigInt(s.allocationsLastMinute.acquired),
        allocationsBusyLastMinute: BigInt(s.allocationsLastMinute.busy),
        allocationsUnavailableLastMinute: BigInt(s.allocationsLastMinute.unavailable),
      };
    },
    async listQueue(_request, context) {
      await requireAdmin(verifyToken, context);
      const [entries, stats] = await Promise.all([store.queue(), store.queueStats()]);
      const estimate = estimateWaitMs(stats.length + 1, stats);
      return {
        entries: entries.map((e) =>
          create(QueueEntrySchema, {
            sessionId: e.sessionId,
            owner: e.owner,
            gatewayId: e.gatewayId,
            seq: BigInt(e.seq),
            position: e.position,
            entryPosition: e.entryPosition,
            enqueueTime: timestampFromMs(e.enqueuedAt),
            deadlineTime: timestampFromMs(e.deadlineAt),
            grantedInstance: e.grantedAddress ?? "",
          }),
        ),
        length: stats.length,
        ...(stats.meanGrantIntervalMs !== undefined ? { meanGrantInterval: durationFromMs(Math.round(stats.meanGrantIntervalMs)) } : {}),
        ...(estimate !== undefined ? { estimatedWait: durationFromMs(estimate) } : {}),
      };
    },
  });
}
