/**
 * Counts events of the last `windowMs` in `slots` slices (default 60 × 1 s): constant time per
 * event, `slots` additions per read, no timer. The window moves one slice at a time, so a read
 * covers between `windowMs - windowMs/slots` and `windowMs` of the past.
 */
export class WindowCounter {
  private readonly slotMs: number;
  private readonly counts: number[];
  /** Which slice (time / slotMs) each slot currently holds. */
  private readonly slices: number[];

  constructor(
    private readonly now: () => number = Date.now,
    windowMs = 60_000,
    private readonly slots = 60,
  ) {
    this.slotMs = windowMs / slots;
    this.counts = new Array<number>(slots).fill(0);
    this.slices = new Array<number>(slots).fill(-1);
  }

  /** Records `n` events now. */
  add(n = 1): void {
    const slice = Math.floor(this.now() / this.slotMs);
    const i = slice % this.slots;
    if (this.slices[i] !== slice) {
      this.slices[i] = slice;
      this.counts[i] = 0;
    }
    this.counts[i] = (this.counts[i] ?? 0) + n;
  }

  /** Events within the window. */
  total(): number {
    const oldest = Math.floor(this.now() / this.slotMs) - this.slots;
    let sum = 0;
    for (let i = 0; i < this.slots; i++) if ((this.slices[i] ?? -1) > oldest) sum += this.counts[i] ?? 0;
    return sum;
  }
}
