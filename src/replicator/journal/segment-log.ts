// Append-only segment files of record groups. A group is written with one write and made durable
// with fdatasync before the caller goes on to change the replica. Opening scans every segment: a
// torn group at the very end of the newest segment (the only place a crash can leave one) is cut
// off; damage anywhere else is corruption and is reported with the file and offset.
import { constants } from "node:fs";
import { mkdir, open, readdir, rm, stat, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { fsyncDirectory } from "../durable-fs.js";
import { readExactly } from "./durable.js";
import { JournalCorruptError } from "./errors.js";
import type { RecoveryPoint } from "./point.js";
import {
  checksumMatches,
  decodeRecord,
  encodeGroupParts,
  headerBytes,
  parseHeader,
  type RecordGroup,
  type UndoRecord,
} from "./record.js";

interface Segment {
  name: string;
  path: string;
  bytes: number;
  lastSeq: number;
}

export interface GroupLocation {
  seq: number;
  segment: string;
  offset: number;
  bytes: number;
}

const segmentSuffix = ".seg";
const segmentNamePattern = /^(\d{20})\.seg$/;

function segmentName(seq: number): string {
  return `${String(seq).padStart(20, "0")}${segmentSuffix}`;
}

async function allZero(handle: FileHandle, from: number, to: number): Promise<boolean> {
  for (let position = from; position < to; position += 1024 * 1024) {
    const chunk = await readExactly(handle, Math.min(1024 * 1024, to - position), position);
    if (chunk.some((byte) => byte !== 0)) return false;
  }
  return true;
}

interface ScanResult {
  groups: GroupLocation[];
  points: RecoveryPoint[];
  /** Where valid groups end; bytes after it are a torn tail (only ever in the newest segment). */
  validBytes: number;
  fileBytes: number;
}

class SegmentScanner {
  private readonly groups: GroupLocation[] = [];
  private readonly points: RecoveryPoint[] = [];
  private groupPoints: RecoveryPoint[] = [];
  private groupStart = 0;
  private groupSeq: number | undefined;

  constructor(
    private readonly handle: FileHandle,
    private readonly segment: string,
    private readonly fileBytes: number,
    private readonly previousSeq: number,
    private readonly newest: boolean,
  ) {}

  async scan(): Promise<ScanResult> {
    let position = 0;
    while (position < this.fileBytes) {
      const next = await this.readRecord(position);
      if (next === undefined) return this.tornAt(position, this.groupStart);
      position = next;
    }
    if (this.groupSeq !== undefined) return this.tornAt(position, this.groupStart);
    return { groups: this.groups, points: this.points, validBytes: position, fileBytes: this.fileBytes };
  }

  private where(offset: number): string {
    return `${this.segment} offset ${offset}`;
  }

  private tornAt(position: number, cutAt: number): ScanResult {
    if (!this.newest)
      throw new JournalCorruptError(this.where(position), "an incomplete record group inside an older segment");
    return { groups: this.groups, points: this.points, validBytes: cutAt, fileBytes: this.fileBytes };
  }

  /** Returns the position after a valid record, or undefined when the rest of the file is a torn write. */
  private async readRecord(position: number): Promise<number | undefined> {
    const rest = this.fileBytes - position;
    const headerBuffer = await readExactly(this.handle, Math.min(headerBytes, rest), position);
    const header = parseHeader(headerBuffer);
    if (header === undefined) {
      if (rest < headerBytes || (await allZero(this.handle, position, this.fileBytes))) return undefined;
      throw new JournalCorruptError(this.where(position), "bytes that are not a record header");
    }
    const end = position + headerBytes + header.payloadBytes;
    if (end > this.fileBytes) return undefined;
    const payload = await readExactly(this.handle, header.payloadBytes, position + headerBytes);
    if (!checksumMatches(headerBuffer, payload, header.crc)) {
      if (end === this.fileBytes) return undefined;
      throw new JournalCorruptError(this.where(position), "record checksum mismatch");
    }
    const record = decodeRecord(header.typeCode, payload, this.where(position));
    if (record.type === "point") this.groupPoints.push(record.point);
    this.acceptRecord(position, end, header.seq, header.lastOfGroup);
    return end;
  }

  private acceptRecord(position: number, end: number, seq: number, lastOfGroup: boolean): void {
    if (this.groupSeq === undefined) {
      const previous = this.groups.at(-1)?.seq ?? this.previousSeq;
      if (seq <= previous)
        throw new JournalCorruptError(this.where(position), `seq ${seq} does not follow seq ${previous}`);
      this.groupSeq = seq;
      this.groupStart = position;
    } else if (seq !== this.groupSeq) {
      throw new JournalCorruptError(
        this.where(position),
        `record of seq ${seq} inside the group of seq ${this.groupSeq}`,
      );
    }
    if (lastOfGroup) {
      this.groups.push({ seq, segment: this.segment, offset: this.groupStart, bytes: end - this.groupStart });
      this.points.push(...this.groupPoints);
      this.groupPoints = [];
      this.groupSeq = undefined;
      this.groupStart = end;
    }
  }
}

export class SegmentLog {
  private appendHandle: FileHandle | undefined;
  private rollPending = false;

  private constructor(
    private readonly directory: string,
    private readonly segments: Segment[],
    readonly groups: GroupLocation[],
    /** Every point recorded in the segments, in seq order. */
    readonly points: RecoveryPoint[],
    private readonly readOnly: boolean,
  ) {}

  /** Opens (creating when writable) the segment directory; a torn tail is cut off unless read-only. */
  static async open(directory: string, readOnly: boolean): Promise<SegmentLog> {
    if (!readOnly) await mkdir(directory, { recursive: true });
    const names = (
      await readdir(directory).catch((error: unknown) => {
        if (readOnly && (error as NodeJS.ErrnoException).code === "ENOENT") return [];
        throw error;
      })
    )
      .filter((name) => segmentNamePattern.test(name))
      .sort();
    const segments: Segment[] = [];
    const groups: GroupLocation[] = [];
    const points: RecoveryPoint[] = [];
    for (const [index, name] of names.entries()) {
      const path = join(directory, name);
      const result = await SegmentLog.scanSegment(path, name, groups.at(-1)?.seq ?? 0, index === names.length - 1);
      if (result.validBytes < result.fileBytes && !readOnly) await SegmentLog.cutTornTail(path, result.validBytes);
      groups.push(...result.groups);
      points.push(...result.points);
      segments.push({ name, path, bytes: result.validBytes, lastSeq: result.groups.at(-1)?.seq ?? 0 });
    }
    return new SegmentLog(directory, segments, groups, points, readOnly);
  }

  private static async scanSegment(
    path: string,
    name: string,
    previousSeq: number,
    newest: boolean,
  ): Promise<ScanResult> {
    const handle = await open(path, constants.O_RDONLY);
    try {
      const { size } = await handle.stat();
      return await new SegmentScanner(handle, name, size, previousSeq, newest).scan();
    } finally {
      await handle.close();
    }
  }

  private static async cutTornTail(path: string, validBytes: number): Promise<void> {
    const handle = await open(path, constants.O_WRONLY);
    try {
      await handle.truncate(validBytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  get lastSeq(): number {
    return this.groups.at(-1)?.seq ?? 0;
  }

  get totalBytes(): number {
    return this.segments.reduce((sum, segment) => sum + segment.bytes, 0);
  }

  get segmentCount(): number {
    return this.segments.length;
  }

  /** The next append starts a new segment (called at points, so old segments end on a point). */
  roll(): void {
    this.rollPending = true;
  }

  get currentSegmentBytes(): number {
    return this.segments.at(-1)?.bytes ?? 0;
  }

  /** Appends a group and makes it durable before returning. */
  append(group: RecordGroup): Promise<void> {
    return this.appendGroups([group]);
  }

  /**
   * Appends groups (in seq order) with one write and one fdatasync before returning. A crash can
   * tear only the last of them; the complete ones before it stay valid groups.
   */
  async appendGroups(groups: readonly RecordGroup[]): Promise<void> {
    if (this.readOnly) throw new Error("the undo journal was opened read-only");
    const first = groups[0];
    if (first === undefined) return;
    groups.reduce((previous, group) => {
      if (group.seq <= previous) throw new Error(`seq ${group.seq} does not follow seq ${previous}`);
      return group.seq;
    }, this.lastSeq);
    const segment = await this.segmentForAppend(first.seq);
    // Written from the records' pieces (old content stays in the buffers it was read into): no copies.
    const encoded = groups.map((group) => encodeGroupParts(group));
    const handle = this.appendHandle;
    if (handle === undefined) throw new Error("no segment open for appending");
    await writeAll(handle, encoded.flat(), segment.bytes);
    await handle.datasync();
    for (const [index, group] of groups.entries()) {
      const bytes = (encoded[index] ?? []).reduce((sum, part) => sum + part.length, 0);
      this.groups.push({ seq: group.seq, segment: segment.name, offset: segment.bytes, bytes });
      segment.bytes += bytes;
      segment.lastSeq = group.seq;
      for (const record of group.records) if (record.type === "point") this.points.push(record.point);
    }
  }

  private async segmentForAppend(seq: number): Promise<Segment> {
    const current = this.segments.at(-1);
    if (current !== undefined && !(this.rollPending && current.bytes > 0)) {
      this.appendHandle ??= await open(current.path, constants.O_WRONLY);
      return current;
    }
    this.rollPending = false;
    await this.appendHandle?.close();
    const name = segmentName(seq);
    const path = join(this.directory, name);
    this.appendHandle = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
    await fsyncDirectory(this.directory);
    const segment = { name, path, bytes: 0, lastSeq: 0 };
    this.segments.push(segment);
    return segment;
  }

  /** Reads and verifies one group again (the disk may have changed since the scan). */
  async read(location: GroupLocation): Promise<UndoRecord[]> {
    const handle = await open(join(this.directory, location.segment), constants.O_RDONLY);
    try {
      const bytes = await readExactly(handle, location.bytes, location.offset);
      return decodeGroupBytes(bytes, location);
    } finally {
      await handle.close();
    }
  }

  groupsAfter(seq: number): GroupLocation[] {
    return this.groups.filter((group) => group.seq > seq);
  }

  find(seq: number): GroupLocation | undefined {
    return this.groups.find((group) => group.seq === seq);
  }

  /** Deletes whole segments holding only seqs up to floorSeq (never the newest segment). */
  async dropThrough(floorSeq: number): Promise<void> {
    const doomed = this.segments.slice(0, -1).filter((segment) => segment.lastSeq <= floorSeq);
    if (doomed.length === 0) return;
    for (const segment of doomed) await rm(segment.path, { force: true });
    await fsyncDirectory(this.directory);
    const names = new Set(doomed.map((segment) => segment.name));
    this.segments.splice(0, this.segments.length, ...this.segments.filter((segment) => !names.has(segment.name)));
    this.groups.splice(0, this.groups.length, ...this.groups.filter((group) => !names.has(group.segment)));
    const firstSeq = this.groups[0]?.seq ?? Number.MAX_SAFE_INTEGER;
    this.points.splice(0, this.points.length, ...this.points.filter((point) => point.seq >= firstSeq));
  }

  /** Removes every group with a seq above `seq` (a rollback ended the history there). */
  async truncateAfter(seq: number): Promise<void> {
    await this.appendHandle?.close();
    this.appendHandle = undefined;
    const kept = this.groups.filter((group) => group.seq <= seq);
    for (const segment of [...this.segments].reverse()) {
      const keptHere = kept.filter((group) => group.segment === segment.name);
      const last = keptHere.at(-1);
      if (last === undefined && segment !== this.segments[0]) {
        await rm(segment.path, { force: true });
        this.segments.pop();
        continue;
      }
      const end = last === undefined ? 0 : last.offset + last.bytes;
      if (end < segment.bytes) await SegmentLog.cutTornTail(segment.path, end);
      segment.bytes = end;
      segment.lastSeq = last?.seq ?? 0;
      break;
    }
    await fsyncDirectory(this.directory);
    this.groups.splice(0, this.groups.length, ...kept);
    this.points.splice(0, this.points.length, ...this.points.filter((point) => point.seq <= seq));
  }

  /** Deletes every segment: the log starts empty (the next append opens a new segment). */
  async clear(): Promise<void> {
    await this.appendHandle?.close();
    this.appendHandle = undefined;
    for (const segment of this.segments) await rm(segment.path, { force: true });
    await fsyncDirectory(this.directory);
    this.segments.splice(0);
    this.groups.splice(0);
    this.points.splice(0);
  }

  async close(): Promise<void> {
    await this.appendHandle?.close();
    this.appendHandle = undefined;
  }

  /** Current size of the segment files on disk (for reports that must not trust memory). */
  async bytesOnDisk(): Promise<number> {
    let total = 0;
    for (const segment of this.segments) total += (await stat(segment.path).catch(() => ({ size: 0 }))).size;
    return total;
  }
}

function decodeGroupBytes(bytes: Buffer, location: GroupLocation): UndoRecord[] {
  const records: UndoRecord[] = [];
  let position = 0;
  while (position < bytes.length) {
    const where = `${location.segment} offset ${location.offset + position}`;
    const headerBuffer = bytes.subarray(position, position + headerBytes);
    const header = parseHeader(headerBuffer);
    if (header?.seq !== location.seq)
      throw new JournalCorruptError(where, "record header changed since the journal was opened");
    const payload = bytes.subarray(position + headerBytes, position + headerBytes + header.payloadBytes);
    if (payload.length !== header.payloadBytes || !checksumMatches(headerBuffer, payload, header.crc))
      throw new JournalCorruptError(where, "record checksum mismatch");
    records.push(decodeRecord(header.typeCode, payload, where));
    position += headerBytes + header.payloadBytes;
  }
  return records;
}

/** Writes the pieces one after another at `position`, resuming after short writes. */
async function writeAll(handle: FileHandle, pieces: readonly Buffer[], position: number): Promise<void> {
  let rest = pieces.filter((piece) => piece.length > 0);
  let at = position;
  while (rest.length > 0) {
    const batch = rest.slice(0, 1024); // writev takes at most IOV_MAX buffers at once
    const { bytesWritten } = await handle.writev(batch, at);
    at += bytesWritten;
    let left = bytesWritten;
    let done = 0;
    for (const piece of batch) {
      if (left < piece.length) break;
      left -= piece.length;
      done++;
    }
    rest = rest.slice(done);
    const partial = rest[0];
    if (left > 0 && partial !== undefined) rest[0] = partial.subarray(left);
  }
}
