// Encodes the agent's batches straight into one exactly-sized buffer. The generated encoder
// copies every data block once per nesting level and again when finishing; at hundreds of MB/s
// those copies and their garbage were the agent's largest cost. The output is byte-identical to
// the generated encoder's (a property test holds it to that).
import { Change, type ChangeBatch, type PushRequest } from "../../gen/ksr/replication/v1/replication.js";
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

export function encodeChangeBatch(batch: ChangeBatch): Buffer {
  const machineId = Buffer.from(batch.machineId);
  const changes = batch.changes.map(planChange);
  const size =
    uintBytes(batch.formatVersion) +
    bytesBytes(machineId.length) +
    changes.reduce((sum, change) => sum + fieldBytes(change.size), 0);
  const writer = new Writer(Buffer.allocUnsafe(size));
  writer.uint(1, batch.formatVersion);
  writer.bytes(2, machineId);
  for (const change of changes) {
    writer.header(3, change.size);
    change.write(writer);
  }
  return writer.buffer;
}

/** The Push request as the gRPC client sends it: one allocation, one copy of the batch. */
export function encodePushRequest(request: PushRequest): Buffer {
  const machineId = Buffer.from(request.machineId);
  const size =
    bytesBytes(machineId.length) +
    uintBytes(request.firstSeq) +
    uintBytes(request.lastSeq) +
    bytesBytes(request.batch.length) +
    (request.resync ? 2 : 0);
  const writer = new Writer(Buffer.allocUnsafe(size));
  writer.bytes(1, machineId);
  writer.uint(2, request.firstSeq);
  writer.uint(3, request.lastSeq);
  writer.bytes(4, request.batch);
  if (request.resync) writer.uint(5, 1);
  return writer.buffer;
}
