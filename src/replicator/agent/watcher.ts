// Change notifications for a source tree: one inotify watch (fs.watch) per directory. Node 20's
// recursive fs.watch on Linux silently stops reporting in trees holding symlinks, so the
// recursion is ours. Notifications only say where to look; when they cannot be trusted
// (a watch failed, an unnamed event) the next round runs a full verifying scan.
import { lstatSync, readdirSync, watch, type Dirent, type FSWatcher } from "node:fs";
import { join } from "node:path";
import { Signal } from "../signal.js";

export class TreeWatcher {
  private readonly watches = new Map<string, FSWatcher>();
  private dirty = new Set<string>();
  /** True when events may have been lost: the next round must scan everything. */
  private overflowed = false;
  readonly changed = new Signal();

  /** `onDirectory` is told of every directory watched (root first, as ""), parents before children. */
  constructor(
    private readonly root: string,
    private readonly onDirectory?: (relative: string) => void,
  ) {}

  start(): void {
    this.watchTree("", false);
  }

  /** Takes the paths reported since the last call. */
  take(): { paths: string[]; overflowed: boolean } {
    const taken = { paths: [...this.dirty], overflowed: this.overflowed };
    this.dirty = new Set();
    this.overflowed = false;
    return taken;
  }

  get pending(): boolean {
    return this.dirty.size > 0 || this.overflowed;
  }

  close(): void {
    for (const watcher of this.watches.values()) watcher.close();
    this.watches.clear();
  }

  private lost(): void {
    this.overflowed = true;
    this.changed.notify();
  }

  /**
   * Watches a directory and the directories below it. With `reportExisting`, everything already
   * in a newly watched directory is reported: it may have appeared before the watch existed.
   */
  private watchTree(relative: string, reportExisting = true): void {
    const absolute = relative === "" ? this.root : join(this.root, relative);
    // Always a fresh watch: a directory removed and recreated can reuse its inode number, and
    // the old watch died with the old directory.
    this.unwatchTree(relative);
    try {
      if (!lstatSync(absolute).isDirectory()) return;
    } catch {
      return;
    }
    try {
      const watcher = watch(absolute, (_event, name) => {
        this.onEvent(relative, name);
      });
      watcher.on("error", () => {
        if (this.watches.get(relative) === watcher) this.unwatchTree(relative);
        this.lost();
      });
      this.watches.set(relative, watcher);
      this.onDirectory?.(relative);
    } catch {
      this.lost();
      return;
    }
    let children: Dirent[] = [];
    try {
      children = readdirSync(absolute, { withFileTypes: true });
    } catch {
      this.lost();
    }
    for (const child of children) {
      const path = relative === "" ? child.name : `${relative}/${child.name}`;
      if (reportExisting) this.dirty.add(path);
      if (child.isDirectory()) this.watchTree(path, reportExisting);
    }
  }

  private unwatchTree(relative: string): void {
    for (const [path, watcher] of this.watches) {
      if (relative !== "" && path !== relative && !path.startsWith(`${relative}/`)) continue;
      if (relative === "" && path !== "") continue;
      watcher.close();
      this.watches.delete(path);
    }
  }

  private onEvent(directory: string, name: string | Buffer | null): void {
    if (name === null) {
      this.lost();
      return;
    }
    const path = directory === "" ? String(name) : `${directory}/${String(name)}`;
    this.dirty.add(path);
    // A new, replaced or renamed-in directory gets a fresh watch; a vanished one loses its watches.
    this.watchTree(path);
    this.changed.notify();
  }
}
