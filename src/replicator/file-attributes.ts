// The metadata `rsync -aHAX --numeric-ids` keeps besides content and permission bits: numeric
// owner and group, the mtime to the nanosecond, extended attributes (POSIX ACLs and file
// capabilities included) and the kind and device numbers of special files. Read and applied
// without ever following a symlink; applied in rsync's order (owner, mode, xattrs, mtime), since
// chown clears setuid bits and capabilities and any change inside a directory bumps its mtime.
import { createHash } from "node:crypto";
import type { BigIntStats } from "node:fs";
import { chmod, lchown, lstat } from "node:fs/promises";
import { EntryKind, type Attributes, type Xattr } from "../gen/ksr/replication/v1/replication.js";
import { nativeAddon } from "../native/addon.js";

export const maxXattrValueBytes = 64 * 1024;
export const maxXattrNameBytes = 255;
const maxXattrsPerEntry = 1024;
const maxXattrBytesPerEntry = 1024 * 1024;
const maxId = 0xfffffffe; // 0xffffffff is chown's "leave unchanged"
const nanosecondsPerSecond = 1_000_000_000n;

/**
 * The namespaces kept, as rsync -X running as root keeps them. Other system.* names (NFSv4 ACLs,
 * ext4's inline data) are filesystem internals, not attributes a replica can carry.
 */
export function keptXattr(name: string): boolean {
  return (
    name.startsWith("user.") ||
    name.startsWith("trusted.") ||
    name.startsWith("security.") ||
    name === "system.posix_acl_access" ||
    name === "system.posix_acl_default"
  );
}

/** The mtime of bigint stats as seconds and nanoseconds (nanoseconds always 0..999999999). */
export function mtimeOf(stats: BigIntStats): { mtimeSec: number; mtimeNsec: number } {
  let seconds = stats.mtimeNs / nanosecondsPerSecond;
  let nanoseconds = stats.mtimeNs % nanosecondsPerSecond;
  if (nanoseconds < 0n) {
    nanoseconds += nanosecondsPerSecond;
    seconds -= 1n;
  }
  return { mtimeSec: Number(seconds), mtimeNsec: Number(nanoseconds) };
}

/** Extended attributes of the kept namespaces, sorted by name; attributes vanishing meanwhile are skipped. */
export function readXattrs(path: string): Xattr[] {
  const addon = nativeAddon();
  let names: string[];
  try {
    names = addon.listXattrs(path);
  } catch (error) {
    if (isUnsupported(error)) return [];
    throw error;
  }
  const xattrs: Xattr[] = [];
  for (const name of names.filter(keptXattr).sort(byteOrder)) {
    const value = addon.getXattr(path, name);
    if (value !== null) xattrs.push({ name, value });
  }
  return xattrs;
}

/** Everything the wire carries about an entry besides kind, mode and content. */
export function readAttributes(path: string, stats: BigIntStats): Attributes {
  return { uid: Number(stats.uid), gid: Number(stats.gid), ...mtimeOf(stats), xattrs: readXattrs(path) };
}

/** A short value that changes whenever the attributes do (kept in the agent's manifest). */
export function attributesKey(attributes: Attributes): string {
  const hash = createHash("sha256");
  for (const { name, value } of attributes.xattrs) hash.update(`${name}\0${value.length}\0`).update(value);
  const xattrs = attributes.xattrs.length === 0 ? "-" : hash.digest("base64url").slice(0, 22);
  return `${attributes.uid}:${attributes.gid}:${attributes.mtimeSec}.${attributes.mtimeNsec}:${xattrs}`;
}

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** Why attributes from the wire are unacceptable, or undefined when they are fine. */
export function invalidAttributes(attributes: Attributes): string | undefined {
  const { uid, gid, mtimeSec, mtimeNsec, xattrs } = attributes;
  for (const [name, id] of [
    ["uid", uid],
    ["gid", gid],
  ] as const)
    if (!Number.isInteger(id) || id < 0 || id > maxId) return `${name} ${id} is not a valid id (0 to ${maxId})`;
  if (!Number.isSafeInteger(mtimeSec)) return `mtime seconds ${mtimeSec} is out of range`;
  if (!Number.isInteger(mtimeNsec) || mtimeNsec < 0 || mtimeNsec >= 1e9)
    return `mtime nanoseconds ${mtimeNsec} is not 0 to 999999999`;
  if (xattrs.length > maxXattrsPerEntry) return `${xattrs.length} extended attributes (at most ${maxXattrsPerEntry})`;
  let total = 0;
  let previous: string | undefined;
  for (const { name, value } of xattrs) {
    const nameBytes = Buffer.byteLength(name);
    if (nameBytes === 0 || nameBytes > maxXattrNameBytes || name.includes("\0"))
      return `extended attribute name ${JSON.stringify(name.slice(0, 60))} must be 1-${maxXattrNameBytes} bytes without NUL`;
    if (!keptXattr(name))
      return `extended attribute ${JSON.stringify(name.slice(0, 60))} is not in a replicated namespace`;
    if (value.length > maxXattrValueBytes)
      return `extended attribute ${name} holds ${value.length} bytes (at most ${maxXattrValueBytes})`;
    if (previous !== undefined && byteOrder(previous, name) >= 0)
      return "extended attributes must be sorted by name without duplicates";
    previous = name;
    total += nameBytes + value.length;
  }
  if (total > maxXattrBytesPerEntry)
    return `extended attributes hold ${total} bytes (at most ${maxXattrBytesPerEntry} per entry)`;
  return undefined;
}

