// Write-range capture: fanotify pre-content events tell where each write landed, so a round
// reads and hashes only the dirty 64 KiB blocks instead of whole files. inotify still reports
// the namespace (create, remove, rename, mode, links). Files mapped shared and writable raise no
// event per store, so they are re-hashed every round while they stay mapped. When the helper
// fails or the agent did not keep up, the capture answers "lost" and the agent verifies by scan;
// after a helper failure it continues as tree scan.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { blockSize } from "../block-hash.js";
import type { Signal } from "../signal.js";
import { watcherRound, type Capture, type CaptureChoice, type CaptureLog, type RoundOutcome } from "./capture.js";
import type { CutFreeze } from "./cut-freeze.js";
import { FanotifyListener, markProblem, type RangeRecord } from "./fanotify-listener.js";
import type { Manifest } from "./manifest.js";
import type { ContentTracking, DirtyFile, TreeSource } from "./tree-source.js";
import { TreeWatcher } from "./watcher.js";

/** Every file's dirty blocks since the last round, by inode. */
export class DirtyRanges {
  private files = new Map<string, DirtyFile>();

  private file(ino: string): DirtyFile {
    let file = this.files.get(ino);
    if (file === undefined) this.files.set(ino, (file = { blocks: new Set(), whole: false }));
    return file;
  }

  /** [offset, offset+count); count 0 (a truncate) only asks for the size check. */
  add(ino: string, offset: number, count: number): void {
    const file = this.file(ino);
    if (file.whole || count === 0) return;
    if (!Number.isSafeInteger(offset + count)) {
      file.whole = true;
      return;
    }
    const last = Math.ceil((offset + count) / blockSize) - 1;
    if (last - Math.floor(offset / blockSize) > 1 << 16) file.whole = true;
    else for (let index = Math.floor(offset / blockSize); index <= last; index++) file.blocks.add(index);
  }

  whole(ino: string): void {
    this.file(ino).whole = true;
  }

  truncated(ino: string, offset: number): void {
    const file = this.file(ino);
    file.truncatedFrom = Math.min(file.truncatedFrom ?? offset, offset);
  }

  /** Only the size and mode need a look. */
  touch(ino: string): void {
    this.file(ino);
  }

  get size(): number {
    return this.files.size;
  }

  take(): Map<string, DirtyFile> {
    const taken = this.files;
    this.files = new Map();
    return taken;
  }
}

interface Mapping {
  pid: number;
  device: number;
}

/** "fe:0" or "fe:00" (maps and the helper print the device in hex) as one number. */
function parseDevice(text: string): number {
  const [major, minor] = text.split(":").map((part) => Number.parseInt(part, 16));
  return (major ?? 0) * 0x100000 + (minor ?? 0);
}

/** Whether the process maps the file shared and writable (stores reach the file with no event). */
async function mapsShared(pid: number, device: number, ino: string): Promise<boolean> {
  let maps: string;
  try {
    maps = await readFile(`/proc/${pid}/maps`, "utf8");
  } catch {
    return false; // the process is gone
  }
  for (const line of maps.split("\n")) {
    const [, perms, , dev, inode] = line.split(/\s+/);
    if (inode === ino && perms?.[1] === "w" && perms[3] === "s" && dev !== undefined && parseDevice(dev) === device)
      return true;
  }
  return false;
}

const mappedRehashMs = 1000;
const accessRecheckMs = 1000;

export class WriteRangeCapture implements Capture {
  choice: CaptureChoice = { strategy: "write-ranges", reason: "fanotify pre-content events" };
  private readonly watcher: TreeWatcher;
  private listener: FanotifyListener | undefined;
  private readonly dirty = new DirtyRanges();
  private lostRecords = false;
  private readonly marks = new Set<Promise<void>>();
  private markFailure: string | undefined;
  private readonly mapped = new Map<string, Mapping>();
  private mappedRehashedAt = 0;
  private readonly accessChecked = new Map<string, number>();
  /** Set once the helper failed: from then on this is a tree scan. */
  private fellBack = false;
  private holding = false;

  constructor(
    private readonly root: string,
    private readonly manifest: Manifest,
    private readonly options: { watchdogMs: number; log: CaptureLog },
  ) {
    this.watcher = new TreeWatcher(root, (relative) => {
      this.markDirectory(relative);
    });
  }

  private readonly contentTracking: ContentTracking = {
    changed: (ino) => {
      this.dirty.touch(ino);
    },
  };

  get tracking(): ContentTracking | undefined {
    return this.fellBack ? undefined : this.contentTracking;
  }

  get changed(): Signal {
    return this.watcher.changed;
  }

  get pending(): boolean {
    return (
      this.watcher.pending ||
      this.dirty.size > 0 ||
      this.lostRecords ||
      (this.mapped.size > 0 && Date.now() - this.mappedRehashedAt >= mappedRehashMs)
    );
  }

  get unheldChangesPending(): boolean {
    return this.watcher.pending || this.lostRecords || this.mapped.size > 0 || this.fellBack;
  }

  /** Rejects with the reason when write ranges cannot run here (the agent then falls back). */
  async start(): Promise<void> {
    this.listener = await FanotifyListener.start(
      {
        record: (record) => {
          this.onRecord(record);
        },
        lost: () => {
          this.lostRecords = true;
          this.watcher.changed.notify();
        },
        failed: (reason) => {
          this.fallBack(reason);
        },
      },
      this.options.watchdogMs,
    );
    this.watcher.start();
    await this.marksPlaced();
    if (this.markFailure !== undefined) throw new Error(this.markFailure);
    const kernel = await readFile("/proc/sys/kernel/osrelease", "utf8").catch(() => "");
    this.choice = {
      strategy: "write-ranges",
      reason: `fanotify pre-content events${kernel === "" ? "" : ` (Linux ${kernel.trim()})`}`,
    };
  }

