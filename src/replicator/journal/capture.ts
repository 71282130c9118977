// Works out what a change is about to destroy, reading the replica as it is now. Content is kept
// per 64 KiB block and only the first time a block changes between two points: the journal
// needs the replica at points, not between them, so later overwrites in the same interval cost
// nothing. Blocks at or past the size a file had when the interval first touched it are never
// kept either: undoing truncates the file back to that size. Attributes (owner, mode, mtime,
// xattrs) are kept the same way: the first time an interval changes an entry or the content of a
// directory, as a record that comes first in its group, so it is undone last and the mtime the
// undo's own writes and renames bumped ends as it was at the point.
import { constants } from "node:fs";
import { lstat, open } from "node:fs/promises";
import { mtimeOf, readXattrs } from "../file-attributes.js";
import { lstatOrUndefined, readExactly } from "./durable.js";
import { entryKindDirectory, type JournalChange, type JournalOp } from "./change.js";
import { parentOf, underRoot, unsafePathReason } from "./journal-path.js";
import type { UndoRecord } from "./record.js";

export const journalBlockBytes = 64 * 1024;
const maxBytesPerRecord = 4 * 1024 * 1024;

interface FileInterval {
  baseSize: number;
  keptBlocks: Set<number>;
}

/** What the journal already holds for the current interval (reset at points and namespace changes). */
export class IntervalState {
  private readonly files = new Map<string, FileInterval>();
  private readonly attributesKept = new Set<string>();

  reset(): void {
    this.files.clear();
    this.attributesKept.clear();
  }

  hasAttributes(path: string): boolean {
    return this.attributesKept.has(path);
  }

  rememberAttributes(paths: Iterable<string>): void {
    for (const path of paths) this.attributesKept.add(path);
  }

  get(path: string): FileInterval | undefined {
    return this.files.get(path);
  }

  remember(path: string, baseSize: number, blocks: Iterable<number>): void {
    const file = this.files.get(path) ?? { baseSize, keptBlocks: new Set<number>() };
    for (const block of blocks) file.keptBlocks.add(block);
    this.files.set(path, file);
  }
}

/** A capture: the records to persist, then entries to move into the journal, then interval bookkeeping. */
export interface Capture {
  records: UndoRecord[];
  moves: { path: string; object: string }[];
  remember: { path: string; baseSize: number; blocks: number[] } | undefined;
  /** Paths whose attributes the records keep for this interval. */
  rememberAttributes?: string[];
}

const nothing: Capture = { records: [], moves: [], remember: undefined };

/** The entries whose attributes a change alters: the entry itself, or the directories it changes. */
function attributePaths(op: JournalOp): string[] {
  switch (op.$case) {
    case "write":
    case "zero":
    case "truncate":
      return op.value.path === "" ? [] : [op.value.path]; // "" is a block replica's image
    case "setAttributes":
      return [op.value.path];
    case "make":
    case "remove":
    case "symlink":
    case "hardLink":
      return [parentOf(op.value.path)];
    case "rename":
      return [...new Set([parentOf(op.value.from), parentOf(op.value.to)])];
    case "setMode":
    case "marker":
      return [];
  }
}

export class ChangeCapturer {
  constructor(
    private readonly root: string,
    private readonly interval: IntervalState,
  ) {}

  /** The records that undo `change`; nothing when the master target will reject the change anyway. */
  async capture(change: JournalChange, objectName: (index: number) => string): Promise<Capture> {
    const op = change.op;
    if (op === undefined || !(await this.pathsAreSafe(op))) return nothing;
    const capture = await this.captureOp(op, objectName);
    const attributes = await this.captureAttributes(attributePaths(op));
    if (attributes.length === 0) return capture;
    return {
      ...capture,
      records: [...attributes, ...capture.records],
      rememberAttributes: attributes.map((record) => (record.type === "attributes" ? record.path : "")),
    };
  }

