// Encodes the agent's pushes straight into reused buffers: each change as it is emitted, the push's
// own fields in room left before the batch. The generated encoder copies every data block once
// per nesting level and again when finishing, and a fresh buffer per batch and per push made
// megabytes of garbage per batch; at hundreds of MB/s those copies and their GC were the agent's
// largest cost. The output is byte-identical to the generated encoder's (a property test holds it
// to that).
import { Change, type PushRequest } from "../../gen/ksr/replication/v1/replication.js";
import type { BufferPool } from "../buffer-pool.js";
import { bytesBytes, fieldBytes, uintBytes, WireWriter as Writer } from "../wire-writer.js";

interface PlannedChange {
  size: number;
  write(writer: Writer): void;
}

/** Writes are laid out by hand; every other (small) operation goes through the generated encoder. */
function planChange(change: Change): PlannedChange {
  const { op } = change;
  if (op?.$case !== "write") {
    const encoded = Change.encode(change).finish();
    return {
      size: encoded.length,
      write(writer) {
        writer.buffer.set(encoded, writer.position);
        writer.position += encoded.length;
      },
    };
  }
  const path = Buffer.from(op.value.path);
  const blockSize = bytesBytes(path.length) + uintBytes(op.value.offset) + bytesBytes(op.value.data.length);
  return {
    size: uintBytes(change.seq) + fieldBytes(blockSize),
    write(writer) {
      writer.uint(1, change.seq);
      writer.header(2, blockSize);
      writer.bytes(1, path);
      writer.uint(2, op.value.offset);
      writer.bytes(3, op.value.data);
    },
  };
}

/**
 * Pushes whose encoding PushBuilder laid out already: the gRPC serializer sends those bytes as
 * they are. `queued` counts writes of the push that gRPC has not serialized yet (it copies the
 * bytes when it does): until it is 0 again the buffer must not be reused.
 */
const builtPushes = new WeakMap<PushRequest, { bytes: Buffer; queued: number }>();

/** Says a built push is about to be written to a stream (call before each write). */
export function queuePush(request: PushRequest): void {
  const built = builtPushes.get(request);
  if (built !== undefined) built.queued++;
}

/** Whether no write of a built push awaits its serialization, so its buffer may be reused. */
export function pushSerialized(request: PushRequest): boolean {
  return (builtPushes.get(request)?.queued ?? 0) === 0;
}

/** The Push request as the gRPC client sends it: one allocation, one copy of the batch (none if built). */
export function encodePushRequest(request: PushRequest): Buffer {
  const built = builtPushes.get(request);
  if (built !== undefined) {
    built.queued = Math.max(0, built.queued - 1);
    return built.bytes;
  }
  const machineId = Buffer.from(request.machineId);
  const writer = new Writer(Buffer.allocUnsafe(pushHeaderBytes(machineId.length, request, request.batch.length)));
  writePushHeader(writer, machineId, request, request.batch.length);
  writer.buffer.set(request.batch, writer.position);
  writer.position += request.batch.length;
  if (request.resync) writer.uint(5, 1);
  return writer.buffer;
}

type PushHeader = Pick<PushRequest, "firstSeq" | "lastSeq" | "resync">;

/** Bytes of a push's encoding before its batch: fields 1-3 and field 4's tag and length. */
function pushPrefixBytes(machineIdBytes: number, header: PushHeader, batchBytes: number): number {
  return (
    bytesBytes(machineIdBytes) +
    uintBytes(header.firstSeq) +
    uintBytes(header.lastSeq) +
    bytesBytes(batchBytes) -
    batchBytes
  );
}

function pushHeaderBytes(machineIdBytes: number, header: PushHeader, batchBytes: number): number {
  return pushPrefixBytes(machineIdBytes, header, batchBytes) + batchBytes + (header.resync ? resyncBytes : 0);
}

/** Fields 1-3 and the batch's tag and length (field 4), as the generated encoder orders them. */
function writePushHeader(writer: Writer, machineId: Buffer, header: PushHeader, batchBytes: number): void {
  writer.bytes(1, machineId);
  writer.uint(2, header.firstSeq);
  writer.uint(3, header.lastSeq);
  if (batchBytes > 0) writer.header(4, batchBytes);
}

/** Field 5 (resync = true), which follows the batch. */
const resyncBytes = 2;

