// Compression and AES-256-GCM sealing of batches: the process server seals each batch once,
// caches the sealed frame at rest and forwards it unchanged; the master target opens it.
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { compressSync as lz4Compress, uncompressSync as lz4Decompress } from "lz4-napi";
import { compress as zstdCompress, decompress as zstdDecompress } from "zstd-napi";
import { Codec, type Frame } from "../gen/ksr/replication/v1/replication.js";
import { decodeFrame } from "./wire-reader.js";
import { bytesBytes, uintBytes, WireWriter } from "./wire-writer.js";

export type CompressionName = "zstd" | "lz4" | "none";
export const compressionNames: readonly CompressionName[] = ["zstd", "lz4", "none"];

const codecByName: Record<CompressionName, Codec> = {
  zstd: Codec.CODEC_ZSTD,
  lz4: Codec.CODEC_LZ4,
  none: Codec.CODEC_NONE,
};

const nonceBytes = 12;
const tagBytes = 16;
export const encryptionKeyBytes = 32;
/** Frames are capped when decoded so a corrupt size cannot exhaust memory. */
export const maxBatchBytes = 64 * 1024 * 1024;

export function parseCompression(value: string): CompressionName {
  const name = compressionNames.find((candidate) => candidate === value);
  if (name === undefined) throw new Error(`unknown compression "${value}": use one of ${compressionNames.join(", ")}`);
  return name;
}

export function codecFor(name: CompressionName): Codec {
  return codecByName[name];
}

export function compress(codec: Codec, data: Buffer): Buffer {
  switch (codec) {
    case Codec.CODEC_ZSTD:
      return zstdCompress(data, { compressionLevel: 1 });
    case Codec.CODEC_LZ4:
      return lz4Compress(data);
    case Codec.CODEC_NONE:
      return data;
    default:
      throw new Error(`unsupported codec ${codec}`);
  }
}

export function decompress(codec: Codec, data: Buffer, expectedSize: number): Buffer {
  if (expectedSize > maxBatchBytes)
    throw new Error(`frame claims ${expectedSize} bytes, over the ${maxBatchBytes} limit`);
  let plain: Buffer;
  switch (codec) {
    case Codec.CODEC_ZSTD:
      plain = zstdDecompress(data);
      break;
    case Codec.CODEC_LZ4:
      plain = lz4Decompress(data);
      break;
    case Codec.CODEC_NONE:
      plain = data;
      break;
    default:
      throw new Error(`unsupported codec ${codec}`);
  }
  if (plain.length !== expectedSize)
    throw new Error(`frame decompressed to ${plain.length} bytes, its header says ${expectedSize}`);
  return plain;
}

/** Everything in a frame header the tag must cover, so a frame cannot be replayed as another. */
export interface FrameHeader {
  machineId: string;
  firstSeq: number;
  lastSeq: number;
  codec: Codec;
  uncompressedSize: number;
}

function associatedData(header: FrameHeader): Buffer {
  return Buffer.from(
    JSON.stringify([header.machineId, header.firstSeq, header.lastSeq, header.codec, header.uncompressedSize]),
  );
}

