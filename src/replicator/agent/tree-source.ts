// Turns the difference between a source directory and the manifest (the replica as the agent
// knows it) into changes: only changed 64 KiB blocks, plus metadata operations. Renames and
// hard links are recognised by inode so their content is not sent again. An entry's attributes
// (owner, mode, mtime, xattrs) follow its content; a directory's follow, at the end of the round,
// every change made inside it, since each of those changes the replica directory's mtime.
import { readdir } from "node:fs/promises";
import { constants } from "node:fs";
import type { BigIntStats } from "node:fs";
import { join } from "node:path";
import { EntryKind, type Change } from "../../gen/ksr/replication/v1/replication.js";
import { blockCount, blockSize, hashBlock, isZeroBlock } from "../block-hash.js";
import { forEachBlock, openRegularFile, readChunkBytesFor, type BlockReader } from "../durable-fs.js";
import { attributesKey, deviceNumbers, isSpecialKind, readAttributes } from "../file-attributes.js";
import { entryKind, isVanished, lstatIfExists, permissionMode, readlinkOf, walkTree } from "../tree-walk.js";
import { wireParent } from "../wire-path.js";
import {
  deviceKey,
  emptyRecord,
  sameObjectMoved,
  statIdentity,
  type Manifest,
  type ManifestRecord,
} from "./manifest.js";
import { ResyncNeeded, type ChangeSender } from "./sender.js";
import { BufferPool } from "../buffer-pool.js";

/** Bytes of regular files a full scan has gone through, for progress reports. */
export interface ScanProgress {
  examinedBytes: number;
}

/** Bytes of the regular files under root: the size of a full comparison, before it starts. */
export async function treeBytes(root: string): Promise<number> {
  let total = 0;
  for await (const { stats } of walkTree(root)) if (stats.isFile()) total += Number(stats.size);
  return total;
}

type Operation = NonNullable<Change["op"]>;
/** Takes a change; a write's data is consumed (copied or applied) before emit returns, so callers reuse their buffers. */
type Emitter = Pick<ChangeSender, "emit">;
type Reconcile = { recurse: boolean; detectMoves: boolean };

/** Looks at an entry that keeps vanishing or being replaced while it is read this often before giving up on it. */
const vanishedAttempts = 3;

/**
 * With write-range capture, the content of files already in the manifest is tracked by range
 * records, not by reading the file: the tree walk only tells it which files to look at.
 */
export interface ContentTracking {
  /** A known file (same inode) whose stat changed: its size and mode are checked with its ranges. */
  changed(ino: string): void;
}

/** A file's pending content changes from write-range capture: 64 KiB block indexes, or all of it. */
export interface DirtyFile {
  blocks: Set<number>;
  whole: boolean;
  /** A truncate to about this offset: every block from there to the end may differ. */
  truncatedFrom?: number;
}

export class TreeSource {
  /** Directories changed inside during this round: their attributes are sent when it ends. */
  private readonly touchedDirectories = new Set<string>();
  /** Directories gone or replaced while their entries were read: looked at again before the round ends. */
  private readonly relook = new Set<string>();
  /** Changes emitted so far (to tell whether an entry's content was sent). */
  private emitted = 0;
  private readonly emitter: Emitter = { emit: (op) => this.emit(op) };

  constructor(
    readonly root: string,
    private readonly manifest: Manifest,
    private readonly sender: Emitter,
    private readonly tracking?: ContentTracking,
  ) {}

  private async emit(op: Operation): Promise<void> {
    this.emitted++;
    switch (op.$case) {
      case "make":
      case "remove":
      case "symlink":
      case "hardLink":
        this.touch(wireParent(op.value.path));
        break;
      case "rename":
        this.touch(wireParent(op.value.from));
        this.touch(wireParent(op.value.to));
        break;
      default:
        break;
    }
    await this.sender.emit(op);
  }

  /**
   * Notes that the replica directory's mtime moves. Its record forgets that its attributes are
   * current until finishRound sends them, so a round that fails before then loses nothing.
   */
  private touch(directory: string): void {
    this.touchedDirectories.add(directory);
    if (directory === "") this.manifest.rootAttributes = "";
    const record = this.manifest.get(directory);
    if (record?.kind === EntryKind.ENTRY_KIND_DIRECTORY) record.identity = "";
  }