  private markDirectory(relative: string): void {
    const listener = this.listener;
    if (listener === undefined || this.fellBack) return;
    const absolute = relative === "" ? this.root : join(this.root, relative);
    const placed = listener.mark(absolute).then(
      (errno) => {
        // A directory removed before its mark was placed has nothing left to capture.
        if (errno !== 0 && errno !== 2 && errno !== 20) this.markFailure ??= markProblem(absolute, errno);
      },
      (error: unknown) => {
        this.markFailure ??= (error as Error).message;
      },
    );
    this.marks.add(placed);
    void placed.finally(() => this.marks.delete(placed));
  }

  private async marksPlaced(): Promise<void> {
    while (this.marks.size > 0) await Promise.all([...this.marks]);
  }

  private onRecord(record: RangeRecord): void {
    if (record.kind === "access") {
      void this.checkMapping(record);
      return;
    }
    // Until a round has read it, the file's stat identity no longer vouches for its content: a
    // manifest saved meanwhile makes a restarted agent read it whole.
    for (const path of this.manifest.pathsWithIno(record.ino)) {
      const entry = this.manifest.get(path);
      if (entry !== undefined) entry.identity = "";
    }
    if (record.kind === "whole") this.dirty.whole(record.ino);
    else if (record.kind === "truncate") this.dirty.truncated(record.ino, record.offset);
    else this.dirty.add(record.ino, record.offset, record.count);
    this.watcher.changed.notify();
  }

  /** A read or an mmap (the helper cannot tell them apart): a shared writable mapping is followed. */
  private async checkMapping(record: Extract<RangeRecord, { kind: "access" }>): Promise<void> {
    // A truncate raises no completion event the helper sees, so every access checks the size too.
    this.dirty.touch(record.ino);
    const key = `${record.pid}:${record.ino}`;
    const checked = this.accessChecked.get(key);
    if (this.mapped.has(record.ino) || (checked !== undefined && Date.now() - checked < accessRecheckMs)) return;
    this.accessChecked.set(key, Date.now());
    if (this.accessChecked.size > 10_000) this.accessChecked.clear();
    const device = parseDevice(record.device);
    if (await mapsShared(record.pid, device, record.ino)) {
      this.mapped.set(record.ino, { pid: record.pid, device });
      this.dirty.whole(record.ino);
      this.watcher.changed.notify();
    }
  }

  private fallBack(reason: string): void {
    if (this.fellBack) return;
    this.fellBack = true;
    this.holding = false;
    this.choice = { strategy: "tree-scan", reason: `write ranges stopped: ${reason}` };
    this.options.log.warn(`capture: tree-scan from now on (${this.choice.reason}); running a verifying scan`);
    this.lostRecords = true;
    this.watcher.changed.notify();
  }

  async round(source: (tracking?: ContentTracking) => TreeSource, freeze?: CutFreeze): Promise<RoundOutcome> {
    if (this.fellBack) {
      if (!this.lostRecords) return watcherRound(this.watcher, source());
      this.lostRecords = false;
      return "lost";
    }
    await this.marksPlaced(); // a new directory's files are read only once writes to them are reported
    if (this.markFailure !== undefined) {
      this.listener?.close();
      this.fallBack(this.markFailure);
      this.lostRecords = false;
      return "lost";
    }
    if (this.lostRecords) {
      this.lostRecords = false;
      return "lost";
    }
    const tracking = source(this.contentTracking);
    const namespace = await watcherRound(this.watcher, tracking);
    if (namespace === "lost") return "lost";
    await this.followMappings();
    const dirty = this.dirty.take();
    if (freeze === undefined || !(await freeze.add(tracking, dirty))) {
      await freeze?.send(tracking); // what was read earlier goes first: the live reads are newer
      for (const [ino, file] of dirty) await tracking.syncRanges(ino, file);
    }
    return namespace === "sent" || dirty.size > 0 ? "sent" : "idle";
  }

  /** Mapped files are re-hashed while mapped (at most every second), once more when unmapped. */
  private async followMappings(): Promise<void> {
    if (this.mapped.size === 0 || Date.now() - this.mappedRehashedAt < mappedRehashMs) return;
    this.mappedRehashedAt = Date.now();
    for (const [ino, mapping] of [...this.mapped]) {
      this.dirty.whole(ino);
      if (!(await mapsShared(mapping.pid, mapping.device, ino))) this.mapped.delete(ino);
    }
  }

  discard(keepRanges = false): void {
    this.watcher.take();
    if (keepRanges) return;
    this.dirty.take();
    this.lostRecords = false;
  }

  async holdWrites(limitMs: number): Promise<boolean> {
    if (this.fellBack || this.listener === undefined) return false;
    this.holding = true;
    const held = await this.listener.hold(limitMs);
    // Files mapped shared and writable change without any event: nothing holds them.
    return held.quiet && this.mapped.size === 0;
  }

  async releaseWrites(): Promise<boolean> {
    if (!this.holding || this.listener === undefined) return false;
    this.holding = false;
    try {
      return !(await this.listener.release()).expired;
    } catch {
      return false; // the helper is gone: the kernel let every writer go
    }
  }

  close(): void {
    this.listener?.close();
    this.watcher.close();
  }
}
