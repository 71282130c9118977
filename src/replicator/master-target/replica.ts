// Applies validated changes to a replica directory or image. The replica never gains a path
// outside its root: wire paths are checked, no component of a parent may be a symlink, and
// the final component is opened with O_NOFOLLOW; owner, xattrs and times are set with the
// calls that act on a symlink itself (lchown, lsetxattr, utimensat with AT_SYMLINK_NOFOLLOW).
import { constants } from "node:fs";
import { chmod, link, lstat, mkdir, open, rename, rm, symlink, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import {
  EntryKind,
  type Attributes,
  type Change,
  type MakeEntry,
  type Marker,
} from "../../gen/ksr/replication/v1/replication.js";
import { fsyncDirectory } from "../durable-fs.js";
import {
  applyAttributes,
  deviceNumbers,
  invalidAttributes,
  isSpecialKind,
  makeSpecial,
  specialKind,
  type Unsupported,
} from "../file-attributes.js";
import { invalidMarker } from "../journal/point.js";
import { wireParent, wirePathComponents } from "../wire-path.js";
import type { ChangeJournal } from "./change-journal.js";

export class ApplyError extends Error {
  constructor(seq: number, message: string) {
    super(`change ${seq}: ${message}`);
    this.name = "ApplyError";
  }
}

export const maxFileOffset = 2 ** 50;
const maxOpenFiles = 256;
const permissionBits = 0o7777;

/** A replica the master target writes: a directory tree or a single image. */
export interface Replica {
  readonly kind: "tree" | "block";
  readonly root: string;
  /** Throws when a change can never be applied here (wrong kind of op, bad path, bad range). */
  validate(change: Change): void;
  apply(change: Change): Promise<void>;
  /** Makes every applied change durable. */
  sync(): Promise<void>;
  /** Syncs, closes open files and forgets what was verified: the replica is changed behind the applier (rollback). */
  release(): Promise<void>;
  close(): Promise<void>;
}

/** Ops that read other replica state, so replaying them after a crash is only safe at a barrier. */
export function needsBarrier(change: Change): boolean {
  return change.op?.$case === "rename" || change.op?.$case === "hardLink";
}

function checkRange(seq: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0)
    throw new ApplyError(seq, "offset and length must be non-negative integers");
  if (offset + length > maxFileOffset) throw new ApplyError(seq, `range ends beyond ${maxFileOffset} bytes`);
}

function checkMode(seq: number, mode: number): void {
  if (!Number.isInteger(mode) || mode < 0 || mode > permissionBits)
    throw new ApplyError(seq, `mode ${mode} has bits outside 0o7777`);
}

function checkPath(seq: number, path: string, rootAllowed = false): void {
  if (rootAllowed && path === "") return;
  try {
    wirePathComponents(path);
  } catch (error) {
    throw new ApplyError(seq, (error as Error).message);
  }
}

/** A marker that cannot become a recovery point rejects its whole frame before anything is applied. */
function checkMake(seq: number, make: MakeEntry): void {
  const { kind, rdevMajor, rdevMinor } = make;
  if (kind !== EntryKind.ENTRY_KIND_FILE && kind !== EntryKind.ENTRY_KIND_DIRECTORY && !isSpecialKind(kind))
    throw new ApplyError(seq, `make creates files, directories, FIFOs, sockets and devices; kind ${kind} is unknown`);
  const device = kind === EntryKind.ENTRY_KIND_CHAR_DEVICE || kind === EntryKind.ENTRY_KIND_BLOCK_DEVICE;
  if (!device && (rdevMajor !== 0 || rdevMinor !== 0))
    throw new ApplyError(seq, "only device nodes have device numbers");
  for (const number of [rdevMajor, rdevMinor])
    if (!Number.isInteger(number) || number < 0 || number > 0xffffffff)
      throw new ApplyError(seq, `device number ${number} is out of range`);
}

function checkMarker(seq: number, marker: Marker): void {
  const problem = invalidMarker(marker);
  if (problem !== undefined) throw new ApplyError(seq, `marker: ${problem}`);
}

