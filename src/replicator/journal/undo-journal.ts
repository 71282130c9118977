// The master target's undo journal: before a change touches the replica, whatever it destroys is
// appended to the journal and made durable; markers become recovery points. Content at point P is
// the replica with every record newer than P undone, newest first.
import { mkdir, readdir, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { ChangeCapturer, IntervalState, type Capture } from "./capture.js";
import { copyTree, LinkMap } from "./copy-tree.js";
import { changesContentOnly, changesNamespace, type ChangeJournal, type JournalChange } from "./change.js";
import { fsyncDirectory } from "../durable-fs.js";
import { exists, lstatOrUndefined, writeFileAtomic } from "./durable.js";
import { JournalCorruptError, JournalUsageError } from "./errors.js";
import { parentOf, underRoot } from "./journal-path.js";
import { consistencyUnspecified, invalidMarker, pointFromMarker, type RecoveryPoint } from "./point.js";
import { acquireProcessLock } from "./process-lock.js";
import type { RecordGroup, UndoRecord } from "./record.js";
import { SegmentLog, type GroupLocation } from "./segment-log.js";

export interface UndoJournalOptions {
  /** Open for reading only: no lock, no repair of a torn tail, no changes. */
  readOnly?: boolean;
  /** A new segment starts at the first point after the current one reaches this size. */
  segmentBytes?: number;
  /**
   * Prune continuously: after every point, points older than this (measured in point time, so
   * replayed streams prune the same way) go, with the journal they needed. Unset keeps everything.
   */
  retentionMs?: number;
}

export interface JournalSize {
  segmentBytes: number;
  objectBytes: number;
  segments: number;
  points: number;
}

interface ReplicaIdentity {
  path: string;
  dev: number;
  ino: number;
}

interface JournalState {
  format: 1;
  /** The oldest retained point; every record up to its seq is garbage. */
  floor: RecoveryPoint | null;
  /** The replica this journal undoes, so a rollback never runs against another directory. */
  replica?: ReplicaIdentity;
}

const stateFormat = 1;
const defaultSegmentBytes = 64 * 1024 * 1024;

/** Holds namespace-changing ops back while live hydrations copy the replica. */
class NamespaceGate {
  private holders = 0;
  private opened: Promise<void> = Promise.resolve();
  private open: () => void = () => undefined;
  private namespaceOpInFlight = false;
  private boundaryWaiters: (() => void)[] = [];

  /** Called whenever the master target starts a new call: the previous change is complete. */
  atBoundary(): void {
    this.namespaceOpInFlight = false;
    for (const waiter of this.boundaryWaiters.splice(0)) waiter();
  }

  async passNamespaceOp(): Promise<void> {
    while (this.holders > 0) await this.opened;
    this.namespaceOpInFlight = true;
  }

  async hold(): Promise<() => void> {
    if (this.holders++ === 0) this.opened = new Promise((resolve) => (this.open = resolve));
    if (this.namespaceOpInFlight) await new Promise<void>((resolve) => this.boundaryWaiters.push(resolve));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--this.holders === 0) this.open();
    };
  }
}

