import type { InstanceRecord, Lease } from "./lease-store.js";

/** A `leases` row as either engine returns it (PostgreSQL's bigint arrives as a string). */
export interface LeaseColumns {
  readonly session_id: string;
  readonly instance_address: string;
  readonly pod_name: string;
  readonly owner: string;
  readonly instance_boot_id: string;
  readonly created_at: number | string;
  readonly last_activity: number | string;
  readonly expires_at: number | string;
}

/** An `instances` row as either engine returns it (SQLite's booleans are 0/1). */
export interface InstanceColumns {
  readonly address: string;
  readonly pod_name: string;
  readonly boot_id: string;
  readonly healthy: number | boolean;
  readonly draining: number | boolean;
  readonly clean: number | boolean;
  readonly session_id: string | null;
  readonly free_since: number | string;
  readonly updated_at: number | string;
}

const flag = (value: number | boolean) => value === true || value === 1;

/** The port's `Lease` from a row of either engine. */
export function leaseFromRow(row: LeaseColumns): Lease {
  return {
    sessionId: row.session_id,
    instanceAddress: row.instance_address,
    podName: row.pod_name,
    owner: row.owner,
    instanceBootId: row.instance_boot_id,
    createdAt: Number(row.created_at),
    lastActivity: Number(row.last_activity),
    expiresAt: Number(row.expires_at),
  };
}

/** The port's `InstanceRecord` from a row of either engine. */
export function instanceFromRow(row: InstanceColumns): InstanceRecord {
  return {
    address: row.address,
    podName: row.pod_name,
    bootId: row.boot_id,
    healthy: flag(row.healthy),
    draining: flag(row.draining),
    clean: flag(row.clean),
    sessionId: row.session_id,
    freeSince: Number(row.free_since),
    updatedAt: Number(row.updated_at),
  };
}
