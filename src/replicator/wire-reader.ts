// Protobuf decoding of the messages that carry payload bytes, returning views into the input
// instead of copies: the generated decoders copy every bytes field (`Buffer.from(reader.bytes())`),
// so a 4 MiB batch was copied once more where it was only checked or applied. Only the payload-
// carrying shapes are read by hand (a Change with a seq and a write, a Frame); anything else goes
// to the generated decoder, so the result is what it returns (a property test holds them equal).
// The views share the input's memory: the input must not be reused or transferred while they live.
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import {
  Change,
  Codec,
  type ChangeBatch,
  type Frame,
  type PushRequest,
  type WriteBlock,
} from "../gen/ksr/replication/v1/replication.js";

const varint = 0;
const lengthDelimited = 2;
const groupEnd = 4;

function tagOf(field: number, wireType: number): number {
  return (field << 3) | wireType;
}

/** The generated decoders' conversion of a uint64 (they refuse what a number cannot hold exactly). */
function safeNumber(value: bigint | string): number {
  const number = Number(value.toString());
  if (number > Number.MAX_SAFE_INTEGER) throw new Error("Value is larger than Number.MAX_SAFE_INTEGER");
  return number;
}

function wireTypeOf(tag: number): WireType {
  const wireTypes = [
    WireType.Varint,
    WireType.Bit64,
    WireType.LengthDelimited,
    WireType.StartGroup,
    WireType.EndGroup,
    WireType.Bit32,
  ];
  const wireType = wireTypes[tag & 7];
  if (wireType === undefined) throw new Error(`invalid wire type ${tag & 7}`);
  return wireType;
}

function view(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Where the generated decoders stop reading a message early: an end-group tag or a zero tag. */
function stops(tag: number): boolean {
  return (tag & 7) === groupEnd || tag === 0;
}

function decodeWriteBlock(reader: BinaryReader, length: number): WriteBlock {
  const end = reader.pos + length;
  const block: WriteBlock = { path: "", offset: 0, data: Buffer.alloc(0) };
  while (reader.pos < end) {
    const tag = reader.uint32();
    if (tag === tagOf(1, lengthDelimited)) block.path = reader.string();
    else if (tag === tagOf(2, varint)) block.offset = safeNumber(reader.uint64());
    else if (tag === tagOf(3, lengthDelimited)) block.data = view(reader.bytes());
    else if (stops(tag)) break;
    else reader.skip(wireTypeOf(tag));
  }
  return block;
}

/** A Change holding only a seq and writes is read here; any other field sends it to the generated decoder. */
function decodeChange(reader: BinaryReader, length: number): Change {
  const start = reader.pos;
  const end = start + length;
  const change: Change = { seq: 0, op: undefined };
  while (reader.pos < end) {
    const tag = reader.uint32();
    if (tag === tagOf(1, varint)) change.seq = safeNumber(reader.uint64());
    else if (tag === tagOf(2, lengthDelimited))
      change.op = { $case: "write", value: decodeWriteBlock(reader, reader.uint32()) };
    else {
      reader.pos = start;
      return Change.decode(reader, length);
    }
  }
  return change;
}

/** ChangeBatch.decode with write data as views into `bytes`. */
export function decodeChangeBatch(bytes: Uint8Array): ChangeBatch {
  const reader = new BinaryReader(bytes);
  const batch: ChangeBatch = { formatVersion: 0, machineId: "", changes: [] };
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if (tag === tagOf(1, varint)) batch.formatVersion = reader.uint32();
    else if (tag === tagOf(2, lengthDelimited)) batch.machineId = reader.string();
    else if (tag === tagOf(3, lengthDelimited)) batch.changes.push(decodeChange(reader, reader.uint32()));
    else if (stops(tag)) break;
    else reader.skip(wireTypeOf(tag));
  }
  return batch;
}

/** Frame.decode with the sealed bytes as a view into `bytes`. */
export function decodeFrame(bytes: Uint8Array): Frame {
  const reader = new BinaryReader(bytes);
  const frame: Frame = {
    machineId: "",
    firstSeq: 0,
    lastSeq: 0,
    codec: Codec.CODEC_UNSPECIFIED,
    sealed: Buffer.alloc(0),
    afterGap: false,
    uncompressedSize: 0,
  };
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if (tag === tagOf(1, lengthDelimited)) frame.machineId = reader.string();
    else if (tag === tagOf(2, varint)) frame.firstSeq = safeNumber(reader.uint64());
    else if (tag === tagOf(3, varint)) frame.lastSeq = safeNumber(reader.uint64());
    // Like the generated decoder, an unknown codec number is kept as it is (the opener refuses it).
    // eslint-disable-next-line @typescript-eslint/no-unsafe-enum-assignment
    else if (tag === tagOf(4, varint)) frame.codec = reader.int32();
    else if (tag === tagOf(5, lengthDelimited)) frame.sealed = view(reader.bytes());
    else if (tag === tagOf(6, varint)) frame.afterGap = reader.bool();
    else if (tag === tagOf(7, varint)) frame.uncompressedSize = reader.uint32();
    else if (stops(tag)) break;
    else reader.skip(wireTypeOf(tag));
  }
  return frame;
}

/** PushRequest.decode with the batch as a view into `bytes`. */
export function decodePushRequest(bytes: Uint8Array): PushRequest {
  const reader = new BinaryReader(bytes);
  const request: PushRequest = { machineId: "", firstSeq: 0, lastSeq: 0, batch: Buffer.alloc(0), resync: false };
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if (tag === tagOf(1, lengthDelimited)) request.machineId = reader.string();
    else if (tag === tagOf(2, varint)) request.firstSeq = safeNumber(reader.uint64());
    else if (tag === tagOf(3, varint)) request.lastSeq = safeNumber(reader.uint64());
    else if (tag === tagOf(4, lengthDelimited)) request.batch = view(reader.bytes());
    else if (tag === tagOf(5, varint)) request.resync = reader.bool();
    else if (stops(tag)) break;
    else reader.skip(wireTypeOf(tag));
  }
  return request;
}

/** Bytes before a message in the buffer gRPC received it in: the compression flag and the length. */
const grpcMessageHeaderBytes = 5;

/**
 * ArrayBuffers that hold exactly one received gRPC message (its 5-byte header, then the message)
 * and nothing else: grpc-js assembles each message into a fresh buffer and hands the
 * deserializer the view after the header. A view into one may be transferred to a worker whole,
 * since no other data lives in it. Anything else (a view into a shared chunk, should grpc-js ever
 * pass one) is not recorded and gets copied.
 */
const messageBuffers = new WeakSet<ArrayBufferLike>();

/** Wraps a view decoder as a gRPC deserializer that records the buffers a message owns alone. */
export function ownedMessageDecoder<T>(decode: (bytes: Uint8Array) => T): (bytes: Buffer) => T {
  return (bytes) => {
    if (
      bytes.byteOffset === grpcMessageHeaderBytes &&
      bytes.buffer.byteLength === bytes.length + grpcMessageHeaderBytes
    )
      messageBuffers.add(bytes.buffer);
    return decode(bytes);
  };
}

/** Whether `bytes` lie in a buffer that holds one received message and nothing else (and forgets it). */
export function takeMessageBuffer(bytes: Uint8Array): boolean {
  return messageBuffers.delete(bytes.buffer);
}