async function writeZeros(handle: FileHandle, offset: number, length: number): Promise<void> {
  const zeros = Buffer.alloc(Math.min(length, 1024 * 1024));
  for (let done = 0; done < length; done += zeros.length)
    await handle.write(zeros, 0, Math.min(zeros.length, length - done), offset + done);
}

function isMissing(error: unknown): boolean {
  return (error as NodeJS.ErrnoException).code === "ENOENT";
}

/** Gone, or a parent component was replaced by a file (ENOTDIR). */
function isGoneOrReplaced(error: unknown): boolean {
  return isMissing(error) || (error as NodeJS.ErrnoException).code === "ENOTDIR";
}

export class TreeReplica implements Replica {
  readonly kind = "tree";
  private readonly verifiedDirectories = new Set<string>([""]);
  private readonly openFiles = new Map<string, FileHandle>();
  private readonly changedDirectories = new Set<string>();
  /** Entries whose owner, mode, xattrs or mtime changed: fsync'ed (not fdatasync'ed) at the next sync. */
  private readonly changedAttributes = new Set<string>();

  constructor(
    readonly root: string,
    private readonly journal: ChangeJournal,
    /** What this replica cannot keep (no CAP_CHOWN or CAP_MKNOD, xattrs the filesystem refuses): logged per path. */
    private readonly unsupported: Unsupported = () => undefined,
  ) {}

  validate(change: Change): void {
    const { seq, op } = change;
    if (op === undefined) throw new ApplyError(seq, "change has no operation");
    switch (op.$case) {
      case "write":
        checkPath(seq, op.value.path);
        checkRange(seq, op.value.offset, op.value.data.length);
        return;
      case "zero":
        checkPath(seq, op.value.path);
        checkRange(seq, op.value.offset, op.value.length);
        return;
      case "truncate":
        checkPath(seq, op.value.path);
        checkRange(seq, op.value.size, 0);
        return;
      case "make":
        checkPath(seq, op.value.path);
        checkMode(seq, op.value.mode);
        checkMake(seq, op.value);
        return;
      case "setAttributes": {
        checkPath(seq, op.value.path, true);
        checkMode(seq, op.value.mode);
        if (op.value.attributes === undefined) throw new ApplyError(seq, "setAttributes carries no attributes");
        const problem = invalidAttributes(op.value.attributes);
        if (problem !== undefined) throw new ApplyError(seq, problem);
        return;
      }
      case "setMode":
        checkPath(seq, op.value.path);
        checkMode(seq, op.value.mode);
        return;
      case "remove":
        checkPath(seq, op.value.path);
        return;
      case "rename":
        checkPath(seq, op.value.from);
        checkPath(seq, op.value.to);
        if (op.value.to === op.value.from || op.value.to.startsWith(`${op.value.from}/`))
          throw new ApplyError(seq, "cannot rename an entry into itself");
        return;
      case "symlink":
        checkPath(seq, op.value.path);
        if (op.value.target === "" || op.value.target.includes("\0") || op.value.target.length > 4096)
          throw new ApplyError(seq, "symlink target must be 1-4096 characters without NUL");
        return;
      case "hardLink":
        checkPath(seq, op.value.path);
        checkPath(seq, op.value.existing);
        return;
      case "marker":
        checkMarker(seq, op.value);
        return;
    }
  }

  async apply(change: Change): Promise<void> {
    const { op } = change;
    if (op === undefined) return;
    await this.journal.beforeChange(change, this.root);
    switch (op.$case) {
      case "write":
        await (
          await this.fileHandle(change.seq, op.value.path)
        ).write(op.value.data, 0, op.value.data.length, op.value.offset);
        return;
      case "zero":
        await writeZeros(await this.fileHandle(change.seq, op.value.path), op.value.offset, op.value.length);
        return;
      case "truncate":
        await (await this.fileHandle(change.seq, op.value.path)).truncate(op.value.size);
        return;
      case "make":
        await this.make(change.seq, op.value);
        return;
      case "setAttributes":
        if (op.value.attributes !== undefined)
          await this.setAttributes(change.seq, op.value.path, op.value.mode, op.value.attributes);
        return;
      case "setMode":
        await this.setMode(change.seq, op.value.path, op.value.mode);
        return;
      case "remove":
        await this.remove(change.seq, op.value.path);
        return;
      case "rename":
        await this.rename(change.seq, op.value.from, op.value.to);
        return;
      case "symlink":
        await this.symlink(change.seq, op.value.path, op.value.target);
        return;
      case "hardLink":
        await this.hardLink(change.seq, op.value.path, op.value.existing);
        return;
      case "marker":
        return;
    }
  }

