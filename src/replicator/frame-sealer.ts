// Where compression and AES-256-GCM run: inline on the calling thread (tests, tools) or in a small
// pool of worker threads, so the process server's and master target's event loops keep serving
// gRPC, acks and fsyncs while frames are sealed and opened. Payloads move to and from the workers
// as transferred ArrayBuffers, not copies. Jobs may finish in any order; each caller awaits its
// own promises in stream order, so frame order and sequence numbers never change.
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { Codec, Frame } from "../gen/ksr/replication/v1/replication.js";
import { openFrame, sealFrame } from "./frame-codec.js";
import { takeMessageBuffer } from "./wire-reader.js";

export interface FrameRange {
  machineId: string;
  firstSeq: number;
  lastSeq: number;
}

/**
 * Seals encoded batches into frames and opens frames back into encoded batches. Both take
 * ownership of the bytes passed in: the pool transfers them to a worker, which leaves the
 * caller's Buffer empty.
 */
export interface FrameSealer {
  seal(codec: Codec, range: FrameRange, encodedBatch: Buffer): Promise<Frame>;
  open(frame: Frame): Promise<Buffer>;
  close(): Promise<void>;
}

/** Seals and opens on the calling thread. */
export class InlineFrameSealer implements FrameSealer {
  constructor(private readonly key: Buffer) {}

  seal(codec: Codec, range: FrameRange, encodedBatch: Buffer): Promise<Frame> {
    return new Promise((resolve) => {
      resolve(sealFrame(this.key, codec, range, encodedBatch));
    });
  }

