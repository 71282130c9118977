// Paths arrive from the network: they are checked before anything touches the disk, so a
// hostile or corrupt message can never name a file outside the replica's root.
import { posix } from "node:path";

export const maxPathBytes = 4096;
const maxComponentBytes = 255;

export class WirePathError extends Error {
  constructor(path: string, reason: string) {
    super(`rejected path ${JSON.stringify(path.slice(0, 200))}: ${reason}`);
    this.name = "WirePathError";
  }
}

/** Returns the path's components when it is a safe relative path; throws otherwise. */
export function wirePathComponents(path: string): string[] {
  if (path.length === 0) throw new WirePathError(path, "empty path");
  if (Buffer.byteLength(path) > maxPathBytes) throw new WirePathError(path, `longer than ${maxPathBytes} bytes`);
  if (path.includes("\0")) throw new WirePathError(path, "contains a NUL byte");
  if (path.startsWith("/")) throw new WirePathError(path, "absolute paths are not allowed");
  const components = path.split("/");
  for (const component of components) {
    if (component === "") throw new WirePathError(path, "empty component (leading, trailing or double slash)");
    if (component === "." || component === "..")
      throw new WirePathError(path, `'${component}' components are not allowed`);
    if (Buffer.byteLength(component) > maxComponentBytes)
      throw new WirePathError(path, `a component is longer than ${maxComponentBytes} bytes`);
  }
  return components;
}

/** The parent of a validated relative path, "" for top-level entries. */
export function wireParent(path: string): string {
  const parent = posix.dirname(path);
  return parent === "." ? "" : parent;
}

/** Converts a relative path found on disk (platform separators) to the wire form. */
export function toWirePath(relative: string): string {
  return relative.split(/[\\/]/).join("/");
}