  async sync(): Promise<void> {
    await this.closeFiles(() => true);
    for (const path of this.changedAttributes) await this.syncAttributes(path);
    this.changedAttributes.clear();
    for (const directory of this.changedDirectories) {
      try {
        await fsyncDirectory(join(this.root, directory));
      } catch (error) {
        // Removed or replaced by a file later in the batch: the removal synced its parent instead.
        if (!isGoneOrReplaced(error)) throw error;
      }
    }
    this.changedDirectories.clear();
  }

  async release(): Promise<void> {
    await this.sync();
    this.forgetVerifiedDirectories();
  }

  async close(): Promise<void> {
    await this.sync();
  }

  private absolute(path: string): string {
    return join(this.root, path);
  }

  /** Verifies every parent component is a real directory inside the root (never a symlink). */
  private async checkParent(seq: number, path: string): Promise<void> {
    const parent = wireParent(path);
    if (this.verifiedDirectories.has(parent)) return;
    let prefix = "";
    for (const component of parent.split("/")) {
      prefix = prefix === "" ? component : `${prefix}/${component}`;
      if (this.verifiedDirectories.has(prefix)) continue;
      let stats;
      try {
        stats = await lstat(this.absolute(prefix));
      } catch (error) {
        if (isMissing(error)) throw new ApplyError(seq, `parent directory "${prefix}" does not exist`);
        throw error;
      }
      if (!stats.isDirectory())
        throw new ApplyError(
          seq,
          `"${prefix}" is ${stats.isSymbolicLink() ? "a symlink" : "not a directory"}; refusing to write through it`,
        );
      this.verifiedDirectories.add(prefix);
    }
  }

  /** Directory structure changed: forget which parents were verified. */
  private forgetVerifiedDirectories(): void {
    this.verifiedDirectories.clear();
    this.verifiedDirectories.add("");
  }

  private async fileHandle(seq: number, path: string, createMode?: number): Promise<FileHandle> {
    const cached = this.openFiles.get(path);
    if (cached !== undefined) return cached;
    await this.checkParent(seq, path);
    if (this.openFiles.size >= maxOpenFiles) await this.closeFiles(() => true);
    const flags = constants.O_WRONLY | constants.O_NOFOLLOW | (createMode === undefined ? 0 : constants.O_CREAT);
    let handle: FileHandle;
    try {
      handle = await open(this.absolute(path), flags, createMode);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ELOOP") throw new ApplyError(seq, `"${path}" is a symlink in the replica; refusing to follow it`);
      if (code === "ENOENT") throw new ApplyError(seq, `"${path}" does not exist in the replica`);
      if (code === "EISDIR") throw new ApplyError(seq, `"${path}" is a directory in the replica`);
      throw error;
    }
    if (createMode !== undefined) this.changedDirectories.add(wireParent(path));
    this.openFiles.set(path, handle);
    return handle;
  }

  private async closeFiles(matching: (path: string) => boolean): Promise<void> {
    for (const [path, handle] of this.openFiles) {
      if (!matching(path)) continue;
      this.openFiles.delete(path);
      try {
        if (this.changedAttributes.delete(path)) await handle.sync();
        else await handle.datasync();
      } finally {
        await handle.close();
      }
    }
  }