export interface BuiltPush {
  request: PushRequest;
  /**
   * The pooled buffer the push lives in, to give back once it is acknowledged and serialized
   * (pushSerialized); none when it was copied out.
   */
  buffer?: Buffer;
}

/**
 * Encodes a push change by change into one buffer, leaving room before the batch for the push's
 * own fields, so the finished push (and its batch) are views of that buffer: each write's data is
 * copied once, when it is added, and the caller may reuse its buffer right after add() returns.
 * Byte for byte what PushRequest.encode makes of the same push (a property test holds it to that).
 */
export class PushBuilder {
  private readonly machineIdBytes: Buffer;
  /** Room before the batch for fields 1-3 and field 4's tag and length, whatever the seqs. */
  private readonly room: number;
  private writer: Writer;
  firstSeq = 0;
  lastSeq = 0;
  count = 0;

  constructor(
    private readonly machineId: string,
    private readonly formatVersion: number,
    private readonly buffers: BufferPool,
  ) {
    this.machineIdBytes = Buffer.from(machineId);
    const widest = { firstSeq: Number.MAX_SAFE_INTEGER, lastSeq: Number.MAX_SAFE_INTEGER, resync: false };
    this.room = pushPrefixBytes(this.machineIdBytes.length, widest, 2 ** 32);
    this.writer = new Writer(this.buffers.take());
    this.reset();
  }

  /** Bytes of the batch so far. */
  get batchBytes(): number {
    return this.writer.position - this.room;
  }

  /** Drops the changes added so far. */
  reset(): void {
    this.writer.position = this.room;
    this.ensure(uintBytes(this.formatVersion) + bytesBytes(this.machineIdBytes.length) + resyncBytes);
    this.writer.uint(1, this.formatVersion);
    this.writer.bytes(2, this.machineIdBytes);
    this.firstSeq = 0;
    this.lastSeq = 0;
    this.count = 0;
  }

  add(change: Change): void {
    const planned = planChange(change);
    this.ensure(fieldBytes(planned.size) + resyncBytes);
    this.writer.header(3, planned.size);
    planned.write(this.writer);
    if (this.count === 0) this.firstSeq = change.seq;
    this.lastSeq = change.seq;
    this.count++;
  }

  /**
   * The push of the changes added since the last one; the builder starts over. A push that fills
   * little of its buffer is copied out so the buffer serves the next one (small batches would
   * otherwise each hold a whole buffer until acknowledged).
   */
  finish(resync: boolean): BuiltPush {
    const { buffer } = this.writer;
    const batchEnd = this.writer.position;
    const batchBytes = batchEnd - this.room;
    const header = { firstSeq: this.firstSeq, lastSeq: this.lastSeq, resync };
    const start = this.room - pushPrefixBytes(this.machineIdBytes.length, header, batchBytes);
    this.writer.position = start;
    writePushHeader(this.writer, this.machineIdBytes, header, batchBytes);
    this.writer.position = batchEnd;
    if (resync) this.writer.uint(5, 1);
    let encoded = buffer.subarray(start, this.writer.position);
    const keepBuffer = encoded.length < buffer.length / 4;
    if (keepBuffer) encoded = Buffer.from(encoded);
    else this.writer = new Writer(this.buffers.take());
    const batchStart = this.room - start;
    const request: PushRequest = {
      machineId: this.machineId,
      ...header,
      batch: encoded.subarray(batchStart, batchStart + batchBytes),
    };
    builtPushes.set(request, { bytes: encoded, queued: 0 });
    this.reset();
    return keepBuffer ? { request } : { request, buffer };
  }

  /**
   * Makes room for `needed` more bytes: a change that does not fit moves the batch so far to a
   * larger buffer (rare: a batch is flushed near 4 MiB).
   */
  private ensure(needed: number): void {
    const old = this.writer.buffer;
    if (this.writer.position + needed <= old.length) return;
    const grown = Buffer.allocUnsafeSlow(
      Math.max(2 * old.length, this.writer.position + needed, this.room + 64 * 1024),
    );
    if (this.writer.position > this.room) old.copy(grown, this.room, this.room, this.writer.position);
    const position = this.writer.position;
    this.writer = new Writer(grown);
    this.writer.position = position;
    this.buffers.give(old);
  }
}