  /**
   * Sends the attributes of entries whose content or children changed (and of the root). A
   * notified path's directory is compared too: an entry made and removed between two rounds, or
   * replaced by an equal one, moved the directory's mtime though nothing is sent for the entry.
   */
  private async finishRound(notified: readonly string[] = []): Promise<void> {
    for (const path of new Set(notified.map(wireParent))) {
      if (path === "" || this.touchedDirectories.has(path)) continue; // the root is compared below anyway
      const record = this.manifest.get(path);
      const stats = await lstatIfExists(join(this.root, path));
      if (record?.kind !== EntryKind.ENTRY_KIND_DIRECTORY || stats?.isDirectory() !== true) continue;
      try {
        if (this.attributesChanged(path, stats, record)) this.touchedDirectories.add(path);
      } catch (error) {
        if (!isVanished(error)) throw error;
      }
    }
    const rootStats = await lstatIfExists(this.root);
    if (rootStats?.isDirectory() === true) {
      const attributes = readAttributes(this.root, rootStats);
      const key = `${permissionMode(rootStats)}:${attributesKey(attributes)}`;
      if (key !== this.manifest.rootAttributes) {
        await this.sender.emit({
          $case: "setAttributes",
          value: { path: "", mode: permissionMode(rootStats), attributes },
        });
        this.manifest.rootAttributes = key;
      }
    }
    const depth = (path: string) => path.split("/").length;
    const directories = [...this.touchedDirectories].filter((path) => path !== "");
    for (const path of directories.sort((a, b) => depth(b) - depth(a))) {
      const record = this.manifest.get(path);
      const stats = await lstatIfExists(join(this.root, path));
      if (record?.kind !== EntryKind.ENTRY_KIND_DIRECTORY || stats?.isDirectory() !== true) continue;
      try {
        await this.sendAttributes(path, stats, record);
      } catch (error) {
        // Gone since: its removal is noticed like any other; its record still says "look again".
        if (!isVanished(error)) throw error;
        continue;
      }
      record.identity = statIdentity(stats);
    }
    this.touchedDirectories.clear();
  }

  /** Emits the entry's attributes and remembers them in its record. */
  private async sendAttributes(path: string, stats: BigIntStats, record: ManifestRecord): Promise<void> {
    const attributes = readAttributes(join(this.root, path), stats);
    const mode = permissionMode(stats);
    await this.sender.emit({ $case: "setAttributes", value: { path, mode, attributes } });
    record.mode = mode;
    record.attributes = attributesKey(attributes);
  }

  /** Whether the entry's attributes differ from what the record says the replica holds. */
  private attributesChanged(path: string, stats: BigIntStats, record: ManifestRecord): boolean {
    if (record.identity !== "" && record.identity === statIdentity(stats)) return false; // any change moves ctime
    return (
      record.mode !== permissionMode(stats) ||
      record.attributes !== attributesKey(readAttributes(join(this.root, path), stats))
    );
  }

  /** Compares the whole tree with the manifest; files whose stat identity is unchanged are not read. */
  async fullScan(progress?: ScanProgress): Promise<void> {
    const seen = new Set<string>();
    for await (const { path, stats } of walkTree(this.root, "", (directory) => this.relook.add(directory))) {
      if (entryKind(stats) === EntryKind.ENTRY_KIND_UNSPECIFIED) continue;
      seen.add(path);
      await this.reconcile(path, stats, { recurse: false, detectMoves: true });
      if (progress !== undefined && stats.isFile()) progress.examinedBytes += Number(stats.size);
    }
    const gone = [...this.manifest.entries.keys()].filter((path) => !seen.has(path)).sort();
    for (const path of gone) {
      if (this.manifest.get(path) === undefined) continue; // its directory was removed already
      await this.emit({ $case: "remove", value: { path } });
      this.manifest.deleteTree(path);
    }
    await this.relookDirectories(); // after the removals above, which took their old children
    await this.finishRound();
  }

  /** Syncs the directories that vanished or were replaced under the scan, as if notified. */
  private async relookDirectories(): Promise<void> {
    for (let pass = 0; pass < vanishedAttempts && this.relook.size > 0; pass++) {
      const paths = [...this.relook].sort();
      this.relook.clear();
      for (const path of paths) await this.syncOne(path, await lstatIfExists(join(this.root, path)));
    }
  }

  /** Brings the given paths (from change notifications) up to date; new directories are scanned whole. */
  async syncPaths(paths: Iterable<string>): Promise<void> {
    const notified = [...new Set(paths)].sort();
    const looked = await Promise.all(
      notified.map(async (path) => ({ path, stats: await lstatIfExists(join(this.root, path)) })),
    );
    // Present entries first so a rename's new name is seen while its old one is still in the manifest.
    for (const { path, stats } of looked) if (stats !== undefined) await this.syncOne(path, stats);
    for (const { path, stats } of looked) if (stats === undefined) await this.syncOne(path, undefined);
    await this.relookDirectories();
    await this.finishRound(notified);
  }

