// The process server's durable cache of sealed frames, one directory of append-only segments
// per machine. A frame is acknowledged to the agent only after its segment was fdatasync'ed
// (group commit: every frame queued while one flush runs shares the next flush).
import { mkdir, open, readdir, readFile, rm, type FileHandle } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Frame } from "../../gen/ksr/replication/v1/replication.js";
import { hashBlock } from "../block-hash.js";
import { fsyncDirectory } from "../durable-fs.js";
import { decodeFrameKeepingEncoding, encodeFrame } from "../frame-codec.js";

const recordHeaderBytes = 12; // u32 length + u64 xxhash64 of the payload
const segmentBytes = 64 * 1024 * 1024;
const segmentPattern = /^(\d{20})\.seg$/;

interface Segment {
  path: string;
  /** The seq the segment's first frame starts at. */
  base: number;
  handle: FileHandle;
  size: number;
  lastSeq: number;
}

interface CachedFrame {
  firstSeq: number;
  lastSeq: number;
  segment: Segment;
  offset: number;
  length: number;
}

function segmentName(base: number): string {
  return `${String(base).padStart(20, "0")}.seg`;
}

function encodeRecord(frame: Frame): Buffer {
  const record = encodeFrame(frame, recordHeaderBytes);
  const payload = record.subarray(recordHeaderBytes);
  record.writeUInt32LE(payload.length, 0);
  record.writeBigUInt64LE(hashBlock(payload), 4);
  return record;
}

/** Serializes appends across all machines into flushes; each flush syncs every file it wrote once. */
export class GroupCommitter {
  private queue: { segment: Segment; record: Buffer; resolve: () => void; reject: (error: unknown) => void }[] = [];
  private flushing = false;

  append(segment: Segment, record: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ segment, record, resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    while (this.queue.length > 0) {
      const group = this.queue;
      this.queue = [];
      try {
        const touched = new Set<FileHandle>();
        for (const item of group) {
          await item.segment.handle.write(item.record, 0, item.record.length, null);
          touched.add(item.segment.handle);
        }
        await Promise.all([...touched].map((handle) => handle.datasync()));
        for (const item of group) item.resolve();
      } catch (error) {
        for (const item of group) item.reject(error);
      }
    }
    this.flushing = false;
  }
}

export class MachineCache {
  private readonly frames: CachedFrame[] = [];
  private readonly segments: Segment[] = [];
  private acceptedSeq = 0;
  private committedSeq = 0;

  private constructor(
    readonly machineId: string,
    private readonly dir: string,
    private readonly committer: GroupCommitter,
  ) {}

  /** Opens a machine's cache, recovering it after a crash (a torn last record is cut off). */
  static async open(dir: string, machineId: string, committer: GroupCommitter): Promise<MachineCache> {
    if ((await mkdir(dir, { recursive: true })) !== undefined) await fsyncDirectory(dirname(dir));
    const cache = new MachineCache(machineId, dir, committer);
    const names = (await readdir(dir)).filter((name) => segmentPattern.test(name)).sort();
    for (const name of names) await cache.recoverSegment(name);
    cache.committedSeq = cache.acceptedSeq;
    return cache;
  }

  /** Highest seq accepted for caching (durable once the pending commit resolves). */
  get lastAcceptedSeq(): number {
    return this.acceptedSeq;
  }

  get durableSeq(): number {
    return this.committedSeq;
  }

  /** Bytes of frames the master target has not applied yet. */
  get bytes(): number {
    return this.frames.reduce((sum, frame) => sum + frame.length, 0);
  }

  get frameCount(): number {
    return this.frames.length;
  }

  /**
   * Queues a frame for the next group commit and returns once it is queued (so the caller can
   * queue the next one in order); `durable` settles when the frame is on stable storage.
   */
  async append(frame: Frame): Promise<{ durable: Promise<void> }> {
    if (frame.firstSeq <= this.acceptedSeq)
      throw new Error(`cache append out of order: ${frame.firstSeq} after ${this.acceptedSeq}`);
    const record = encodeRecord(frame);
    const segment = await this.segmentFor(frame.firstSeq, record.length);
    const cached = {
      firstSeq: frame.firstSeq,
      lastSeq: frame.lastSeq,
      segment,
      offset: segment.size,
      length: record.length,
    };
    segment.size += record.length;
    segment.lastSeq = frame.lastSeq;
    this.frames.push(cached);
    this.acceptedSeq = frame.lastSeq;
    const durable = this.committer.append(segment, record).then(() => {
      this.committedSeq = Math.max(this.committedSeq, frame.lastSeq);
    });
    return { durable };
  }

