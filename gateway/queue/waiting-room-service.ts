import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import { GetPositionResponseSchema, WaitingRoom } from "../../gen/mygateway/queue/v1/waiting_room_pb.js";
import { GatewayError, toConnectError, unavailableError } from "../errors.js";
import type { Lease, LeaseStore, QueueEntry, QueueStats } from "../leases/lease-store.js";
import { estimateWaitMs } from "./waiting-room.js";

/** Options of `registerWaitingRoomService`. */
export interface WaitingRoomServiceOptions {
  readonly store: Pick<LeaseStore, "queueEntry" | "queueStats" | "get">;
  /**
   * Authenticates the call exactly as a MyService call (SPEC 4.2: `session-id`, then the
   * token); throws the gateway's UNAUTHENTICATED errors.
   */
  readonly authenticate: (
    sessionId: string | undefined,
    authorization: string | undefined,
  ) => {
    readonly sessionId: string;
    readonly claims: { readonly sub: string };
  };
  /** Clock of the store, Unix milliseconds. */
  readonly now?: () => number;
}

/**
 * `mygateway.queue.v1.WaitingRoom` (SPEC 11): a session asks for its position in the queue,
 * the queue's length and its estimated wait, with its own `authorization` and `session-id`.
 */
export function registerWaitingRoomService(router: ConnectRouter, options: WaitingRoomServiceOptions): void {
  const now = options.now ?? Date.now;
  router.service(WaitingRoom, {
    async getPosition(_request, context) {
      try {
        const caller = options.authenticate(
          context.requestHeader.get("session-id") ?? undefined,
          context.requestHeader.get("authorization") ?? undefined,
        );
        let entry: QueueEntry | undefined;
        let stats: QueueStats;
        let lease: Lease | undefined;
        try {
          [entry, stats, lease] = await Promise.all([
            options.store.queueEntry(caller.sessionId),
            options.store.queueStats(),
            options.store.get(caller.sessionId),
          ]);
        } catch (error) {
          throw unavailableError(error);
        }
        const owner = entry?.owner ?? lease?.owner;
        if (owner !== undefined && owner !== caller.claims.sub) {
          throw new GatewayError(Code.PermissionDenied, `session ${caller.sessionId} belongs to another user`);
        }
        const waiting = entry !== undefined && entry.grantedAddress === null ? entry : undefined;
        const estimate = estimateWaitMs(waiting?.position ?? stats.length + 1, stats);
        return create(GetPositionResponseSchema, {
          waiting: waiting !== undefined,
          position: waiting?.position ?? 0,
          queueLength: stats.length,
          entryPosition: waiting?.entryPosition ?? 0,
          hasInstance: lease !== undefined || (entry !== undefined && entry.grantedAddress !== null),
          ...(estimate !== undefined ? { estimatedWait: durationFromMs(estimate) } : {}),
          ...(waiting !== undefined ? { waited: durationFromMs(Math.max(0, now() - waiting.enqueuedAt)) } : {}),
        });
      } catch (error) {
        throw toConnectError(error);
      }
    },
  });
}