  private async syncOne(path: string, stats: BigIntStats | undefined): Promise<void> {
    const parent = wireParent(path);
    if (parent !== "" && this.manifest.get(parent)?.kind !== EntryKind.ENTRY_KIND_DIRECTORY) {
      const parentStats = await lstatIfExists(join(this.root, parent));
      if (parentStats === undefined || !parentStats.isDirectory()) {
        if (this.manifest.get(path) !== undefined) await this.remove(path);
        return;
      }
      await this.syncOne(parent, parentStats); // scans the new parent whole, this path included
      return;
    }
    if (stats === undefined || entryKind(stats) === EntryKind.ENTRY_KIND_UNSPECIFIED) {
      if (this.manifest.get(path) !== undefined) await this.remove(path);
      return;
    }
    await this.reconcile(path, stats, { recurse: true, detectMoves: true });
  }

  private async remove(path: string): Promise<void> {
    await this.emit({ $case: "remove", value: { path } });
    this.manifest.deleteTree(path);
  }

  /**
   * Removes an entry from the manifest and, when the replica may hold it (known, or something of
   * it was sent), from the replica: the state of an entry whose reconciliation broke off midway
   * is unknown, and the manifest must never claim more than the replica holds.
   */
  private async forget(path: string, sent: boolean): Promise<void> {
    const known = this.manifest.get(path) !== undefined;
    this.manifest.deleteTree(path); // first: if the emit fails, it is queued all the same
    if (known || sent) await this.emit({ $case: "remove", value: { path } });
  }