  open(frame: Frame): Promise<Buffer> {
    return new Promise((resolve) => {
      resolve(openFrame(this.key, frame));
    });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Workers by default: one core stays with the event loop, which still parses and writes gRPC. */
export function defaultCodecWorkers(): number {
  return Math.max(1, availableParallelism() - 1);
}

/** A pool of `workers` threads, or the calling thread when 0. */
export function createFrameSealer(key: Buffer, workers = defaultCodecWorkers()): FrameSealer {
  if (!Number.isInteger(workers) || workers < 0 || workers > 64)
    throw new Error(`codec workers must be an integer from 0 to 64, not ${workers}`);
  return workers === 0 ? new InlineFrameSealer(key) : new WorkerFrameSealer(key, workers);
}

// ------------------------------------------------------------ messages between pool and workers

/** Bytes as they cross to a worker: an ArrayBuffer the receiver owns, and where in it the payload is. */
export interface Payload {
  buffer: ArrayBuffer;
  offset: number;
  length: number;
}

export type SealerJob =
  | { id: number; kind: "seal"; codec: Codec; range: FrameRange; batch: Payload }
  | { id: number; kind: "open"; frame: Omit<Frame, "sealed">; sealed: Payload };

export type SealerResult =
  | { id: number; kind: "sealed"; sealed: Payload }
  | { id: number; kind: "opened"; batch: Payload }
  | { id: number; kind: "failed"; message: string };

/**
 * Hands the bytes over without a copy when the Buffer is the whole of its ArrayBuffer (every
 * Buffer over 4 KiB that Buffer.concat or a codec made) or lies in the buffer of one received gRPC
 * message (a push's batch, a frame's sealed bytes: see takeMessageBuffer); a view into a shared
 * buffer (Node's 8 KiB pool for small Buffers) is copied, since transferring would empty its
 * neighbours. Transferred, the caller's views of that buffer are left empty.
 */
export function toPayload(bytes: Uint8Array, transfer: ArrayBuffer[]): Payload {
  const { buffer, byteOffset: offset, byteLength: length } = bytes;
  const whole = offset === 0 && length === buffer.byteLength;
  if (buffer instanceof ArrayBuffer && (takeMessageBuffer(bytes) || whole)) {
    transfer.push(buffer);
    return { buffer, offset, length };
  }
  const copy = Uint8Array.prototype.slice.call(bytes).buffer;
  transfer.push(copy);
  return { buffer: copy, offset: 0, length };
}

export function fromPayload(payload: Payload): Buffer {
  return Buffer.from(payload.buffer, payload.offset, payload.length);
}

// ------------------------------------------------------------ the pool

interface Pending {
  job: SealerJob;
  transfer: ArrayBuffer[];
  resolve: (result: SealerResult) => void;
  reject: (error: Error) => void;
}

interface PoolWorker {
  thread: Worker;
  running: Map<number, Pending>;
}

/** Jobs a worker holds at once: one running, one waiting, so no worker idles between messages. */
const jobsPerWorker = 2;

export class SealerClosed extends Error {
  constructor() {
    super("the frame sealer was closed");
    this.name = "SealerClosed";
  }
}

export class WorkerFrameSealer implements FrameSealer {
  private readonly workers: PoolWorker[] = [];
  private readonly queue: Pending[] = [];
  private readonly roomWaiters: (() => void)[] = [];
  private nextId = 1;
  private closed = false;
  /** Jobs waiting for a worker; further submissions wait for room (memory stays bounded). */
  readonly maxQueued: number;

  constructor(
    private readonly key: Buffer,
    readonly size: number,
  ) {
    this.maxQueued = size * jobsPerWorker * 4;
    for (let index = 0; index < size; index++) this.workers.push(this.spawn());
  }

  async seal(codec: Codec, range: FrameRange, encodedBatch: Buffer): Promise<Frame> {
    const { machineId, firstSeq, lastSeq } = range;
    const uncompressedSize = encodedBatch.length; // read before the transfer empties the Buffer
    const transfer: ArrayBuffer[] = [];
    const batch = toPayload(encodedBatch, transfer);
    const result = await this.run(
      { id: 0, kind: "seal", codec, range: { machineId, firstSeq, lastSeq }, batch },
      transfer,
    );
    if (result.kind !== "sealed") throw new Error(`frame sealer answered ${result.kind} to a seal`);
    return {
      machineId,
      firstSeq,
      lastSeq,
      codec,
      uncompressedSize,
      afterGap: false,
      sealed: fromPayload(result.sealed),
    };
  }

  async open(frame: Frame): Promise<Buffer> {
    const transfer: ArrayBuffer[] = [];
    const { sealed, ...header } = frame;
    const result = await this.run(
      { id: 0, kind: "open", frame: header, sealed: toPayload(sealed, transfer) },
      transfer,
    );
    if (result.kind !== "opened") throw new Error(`frame sealer answered ${result.kind} to an open`);
    return fromPayload(result.batch);
  }

  /** Jobs waiting for a worker right now (never more than maxQueued). */
  get queued(): number {
    return this.queue.length;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const pending of this.queue.splice(0)) pending.reject(new SealerClosed());
    for (const waiter of this.roomWaiters.splice(0)) waiter();
    const workers = this.workers.splice(0);
    for (const worker of workers) for (const pending of worker.running.values()) pending.reject(new SealerClosed());
    await Promise.all(workers.map((worker) => worker.thread.terminate()));
  }

  private async run(job: SealerJob, transfer: ArrayBuffer[]): Promise<SealerResult> {
    while (!this.closed && this.queue.length >= this.maxQueued)
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
    if (this.closed) throw new SealerClosed();
    job.id = this.nextId++;
    const result = await new Promise<SealerResult>((resolve, reject) => {
      this.queue.push({ job, transfer, resolve, reject });
      this.dispatch();
    });
    if (result.kind === "failed") throw new Error(result.message);
    return result;
  }

  private dispatch(): void {
    for (const worker of this.workers) {
      while (worker.running.size < jobsPerWorker) {
        const pending = this.queue.shift();
        if (pending === undefined) return;
        worker.running.set(pending.job.id, pending);
        worker.thread.postMessage(pending.job, pending.transfer);
        this.roomWaiters.shift()?.();
      }
    }
  }

  private spawn(): PoolWorker {
    const thread = new Worker(new URL("./frame-sealer-worker.js", import.meta.url), {
      workerData: { key: this.key },
    });
    thread.unref();
    const worker: PoolWorker = { thread, running: new Map() };
    thread.on("message", (result: SealerResult) => {
      const pending = worker.running.get(result.id);
      worker.running.delete(result.id);
      pending?.resolve(result);
      this.dispatch();
    });
    const replace = (error: Error) => {
      const index = this.workers.indexOf(worker);
      if (index < 0) return; // closed, or already replaced
      for (const pending of worker.running.values()) pending.reject(error);
      worker.running.clear();
      if (this.closed) return;
      this.workers[index] = this.spawn();
      this.dispatch();
    };
    thread.on("error", (error) => {
      replace(new Error(`a frame sealer worker failed: ${error.message}`));
    });
    thread.on("exit", (code) => {
      replace(new Error(`a frame sealer worker exited with code ${code}`));
    });
    return worker;
  }
}
