// Change notifications for a source tree (inotify through fs.watch). Notifications only say
// where to look; when they cannot be trusted (watcher error, unnamed event) a full scan is due.
import { watch, type FSWatcher } from "node:fs";
import { Signal } from "../signal.js";
import { toWirePath } from "../wire-path.js";

export class TreeWatcher {
  private watcher: FSWatcher | undefined;
  private dirty = new Set<string>();
  /** True when events may have been lost: the next round must scan everything. */
  overflowed = false;
  readonly changed = new Signal();

  constructor(private readonly root: string) {}

  start(): void {
    this.watcher = watch(this.root, { recursive: true }, (_event, name) => {
      if (name === null) this.overflowed = true;
      else this.dirty.add(toWirePath(name));
      this.changed.notify();
    });
    this.watcher.on("error", () => {
      this.overflowed = true;
      this.watcher?.close();
      this.changed.notify();
      setTimeout(() => {
        this.restart();
      }, 1000);
    });
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
    this.watcher?.close();
    this.watcher = undefined;
  }

  private restart(): void {
    if (this.watcher === undefined) return;
    try {
      this.start();
    } catch {
      this.overflowed = true;
    }
  }
}