  /**
   * Makes attribute changes durable. Files and directories are fsync'ed; symlinks and special
   * files cannot be opened safely (a FIFO blocks, a device may act), so their directory is, which
   * on journalling filesystems commits their inodes too.
   */
  private async syncAttributes(path: string): Promise<void> {
    const stats = await lstat(this.absolute(path)).catch((error: unknown) => {
      if (isGoneOrReplaced(error)) return undefined;
      throw error;
    });
    if (stats === undefined) return;
    if (!stats.isFile() && !stats.isDirectory()) {
      this.changedDirectories.add(wireParent(path));
      return;
    }
    const handle = await open(this.absolute(path), constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  private async setAttributes(seq: number, path: string, mode: number, attributes: Attributes): Promise<void> {
    if (path !== "") await this.checkParent(seq, path);
    // A path a later change removed (replayed after a crash) is skipped: the agent sends attributes right after the entry.
    const report: Unsupported = (_absolute, what) => {
      this.unsupported(path, what);
    };
    if (await applyAttributes(this.absolute(path), mode, attributes, report)) this.changedAttributes.add(path);
  }

  private async make(seq: number, make: MakeEntry): Promise<void> {
    const { path, kind, mode } = make;
    if (isSpecialKind(kind)) {
      await this.makeSpecial(seq, make);
      return;
    }
    if (kind === EntryKind.ENTRY_KIND_DIRECTORY) {
      await this.checkParent(seq, path);
      try {
        await mkdir(this.absolute(path), { mode });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
        const stats = await lstat(this.absolute(path));
        if (!stats.isDirectory()) throw new ApplyError(seq, `"${path}" exists and is not a directory`);
      }
      await chmod(this.absolute(path), mode);
      this.changedDirectories.add(wireParent(path));
      return;
    }
    const handle = await this.fileHandle(seq, path, mode);
    await handle.chmod(mode);
  }

  /** mknod of a FIFO, socket or device node; an entry of the same kind and numbers is kept (a replay). */
  private async makeSpecial(seq: number, make: MakeEntry): Promise<void> {
    const { path, kind, mode } = make;
    await this.checkParent(seq, path);
    const absolute = this.absolute(path);
    const existing = await lstat(absolute, { bigint: true }).catch((error: unknown) => {
      if (isMissing(error)) return undefined;
      throw error;
    });
    if (existing?.isDirectory() === true) throw new ApplyError(seq, `"${path}" is a directory in the replica`);
    if (existing !== undefined) {
      const device = deviceNumbers(kind, existing.rdev);
      if (specialKind(existing) === kind && device.rdevMajor === make.rdevMajor && device.rdevMinor === make.rdevMinor)
        return;
      await this.closeFiles((open) => open === path);
      await unlink(absolute);
    }
    try {
      makeSpecial(absolute, kind, mode, make);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EPERM") throw error;
      this.unsupported(path, `${EntryKind[kind]} (mknod: EPERM, the master target needs CAP_MKNOD)`);
      return;
    }
    await chmod(absolute, mode); // mknod applied the umask
    this.changedDirectories.add(wireParent(path));
  }

  private async setMode(seq: number, path: string, mode: number): Promise<void> {
    await this.checkParent(seq, path);
    const stats = await lstat(this.absolute(path)).catch((error: unknown) => {
      if (isMissing(error)) throw new ApplyError(seq, `"${path}" does not exist in the replica`);
      throw error;
    });
    if (stats.isSymbolicLink()) return; // Linux symlinks have no mode of their own
    await chmod(this.absolute(path), mode);
  }

  private async remove(seq: number, path: string): Promise<void> {
    await this.checkParent(seq, path);
    await this.closeFiles((open) => open === path || open.startsWith(`${path}/`));
    await rm(this.absolute(path), { recursive: true, force: true });
    this.forgetVerifiedDirectories();
    this.changedDirectories.add(wireParent(path));
  }

  private async rename(seq: number, from: string, to: string): Promise<void> {
    await this.checkParent(seq, from);
    await this.checkParent(seq, to);
    await this.closeFiles(() => true);
    try {
      await lstat(this.absolute(from));
    } catch (error) {
      if (isMissing(error)) return; // already renamed before a crash: the barrier made this replay safe
      throw error;
    }
    await rename(this.absolute(from), this.absolute(to)).catch(async (error: unknown) => {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== "EISDIR" && code !== "ENOTEMPTY" && code !== "EEXIST" && code !== "ENOTDIR") throw error;
      // The source replaced a directory by another entry (or the reverse): the old one goes.
      await rm(this.absolute(to), { recursive: true, force: true });
      await rename(this.absolute(from), this.absolute(to));
    });
    this.forgetVerifiedDirectories();
    this.changedDirectories.add(wireParent(from));
    this.changedDirectories.add(wireParent(to));
  }

  private async symlink(seq: number, path: string, target: string): Promise<void> {
    await this.checkParent(seq, path);
    await this.closeFiles((open) => open === path);
    try {
      await unlink(this.absolute(path));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "EISDIR" || code === "EPERM") throw new ApplyError(seq, `"${path}" is a directory in the replica`);
      if (!isMissing(error)) throw error;
    }
    await symlink(target, this.absolute(path));
    this.forgetVerifiedDirectories();
    this.changedDirectories.add(wireParent(path));
  }