  /** Attribute records of the paths this interval has not kept yet (entries that exist). */
  private async captureAttributes(paths: readonly string[]): Promise<UndoRecord[]> {
    const records: UndoRecord[] = [];
    for (const path of paths) {
      if (this.interval.hasAttributes(path)) continue;
      const absolute = this.at(path);
      const stats = await lstat(absolute, { bigint: true }).catch(() => undefined);
      if (stats === undefined) continue;
      records.push({
        type: "attributes",
        path,
        mode: Number(stats.mode & 0o7777n),
        uid: Number(stats.uid),
        gid: Number(stats.gid),
        ...mtimeOf(stats),
        xattrs: readXattrs(absolute).map(({ name, value }) => [name, Buffer.from(value).toString("base64")]),
      });
    }
    return records;
  }

  private async captureOp(op: JournalOp, objectName: (index: number) => string): Promise<Capture> {
    switch (op.$case) {
      case "write":
        return this.captureRange(
          op.value.path,
          op.value.offset,
          op.value.data.length,
          op.value.offset + op.value.data.length,
        );
      case "zero":
        return this.captureRange(op.value.path, op.value.offset, op.value.length, op.value.offset + op.value.length);
      case "truncate":
        return this.captureTruncate(op.value.path, op.value.size);
      case "make":
        return this.captureMake(op.value.path, op.value.kind);
      case "setMode":
        return this.captureMode(op.value.path);
      case "setAttributes":
        return nothing; // the attribute record is all it needs
      case "remove":
        return this.captureReplace(op.value.path, objectName, true);
      case "symlink":
        return this.captureReplace(op.value.path, objectName, false);
      case "hardLink":
        return this.captureHardLink(op.value.path, op.value.existing, objectName);
      case "rename":
        return this.captureRename(op.value.from, op.value.to, objectName);
      case "marker":
        return nothing;
    }
  }

  private at(path: string): string {
    return underRoot(this.root, path);
  }

  /** Paths the master target would refuse (unsafe, or through a symlinked parent) are never touched here. */
  private async pathsAreSafe(op: JournalOp): Promise<boolean> {
    const paths =
      op.$case === "rename"
        ? [op.value.from, op.value.to]
        : op.$case === "hardLink"
          ? [op.value.path, op.value.existing]
          : op.$case === "marker"
            ? []
            : [op.value.path];
    const imageAllowed =
      op.$case === "write" || op.$case === "zero" || op.$case === "truncate" || op.$case === "setAttributes";
    for (const path of paths) {
      if (unsafePathReason(path, imageAllowed) !== undefined) return false;
      if (!(await this.parentsAreDirectories(path))) return false;
    }
    return true;
  }

  private async parentsAreDirectories(path: string): Promise<boolean> {
    let prefix = parentOf(path);
    while (prefix !== "") {
      const stats = await lstatOrUndefined(this.at(prefix));
      if (stats === undefined || !stats.isDirectory()) return false;
      prefix = parentOf(prefix);
    }
    return true;
  }

  private async captureRange(path: string, offset: number, length: number, end: number): Promise<Capture> {
    const stats = await lstatOrUndefined(this.at(path));
    if (stats === undefined) return path === "" ? this.sizeOnly(path, 0) : nothing;
    if (!stats.isFile()) return nothing;
    if (length === 0) return nothing;
    return this.keepBlocks(path, stats.size, offset, end);
  }

  private async captureTruncate(path: string, size: number): Promise<Capture> {
    const stats = await lstatOrUndefined(this.at(path));
    if (stats === undefined) return path === "" ? this.sizeOnly(path, 0) : nothing;
    if (!stats.isFile() || stats.size === size) return nothing;
    return this.keepBlocks(path, stats.size, size, stats.size);
  }

  private sizeOnly(path: string, size: number): Capture {
    if (this.interval.get(path) !== undefined) return nothing;
    return {
      records: [{ type: "bytes", path, offset: 0, oldSize: size, data: Buffer.alloc(0) }],
      moves: [],
      remember: { path, baseSize: size, blocks: [] },
    };
  }

  /** Keeps the blocks of [from, to) that hold data this interval has not kept yet. */
  private async keepBlocks(path: string, currentSize: number, from: number, to: number): Promise<Capture> {
    const known = this.interval.get(path);
    const baseSize = known?.baseSize ?? currentSize;
    const limit = Math.min(to, baseSize, currentSize);
    const blocks: number[] = [];
    for (let block = Math.floor(from / journalBlockBytes); block * journalBlockBytes < limit; block++)
      if (known?.keptBlocks.has(block) !== true) blocks.push(block);
    if (blocks.length === 0) return known === undefined ? this.sizeOnly(path, currentSize) : nothing;
    const records = await this.readBlocks(path, blocks, currentSize, Math.min(currentSize, baseSize));
    return { records, moves: [], remember: { path, baseSize, blocks } };
  }

