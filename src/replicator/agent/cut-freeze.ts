// Crash-consistent cuts with write ranges: a cut's content is read into memory, not sent, while
// the application's writes are held, so the hold lasts as long as reading what changed since the
// last round takes (page-cache reads), not as long as hashing, compressing and shipping it. A cut
// reads once before the hold (what changed so far, with writes still running) and once under it
// (what changed since, and the blocks it re-dirtied); it then lets the writes go and sends the
// frozen blocks. A block read before the hold is still what the file held at the cut unless a
// write record (or a size change) came for it since, and those are read again under the hold.
import type { BigIntStats } from "node:fs";
import { constants } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { blockCount, blockSize } from "../block-hash.js";
import { openRegularFile, type BlockReader } from "../durable-fs.js";
import { readExactly } from "../journal/durable.js";
import { lstatIfExists } from "../tree-walk.js";
import { blocksToCheck, type DirtyFile, type FrozenFile, type TreeSource } from "./tree-source.js";

/** The most a cut reads into memory; beyond it the cut sends what it has and reads the rest live. */
export const defaultFreezeLimitBytes = 256 * 1024 * 1024;

interface Frozen {
  stats: BigIntStats;
  dirty: DirtyFile;
  blocks: Map<number, Buffer>;
}

interface FreezePlan {
  ino: string;
  path: string;
  stats: BigIntStats;
  dirty: DirtyFile;
  /** Blocks to read now (sorted). */
  read: number[];
  /** Blocks frozen before that still hold what the file holds. */
  keep: number[];
  /** Bytes the freeze grows by. */
  adding: number;
}

/** A file's pending changes after `later` came on top of `earlier`. */
export function mergeDirty(earlier: DirtyFile | undefined, later: DirtyFile): DirtyFile {
  const truncated = [earlier?.truncatedFrom, later.truncatedFrom].filter((offset) => offset !== undefined);
  return {
    blocks: new Set([...(earlier?.blocks ?? []), ...later.blocks]),
    whole: (earlier?.whole ?? false) || later.whole,
    ...(truncated.length === 0 ? {} : { truncatedFrom: Math.min(...truncated) }),
  };
}

function expectedLength(index: number, size: number): number {
  return Math.min(blockSize, size - index * blockSize);
}

/** Reads the blocks (sorted, within the file) into one buffer per run of consecutive blocks. */
async function readBlocks(handle: FileHandle, indexes: readonly number[], size: number): Promise<Map<number, Buffer>> {
  const read = new Map<number, Buffer>();
  for (let at = 0; at < indexes.length;) {
    const first = indexes[at] ?? 0;
    let count = 1;
    while (at + count < indexes.length && indexes[at + count] === first + count && count < 64) count++;
    const start = first * blockSize;
    const length = Math.min(size, (first + count) * blockSize) - start;
    const buffer = await readExactly(handle, length, start);
    const filled = buffer.length;
    for (let index = first; index < first + count; index++) {
      const from = (index - first) * blockSize;
      if (from >= filled) break; // shorter than its stat said: what is missing is read live (complete = false)
      read.set(index, buffer.subarray(from, Math.min(filled, from + blockSize)));
    }
    at += count;
  }
  return read;
}

/** Serves syncRanges' reads from the frozen blocks; a block never frozen reads as the end of the file. */
function frozenReader(blocks: ReadonlyMap<number, Buffer>): BlockReader {
  const read = (buffer: Buffer, offset: number, length: number, position: number) => {
    let done = 0;
    while (done < length) {
      const index = Math.floor((position + done) / blockSize);
      const block = blocks.get(index);
      const within = position + done - index * blockSize;
      if (block === undefined || within >= block.length) break;
      done += block.copy(buffer, offset + done, within, Math.min(block.length, within + length - done));
    }
    return Promise.resolve({ bytesRead: done });
  };
  return { read, close: () => Promise.resolve() };
}

export class CutFreeze {
  private readonly files = new Map<string, Frozen>();
  private frozenBytes = 0;

  constructor(
    private readonly root: string,
    private readonly limitBytes = defaultFreezeLimitBytes,
  ) {}

  get bytes(): number {
    return this.frozenBytes;
  }

