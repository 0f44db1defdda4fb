import type { AcquireRequest, AcquireResult, LeaseStore } from "./lease-store.js";

interface Pending {
  readonly request: AcquireRequest;
  readonly resolve: (result: AcquireResult) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Group commit for allocations: acquisitions requested during one turn of the event loop are
 * written in one store transaction on the next (`setImmediate`), so concurrent new sessions
 * share one durable commit (one fsync with SQLite's `synchronous=FULL`, one round trip and one
 * commit with PostgreSQL) instead of paying one each. Batches may overlap when the store is
 * slower than the event loop (PostgreSQL): each is its own transaction.
 */
export class AcquireQueue {
  private pending: Pending[] = [];

  constructor(private readonly store: Pick<LeaseStore, "acquireBatch">) {}

  acquire(request: AcquireRequest): Promise<AcquireResult> {
    return new Promise((resolve, reject) => {
      if (this.pending.length === 0) setImmediate(() => void this.flush());
      this.pending.push({ request, resolve, reject });
    });
  }

  private async flush(): Promise<void> {
    const batch = this.pending;
    this.pending = [];
    let results: AcquireResult[];
    try {
      results = await this.store.acquireBatch(batch.map((p) => p.request));
    } catch (error) {
      for (const p of batch) p.reject(error);
      return;
    }
    for (const [i, p] of batch.entries()) p.resolve(results[i] as AcquireResult);
  }
}