  /**
   * Brings one entry up to date. One that vanishes or is replaced while it is read (between the
   * lstat that found it and a readlink, open or xattr read) is looked at again: gone, it counts as
   * removed; replaced, the new object is reconciled. Any other failure first forgets a file, link
   * or special file half sent, then propagates (the step is retried with a verifying scan).
   */
  private async reconcile(path: string, stats: BigIntStats, how: Reconcile): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const emittedBefore = this.emitted;
      try {
        await this.reconcileFound(path, stats, how);
        return;
      } catch (error) {
        if (error instanceof ResyncNeeded) throw error; // the resync replaces the manifest
        const sent = this.emitted !== emittedBefore;
        // A directory's own changes are made idempotently and recorded at once; its children forget for themselves.
        const wasDirectory = stats.isDirectory();
        if (!isVanished(error)) {
          if (!wasDirectory) await this.forget(path, sent);
          throw error;
        }
        const now = await lstatIfExists(join(this.root, path));
        const present = now !== undefined && entryKind(now) !== EntryKind.ENTRY_KIND_UNSPECIFIED;
        if (now === undefined) await this.relookParentUnlessDirectory(path);
        if (!present || attempt === vanishedAttempts || !(wasDirectory && now.isDirectory()))
          await this.forget(path, sent);
        if (!present || attempt === vanishedAttempts) return; // a path still changing is reported again
        stats = now;
        how = { ...how, detectMoves: true };
      }
    }
  }

  /** An entry may vanish because its directory did: then the directory is looked at again. */
  private async relookParentUnlessDirectory(path: string): Promise<void> {
    const parent = wireParent(path);
    if (parent === "") return;
    if ((await lstatIfExists(join(this.root, parent)))?.isDirectory() !== true) this.relook.add(parent);
  }

  private async reconcileFound(path: string, stats: BigIntStats, how: Reconcile): Promise<void> {
    const kind = entryKind(stats);
    let old = this.manifest.get(path);
    if (old !== undefined && (old.kind !== kind || old.device !== deviceKey(deviceNumbers(kind, stats.rdev)))) {
      await this.remove(path);
      old = undefined;
    }
    if (old === undefined && how.detectMoves) old = await this.movedOrLinked(path, stats);
    if (kind === EntryKind.ENTRY_KIND_DIRECTORY) await this.reconcileDirectory(path, stats, old, how.recurse);
    else if (kind === EntryKind.ENTRY_KIND_SYMLINK) await this.reconcileSymlink(path, stats, old);
    else if (isSpecialKind(kind)) await this.reconcileSpecial(path, stats, kind, old);
    else await this.reconcileFile(path, stats, old);
  }

  /** A new name for an object the manifest knows: a rename (old name gone) or a hard link (still there). */
  private async movedOrLinked(path: string, stats: BigIntStats): Promise<ManifestRecord | undefined> {
    const ino = String(stats.ino);
    const isDirectory = stats.isDirectory();
    for (const candidate of this.manifest.pathsWithIno(ino)) {
      const record = this.manifest.get(candidate);
      if (record === undefined || record.kind !== entryKind(stats) || path.startsWith(`${candidate}/`)) continue;
      // A moved directory's own times may change; files and symlinks must match exactly.
      if (!isDirectory && !sameObjectMoved(record, stats)) continue;
      const now = await lstatIfExists(join(this.root, candidate));
      if (now === undefined || (!isDirectory && String(now.ino) !== ino)) {
        await this.emit({ $case: "rename", value: { from: candidate, to: path } });
        this.manifest.moveTree(candidate, path);
        if (isDirectory) this.touch(path); // its ".." changed: so may its mtime
        return this.manifest.get(path);
      }
      if (record.kind === EntryKind.ENTRY_KIND_FILE && stats.nlink > 1n && String(now.ino) === ino) {
        await this.emit({ $case: "hardLink", value: { path, existing: candidate } });
        this.manifest.set(path, record);
        return record;
      }
    }
    return undefined;
  }

  private async reconcileDirectory(
    path: string,
    stats: BigIntStats,
    old: ManifestRecord | undefined,
    recurse: boolean,
  ): Promise<void> {
    const mode = permissionMode(stats);
    if (old === undefined) {
      await this.emit({
        $case: "make",
        value: { path, kind: EntryKind.ENTRY_KIND_DIRECTORY, mode, rdevMajor: 0, rdevMinor: 0 },
      });
      this.touchedDirectories.add(path);
    } else if (this.attributesChanged(path, stats, old)) this.touchedDirectories.add(path);
    const known = old !== undefined;
    this.manifest.set(path, {
      ...emptyRecord(EntryKind.ENTRY_KIND_DIRECTORY, old?.mode ?? mode),
      // Not current until finishRound sent the attributes of a touched directory.
      identity: this.touchedDirectories.has(path) ? "" : statIdentity(stats),
      ino: String(stats.ino),
      attributes: old?.attributes ?? "",
    });
    if (!recurse) return;
    // A directory that is new (or just moved here) may hold entries no notification reported.
    // A failed readdir is never read as "empty": that would remove every child at the replica.
    const names = await readdir(join(this.root, path));
    const present = new Set(names.map((name) => `${path}/${name}`));
    if (known) {
      for (const child of [...this.manifest.entries.keys()]) {
        if (wireParent(child) === path && !present.has(child) && this.manifest.get(child) !== undefined)
          await this.remove(child);
      }
    }
    for (const child of [...present].sort()) {
      const childStats = await lstatIfExists(join(this.root, child));
      if (childStats !== undefined && entryKind(childStats) !== EntryKind.ENTRY_KIND_UNSPECIFIED)
        await this.reconcile(child, childStats, { recurse: true, detectMoves: false });
    }
  }

  private async reconcileSymlink(path: string, stats: BigIntStats, old: ManifestRecord | undefined): Promise<void> {
    const target = await readlinkOf(join(this.root, path));
    const record: ManifestRecord = {
      ...emptyRecord(EntryKind.ENTRY_KIND_SYMLINK, old?.mode ?? permissionMode(stats)),
      linkTarget: target,
      attributes: old?.attributes ?? "",
    };
    const replaced = old?.linkTarget !== target;
    if (replaced) await this.emit({ $case: "symlink", value: { path, target } });
    if (replaced || this.attributesChanged(path, stats, old)) await this.sendAttributes(path, stats, record);
    record.identity = statIdentity(stats);
    record.ino = String(stats.ino);
    this.manifest.set(path, record);
  }

  /** FIFOs, sockets and device nodes: made by mknod at the replica, then given their attributes. */
  private async reconcileSpecial(
    path: string,
    stats: BigIntStats,
    kind: EntryKind,
    old: ManifestRecord | undefined,
  ): Promise<void> {
    const mode = permissionMode(stats);
    const device = deviceNumbers(kind, stats.rdev);
    const record: ManifestRecord = old ?? { ...emptyRecord(kind, mode), device: deviceKey(device) };
    if (old === undefined) await this.emit({ $case: "make", value: { path, kind, mode, ...device } });
    if (old === undefined || this.attributesChanged(path, stats, old)) await this.sendAttributes(path, stats, record);
    record.identity = statIdentity(stats);
    record.ino = String(stats.ino);
    this.manifest.set(path, record);
  }

  private async reconcileFile(path: string, stats: BigIntStats, old: ManifestRecord | undefined): Promise<void> {
    const identity = statIdentity(stats);
    if (old !== undefined && old.identity === identity) return;
    const mode = permissionMode(stats);
    // Its content, and then its attributes, are sent with its ranges (syncRanges).
    if (this.tracking !== undefined && old !== undefined && old.ino === String(stats.ino)) {
      this.tracking.changed(old.ino);
      return;
    }
    const size = Number(stats.size);
    const emittedBefore = this.emitted;
    if (old === undefined)
      await this.emit({
        $case: "make",
        value: { path, kind: EntryKind.ENTRY_KIND_FILE, mode, rdevMajor: 0, rdevMinor: 0 },
      });
    const record: ManifestRecord = old ?? emptyRecord(EntryKind.ENTRY_KIND_FILE, mode);
    if (record.size !== size) await this.emit({ $case: "truncate", value: { path, size } });
    const complete = await sendChangedBlocks(join(this.root, path), path, size, record, this.emitter);
    // Any write bumped the replica file's mtime (and dropped its capabilities): attributes go again.
    const attributesStale = old?.identity === "" || this.emitted !== emittedBefore;
    if (attributesStale || this.attributesChanged(path, stats, record)) await this.sendAttributes(path, stats, record);
    record.size = size;
    // A file that changed under the read is re-read next time, whatever its stat says then.
    record.identity = complete ? identity : "";
    record.ino = String(stats.ino);
    this.manifest.set(path, record);
  }

  /** The manifest path of the known regular file with this inode (write-range records name inodes). */
  knownFile(ino: string): { path: string; record: ManifestRecord } | undefined {
    for (const path of this.manifest.pathsWithIno(ino)) {
      const record = this.manifest.get(path);
      if (record?.kind === EntryKind.ENTRY_KIND_FILE && record.ino === ino) return { path, record };
    }
    return undefined;
  }

  /**
   * Sends a file's dirty blocks (write-range capture): reads and hashes only those, plus the
   * blocks a size change touches. A file not (or no longer) at a known path is left to the
   * namespace notifications. With `frozen`, its stat and blocks come from what a cut read while
   * writes were held (cut-freeze.ts), not from the file.
   */
  async syncRanges(ino: string, dirty: DirtyFile, frozen?: FrozenFile): Promise<void> {
    const known = this.knownFile(ino);
    if (known === undefined) return;
    const { path, record } = known;
    const stats = frozen?.stats ?? (await lstatIfExists(join(this.root, path)));
    if (stats === undefined || !stats.isFile() || String(stats.ino) !== ino) return;
    const size = Number(stats.size);
    const count = blockCount(size);
    const blocks = blocksToCheck(record, size, dirty);
    const emittedBefore = this.emitted;
    try {
      if (record.size !== size) await this.emit({ $case: "truncate", value: { path, size } });
      const runs = blocks === undefined ? [{ first: 0, count }] : blockRuns(blocks);
      const complete = await sendChangedBlocks(join(this.root, path), path, size, record, this.emitter, runs, frozen);
      // A write moves the replica file's mtime (and drops its capabilities): attributes go again.
      if (this.emitted !== emittedBefore || this.attributesChanged(path, stats, record))
        await this.sendAttributes(path, stats, record);
      record.size = size;
      record.identity = complete ? statIdentity(stats) : "";
      this.manifest.set(path, record);
    } catch (error) {
      if (error instanceof ResyncNeeded) throw error; // the resync replaces the manifest
      // Half sent, or its hashes already moved for blocks not sent yet: forgotten (removed at the
      // replica), it is read whole under whatever name the namespace notifications report next.
      await this.forget(path, this.emitted !== emittedBefore);
      if (!isVanished(error)) throw error;
    }
  }
}