export class UndoJournal implements ChangeJournal {
  private readonly interval = new IntervalState();
  private readonly gate = new NamespaceGate();
  private readonly pins = new Map<number, number>();
  private lastChangeSeq: number;
  private rollbackTarget: string | undefined;
  /** Changes up to this seq were journaled by prepare(): their beforeChange has nothing left to do. */
  private preparedSeq = 0;
  private exclusive: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly directory: string,
    private readonly log: SegmentLog,
    private state: JournalState,
    private readonly options: Required<UndoJournalOptions>,
    private readonly unlock: () => Promise<void>,
  ) {
    this.lastChangeSeq = log.lastSeq;
  }

  static async open(directory: string, options: UndoJournalOptions = {}): Promise<UndoJournal> {
    const settings = {
      readOnly: options.readOnly ?? false,
      segmentBytes: options.segmentBytes ?? defaultSegmentBytes,
      retentionMs: options.retentionMs ?? Number.POSITIVE_INFINITY,
    };
    if (!(settings.retentionMs > 0))
      throw new JournalUsageError("retentionMs must be a positive number of milliseconds");
    if (!settings.readOnly) await mkdir(join(directory, "objects"), { recursive: true });
    const unlock = settings.readOnly
      ? () => Promise.resolve()
      : await acquireProcessLock(join(directory, "lock"), `undo journal ${directory}`);
    try {
      const state = await readState(directory);
      const log = await SegmentLog.open(join(directory, "segments"), settings.readOnly);
      const journal = new UndoJournal(directory, log, state, settings, unlock);
      journal.rollbackTarget = await readRollbackTarget(directory);
      if (!settings.readOnly) await journal.dropGarbage();
      return journal;
    } catch (error) {
      await unlock();
      throw error;
    }
  }

  // ------------------------------------------------------------ the seam the master target calls

  async beforeChange(change: JournalChange, replicaRoot: string): Promise<void> {
    this.gate.atBoundary();
    this.assertWritable();
    if (this.rollbackTarget !== undefined)
      throw new JournalUsageError(
        `the replica is being rolled back to point "${this.rollbackTarget}"; finish the rollback before applying changes`,
      );
    const { op, seq } = change;
    if (op === undefined || seq <= this.preparedSeq) return;
    if (this.state.replica === undefined) await this.bindReplica(replicaRoot);
    if (seq <= this.log.lastSeq) {
      await this.completeMoves(seq, replicaRoot); // a replay after a crash: the journal already holds it
      return;
    }
    if (changesNamespace(op)) await this.gate.passNamespaceOp();
    this.lastChangeSeq = seq;
    if (op.$case === "marker") {
      // An unspecified consistency marks a stream event (the agent's resync start), not a point.
      if (op.value.consistency !== consistencyUnspecified) await this.recordPoint(seq, op.value);
      return;
    }
    if (this.points().length === 0) return; // nothing before the first point is ever reconstructed
    const capture = await new ChangeCapturer(replicaRoot, this.interval).capture(change, (index) => `${seq}-${index}`);
    if (capture.records.length > 0) await this.persist(seq, capture, replicaRoot);
    if (changesNamespace(op) || op.$case === "make") this.interval.reset();
  }

  /**
   * Journals a run of content-only changes with one write and one fdatasync, before any of them
   * touches the replica. Each is captured against the replica as it is before the run: a block
   * the run writes twice is kept once (the interval remembers it as the run is captured), and
   * content-only changes never move entries, so what a change destroys is what the replica held at
   * the interval's start, exactly as when each is captured just before it is applied.
   */
  async prepare(changes: readonly JournalChange[], replicaRoot: string): Promise<void> {
    this.assertWritable();
    const first = changes[0];
    // Left to beforeChange: a single change (same cost), replays, a rollback in progress (refused
    // there), a replica not bound yet, and anything before the first point (nothing is journaled).
    if (
      first === undefined ||
      changes.length < 2 ||
      first.seq <= Math.max(this.log.lastSeq, this.preparedSeq) ||
      this.rollbackTarget !== undefined ||
      this.state.replica === undefined ||
      this.points().length === 0 ||
      !changes.every((change) => changesContentOnly(change.op))
    )
      return;
    const groups: RecordGroup[] = [];
    try {
      for (const change of changes) {
        const capture = await new ChangeCapturer(replicaRoot, this.interval).capture(
          change,
          (index) => `${change.seq}-${index}`,
        );
        if (capture.records.length > 0) groups.push({ seq: change.seq, records: capture.records });
        this.remember(capture);
      }
      await this.log.appendGroups(groups);
    } catch (error) {
      this.interval.reset(); // what it remembered may not be durable: later captures keep it again
      throw error;
    }
    this.preparedSeq = changes.at(-1)?.seq ?? this.preparedSeq;
    this.lastChangeSeq = Math.max(this.lastChangeSeq, this.preparedSeq);
  }

  private remember(capture: Capture): void {
    if (capture.remember !== undefined)
      this.interval.remember(capture.remember.path, capture.remember.baseSize, capture.remember.blocks);
    if (capture.rememberAttributes !== undefined) this.interval.rememberAttributes(capture.rememberAttributes);
  }

  /** Remembers which replica the journal belongs to (once it exists: an image appears on its first write). */
  private async bindReplica(replicaRoot: string): Promise<void> {
    const stats = await lstatOrUndefined(replicaRoot);
    if (stats === undefined) return;
    await this.writeState({ ...this.state, replica: { path: replicaRoot, dev: stats.dev, ino: stats.ino } });
  }

  private async writeState(state: JournalState): Promise<void> {
    this.state = state;
    await writeFileAtomic(join(this.directory, "state.json"), JSON.stringify(state));
  }

  /** Refuses a replica path that is not the replica this journal was written for. */
  async assertReplica(replicaRoot: string): Promise<void> {
    const bound = this.state.replica;
    if (bound === undefined) return;
    const stats = await lstatOrUndefined(replicaRoot);
    if (stats?.dev !== bound.dev || stats.ino !== bound.ino)
      throw new JournalUsageError(
        `this journal belongs to the replica at ${bound.path}; ${replicaRoot} is ${stats === undefined ? "missing" : "a different file or directory"}`,
      );
  }

  async sync(): Promise<void> {
    this.gate.atBoundary();
    await Promise.resolve(); // every group was made durable when it was appended
  }

  private async persist(seq: number, capture: Capture, replicaRoot: string): Promise<void> {
    await this.log.append({ seq, records: capture.records });
    for (const move of capture.moves) await this.moveIntoJournal(replicaRoot, move.path, move.object);
    this.remember(capture);
  }

  private async recordPoint(seq: number, marker: Parameters<typeof pointFromMarker>[1]): Promise<void> {
    const problem = invalidMarker(marker);
    if (problem !== undefined) throw new JournalUsageError(`marker at seq ${seq}: ${problem}`);
    if (this.log.currentSegmentBytes >= this.options.segmentBytes) this.log.roll();
    await this.log.append({ seq, records: [{ type: "point", point: pointFromMarker(seq, marker) }] });
    this.interval.reset();
    if (Number.isFinite(this.options.retentionMs)) await this.prune(this.options.retentionMs, marker.timeUnixMs);
  }

  /** The record was made durable before the move, so a crash in between finishes the move on replay. */
  private async moveIntoJournal(replicaRoot: string, path: string, object: string): Promise<void> {
    const source = underRoot(replicaRoot, path);
    const destination = this.objectPath(object);
    try {
      await rename(source, destination);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EXDEV") throw error;
      await rm(`${destination}.partial`, { recursive: true, force: true });
      // Owners, mtimes and xattrs go along (as in a rename); a journal volume refusing some is not fatal.
      await copyTree(source, `${destination}.partial`, new LinkMap(), () => undefined);
      await rename(`${destination}.partial`, destination);
    }
    await fsyncDirectory(join(this.directory, "objects"));
    await fsyncDirectory(underRoot(replicaRoot, parentOf(path)));
  }

  private async completeMoves(seq: number, replicaRoot: string): Promise<void> {
    const location = this.log.find(seq);
    if (location === undefined) return;
    for (const record of await this.log.read(location)) {
      if (record.type !== "moved") continue;
      if (await exists(this.objectPath(record.object))) continue;
      if (await exists(underRoot(replicaRoot, record.path)))
        await this.moveIntoJournal(replicaRoot, record.path, record.object);
    }
  }

  // ------------------------------------------------------------ points

  /** Retained points, oldest first. */
  points(): RecoveryPoint[] {
    const floor = this.state.floor;
    const newer = this.log.points.filter((point) => floor === null || point.seq > floor.seq);
    return floor === null ? newer : [floor, ...newer];
  }

  /** A retained point by id (the newest one when an id was reused). */
  point(id: string): RecoveryPoint {
    const found = this.points()
      .filter((point) => point.id === id)
      .at(-1);
    if (found === undefined)
      throw new JournalUsageError(`recovery point "${id}" is not in the journal (list them with "points")`);
    return found;
  }

  /** The seq of the last change this journal has seen (the seam's replay boundary). */
  get lastSeq(): number {
    return Math.max(this.lastChangeSeq, this.log.lastSeq);
  }

  // ------------------------------------------------------------ reading for materialisation

  /** Keeps a point and every record it needs from being pruned until the returned function runs. */
  pin(point: RecoveryPoint): () => void {
    this.requireRetained(point);
    this.pins.set(point.seq, (this.pins.get(point.seq) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const count = (this.pins.get(point.seq) ?? 1) - 1;
      if (count === 0) this.pins.delete(point.seq);
      else this.pins.set(point.seq, count);
    };
  }

  requireRetained(point: RecoveryPoint): void {
    if (!this.points().some((retained) => retained.seq === point.seq && retained.id === point.id))
      throw new JournalUsageError(`recovery point "${point.id}" (seq ${point.seq}) is no longer retained`);
  }

  /** Stops changes that alter the namespace until released (block writes go on). */
  holdNamespace(): Promise<() => void> {
    return this.gate.hold();
  }

  /** Record groups newer than `seq` up to and including `throughSeq`, oldest first. */
  groupsBetween(seq: number, throughSeq: number): GroupLocation[] {
    return this.log.groupsAfter(seq).filter((group) => group.seq <= throughSeq);
  }

  get lastRecordedSeq(): number {
    return this.log.lastSeq;
  }

  readGroup(location: GroupLocation): Promise<UndoRecord[]> {
    return this.log.read(location);
  }

  objectPath(object: string): string {
    return join(this.directory, "objects", object);
  }

  // ------------------------------------------------------------ retention

  /**
   * Drops points older than the window, and with them every record only they needed. The newest
   * point is always kept, and so are pinned points; the oldest retained point stays complete.
   */
  prune(
    retentionMs: number,
    nowUnixMs: number,
  ): Promise<{ removedPoints: RecoveryPoint[]; floor: RecoveryPoint | null }> {
    return this.alone(async () => {
      this.assertWritable();
      const points = this.points();
      const newest = points.at(-1);
      const cutoff = nowUnixMs - retentionMs;
      const minimumPinned = Math.min(...this.pins.keys());
      const floor =
        points.find((point) => point.timeUnixMs >= cutoff || point === newest || point.seq >= minimumPinned) ?? null;
      const removedPoints = floor === null ? [] : points.filter((point) => point.seq < floor.seq);
      if (floor !== null && floor.seq !== this.state.floor?.seq) {
        await this.writeState({ ...this.state, floor });
        await this.dropGarbage();
      }
      return { removedPoints, floor: this.state.floor };
    });
  }

  /**
   * Ends the journal's history: every point (the newest too), record and moved-out entry goes; the
   * replica is untouched. For a stream whose epoch ended (docs/recovery.md): no point of it can be
   * recovered any more. Repeating it after a crash finishes it.
   */
  releaseAll(): Promise<RecoveryPoint[]> {
    return this.alone(async () => {
      this.assertWritable();
      if (this.hasPins)
        throw new JournalUsageError(
          `a point of ${this.directory} is being read (a hydration runs); release it after that`,
        );
      if (this.rollbackTarget !== undefined)
        throw new JournalUsageError(
          `a rollback to "${this.rollbackTarget}" is unfinished; release the journal after it`,
        );
      const removed = this.points();
      await this.writeState({ ...this.state, floor: null });
      await this.log.clear();
      await this.removeObjects(() => true);
      this.interval.reset();
      return removed;
    });
  }

  /** Deletes what the floor made garbage; also finishes a prune a crash interrupted. */
  private async dropGarbage(): Promise<void> {
    const floor = this.state.floor;
    if (floor === null) return;
    await this.log.dropThrough(floor.seq);
    await this.removeObjects((seq) => seq <= floor.seq);
  }

  private async removeObjects(doomed: (seq: number) => boolean): Promise<void> {
    const directory = join(this.directory, "objects");
    let removed = false;
    for (const name of await readdir(directory)) {
      const seq = Number(name.split("-")[0]);
      if (!Number.isSafeInteger(seq) || !doomed(seq)) continue;
      await rm(join(directory, name), { recursive: true, force: true });
      removed = true;
    }
    if (removed) await fsyncDirectory(directory);
  }

  /** Bytes the journal holds on disk: segment files plus entries moved out of the replica. */
  async size(): Promise<JournalSize> {
    return {
      segmentBytes: await this.log.bytesOnDisk(),
      objectBytes: await treeBytes(join(this.directory, "objects")),
      segments: this.log.segmentCount,
      points: this.points().length,
    };
  }

  // ------------------------------------------------------------ rollback support

  /** Ends the history at `point`: records, points and objects newer than it are gone. */
  async truncateAfter(point: RecoveryPoint): Promise<void> {
    this.assertWritable();
    await this.log.truncateAfter(point.seq);
    await this.removeObjects((seq) => seq > point.seq);
    this.lastChangeSeq = point.seq;
    this.preparedSeq = Math.min(this.preparedSeq, point.seq);
    this.interval.reset();
    this.rollbackTarget = undefined;
  }

  /** From now until truncateAfter, the replica is mid-rollback and must not receive changes. */
  blockChangesForRollback(point: RecoveryPoint): void {
    this.rollbackTarget = point.id;
  }

  /** The point an interrupted rollback was heading for (it must be finished first). */
  get pendingRollback(): string | undefined {
    return this.rollbackTarget;
  }

  get hasPins(): boolean {
    return this.pins.size > 0;
  }

  /** Runs work that must not interleave with pruning or rollback. */
  alone<T>(work: () => Promise<T>): Promise<T> {
    const result = this.exclusive.then(work, work);
    this.exclusive = result.catch(() => undefined);
    return result;
  }

  private assertWritable(): void {
    if (this.options.readOnly) throw new JournalUsageError(`undo journal ${this.directory} was opened read-only`);
  }

  async close(): Promise<void> {
    await this.log.close();
    await this.unlock();
  }
}

