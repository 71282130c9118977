// Large buffers of one size, kept for reuse instead of being left to the garbage collector: at
// hundreds of MB/s, megabyte buffers allocated per batch or per file made GC the agent's largest
// cost. Whoever gives a buffer back must be sure nothing still reads or writes it.
export class BufferPool {
  private readonly free: Buffer[] = [];

  constructor(
    readonly bytes: number,
    private readonly keep: number,
  ) {}

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.bytes);
  }

  /** Keeps the buffer for the next take() (buffers of another size, or beyond `keep`, are dropped). */
  give(buffer: Buffer): void {
    if (buffer.length === this.bytes && this.free.length < this.keep) this.free.push(buffer);
  }
}