/** A file's content as a cut read it under the write hold: its stat, and the blocks syncRanges reads. */
export interface FrozenFile {
  stats: BigIntStats;
  open(): Promise<BlockReader>;
}

/**
 * The blocks of a file of `size` bytes that a round of write ranges reads: the dirty ones, those
 * from a truncate on, and those a size change touches (undefined: all of them).
 */
export function blocksToCheck(record: ManifestRecord, size: number, dirty: DirtyFile): number[] | undefined {
  if (dirty.whole) return undefined;
  const count = blockCount(size);
  const blocks = [...dirty.blocks].filter((index) => index < count);
  if (dirty.truncatedFrom !== undefined)
    for (let index = Math.floor(dirty.truncatedFrom / blockSize); index < count; index++) blocks.push(index);
  if (record.size !== size) {
    // The old and the new last block changed length; and everything past the old end is new.
    // (An O_APPEND write is reported at the descriptor's position, not at the end it wrote.)
    for (const end of [record.size, size]) if (end > 0 && end <= size) blocks.push(Math.floor((end - 1) / blockSize));
    for (let index = Math.floor(record.size / blockSize); index < count; index++) blocks.push(index);
  }
  return blocks;
}

/** Sorted runs of consecutive block indexes, at most 64 blocks (4 MiB) each. */
function blockRuns(blocks: number[]): BlockRun[] {
  const sorted = [...new Set(blocks)].sort((a, b) => a - b);
  const runs: BlockRun[] = [];
  for (const index of sorted) {
    const last = runs.at(-1);
    if (last !== undefined && last.first + last.count === index && last.count < 64) last.count++;
    else runs.push({ first: index, count: 1 });
  }
  return runs;
}