async function readRollbackTarget(directory: string): Promise<string | undefined> {
  try {
    const saved = JSON.parse(await readFile(join(directory, "rollback.json"), "utf8")) as { pointId?: unknown };
    return typeof saved.pointId === "string" ? saved.pointId : "(unknown)";
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    return "(unreadable rollback.json)";
  }
}

async function readState(directory: string): Promise<JournalState> {
  const path = join(directory, "state.json");
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return { format: stateFormat, floor: null };
    throw error;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new JournalCorruptError(path, "not JSON");
  }
  const state = parsed as { format?: unknown; floor?: unknown; replica?: Partial<ReplicaIdentity> | null };
  if (state.format !== stateFormat) throw new JournalCorruptError(path, `unsupported format ${String(state.format)}`);
  const floor = state.floor ?? null;
  const point = (floor ?? {}) as Partial<RecoveryPoint>;
  if (
    floor !== null &&
    (!Number.isSafeInteger(point.seq) || typeof point.id !== "string" || typeof point.consistency !== "string")
  )
    throw new JournalCorruptError(path, "floor point is invalid");
  const replica = state.replica ?? undefined;
  if (
    replica !== undefined &&
    (typeof replica.path !== "string" || !Number.isSafeInteger(replica.dev) || !Number.isSafeInteger(replica.ino))
  )
    throw new JournalCorruptError(path, "replica identity is invalid");
  return { format: stateFormat, floor: floor as RecoveryPoint | null, replica: replica as ReplicaIdentity | undefined };
}

async function treeBytes(path: string): Promise<number> {
  const stats = await lstatOrUndefined(path);
  if (stats === undefined) return 0;
  if (!stats.isDirectory()) return stats.size;
  let total = 0;
  for (const name of await readdir(path)) total += await treeBytes(join(path, name));
  return total;
}
