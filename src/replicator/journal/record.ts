// The on-disk form of undo records. A record is a 24-byte header, a JSON description and raw
// bytes; a crc32 covers everything after the crc field, so a flipped bit or a torn write is
// always noticed. All records of one change form a group; its last record carries lastOfGroup,
// so a group cut short by a crash is recognised and dropped as a whole.
//
// The format grows only by new record types: a journal written before a type existed reads the
// same, and a reader that predates a type refuses a journal holding it ("unknown record type").
// Type 7 (attributes) came with metadata fidelity.
import { crc32 } from "node:zlib";
import type { RecoveryPoint } from "./point.js";
import { JournalCorruptError } from "./errors.js";
import { checkedJournalPath } from "./journal-path.js";

export type UndoRecord =
  /** Old bytes of a range (clipped to the old size) and the file's size before the change. */
  | { type: "bytes"; path: string; offset: number; oldSize: number; data: Buffer }
  | { type: "mode"; path: string; mode: number }
  /** The path did not exist before the change. */
  | { type: "absent"; path: string }
  /** The entry at the path (a file, symlink or whole tree) was moved into the journal as `object`. */
  | { type: "moved"; path: string; object: string }
  | { type: "renamed"; from: string; to: string }
  | { type: "point"; point: RecoveryPoint }
  /** The entry's owner, mode, mtime and extended attributes (values base64) before the change; "" is the root. */
  | ({ type: "attributes"; path: string } & SavedAttributes);

export interface SavedAttributes {
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  mtimeNsec: number;
  xattrs: [name: string, base64: string][];
}

export interface RecordGroup {
  seq: number;
  records: UndoRecord[];
}

export const headerBytes = 24;
const magic = 0x4b534a52; // "KSJR"
const lastOfGroupFlag = 1;
export const maxRecordBytes = 64 * 1024 * 1024;
const typeCodes = { bytes: 1, mode: 2, absent: 3, moved: 4, renamed: 5, point: 6, attributes: 7 } as const;
const typeNames = new Map(Object.entries(typeCodes).map(([name, code]) => [code, name as UndoRecord["type"]]));

function describe(record: UndoRecord): { meta: unknown; data: Buffer } {
  if (record.type === "bytes") {
    const { data, ...meta } = record;
    return { meta, data };
  }
  return { meta: record, data: Buffer.alloc(0) };
}

/**
 * A record as the pieces it is written from: its header and metadata, then its data as a view of
 * the caller's bytes (no copy); the crc runs over both. Concatenated, they are encodeRecord's bytes.
 */
export function encodeRecordParts(seq: number, record: UndoRecord, lastOfGroup: boolean): Buffer[] {
  const { meta, data } = describe(record);
  const json = Buffer.from(JSON.stringify(meta));
  const payloadBytes = 4 + json.length + data.length;
  const head = Buffer.allocUnsafe(headerBytes + 4 + json.length);
  head.writeUInt32LE(magic, 0);
  head.writeUInt32LE(payloadBytes, 4);
  head.writeUInt8(typeCodes[record.type], 12);
  head.writeUInt8(lastOfGroup ? lastOfGroupFlag : 0, 13);
  head.writeUInt16LE(0, 14);
  head.writeBigUInt64LE(BigInt(seq), 16);
  head.writeUInt32LE(json.length, headerBytes);
  json.copy(head, headerBytes + 4);
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  // (zlib.crc32 of empty data answers 0 whatever the starting value, so an empty body is left out.)
  const headCrc = crc32(head.subarray(12));
  head.writeUInt32LE(body.length === 0 ? headCrc : crc32(body, headCrc), 8);
  return body.length === 0 ? [head] : [head, body];
}

export function encodeRecord(seq: number, record: UndoRecord, lastOfGroup: boolean): Buffer {
  return Buffer.concat(encodeRecordParts(seq, record, lastOfGroup));
}

/** A group's records as the pieces to write (see encodeRecordParts). */
export function encodeGroupParts(group: RecordGroup): Buffer[] {
  return group.records.flatMap((record, index) =>
    encodeRecordParts(group.seq, record, index === group.records.length - 1),
  );
}

export interface RecordHeader {
  payloadBytes: number;
  crc: number;
  typeCode: number;
  lastOfGroup: boolean;
  seq: number;
}

