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

/** The chunk forEachBlock reads at once: 4 MiB, rounded down to whole blocks. */
export function readChunkBytesFor(blockBytes: number): number {
  return Math.max(blockBytes, Math.floor(readChunkBytes / blockBytes) * blockBytes);
}

/** What forEachBlock reads from: an open file, or blocks a cut read earlier (cut-freeze.ts). */
export interface BlockReader {
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  close(): Promise<void>;
}

/**
 * Calls back with consecutive blocks of a file from `from` (a block boundary) to `size` (the
 * last may be short); reads in large chunks. Blocks are views of a reused buffer: copy what must
 * outlive the callback. Returns false when the file ended before `size` (it shrank while being read).
 * `chunk`, a multiple of `blockBytes`, is the buffer to read into (default: one allocated here).
 */
export async function forEachBlock(
  handle: BlockReader,
  size: number,
  blockBytes: number,
  onBlock: (index: number, block: Buffer) => void | Promise<void>,
  from = 0,
  chunk: Buffer = Buffer.allocUnsafe(Math.min(readChunkBytesFor(blockBytes), Math.max(blockBytes, size - from))),
): Promise<boolean> {
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
