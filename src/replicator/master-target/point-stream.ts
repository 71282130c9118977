// Streams a materialised recovery point (a directory tree or an image) as RecoveryPoints.Hydrate
// replies: entries in walk order, file data in chunks, further names of a file as hard links.
// A cursor from the client skips what it already holds, so an interrupted copy resumes.
import type { Stats } from "node:fs";
import { lstat, open, readlink } from "node:fs/promises";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { EntryKind, type HydrateReply, type PointEntry } from "../../gen/ksr/replication/v1/replication.js";
import { CallError } from "../grpc-util.js";
import { walk, walkOrder } from "../journal/materialise.js";
import { readExactly } from "../journal/durable.js";
import { maxFileOffset } from "./replica.js";
import { wirePathComponents } from "../wire-path.js";
import { deviceNumbers, readAttributes, specialKind } from "../file-attributes.js";

export interface StreamCursor {
  path: string;
  offset: number;
}

export const chunkBytes = 1024 * 1024;
const zeros = Buffer.alloc(chunkBytes);

/** Rejects a cursor that could name anything outside the point (checked before any file is touched). */
export function checkCursor(cursor: StreamCursor): void {
  if (cursor.path !== "") {
    try {
      wirePathComponents(cursor.path);
    } catch (error) {
      throw new CallError(status.INVALID_ARGUMENT, `resume cursor: ${(error as Error).message}`);
    }
  }
  if (!Number.isSafeInteger(cursor.offset) || cursor.offset < 0 || cursor.offset > maxFileOffset)
    throw new CallError(status.INVALID_ARGUMENT, `resume cursor offset ${cursor.offset} is out of range`);
}

/** Every path of the point in stream order, the root ("") first. */
async function* streamOrder(root: string, rootStats: Stats): AsyncGenerator<string> {
  yield "";
  if (rootStats.isDirectory()) yield* walk(root, "");
}

/** Entry and byte counts for the client's progress. */
export async function measurePoint(root: string): Promise<{ entries: number; bytes: number }> {
  let entries = 0;
  let bytes = 0;
  for await (const path of streamOrder(root, await lstat(root))) {
    const stats = await lstat(join(root, path));
    entries++;
    if (stats.isFile()) bytes += stats.size;
  }
  return { entries, bytes };
}

/** The replies for everything at or after the cursor. The cursor's path must exist in the point. */
export async function* pointReplies(root: string, cursor: StreamCursor): AsyncGenerator<HydrateReply> {
  const rootStats = await lstat(root);
  if (!(await inPoint(root, cursor.path)))
    throw new CallError(status.NOT_FOUND, `resume cursor path "${cursor.path}" is not in this point`);
  const firstNames = new Map<string, string>();
  for await (const path of streamOrder(root, rootStats)) {
    const stats = path === "" ? rootStats : await lstat(join(root, path));
    const hardLinkTo = linkedName(firstNames, stats, path);
    const order = walkOrder(path, cursor.path);
    if (order < 0) continue; // the client holds it already
    const entry = await describe(root, path, stats, hardLinkTo);
    if (entry === undefined) continue;
    yield { item: { $case: "entry", value: entry } };
    if (entry.kind === EntryKind.ENTRY_KIND_FILE && hardLinkTo === "")
      yield* dataChunks(join(root, path), order === 0 ? cursor.offset : 0, stats.size);
  }
  yield { item: { $case: "done", value: true } };
}

/** Whether the point has an entry at path, never looking through a symlink inside the point. */
async function inPoint(root: string, path: string): Promise<boolean> {
  let parent = "";
  for (const component of path === "" ? [] : path.split("/")) {
    if ((await lstat(join(root, parent)).catch(() => undefined))?.isDirectory() !== true) return false;
    parent = parent === "" ? component : `${parent}/${component}`;
  }
  return (await lstat(join(root, path)).catch(() => undefined)) !== undefined;
}

/** The first name of a multiply-linked file, or "" when this is its first name. */
function linkedName(firstNames: Map<string, string>, stats: Stats, path: string): string {
  if (!stats.isFile() || stats.nlink <= 1) return "";
  const key = `${stats.dev}:${stats.ino}`;
  const first = firstNames.get(key);
  if (first !== undefined) return first;
  firstNames.set(key, path);
  return "";
}

async function describe(root: string, path: string, stats: Stats, hardLinkTo: string): Promise<PointEntry | undefined> {
  const absolute = join(root, path);
  const base = {
    path,
    mode: stats.mode & 0o7777,
    size: 0,
    linkTarget: "",
    hardLinkTo,
    // A further name of a file shares the first name's inode, attributes included.
    attributes: hardLinkTo === "" ? readAttributes(absolute, await lstat(absolute, { bigint: true })) : undefined,
    rdevMajor: 0,
    rdevMinor: 0,
  };
  if (stats.isDirectory()) return { ...base, kind: EntryKind.ENTRY_KIND_DIRECTORY };
  if (stats.isSymbolicLink())
    return { ...base, kind: EntryKind.ENTRY_KIND_SYMLINK, mode: 0, linkTarget: await readlink(absolute) };
  if (stats.isFile()) return { ...base, kind: EntryKind.ENTRY_KIND_FILE, size: stats.size };
  const kind = specialKind(stats);
  return { ...base, kind, ...deviceNumbers(kind, stats.rdev) };
}

/** Data from `offset` on; all-zero chunks are left out (the client's file reads back zeros there). */
async function* dataChunks(path: string, offset: number, size: number): AsyncGenerator<HydrateReply> {
  const handle = await open(path, "r");
  try {
    for (let position = offset; position < size; position += chunkBytes) {
      const data = await readExactly(handle, Math.min(chunkBytes, size - position), position);
      if (data.length === 0) return;
      if (data.equals(zeros.subarray(0, data.length))) continue;
      yield { item: { $case: "chunk", value: { offset: position, data } } };
    }
  } finally {
    await handle.close();
  }
}