/** Parses a header; undefined when the bytes cannot be a header (garbage or a torn write). */
export function parseHeader(header: Buffer): RecordHeader | undefined {
  if (header.length < headerBytes || header.readUInt32LE(0) !== magic) return undefined;
  const payloadBytes = header.readUInt32LE(4);
  const seq = header.readBigUInt64LE(16);
  if (payloadBytes < 4 || payloadBytes > maxRecordBytes || seq > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  return {
    payloadBytes,
    crc: header.readUInt32LE(8),
    typeCode: header.readUInt8(12),
    lastOfGroup: (header.readUInt8(13) & lastOfGroupFlag) !== 0,
    seq: Number(seq),
  };
}

export function checksumMatches(header: Buffer, payload: Buffer, expected: number): boolean {
  return crc32(payload, crc32(header.subarray(12, headerBytes))) === expected;
}

function field<T>(
  meta: Record<string, unknown>,
  name: string,
  check: (value: unknown) => value is T,
  where: string,
): T {
  const value = meta[name];
  if (!check(value)) throw new JournalCorruptError(where, `record field "${name}" is missing or invalid`);
  return value;
}

const isString = (value: unknown): value is string => typeof value === "string";
const isCount = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) >= 0;
const pathField = (meta: Record<string, unknown>, name: string, where: string, allowRoot: boolean): string =>
  checkedJournalPath(field(meta, name, isString, where), allowRoot, where);

/** Decodes a checksummed payload; paths are validated again, a record never names a path outside its root. */
export function decodeRecord(typeCode: number, payload: Buffer, where: string): UndoRecord {
  const type = typeNames.get(typeCode as 1);
  if (type === undefined) throw new JournalCorruptError(where, `unknown record type ${typeCode}`);
  const jsonBytes = payload.readUInt32LE(0);
  if (4 + jsonBytes > payload.length) throw new JournalCorruptError(where, "record description overruns the record");
  let meta: Record<string, unknown>;
  try {
    meta = JSON.parse(payload.subarray(4, 4 + jsonBytes).toString("utf8")) as Record<string, unknown>;
  } catch {
    throw new JournalCorruptError(where, "record description is not JSON");
  }
  const data = payload.subarray(4 + jsonBytes);
  switch (type) {
    case "bytes":
      return {
        type,
        path: pathField(meta, "path", where, true),
        offset: field(meta, "offset", isCount, where),
        oldSize: field(meta, "oldSize", isCount, where),
        data: Buffer.from(data),
      };
    case "mode":
      return { type, path: pathField(meta, "path", where, false), mode: field(meta, "mode", isCount, where) };
    case "absent":
      return { type, path: pathField(meta, "path", where, false) };
    case "moved":
      return {
        type,
        path: pathField(meta, "path", where, false),
        object: checkedJournalPath(field(meta, "object", isString, where), false, where),
      };
    case "renamed":
      return { type, from: pathField(meta, "from", where, false), to: pathField(meta, "to", where, false) };
    case "point":
      return { type, point: decodePoint(meta.point, where) };
    case "attributes":
      return { type, path: pathField(meta, "path", where, true), ...decodeAttributes(meta, where) };
  }
}

const isInteger = (value: unknown): value is number => Number.isSafeInteger(value);
const isXattrList = (value: unknown): value is [string, string][] =>
  Array.isArray(value) &&
  value.every(
    (item) => Array.isArray(item) && item.length === 2 && typeof item[0] === "string" && typeof item[1] === "string",
  );

function decodeAttributes(meta: Record<string, unknown>, where: string): SavedAttributes {
  return {
    mode: field(meta, "mode", isCount, where),
    uid: field(meta, "uid", isCount, where),
    gid: field(meta, "gid", isCount, where),
    mtimeSec: field(meta, "mtimeSec", isInteger, where),
    mtimeNsec: field(meta, "mtimeNsec", isCount, where),
    xattrs: field(meta, "xattrs", isXattrList, where),
  };
}

function decodePoint(value: unknown, where: string): RecoveryPoint {
  if (typeof value !== "object" || value === null) throw new JournalCorruptError(where, "point record has no point");
  const meta = value as Record<string, unknown>;
  const consistency = field(meta, "consistency", isString, where);
  if (consistency !== "app" && consistency !== "crash" && consistency !== "best-effort")
    throw new JournalCorruptError(where, `unknown point consistency "${consistency}"`);
  return {
    id: field(meta, "id", isString, where),
    seq: field(meta, "seq", isCount, where),
    timeUnixMs: field(meta, "timeUnixMs", isCount, where),
    consistency,
    group: field(meta, "group", isString, where),
  };
}
