// Change notifications for a source tree: one inotify watch (fs.watch) per directory. Node 20's
// recursive fs.watch on Linux silently stops reporting in trees holding symlinks, so the
// recursion is ours. Notifications only say where to look; when they cannot be trusted
// (a watch failed, an unnamed event) the next round runs a full verifying scan.
import { lstatSync, readdirSync, watch, type FSWatcher } from "node:fs";
import { join } from "node:path";
import { Signal } from "../signal.js";

interface DirectoryWatch {
  watcher: FSWatcher;
  ino: number;
}

export class TreeWatcher {
  private readonly watches = new Map<string, DirectoryWatch>();
  private dirty = new Set<string>();
  /** True when events may have been lost: the next round must scan everything. */
  private overflowed = false;
  readonly changed = new Signal();

  constructor(private readonly root: string) {}

  start(): void {
    this.watchTree("");
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
    for (const { watcher } of this.watches.values()) watcher.close();
    this.watches.clear();
  }

  private lost(): void {
    this.overflowed = true;
    this.changed.notify();
  }

  private watchTree(relative: string): void {
    const absolute = relative === "" ? this.root : join(this.root, relative);
    let ino: number;
    try {
      const stats = lstatSync(absolute);
      if (!stats.isDirectory()) return;
      ino = stats.ino;
    } catch {
      return;
    }
    if (this.watches.get(relative)?.ino === ino) return;
    this.unwatchTree(relative);
    try {
      const watcher = watch(absolute, (_event, name) => {
        this.onEvent(relative, name);
      });
      watcher.on("error", () => {
        this.unwatchTree(relative);
        this.lost();
      });
      this.watches.set(relative, { watcher, ino });
    } catch {
      this.lost();
      return;
    }
    let children: string[] = [];
    try {
      children = readdirSync(absolute, { withFileTypes: true })
        .filter((entry) => entry.isDirectory())
        .map((entry) => entry.name);
    } catch {
      this.lost();
    }
    for (const child of children) this.watchTree(relative === "" ? child : `${relative}/${child}`);
  }

  private unwatchTree(relative: string): void {
    for (const [path, { watcher }] of this.watches) {
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
    // A new, replaced or renamed-in directory gets (re)watched; a vanished one loses its watches.
    this.watchTree(path);
    if (this.watches.has(path)) {
      try {
        if (!lstatSync(join(this.root, path)).isDirectory()) this.unwatchTree(path);
      } catch {
        this.unwatchTree(path);
      }
    }
    this.changed.notify();
  }
}