export function seal(key: Buffer, header: FrameHeader, plain: Buffer): Buffer {
  const nonce = randomBytes(nonceBytes);
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(associatedData(header));
  const body = Buffer.concat([nonce, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
  return body;
}

export function open(key: Buffer, header: FrameHeader, sealed: Buffer): Buffer {
  if (sealed.length < nonceBytes + tagBytes) throw new Error("sealed frame is too short");
  const nonce = sealed.subarray(0, nonceBytes);
  const tag = sealed.subarray(sealed.length - tagBytes);
  const decipher = createDecipheriv("aes-256-gcm", key, nonce);
  decipher.setAAD(associatedData(header));
  decipher.setAuthTag(tag);
  try {
    const plain = decipher.update(sealed.subarray(nonceBytes, sealed.length - tagBytes));
    // GCM is a stream mode: final() only checks the tag, so its output is empty and needs no copy.
    const rest = decipher.final();
    return rest.length === 0 ? plain : Buffer.concat([plain, rest]);
  } catch {
    throw new Error("frame failed authentication: wrong encryption key or tampered data");
  }
}

/** Reads a 256-bit key: 32 raw bytes, or 64 hex characters, or base64 of 32 bytes. */
export async function readEncryptionKey(file: string): Promise<Buffer> {
  const raw = await readFile(file);
  if (raw.length === encryptionKeyBytes) return raw;
  const text = raw.toString("utf8").trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, "hex");
  const decoded = Buffer.from(text, "base64");
  if (decoded.length === encryptionKeyBytes && /^[A-Za-z0-9+/=]+$/.test(text)) return decoded;
  throw new Error(`${file}: an encryption key must be 32 raw bytes, 64 hex characters or base64 of 32 bytes`);
}

/** Compresses and seals an encoded ChangeBatch into the frame that is cached and forwarded. */
export function sealFrame(
  key: Buffer,
  codec: Codec,
  range: { machineId: string; firstSeq: number; lastSeq: number },
  encodedBatch: Buffer,
): Frame {
  const { machineId, firstSeq, lastSeq } = range;
  const header = { machineId, firstSeq, lastSeq, codec, uncompressedSize: encodedBatch.length };
  return { ...header, afterGap: false, sealed: seal(key, header, compress(codec, encodedBatch)) };
}

/** Opens a frame and decompresses its payload: the encoded ChangeBatch it was sealed from. */
export function openFrame(key: Buffer, frame: Frame): Buffer {
  const { machineId, firstSeq, lastSeq, codec, uncompressedSize } = frame;
  const header = { machineId, firstSeq, lastSeq, codec, uncompressedSize };
  return decompress(codec, open(key, header, frame.sealed), uncompressedSize);
}

/**
 * A frame's wire encoding (byte for byte what Frame.encode makes) in one allocation with one copy
 * of the sealed bytes, after `prefixBytes` left for the caller (the cache's record header).
 */
export function encodeFrame(frame: Frame, prefixBytes = 0): Buffer {
  if (prefixBytes === 0) {
    const known = encodings.get(frame);
    if (known !== undefined && unchanged(frame, known.as)) return known.bytes;
  }
  if (frame.codec === Codec.UNRECOGNIZED) throw new Error("a frame with an unrecognized codec cannot be encoded");
  const machineId = Buffer.from(frame.machineId);
  const size =
    bytesBytes(machineId.length) +
    uintBytes(frame.firstSeq) +
    uintBytes(frame.lastSeq) +
    uintBytes(frame.codec) +
    bytesBytes(frame.sealed.length) +
    (frame.afterGap ? 2 : 0) +
    uintBytes(frame.uncompressedSize);
  const writer = new WireWriter(Buffer.allocUnsafe(prefixBytes + size));
  writer.position = prefixBytes;
  writer.bytes(1, machineId);
  writer.uint(2, frame.firstSeq);
  writer.uint(3, frame.lastSeq);
  writer.uint(4, frame.codec);
  writer.bytes(5, frame.sealed);
  if (frame.afterGap) writer.uint(6, 1);
  writer.uint(7, frame.uncompressedSize);
  return writer.buffer;
}

/** Frames decoded from their encoding (read back from the cache) keep it: forwarding sends it as is. */
const encodings = new WeakMap<Frame, { bytes: Buffer; as: Frame }>();

function unchanged(frame: Frame, as: Frame): boolean {
  return (
    frame.machineId === as.machineId &&
    frame.firstSeq === as.firstSeq &&
    frame.lastSeq === as.lastSeq &&
    frame.codec === as.codec &&
    frame.sealed === as.sealed &&
    frame.afterGap === as.afterGap &&
    frame.uncompressedSize === as.uncompressedSize
  );
}

/**
 * Decodes a frame whose sealed bytes stay a view into `bytes`, and remembers `bytes` as its
 * encoding for encodeFrame while the frame is unchanged. `bytes` must not be reused meanwhile.
 */
export function decodeFrameKeepingEncoding(bytes: Buffer): Frame {
  const frame = decodeFrame(bytes);
  encodings.set(frame, { bytes, as: { ...frame } });
  return frame;
}
