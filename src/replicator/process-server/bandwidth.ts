// A token bucket: callers wait until the bytes they want to send fit the configured rate.
export class BandwidthLimit {
  private available: number;
  private updated = Date.now();

  /** bytesPerSecond 0 means unlimited. A burst of one second is allowed. */
  constructor(private readonly bytesPerSecond: number) {
    this.available = bytesPerSecond;
  }

  async take(bytes: number): Promise<void> {
    if (this.bytesPerSecond === 0) return;
    this.refill();
    this.available -= bytes;
    if (this.available >= 0) return;
    const waitMs = Math.ceil((-this.available / this.bytesPerSecond) * 1000);
    await new Promise((resolve) => setTimeout(resolve, waitMs));
  }

  private refill(): void {
    const now = Date.now();
    this.available = Math.min(
      this.bytesPerSecond,
      this.available + ((now - this.updated) / 1000) * this.bytesPerSecond,
    );
    this.updated = now;
  }
}

const units: Record<string, number> = { "": 1, k: 1e3, m: 1e6, g: 1e9, ki: 1024, mi: 1024 ** 2, gi: 1024 ** 3 };

/** Parses sizes like "20M", "512Ki", "1G" or plain bytes. */
export function parseByteSize(value: string, flag: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(k|m|g|ki|mi|gi)?b?$/i.exec(value.trim());
  const unit = units[(match?.[2] ?? "").toLowerCase()];
  if (match === null || unit === undefined)
    throw new Error(`${flag}: "${value}" is not a size (examples: 1048576, 512Ki, 20M, 1Gi)`);
  return Math.floor(Number(match[1]) * unit);
}
