// Undoes record groups against a directory or image: the replica itself (rollback) or a private
// copy of it (hydrate). Every step is absolute and checks the state first, so running a group
// again after an interruption gives the same result.
import { constants } from "node:fs";
import { chmod, open, rename, rm } from "node:fs/promises";
import { copyTree, LinkMap } from "./copy-tree.js";
import { fsyncDirectory } from "../durable-fs.js";
import { applyAttributes } from "../file-attributes.js";
import { lstatOrUndefined } from "./durable.js";
import { JournalCorruptError } from "./errors.js";
import { parentOf, underRoot } from "./journal-path.js";
import type { SavedAttributes, UndoRecord } from "./record.js";

/** Rollback moves journal objects back (no copy); hydration copies them and leaves the journal intact. */
export type ObjectPlacement = "move" | "copy";

export class UndoApplier {
  /** Files and directories changed since the last flush, made durable before progress is saved. */
  private readonly touched = new Set<string>();
  /** What the destination could not keep (owner or xattrs refused there), one line per path. */
  readonly notKept: string[] = [];
  private readonly keepNote = (where: string, what: string): void => {
    this.notKept.push(`${where}: ${what}`);
  };

  constructor(
    private readonly root: string,
    private readonly objectPath: (object: string) => string,
    private readonly placement: ObjectPlacement,
    /** Hydration only: where each multiply-linked inode was copied, so links survive. */
    readonly links: LinkMap = new LinkMap(),
  ) {}

  /** Undoes one change: its records in reverse order. */
  async undoGroup(records: readonly UndoRecord[]): Promise<void> {
    for (const record of [...records].reverse()) await this.undo(record);
  }

  private at(path: string): string {
    return underRoot(this.root, path);
  }

  /** Refuses to act through a parent that is not a real directory: a record never reaches outside the root. */
  private async parentsUsable(path: string): Promise<boolean> {
    let prefix = parentOf(path);
    while (prefix !== "") {
      const stats = await lstatOrUndefined(this.at(prefix));
      if (stats === undefined) return false;
      if (!stats.isDirectory())
        throw new JournalCorruptError(path, `undo would go through "${prefix}", which is not a directory`);
      prefix = parentOf(prefix);
    }
    return true;
  }

  private async undo(record: UndoRecord): Promise<void> {
    switch (record.type) {
      case "bytes":
        return this.restoreBytes(record.path, record.offset, record.data, record.oldSize);
      case "mode":
        return this.restoreMode(record.path, record.mode);
      case "absent":
        return this.remove(record.path);
      case "moved":
        return this.restoreMoved(record.path, record.object);
      case "renamed":
        return this.renameBack(record.from, record.to);
      case "attributes":
        return this.restoreAttributes(record.path, record);
      case "point":
        return;
    }
  }

  private async restoreAttributes(path: string, saved: SavedAttributes): Promise<void> {
    if (!(await this.parentsUsable(path))) return;
    const attributes = {
      uid: saved.uid,
      gid: saved.gid,
      mtimeSec: saved.mtimeSec,
      mtimeNsec: saved.mtimeNsec,
      xattrs: saved.xattrs.map(([name, value]) => ({ name, value: Buffer.from(value, "base64") })),
    };
    const restored = await applyAttributes(this.at(path), saved.mode, attributes, this.keepNote);
    if (restored) this.touched.add(this.at(path));
  }

  private async restoreBytes(path: string, offset: number, data: Buffer, oldSize: number): Promise<void> {
    if (!(await this.parentsUsable(path))) return;
    const stats = await lstatOrUndefined(this.at(path));
    if (stats === undefined || !stats.isFile()) return;
    const handle = await open(this.at(path), constants.O_WRONLY | constants.O_NOFOLLOW);
    try {
      let written = 0;
      while (written < data.length) {
        const { bytesWritten } = await handle.write(data, written, data.length - written, offset + written);
        written += bytesWritten;
      }
      if ((await handle.stat()).size !== oldSize) await handle.truncate(oldSize);
    } finally {
      await handle.close();
    }
    this.touched.add(this.at(path));
  }

  private async restoreMode(path: string, mode: number): Promise<void> {
    if (!(await this.parentsUsable(path))) return;
    const stats = await lstatOrUndefined(this.at(path));
    if (stats === undefined || stats.isSymbolicLink()) return;
    await chmod(this.at(path), mode);
    this.touched.add(this.at(parentOf(path)));
  }

  private async remove(path: string): Promise<void> {
    if (!(await this.parentsUsable(path))) return;
    await this.removeTree(path);
  }

  private async removeTree(path: string): Promise<void> {
    await rm(this.at(path), { recursive: true, force: true });
    this.links.forget(this.at(path));
    this.touched.add(this.at(parentOf(path)));
  }

  private async restoreMoved(path: string, object: string): Promise<void> {
    const source = this.objectPath(object);
    if ((await lstatOrUndefined(source)) === undefined) return; // restored already, or never moved
    if (!(await this.parentsUsable(path))) return;
    await this.removeTree(path);
    if (this.placement === "move") await rename(source, this.at(path));
    else await copyTree(source, this.at(path), this.links, this.keepNote);
  }

  private async renameBack(from: string, to: string): Promise<void> {
    if (!(await this.parentsUsable(from)) || !(await this.parentsUsable(to))) return;
    if ((await lstatOrUndefined(this.at(to))) === undefined) return;
    if ((await lstatOrUndefined(this.at(from))) !== undefined) return;
    await rename(this.at(to), this.at(from));
    this.links.moved(this.at(to), this.at(from));
    this.touched.add(this.at(parentOf(from)));
    this.touched.add(this.at(parentOf(to)));
  }

  /** Adds paths to make durable at the next flush (e.g. everything a copy wrote). */
  touch(paths: Iterable<string>): void {
    for (const path of paths) this.touched.add(path);
  }

  /**
   * Makes every change so far durable (before a progress file claims it is done). The fsyncs run
   * side by side so the filesystem can commit them together instead of one flush per file.
   */
  async flush(): Promise<void> {
    const paths = [...this.touched];
    this.touched.clear();
    for (let start = 0; start < paths.length; start += flushParallelism)
      await Promise.all(paths.slice(start, start + flushParallelism).map(syncPath));
  }
}

const flushParallelism = 32;

async function syncPath(path: string): Promise<void> {
  const stats = await lstatOrUndefined(path);
  if (stats?.isDirectory() === true) {
    await fsyncDirectory(path);
  } else if (stats?.isFile() === true) {
    const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      await handle.sync(); // content, size, and the owner, mode and mtime attribute records restore
    } finally {
      await handle.close();
    }
  }
}