  /** Cached frames whose changes end after `seq`, in order, read back from disk. */
  async *framesAfter(seq: number): AsyncGenerator<Frame> {
    for (const cached of this.frames.filter((frame) => frame.lastSeq > seq && frame.lastSeq <= this.committedSeq)) {
      // Every byte is read over (a short read fails below), so the buffer need not be zeroed first.
      const record = Buffer.allocUnsafe(cached.length);
      const { bytesRead } = await cached.segment.handle.read(record, 0, cached.length, cached.offset);
      if (bytesRead !== cached.length)
        throw new Error(
          `cache segment ${cached.segment.path} ends inside the frame of seqs ${cached.firstSeq}..${cached.lastSeq}`,
        );
      yield decodeFrameKeepingEncoding(record.subarray(recordHeaderBytes));
    }
  }

  hasFramesAfter(seq: number): boolean {
    const last = this.frames.at(-1);
    return last !== undefined && last.lastSeq > seq && last.lastSeq <= this.committedSeq;
  }

  private maintenance: Promise<unknown> = Promise.resolve();

  /** Runs segment deletions one at a time. */
  private serially(work: () => Promise<void>): Promise<void> {
    const result = this.maintenance.then(work, work);
    this.maintenance = result.catch(() => undefined);
    return result;
  }

  /** The master target applied everything up to seq: whole segments at or below it are deleted. */
  release(appliedSeq: number): Promise<void> {
    return this.serially(() => this.releaseNow(appliedSeq));
  }

  private async releaseNow(appliedSeq: number): Promise<void> {
    while (this.frames.length > 0 && (this.frames[0]?.lastSeq ?? Infinity) <= appliedSeq) this.frames.shift();
    const current = this.segments.at(-1);
    for (const segment of [...this.segments]) {
      if (segment === current || segment.lastSeq > appliedSeq) continue;
      await this.deleteSegment(segment);
    }
  }

  /** Drops every cached frame (cache limit, operator request); the seq numbering continues. */
  dropAll(): Promise<void> {
    return this.serially(() => this.dropAllNow());
  }

  private async dropAllNow(): Promise<void> {
    for (const segment of [...this.segments]) await this.deleteSegment(segment);
    this.frames.length = 0;
    await this.createSegment(this.acceptedSeq + 1);
  }

  async close(): Promise<void> {
    for (const segment of this.segments) await segment.handle.close();
    this.segments.length = 0;
  }

  private async segmentFor(firstSeq: number, recordBytes: number): Promise<Segment> {
    const current = this.segments.at(-1);
    if (current !== undefined && (current.size + recordBytes <= segmentBytes || current.size === 0)) return current;
    return this.createSegment(firstSeq);
  }

  private async createSegment(base: number): Promise<Segment> {
    const path = join(this.dir, segmentName(base));
    const handle = await open(path, "a+");
    await fsyncDirectory(this.dir);
    const segment = { path, base, handle, size: 0, lastSeq: base - 1 };
    this.segments.push(segment);
    return segment;
  }

  private async deleteSegment(segment: Segment): Promise<void> {
    if (!this.segments.includes(segment)) return;
    await segment.handle.close();
    await rm(segment.path, { force: true });
    this.segments.splice(this.segments.indexOf(segment), 1);
  }

  private async recoverSegment(name: string): Promise<void> {
    const base = Number(segmentPattern.exec(name)?.[1]);
    const path = join(this.dir, name);
    const handle = await open(path, "a+");
    const contents = await readFile(path);
    const segment: Segment = { path, base, handle, size: 0, lastSeq: base - 1 };
    let offset = 0;
    while (offset + recordHeaderBytes <= contents.length) {
      const length = contents.readUInt32LE(offset);
      const payload = contents.subarray(offset + recordHeaderBytes, offset + recordHeaderBytes + length);
      if (payload.length !== length || hashBlock(payload) !== contents.readBigUInt64LE(offset + 4)) break;
      const frame = Frame.decode(payload);
      if (frame.firstSeq <= this.acceptedSeq) break;
      this.frames.push({
        firstSeq: frame.firstSeq,
        lastSeq: frame.lastSeq,
        segment,
        offset,
        length: recordHeaderBytes + length,
      });
      segment.lastSeq = frame.lastSeq;
      this.acceptedSeq = frame.lastSeq;
      offset += recordHeaderBytes + length;
    }
    if (offset < contents.length) {
      await handle.truncate(offset); // a record torn by a crash was never acknowledged
      await handle.datasync();
    }
    segment.size = offset;
    this.acceptedSeq = Math.max(this.acceptedSeq, base - 1);
    this.segments.push(segment);
  }
}