  private async hardLink(seq: number, path: string, existing: string): Promise<void> {
    await this.checkParent(seq, path);
    await this.checkParent(seq, existing);
    await this.closeFiles(() => true);
    const target = await lstat(this.absolute(existing)).catch((error: unknown) => {
      if (isMissing(error)) throw new ApplyError(seq, `hard link source "${existing}" does not exist`);
      throw error;
    });
    if (!target.isFile()) throw new ApplyError(seq, `hard link source "${existing}" is not a regular file`);
    try {
      const current = await lstat(this.absolute(path));
      if (current.ino === target.ino) return; // replayed after a crash
      if (current.isDirectory()) throw new ApplyError(seq, `"${path}" is a directory in the replica`);
      await unlink(this.absolute(path));
    } catch (error) {
      if (!isMissing(error)) throw error;
    }
    await link(this.absolute(existing), this.absolute(path));
    this.changedDirectories.add(wireParent(path));
  }
}

/** A block device or disk image: only writes, zero ranges and size changes of the whole volume. */
export class BlockReplica implements Replica {
  readonly kind = "block";
  private handle: FileHandle | undefined;

  constructor(
    readonly root: string,
    private readonly journal: ChangeJournal,
  ) {}

  validate(change: Change): void {
    const { seq, op } = change;
    if (op === undefined) throw new ApplyError(seq, "change has no operation");
    const path = "path" in op.value ? op.value.path : undefined;
    if (path !== undefined && path !== "") throw new ApplyError(seq, "block replicas take no paths");
    switch (op.$case) {
      case "write":
        checkRange(seq, op.value.offset, op.value.data.length);
        return;
      case "zero":
        checkRange(seq, op.value.offset, op.value.length);
        return;
      case "truncate":
        checkRange(seq, op.value.size, 0);
        return;
      case "marker":
        checkMarker(seq, op.value);
        return;
      default:
        throw new ApplyError(seq, `"${op.$case}" does not apply to a block replica`);
    }
  }

  async apply(change: Change): Promise<void> {
    const { op } = change;
    if (op === undefined) return;
    await this.journal.beforeChange(change, this.root);
    const handle = await this.image();
    switch (op.$case) {
      case "write":
        await handle.write(op.value.data, 0, op.value.data.length, op.value.offset);
        return;
      case "zero":
        await writeZeros(handle, op.value.offset, op.value.length);
        return;
      case "truncate":
        await handle.truncate(op.value.size);
        return;
      default:
        return;
    }
  }

  async sync(): Promise<void> {
    await this.handle?.datasync();
  }

  async release(): Promise<void> {
    await this.close();
  }

  async close(): Promise<void> {
    await this.sync();
    await this.handle?.close();
    this.handle = undefined;
  }

  private async image(): Promise<FileHandle> {
    this.handle ??= await open(this.root, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    return this.handle;
  }
}
