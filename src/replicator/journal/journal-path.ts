// Paths inside a replica as the journal handles them: relative, '/'-separated, no '.', '..' or
// empty components. They come from the wire and from files on disk, so both are checked the same.
import { join } from "node:path";
import { JournalCorruptError } from "./errors.js";

const maxPathBytes = 4096;

/** Returns why a path is not a safe relative replica path, or undefined when it is. "" names the root. */
export function unsafePathReason(path: string, allowRoot: boolean): string | undefined {
  if (path === "") return allowRoot ? undefined : "empty path";
  if (Buffer.byteLength(path) > maxPathBytes) return `longer than ${maxPathBytes} bytes`;
  if (path.includes("\0")) return "contains a NUL byte";
  if (path.startsWith("/")) return "absolute";
  if (path.split("/").some((component) => component === "" || component === "." || component === ".."))
    return "has an empty, '.' or '..' component";
  return undefined;
}

export function checkedJournalPath(path: string, allowRoot: boolean, where: string): string {
  const reason = unsafePathReason(path, allowRoot);
  if (reason !== undefined)
    throw new JournalCorruptError(where, `path ${JSON.stringify(path.slice(0, 100))} is ${reason}`);
  return path;
}

/** The absolute location of a checked relative path under root ("" is the root itself, e.g. an image). */
export function underRoot(root: string, path: string): string {
  return path === "" ? root : join(root, path);
}

export function parentOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? "" : path.slice(0, slash);
}