/** Errors that mean "this filesystem or this process cannot keep that", as opposed to a failure. */
export function isUnsupported(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "ENOTSUP" || code === "EOPNOTSUPP" || code === "EPERM" || code === "EINVAL" || code === "ENOSYS";
}

/** Called with a path and what of it could not be kept (the caller logs or reports it). */
export type Unsupported = (path: string, what: string) => void;

/**
 * Makes the entry's owner, mode (unless a symlink), extended attributes and mtime the given ones.
 * What the filesystem or the process's capabilities refuse is passed to `unsupported`; other
 * errors throw. Returns false when the path does not exist.
 */
export async function applyAttributes(
  path: string,
  mode: number | undefined,
  attributes: Attributes,
  unsupported: Unsupported,
): Promise<boolean> {
  let stats;
  try {
    stats = await lstat(path, { bigint: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw error;
  }
  const attempt = async (what: string, step: () => unknown): Promise<void> => {
    try {
      await step();
    } catch (error) {
      if (!isUnsupported(error)) throw error;
      unsupported(path, `${what} (${(error as NodeJS.ErrnoException).code})`);
    }
  };
  if (Number(stats.uid) !== attributes.uid || Number(stats.gid) !== attributes.gid)
    await attempt(`owner ${attributes.uid}:${attributes.gid}`, () => lchown(path, attributes.uid, attributes.gid));
  // After chown, which clears setuid and setgid bits.
  if (mode !== undefined && !stats.isSymbolicLink()) await attempt(`mode ${mode.toString(8)}`, () => chmod(path, mode));
  applyXattrs(path, attributes.xattrs, unsupported);
  await attempt("mtime", () => {
    nativeAddon().setMtime(path, attributes.mtimeSec, attributes.mtimeNsec);
  });
  return true;
}

/** Makes the kept extended attributes exactly `wanted` (after chown, which drops security.capability). */
export function applyXattrs(path: string, wanted: readonly Xattr[], unsupported: Unsupported): void {
  const addon = nativeAddon();
  const present = new Map(readXattrs(path).map(({ name, value }) => [name, value]));
  for (const name of present.keys()) {
    if (wanted.some((xattr) => xattr.name === name)) continue;
    try {
      addon.removeXattr(path, name);
    } catch (error) {
      if (!isUnsupported(error)) throw error;
      unsupported(path, `removing extended attribute ${name} (${(error as NodeJS.ErrnoException).code})`);
    }
  }
  for (const { name, value } of wanted) {
    if (present.get(name)?.equals(value) === true) continue;
    try {
      addon.setXattr(path, name, Buffer.from(value));
    } catch (error) {
      if (!isUnsupported(error)) throw error;
      unsupported(path, `extended attribute ${name} (${(error as NodeJS.ErrnoException).code})`);
    }
  }
}

// ------------------------------------------------------------------------------------ special files

const fileTypes: [EntryKind, number][] = [
  [EntryKind.ENTRY_KIND_FIFO, 0o010000],
  [EntryKind.ENTRY_KIND_CHAR_DEVICE, 0o020000],
  [EntryKind.ENTRY_KIND_BLOCK_DEVICE, 0o060000],
  [EntryKind.ENTRY_KIND_SOCKET, 0o140000],
];

export function isSpecialKind(kind: EntryKind): boolean {
  return fileTypes.some(([special]) => special === kind);
}

export function specialKind(stats: {
  isFIFO(): boolean;
  isCharacterDevice(): boolean;
  isBlockDevice(): boolean;
  isSocket(): boolean;
}): EntryKind {
  if (stats.isFIFO()) return EntryKind.ENTRY_KIND_FIFO;
  if (stats.isCharacterDevice()) return EntryKind.ENTRY_KIND_CHAR_DEVICE;
  if (stats.isBlockDevice()) return EntryKind.ENTRY_KIND_BLOCK_DEVICE;
  if (stats.isSocket()) return EntryKind.ENTRY_KIND_SOCKET;
  return EntryKind.ENTRY_KIND_UNSPECIFIED;
}

export interface DeviceNumbers {
  rdevMajor: number;
  rdevMinor: number;
}

/** glibc's major()/minor() of a dev_t as stat reports it; zero for FIFOs and sockets. */
export function deviceNumbers(kind: EntryKind, rdev: bigint | number): DeviceNumbers {
  if (kind !== EntryKind.ENTRY_KIND_CHAR_DEVICE && kind !== EntryKind.ENTRY_KIND_BLOCK_DEVICE)
    return { rdevMajor: 0, rdevMinor: 0 };
  const dev = BigInt(rdev);
  return {
    rdevMajor: Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & 0xfffff000n)),
    rdevMinor: Number((dev & 0xffn) | ((dev >> 12n) & 0xffffff00n)),
  };
}

/** mknod(2) of a FIFO, socket or device node with the given permission bits. */
export function makeSpecial(path: string, kind: EntryKind, mode: number, device: DeviceNumbers): void {
  const type = fileTypes.find(([special]) => special === kind)?.[1];
  if (type === undefined) throw new Error(`entry kind ${kind} is not a special file`);
  nativeAddon().mknod(path, type | (mode & 0o7777), device.rdevMajor, device.rdevMinor);
}
