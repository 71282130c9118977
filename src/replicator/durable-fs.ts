// Small filesystem helpers whose point is durability or not following links.
import { constants } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";

/** fsync a directory so entries created, renamed or removed in it survive a crash. */
export async function fsyncDirectory(path: string): Promise<void> {
  const handle = await open(path, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Opens a regular file, never blocking on a FIFO nor following a symlink (O_NONBLOCK, O_NOFOLLOW);
 * anything else at the path (a FIFO, socket or device replaced it) is closed again and refused
 * with code ENOTREGULAR, so no device is ever read or written as if it were file content.
 */
export async function openRegularFile(path: string, flags: number, mode?: number): Promise<FileHandle> {
  const handle = await open(path, flags | constants.O_NOFOLLOW | constants.O_NONBLOCK, mode);
  if ((await handle.stat()).isFile()) return handle;
  await handle.close();
  throw Object.assign(new Error(`${path} is not a regular file`), { code: "ENOTREGULAR" });
}

const readChunkBytes = 4 * 1024 * 1024;

/**
 * Calls back with consecutive blocks of a file from `from` (a block boundary) to `size` (the
 * last may be short); reads in large chunks. Blocks are views of a reused buffer: copy what must
 * outlive the callback. Returns false when the file ended before `size` (it shrank while being read).
 */
export async function forEachBlock(
  handle: FileHandle,
  size: number,
  blockBytes: number,
  onBlock: (index: number, block: Buffer) => void | Promise<void>,
  from = 0,
): Promise<boolean> {
  const chunkBytes = Math.max(blockBytes, Math.floor(readChunkBytes / blockBytes) * blockBytes);
  const chunk = Buffer.allocUnsafe(Math.min(chunkBytes, Math.max(blockBytes, size - from)));
  for (let offset = from; offset < size; offset += chunk.length) {
    const wanted = Math.min(chunk.length, size - offset);
    const { bytesRead } = await handle.read(chunk, 0, wanted, offset);
    for (let start = 0; start < bytesRead; start += blockBytes) {
      await onBlock((offset + start) / blockBytes, chunk.subarray(start, Math.min(start + blockBytes, bytesRead)));
    }
    if (bytesRead < wanted) return false;
  }
  return true;
}