interface BlockRun {
  first: number;
  count: number;
}

const maxWriteBytes = 1024 * 1024;

/**
 * Read chunks and write runs, reused from file to file (each sendChangedBlocks takes its own, so
 * calls may overlap): the sender copies a write's data when it is emitted.
 */
const readChunks = new BufferPool(readChunkBytesFor(blockSize), 2);
const runBuffers = new BufferPool(maxWriteBytes, 2);

/** Coalesces changed blocks that follow each other into one write of up to 1 MiB. */
class WriteRun {
  readonly buffer = runBuffers.take();
  private offset = 0;
  private length = 0;

  constructor(
    private readonly path: string,
    private readonly sender: Emitter,
  ) {}

  async add(offset: number, block: Buffer): Promise<void> {
    if (this.length > 0 && (offset !== this.offset + this.length || this.length + block.length > maxWriteBytes))
      await this.flush();
    if (this.length === 0) this.offset = offset;
    block.copy(this.buffer, this.length);
    this.length += block.length;
  }

  async flush(): Promise<void> {
    if (this.length === 0) return;
    const data = this.buffer.subarray(0, this.length);
    this.length = 0;
    await this.sender.emit({ $case: "write", value: { path: this.path, offset: this.offset, data } });
  }
}

/**
 * Reads the file once (or only the given runs of blocks); blocks whose hash differs from the
 * record are sent (adjacent ones as one write), zeros as zero ranges. Returns false when the file
 * could not be read whole (it shrank meanwhile, or cannot be opened); throws what isVanished()
 * recognises when it is gone or replaced.
 */
export async function sendChangedBlocks(
  file: string,
  path: string,
  size: number,
  record: ManifestRecord,
  sender: Emitter,
  runs: readonly BlockRun[] = [{ first: 0, count: blockCount(size) }],
  frozen?: FrozenFile,
): Promise<boolean> {
  const knownBlocks = Math.min(record.hashes.length, blockCount(record.size));
  let handle: BlockReader;
  try {
    handle = await (frozen?.open() ?? openRegularFile(file, constants.O_RDONLY));
  } catch (error) {
    if (isVanished(error)) throw error; // gone or replaced (by a FIFO, say): the caller looks again
    return false;
  }
  const run = new WriteRun(path, sender);
  const chunk = readChunks.take();
  let complete = true;
  try {
    for (const { first, count } of runs) {
      const start = first * blockSize;
      const end = Math.min(size, (first + count) * blockSize);
      if (!(await forEachBlock(handle, end, blockSize, onBlock, start, chunk))) complete = false;
    }
    await run.flush();
  } finally {
    readChunks.give(chunk);
    runBuffers.give(run.buffer);
    await handle.close();
  }
  record.hashes.truncate(blockCount(size));
  return complete;

  async function onBlock(index: number, block: Buffer): Promise<void> {
    const hash = hashBlock(block);
    if (record.hashes.get(index) === hash && index < knownBlocks) return;
    record.hashes.set(index, hash);
    const offset = index * blockSize;
    if (isZeroBlock(block)) {
      // Beyond the old end the truncate already left a hole; inside it, zeros must be written.
      if (index >= knownBlocks) return;
      await sender.emit({ $case: "zero", value: { path, offset, length: block.length } });
      return;
    }
    await run.add(offset, block);
  }
}