  get size(): number {
    return this.files.size;
  }

  /**
   * Reads what these pending changes need, as the files are now, on top of what was frozen
   * before. False, with nothing read, when that would pass the limit: the caller then sends what
   * is frozen (send()) and these changes live.
   */
  async add(source: TreeSource, dirty: ReadonlyMap<string, DirtyFile>): Promise<boolean> {
    const planned = await Promise.all([...dirty].map(([ino, changes]) => this.plan(source, ino, changes)));
    const plans = planned.filter((plan) => plan !== undefined);
    const adding = plans.reduce((sum, plan) => sum + plan.adding, 0);
    if (this.frozenBytes + adding > this.limitBytes) return false;
    await Promise.all(plans.map((plan) => this.freezeFile(plan)));
    return true;
  }

  /** Which blocks of the file to read now and which frozen ones still hold; undefined when it is no known file. */
  private async plan(source: TreeSource, ino: string, changes: DirtyFile): Promise<FreezePlan | undefined> {
    const known = source.knownFile(ino);
    if (known === undefined) return undefined; // not (or no longer) a known file: the namespace notifications cover it
    const stats = await lstatIfExists(join(this.root, known.path));
    if (stats === undefined || !stats.isFile() || String(stats.ino) !== ino) return undefined;
    const size = Number(stats.size);
    const frozen = this.files.get(ino);
    const merged = mergeDirty(frozen?.dirty, changes);
    const all = new Set(blocksToCheck(known.record, size, merged) ?? [...Array(blockCount(size)).keys()]);
    const fresh = new Set(blocksToCheck(known.record, size, changes) ?? all);
    const read: number[] = [];
    const keep: number[] = [];
    // What the file's frozen blocks come to once re-read, against what it has frozen now.
    let adding = 0;
    for (const index of all) {
      const before = frozen?.blocks.get(index);
      if (!fresh.has(index) && before?.length === expectedLength(index, size)) keep.push(index);
      else read.push(index);
      adding += expectedLength(index, size);
    }
    for (const block of frozen?.blocks.values() ?? []) adding -= block.length;
    read.sort((a, b) => a - b);
    return { ino, path: known.path, stats, dirty: merged, read, keep, adding };
  }

  private async freezeFile(plan: FreezePlan): Promise<void> {
    const before = this.files.get(plan.ino);
    let handle: FileHandle;
    try {
      handle = await openRegularFile(join(this.root, plan.path), constants.O_RDONLY);
    } catch {
      // Gone or replaced since its stat: the namespace notifications report it; what was frozen
      // of it goes, so nothing older than the cut is sent for it.
      if (before !== undefined) this.drop(plan.ino);
      return;
    }
    let read: Map<number, Buffer>;
    try {
      read = await readBlocks(handle, plan.read, Number(plan.stats.size));
    } finally {
      await handle.close();
    }
    const blocks = new Map<number, Buffer>();
    for (const index of plan.keep) {
      const block = before?.blocks.get(index);
      if (block !== undefined) blocks.set(index, block);
    }
    for (const [index, block] of read) blocks.set(index, block);
    if (before !== undefined) this.drop(plan.ino);
    for (const block of blocks.values()) this.frozenBytes += block.length;
    this.files.set(plan.ino, { stats: plan.stats, dirty: plan.dirty, blocks });
  }

  private drop(ino: string): void {
    const frozen = this.files.get(ino);
    if (frozen === undefined) return;
    for (const block of frozen.blocks.values()) this.frozenBytes -= block.length;
    this.files.delete(ino);
  }

  /** Sends the frozen content (hashed against the manifest like any round) and forgets it. */
  async send(source: TreeSource): Promise<void> {
    const files = [...this.files];
    this.clear();
    for (const [ino, frozen] of files) {
      const file: FrozenFile = { stats: frozen.stats, open: () => Promise.resolve(frozenReader(frozen.blocks)) };
      await source.syncRanges(ino, frozen.dirty, file);
    }
  }

  /** Forgets the frozen content: a verifying scan reads everything live instead. */
  clear(): void {
    this.files.clear();
    this.frozenBytes = 0;
  }
}
