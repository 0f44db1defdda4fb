import type { AcquireRequest, AcquireResult, LeaseStore } from "./lease-store.js";

interface Pending {
  readonly request: AcquireRequest;
  readonly resolve: (result: AcquireResult) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Group commit for allocations: acquisitions requested during one turn of the event loop are
 * written in one SQLite transaction on the next (`setImmediate`), so concurrent new sessions
 * share one durable commit (one fsync with `synchronous=FULL`) instead of paying one each.
 */
export class AcquireQueue {
  private pending: Pending[] = [];

  constructor(private readonly store: LeaseStore) {}

  acquire(request: AcquireRequest): Promise<AcquireResult> {
    return new Promise((resolve, reject) => {
      if (this.pending.length === 0) setImmediate(() => this.flush());
      this.pending.push({ request, resolve, reject });
    });
  }

  private flush(): void {
    const batch = this.pending;
    this.pending = [];
    let results: AcquireResult[];
    try {
      results = this.store.acquireBatch(batch.map((p) => p.request));
    } catch (error) {
      for (const p of batch) p.reject(error);
      return;
    }
    for (const [i, p] of batch.entries()) p.resolve(results[i] as AcquireResult);
  }
}
