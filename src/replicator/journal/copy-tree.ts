// Copies replica entries the way a recovered volume needs them, as rsync -aHAX --numeric-ids
// would: content, sizes, permission bits, owner, mtime, extended attributes, symlinks verbatim,
// special files, and hard links kept as links. Regular files go through copy_file_range, so the
// kernel moves the bytes.
import type { Stats } from "node:fs";
import { copyFile, link, lstat, mkdir, readdir, readlink, symlink } from "node:fs/promises";
import { join } from "node:path";
import {
  applyAttributes,
  deviceNumbers,
  makeSpecial,
  readAttributes,
  specialKind,
  type Unsupported,
} from "../file-attributes.js";

/**
 * Source inode → destination path of its copy, so further names of the inode become hard links.
 * Undo steps that move or remove destination paths keep it current.
 */
export class LinkMap {
  private readonly copies = new Map<string, string[]>();
  /** Grows with every change, so callers can tell whether the map needs saving. */
  version = 0;

  static fromJSON(entries: readonly (readonly [string, string[]])[] | undefined): LinkMap {
    const map = new LinkMap();
    for (const [key, paths] of entries ?? []) map.copies.set(key, [...paths]);
    return map;
  }

  toJSON(): [string, string[]][] {
    return [...this.copies];
  }

  /** A destination path that still names the copy of this source inode. */
  copyOf(stats: Stats): string | undefined {
    return stats.nlink > 1 ? this.copies.get(inodeKey(stats))?.[0] : undefined;
  }

  remember(stats: Stats, destination: string): void {
    if (!stats.isFile() || stats.nlink <= 1) return;
    const key = inodeKey(stats);
    this.copies.set(key, [...(this.copies.get(key) ?? []), destination]);
    this.version++;
  }

  /** The destination path (or tree) is gone. */
  forget(destination: string): void {
    this.rewrite((path) => (within(path, destination) ? undefined : path));
  }

  /** The destination path (or tree) moved. */
  moved(from: string, to: string): void {
    this.rewrite((path) => (within(path, from) ? to + path.slice(from.length) : path));
  }

  private rewrite(change: (path: string) => string | undefined): void {
    for (const [key, paths] of this.copies) {
      const kept = paths.flatMap((path) => change(path) ?? []);
      if (kept.length !== paths.length || kept.some((path, index) => path !== paths[index])) this.version++;
      if (kept.length === 0) this.copies.delete(key);
      else this.copies.set(key, kept);
    }
  }
}

function within(path: string, tree: string): boolean {
  return path === tree || path.startsWith(`${tree}/`);
}

function inodeKey(stats: Stats): string {
  return `${stats.dev}:${stats.ino}`;
}

/** Gives `destination` the owner, mode, xattrs and mtime `source` has now. */
export async function copyAttributes(source: string, destination: string, unsupported: Unsupported): Promise<void> {
  const stats = await lstat(source, { bigint: true });
  await applyAttributes(destination, Number(stats.mode & 0o7777n), readAttributes(source, stats), unsupported);
}

/** Copies one entry; a directory is created without its content (its mtime is set again after it). */
export async function copyEntry(
  source: string,
  destination: string,
  links: LinkMap,
  unsupported: Unsupported,
): Promise<Stats> {
  const stats = await lstat(source);
  if (stats.isDirectory()) {
    await mkdir(destination, { recursive: true });
  } else if (stats.isSymbolicLink()) {
    await symlink(await readlink(source), destination);
  } else if (stats.isFile()) {
    const copy = links.copyOf(stats);
    if (copy !== undefined) {
      await link(copy, destination);
      links.remember(stats, destination);
      return stats; // the inode has its attributes already
    }
    await copyFile(source, destination);
    links.remember(stats, destination);
  } else {
    const kind = specialKind(stats);
    makeSpecial(destination, kind, stats.mode & 0o7777, deviceNumbers(kind, stats.rdev));
  }
  await copyAttributes(source, destination, unsupported);
  return stats;
}

/** Copies a whole tree (used to place journal objects into a hydrated copy). */
export async function copyTree(
  source: string,
  destination: string,
  links: LinkMap,
  unsupported: Unsupported,
): Promise<void> {
  const stats = await copyEntry(source, destination, links, unsupported);
  if (!stats.isDirectory()) return;
  for (const name of (await readdir(source)).sort())
    await copyTree(join(source, name), join(destination, name), links, unsupported);
  await copyAttributes(source, destination, unsupported); // the entries made inside moved its mtime
}
