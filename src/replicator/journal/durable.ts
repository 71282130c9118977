// File helpers of the journal: durable replacement of small files, exact reads, and lstat that
// treats a missing entry as an answer rather than an error.
import { constants, type Stats } from "node:fs";
import { lstat, open, rename, writeFile, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";
import { fsyncDirectory } from "../durable-fs.js";

/** Replaces a small file atomically: a crash leaves either the old or the new content. */
export async function writeFileAtomic(path: string, content: string): Promise<void> {
  const temporary = `${path}.tmp`;
  await writeFile(temporary, content, { mode: 0o600 });
  const handle = await open(temporary, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temporary, path);
  await fsyncDirectory(dirname(path));
}

/** Reads `length` bytes at `position`, or fewer when the file ends first. */
export async function readExactly(handle: FileHandle, length: number, position: number): Promise<Buffer> {
  const buffer = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(buffer, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done === length ? buffer : buffer.subarray(0, done);
}

/** lstat, or undefined when the entry (or a parent) does not exist. */
export async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw error;
  }
}

/** Whether an entry is at the path (a symlink counts as itself, never followed). */
export async function exists(path: string): Promise<boolean> {
  return (await lstatOrUndefined(path)) !== undefined;
}
