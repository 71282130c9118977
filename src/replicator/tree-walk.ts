// Walks a volume tree in a stable order (parents before children, names sorted) without
// following symlinks, and describes entries the way manifests and the wire do.
import { lstat, open, readdir, readlink } from "node:fs/promises";
import { constants, type BigIntStats } from "node:fs";
import { join } from "node:path";
import { EntryKind, type ManifestEntry } from "../gen/ksr/replication/v1/replication.js";
import { BlockHashes, blockSize, hashBlock } from "./block-hash.js";
import { forEachBlock, openRegularFile } from "./durable-fs.js";
import { deviceNumbers, readAttributes, specialKind } from "./file-attributes.js";

export interface WalkedEntry {
  path: string;
  stats: BigIntStats;
}

export function entryKind(stats: BigIntStats): EntryKind {
  if (stats.isFile()) return EntryKind.ENTRY_KIND_FILE;
  if (stats.isDirectory()) return EntryKind.ENTRY_KIND_DIRECTORY;
  if (stats.isSymbolicLink()) return EntryKind.ENTRY_KIND_SYMLINK;
  return specialKind(stats);
}

export function permissionMode(stats: BigIntStats): number {
  return Number(stats.mode & 0o7777n);
}

/**
 * Whether a syscall on a path listed moments ago failed because the entry is gone or another
 * object replaced it: ENOENT, ENOTDIR (a parent became a file), ELOOP (a parent became a symlink
 * loop, or O_NOFOLLOW met a symlink), ENOTREGULAR (openRegularFile met a FIFO, socket or device)
 * and ENOTSYMLINK (readlinkOf met something else). A scan looks at such a path again.
 */
export function isVanished(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return (
    code === "ENOENT" || code === "ENOTDIR" || code === "ELOOP" || code === "ENOTREGULAR" || code === "ENOTSYMLINK"
  );
}

/** lstat that returns undefined for a path that no longer exists. */
export async function lstatIfExists(path: string): Promise<BigIntStats | undefined> {
  try {
    return await lstat(path, { bigint: true });
  } catch (error) {
    if (isVanished(error)) return undefined;
    throw error;
  }
}

/** readlink of an entry listed as a symlink; one replaced meanwhile fails with code ENOTSYMLINK. */
export async function readlinkOf(path: string): Promise<string> {
  try {
    return await readlink(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EINVAL") throw error;
    throw Object.assign(new Error(`${path} is no longer a symlink`), { code: "ENOTSYMLINK" });
  }
}

/**
 * Every entry below root (root itself excluded); entries vanishing during the walk are skipped. A
 * directory yielded but gone or replaced when its turn to be listed came is passed to `onVanished`.
 */
export async function* walkTree(
  root: string,
  relative = "",
  onVanished?: (directory: string) => void,
): AsyncGenerator<WalkedEntry> {
  let names: string[];
  try {
    names = await readdir(relative === "" ? root : join(root, relative));
  } catch (error) {
    if (!isVanished(error)) throw error;
    if (relative !== "") onVanished?.(relative);
    return;
  }
  names.sort();
  for (const name of names) {
    const path = relative === "" ? name : `${relative}/${name}`;
    const stats = await lstatIfExists(join(root, path));
    if (stats === undefined) continue;
    yield { path, stats };
    if (stats.isDirectory()) yield* walkTree(root, path, onVanished);
  }
}

/** Block hashes of a file; a tree entry is opened only if it is still a regular file (never a FIFO). */
async function hashFile(path: string, size: number, treeEntry: boolean): Promise<BlockHashes> {
  const hashes = new BlockHashes();
  // An image may be a block device; a tree entry replaced by a FIFO must not block the read.
  const handle = treeEntry ? await openRegularFile(path, constants.O_RDONLY) : await open(path, "r");
  try {
    await forEachBlock(handle, size, blockSize, (index, block) => {
      hashes.set(index, hashBlock(block));
    });
  } finally {
    await handle.close();
  }
  return hashes;
}

/**
 * The manifest entry of a replica path as it is on disk now (files hashed block by block);
 * undefined for an entry of no replicated kind or one that vanished since it was listed.
 */
export async function describeEntry(root: string, entry: WalkedEntry): Promise<ManifestEntry | undefined> {
  const kind = entryKind(entry.stats);
  if (kind === EntryKind.ENTRY_KIND_UNSPECIFIED) return undefined;
  const absolute = join(root, entry.path);
  const size = kind === EntryKind.ENTRY_KIND_FILE ? Number(entry.stats.size) : 0;
  try {
    return {
      path: entry.path,
      kind,
      mode: permissionMode(entry.stats),
      size,
      linkTarget: kind === EntryKind.ENTRY_KIND_SYMLINK ? await readlinkOf(absolute) : "",
      blockHashes:
        kind === EntryKind.ENTRY_KIND_FILE ? (await hashFile(absolute, size, true)).packed() : Buffer.alloc(0),
      blockSize,
      attributes: readAttributes(absolute, entry.stats),
      ...deviceNumbers(kind, entry.stats.rdev),
    };
  } catch (error) {
    if (isVanished(error)) return undefined;
    throw error;
  }
}

/** The manifest of a block replica or source: one entry with an empty path. */
export async function describeImage(path: string): Promise<ManifestEntry> {
  const stats = await lstatIfExists(path);
  const size = stats === undefined ? 0 : Number(stats.size);
  return {
    path: "",
    kind: EntryKind.ENTRY_KIND_FILE,
    mode: 0,
    size,
    linkTarget: "",
    blockHashes: size === 0 ? Buffer.alloc(0) : (await hashFile(path, size, false)).packed(),
    blockSize,
    attributes: undefined,
    rdevMajor: 0,
    rdevMinor: 0,
  };
}