  /** Reads the blocks' bytes up to `neededSize` (bytes past the interval's base size are never restored). */
  private async readBlocks(
    path: string,
    blocks: number[],
    currentSize: number,
    neededSize: number,
  ): Promise<UndoRecord[]> {
    const handle = await open(this.at(path), constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      const records: UndoRecord[] = [];
      for (const run of contiguousRuns(blocks, maxBytesPerRecord / journalBlockBytes)) {
        const offset = run.first * journalBlockBytes;
        const length = Math.max(0, Math.min(run.count * journalBlockBytes, neededSize - offset));
        const data = await readExactly(handle, length, offset);
        records.push({ type: "bytes", path, offset, oldSize: currentSize, data });
      }
      return records;
    } finally {
      await handle.close();
    }
  }

  private async captureMake(path: string, kind: number): Promise<Capture> {
    const stats = await lstatOrUndefined(this.at(path));
    if (stats === undefined) return { records: [{ type: "absent", path }], moves: [], remember: undefined };
    const wantsDirectory = kind === entryKindDirectory;
    if (wantsDirectory ? !stats.isDirectory() : !stats.isFile()) return nothing;
    return { records: [{ type: "mode", path, mode: stats.mode & 0o7777 }], moves: [], remember: undefined };
  }

  private async captureMode(path: string): Promise<Capture> {
    const stats = await lstatOrUndefined(this.at(path));
    if (stats === undefined || stats.isSymbolicLink()) return nothing;
    return { records: [{ type: "mode", path, mode: stats.mode & 0o7777 }], moves: [], remember: undefined };
  }

  /** The entry at `path` is about to be destroyed: it moves into the journal whole. */
  private async captureReplace(
    path: string,
    objectName: (index: number) => string,
    directoryAllowed: boolean,
  ): Promise<Capture> {
    const stats = await lstatOrUndefined(this.at(path));
    if (stats === undefined)
      return directoryAllowed ? nothing : { records: [{ type: "absent", path }], moves: [], remember: undefined };
    if (!directoryAllowed && stats.isDirectory()) return nothing;
    const object = objectName(0);
    return { records: [{ type: "moved", path, object }], moves: [{ path, object }], remember: undefined };
  }

  private async captureHardLink(
    path: string,
    existing: string,
    objectName: (index: number) => string,
  ): Promise<Capture> {
    const source = await lstatOrUndefined(this.at(existing));
    if (source === undefined || !source.isFile()) return nothing;
    const current = await lstatOrUndefined(this.at(path));
    if (current?.ino === source.ino && current.dev === source.dev) return nothing;
    return this.captureReplace(path, objectName, false);
  }

  private async captureRename(from: string, to: string, objectName: (index: number) => string): Promise<Capture> {
    if (from === to || to.startsWith(`${from}/`)) return nothing;
    const source = await lstatOrUndefined(this.at(from));
    if (source === undefined) return nothing;
    const target = await lstatOrUndefined(this.at(to));
    const renamed: UndoRecord = { type: "renamed", from, to };
    if (target === undefined) return { records: [renamed], moves: [], remember: undefined };
    if (target.ino === source.ino && target.dev === source.dev) return nothing; // rename(2) between hard links does nothing
    const object = objectName(0);
    return {
      records: [{ type: "moved", path: to, object }, renamed],
      moves: [{ path: to, object }],
      remember: undefined,
    };
  }
}

function* contiguousRuns(blocks: readonly number[], maxCount: number): Generator<{ first: number; count: number }> {
  let first = blocks[0];
  let count = 0;
  for (const block of blocks) {
    if (first !== undefined && block === first + count && count < maxCount) {
      count++;
      continue;
    }
    if (first !== undefined && count > 0) yield { first, count };
    first = block;
    count = 1;
  }
  if (first !== undefined && count > 0) yield { first, count };
}
