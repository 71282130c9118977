// The project's native addon (native/, compiled by node-gyp during `npm ci`): the few syscalls
// Node's fs does not make. Loaded once, on first use, so programs that never need it start
// without it.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

export interface NativeAddon {
  /** llistxattr(2): the names of a path's extended attributes, never following a symlink. */
  listXattrs(path: string): string[];
  /** lgetxattr(2): the value, or null when the attribute does not exist. */
  getXattr(path: string, name: string): Buffer | null;
  /** lsetxattr(2). */
  setXattr(path: string, name: string, value: Buffer): void;
  /** lremovexattr(2); a missing attribute is not an error. */
  removeXattr(path: string, name: string): void;
  /** mknod(2); `mode` carries the type (S_IFIFO, S_IFSOCK, S_IFCHR or S_IFBLK). */
  mknod(path: string, mode: number, major: number, minor: number): void;
  /** utimensat(2) with AT_SYMLINK_NOFOLLOW: the exact mtime; the atime is left as it is. */
  setMtime(path: string, seconds: number, nanoseconds: number): void;
}

const binary = fileURLToPath(new URL("../../../native/build/Release/ksr_native.node", import.meta.url));
let loaded: NativeAddon | undefined;

export function nativeAddon(): NativeAddon {
  if (loaded !== undefined) return loaded;
  if (!existsSync(binary))
    throw new Error(
      `the native addon ${binary} is missing: run "npm ci" or "npm run build:native" (needs g++ and make)`,
    );
  loaded = createRequire(import.meta.url)(binary) as NativeAddon;
  return loaded;
}
