// Numbers changes, packs them into batches and pushes them to the process server with a window
// of unacknowledged bytes (backpressure). Unacknowledged batches are kept so a reconnect can
// resend them; when the process server cannot continue the sequence, a resync is needed.
import type { ClientDuplexStream } from "@grpc/grpc-js";
import {
  type CaptureInfo,
  type Change,
  type IngestClient,
  type OpenReply,
  type PushAck,
  type PushRequest,
} from "../../gen/ksr/replication/v1/replication.js";
import { callWithin } from "../grpc-util.js";
import { BufferPool } from "../buffer-pool.js";
import { PushBuilder, pushSerialized, queuePush } from "./batch-encoder.js";
import { batchFormatVersion } from "../master-target/machine-applier.js";
import { Signal } from "../signal.js";

const batchBytesTarget = 4 * 1024 * 1024;
const batchChangesLimit = 8192;
const windowBytes = 64 * 1024 * 1024;
/** A batch's buffer: the target plus the largest write a capture emits (1 MiB) and its change's framing. */
const pushBufferBytes = batchBytesTarget + 1024 * 1024 + 64 * 1024;
/** Buffers kept for reuse: a full window of batches and a few more. */
const pushBuffersKept = windowBytes / batchBytesTarget + 4;

export class ResyncNeeded extends Error {
  constructor(reason: string) {
    super(`resync needed: ${reason}`);
    this.name = "ResyncNeeded";
  }
}

type Operation = NonNullable<Change["op"]>;

interface Unacked {
  request: PushRequest;
  /** Its pooled buffer, reused once the push is acknowledged. */
  buffer?: Buffer;
}

export class ChangeSender {
  private readonly buffers = new BufferPool(pushBufferBytes, pushBuffersKept);
  private readonly pending: PushBuilder;
  private unacked: Unacked[] = [];
  private stream: ClientDuplexStream<PushRequest, PushAck> | undefined;
  private streamError: Error | undefined;
  private resyncOrdered = false;
  private markNextAsResync = false;
  private readonly acked = new Signal();
  /** Bytes of change payloads pushed, for progress and the benchmark. */
  bytesPushed = 0;
  ackedSeq: number;
  /** Told to the process server with every Open (it shows it in Control.Status). */
  capture: CaptureInfo | undefined;
  /** The newest change numbered (not a marker), for the agent's reports. */
  lastChange = { lastChangeSeq: 0, lastChangeUnixMs: 0 };

  constructor(
    private readonly client: IngestClient,
    readonly machineId: string,
    private nextSeq: number,
  ) {
    this.ackedSeq = nextSeq - 1;
    this.pending = new PushBuilder(machineId, batchFormatVersion, this.buffers);
  }

  get lastSeq(): number {
    return this.nextSeq - 1;
  }

  open(): Promise<OpenReply> {
    return callWithin(this.client.open.bind(this.client), { machineId: this.machineId, capture: this.capture }, 10_000);
  }

  /** Starts a resync: numbering continues at `nextSeq` and the first batch says it may follow a gap. */
  beginResync(nextSeq: number): void {
    this.pending.reset();
    this.unacked = [];
    this.nextSeq = nextSeq;
    this.ackedSeq = nextSeq - 1;
    this.resyncOrdered = false;
    this.markNextAsResync = true;
  }

  /** Numbers and encodes a change; its bytes are copied before emit returns, so the caller may reuse them. */
  async emit(op: Operation): Promise<void> {
    if (this.resyncOrdered) throw new ResyncNeeded("the process server dropped changes");
    // A point's marker is no change of the data: the data-loss window counts from the last real one.
    if (op.$case !== "marker") this.lastChange = { lastChangeSeq: this.nextSeq, lastChangeUnixMs: Date.now() };
    this.pending.add({ seq: this.nextSeq++, op });
    if (this.pending.batchBytes >= batchBytesTarget || this.pending.count >= batchChangesLimit) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.pending.count === 0) return;
    const built = this.pending.finish(this.markNextAsResync);
    this.markNextAsResync = false;
    this.unacked.push(built);
    this.bytesPushed += built.request.batch.length;
    if (!(await this.connected())) this.write(built.request);
    while (this.unackedBytes() > windowBytes) await this.waitForAcks();
  }

  /** Resolves once every change emitted so far is durable at the process server. */
  async drain(): Promise<void> {
    await this.flush();
    while (this.unacked.length > 0) await this.waitForAcks();
  }

  close(): void {
    this.stream?.end();
    this.stream = undefined;
  }

  private unackedBytes(): number {
    return this.unacked.reduce((sum, item) => sum + item.request.batch.length, 0);
  }

  private async waitForAcks(): Promise<void> {
    if (this.resyncOrdered) throw new ResyncNeeded("the process server dropped changes");
    if (this.streamError !== undefined) {
      await this.connected();
      return;
    }
    await this.acked.wait(1000);
  }

  /**
   * Ensures a push stream. After a broken one (or none yet), opens a new one and resends every
   * unacknowledged batch the process server does not have; returns true when it did so.
   */
  private async connected(): Promise<boolean> {
    if (this.stream !== undefined && this.streamError === undefined) return false;
    this.stream = undefined;
    const reply = await this.open();
    this.unacked = this.unacked.filter((item) => item.request.lastSeq > reply.durableSeq);
    const first = this.unacked[0]?.request;
    // A process server that requires a resync waits for exactly the batch that starts one.
    if (reply.resyncRequired && first?.resync !== true) throw new ResyncNeeded("the process server requires it");
    const continues =
      first === undefined
        ? reply.durableSeq === this.lastSeqPushed()
        : first.firstSeq === reply.durableSeq + 1 || first.resync;
    if (!continues)
      throw new ResyncNeeded(
        `the process server has seq ${reply.durableSeq}, this agent sent up to ${this.lastSeqPushed()}`,
      );
    this.ackedSeq = Math.max(this.ackedSeq, reply.durableSeq);
    this.streamError = undefined;
    const stream = this.client.push();
    stream.on("data", (ack: PushAck) => {
      if (ack.resyncRequired) this.resyncOrdered = true;
      else {
        this.ackedSeq = Math.max(this.ackedSeq, ack.durableSeq);
        // Durable at the process server and not queued for a resend: gRPC has copied them, their buffers are free.
        for (const item of this.unacked)
          if (item.request.lastSeq <= ack.durableSeq && item.buffer !== undefined && pushSerialized(item.request))
            this.buffers.give(item.buffer);
        this.unacked = this.unacked.filter((item) => item.request.lastSeq > ack.durableSeq);
      }
      this.acked.notify();
    });
    stream.on("error", (error: Error) => {
      this.streamError = error;
      this.acked.notify();
    });
    stream.on("end", () => {
      this.streamError ??= new Error("the process server closed the push stream");
      this.acked.notify();
    });
    this.stream = stream;
    for (const item of this.unacked) this.write(item.request);
    return true;
  }

  private write(request: PushRequest): void {
    if (this.stream === undefined) return;
    queuePush(request);
    this.stream.write(request);
  }

  private lastSeqPushed(): number {
    return this.unacked.at(-1)?.request.lastSeq ?? this.ackedSeq;
  }
}
