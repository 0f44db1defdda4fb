import type { Logger } from "../../common/logger.js";
import type { GatewayMember, LeaseStore } from "../leases/lease-store.js";

/** Options of `Membership`. */
export interface MembershipOptions {
  readonly store: Pick<LeaseStore, "heartbeat" | "members" | "leave">;
  /** `GATEWAY_ID` of this process. */
  readonly id: string;
  /** Where this gateway serves, for operators (`host:port`). */
  readonly address: string;
  /** Period of the heartbeat, milliseconds (half the probe interval by default). */
  readonly heartbeatIntervalMs: number;
  /** A gateway whose last heartbeat is older than this is dead, milliseconds (two probe intervals by default). */
  readonly liveWithinMs: number;
  readonly logger: Logger;
  /** Called when the list of live gateways changed (ids, sorted). */
  readonly onChange?: (ids: readonly string[]) => void;
}

/**
 * This gateway's place among the gateways sharing the lease store (SPEC 10): it writes a
 * heartbeat every period and reads back the live members, so a gateway that died (no heartbeat
 * within `liveWithinMs`) drops out of the list within about two probe intervals. While the
 * store cannot be reached the last list is kept, with this gateway in it.
 */
export class Membership {
  private timer: NodeJS.Timeout | undefined;
  private ids: readonly string[];
  private members: readonly GatewayMember[] = [];
  private beating: Promise<void> | undefined;

  constructor(private readonly options: MembershipOptions) {
    this.ids = [options.id];
  }

  /** This gateway's id. */
  get id(): string {
    return this.options.id;
  }

  /** Ids of the live gateways, sorted; always includes this one. */
  liveIds(): readonly string[] {
    return this.ids;
  }

  /** The live gateways as last read (empty until the first heartbeat reached the store). */
  liveMembers(): readonly GatewayMember[] {
    return this.members;
  }

  /** Registers now (a failure is logged; the timer retries) and keeps beating. */
  async start(): Promise<void> {
    await this.beat();
    this.timer ??= setInterval(() => void this.beat(), this.options.heartbeatIntervalMs).unref();
  }

  /** Stops beating and leaves the membership, so the others take over at once. */
  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    await this.beating;
    try {
      await this.options.store.leave(this.options.id);
    } catch (error) {
      this.options.logger.warn({ err: error }, "could not leave the gateway membership; it expires by itself");
    }
  }

  /** One heartbeat and one read of the live members (one at a time). */
  beat(): Promise<void> {
    this.beating ??= this.beatOnce().finally(() => {
      this.beating = undefined;
    });
    return this.beating;
  }

  private async beatOnce(): Promise<void> {
    const { store, id, address, liveWithinMs } = this.options;
    try {
      await store.heartbeat({ id, address });
      this.members = await store.members(liveWithinMs);
    } catch (error) {
      this.options.logger.warn({ err: error }, "gateway heartbeat failed; keeping the last membership");
      return;
    }
    const ids = [...new Set([id, ...this.members.map((m) => m.id)])].sort();
    if (ids.length !== this.ids.length || ids.some((x, i) => x !== this.ids[i])) {
      const before = this.ids;
      this.ids = ids;
      this.options.logger.info({ gateways: ids, before }, "live gateways changed");
      this.options.onChange?.(ids);
    }
  }
}
