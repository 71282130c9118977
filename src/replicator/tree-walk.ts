// Walks a volume tree in a stable order (parents before children, names sorted) without
// following symlinks, and describes entries the way manifests and the wire do.
import { lstat, open, readdir, readlink } from "node:fs/promises";
import type { BigIntStats } from "node:fs";
import { join } from "node:path";
import { EntryKind, type ManifestEntry } from "../gen/ksr/replication/v1/replication.js";
import { BlockHashes, blockSize, hashBlock } from "./block-hash.js";
import { forEachBlock } from "./durable-fs.js";
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

/** lstat that returns undefined for a path that no longer exists. */
export async function lstatIfExists(path: string): Promise<BigIntStats | undefined> {
  try {
    return await lstat(path, { bigint: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // ELOOP: a parent became a symlink loop, so this path names no entry of the tree.
    if (code === "ENOENT" || code === "ENOTDIR" || code === "ELOOP") return undefined;
    throw error;
  }
}

/** Every entry below root (root itself excluded); entries vanishing during the walk are skipped. */
export async function* walkTree(root: string, relative = ""): AsyncGenerator<WalkedEntry> {
  let names: string[];
  try {
    names = await readdir(relative === "" ? root : join(root, relative));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return;
    throw error;
  }
  names.sort();
  for (const name of names) {
    const path = relative === "" ? name : `${relative}/${name}`;
    const stats = await lstatIfExists(join(root, path));
    if (stats === undefined) continue;
    yield { path, stats };
    if (stats.isDirectory()) yield* walkTree(root, path);
  }
}

export async function hashFile(path: string, size: number): Promise<BlockHashes> {
  const hashes = new BlockHashes();
  const handle = await open(path, "r");
  try {
    await forEachBlock(handle, size, blockSize, (index, block) => {
      hashes.set(index, hashBlock(block));
    });
  } finally {
    await handle.close();
  }
  return hashes;
}

/** The manifest entry of a replica path as it is on disk now (files hashed block by block). */
export async function describeEntry(root: string, entry: WalkedEntry): Promise<ManifestEntry | undefined> {
  const kind = entryKind(entry.stats);
  if (kind === EntryKind.ENTRY_KIND_UNSPECIFIED) return undefined;
  const absolute = join(root, entry.path);
  const size = kind === EntryKind.ENTRY_KIND_FILE ? Number(entry.stats.size) : 0;
  return {
    path: entry.path,
    kind,
    mode: permissionMode(entry.stats),
    size,
    linkTarget: kind === EntryKind.ENTRY_KIND_SYMLINK ? await readlink(absolute) : "",
    blockHashes: kind === EntryKind.ENTRY_KIND_FILE ? (await hashFile(absolute, size)).packed() : Buffer.alloc(0),
    blockSize,
    attributes: readAttributes(absolute, entry.stats),
    ...deviceNumbers(kind, entry.stats.rdev),
  };
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
    blockHashes: size === 0 ? Buffer.alloc(0) : (await hashFile(path, size)).packed(),
    blockSize,
    attributes: undefined,
    rdevMajor: 0,
    rdevMinor: 0,
  };
}
