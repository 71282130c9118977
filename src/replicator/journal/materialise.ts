// Turning a recovery point into files. `hydrate` writes the point into a new directory or image
// while the replica keeps receiving changes; `rollback` turns the replica itself into the point.
// Both keep a progress file and pick up where an interruption left them.
import { lstat, mkdir, readdir, readFile, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { copyAttributes, copyEntry, LinkMap } from "./copy-tree.js";
import type { Unsupported } from "../file-attributes.js";
import { DurableCounter } from "../durable-counter.js";
import { writeFileAtomic } from "./durable.js";
import { JournalUsageError } from "./errors.js";
import type { RecoveryPoint } from "./point.js";
import { UndoApplier } from "./undo-apply.js";
import type { UndoJournal } from "./undo-journal.js";

export interface MaterialiseProgress {
  /** Called after each step with a short description (for CLIs and status). */
  onProgress?: (message: string) => void;
  /** Stop after this many record groups were undone (lets tests interrupt deterministically). */
  stopAfterGroups?: number;
}

interface HydrateState {
  format: 1;
  pointId: string;
  pointSeq: number;
  phase: "copy" | "undo";
  /** Last journal seq when the copy began: namespace changes after it make the copy start over. */
  copyStartSeq: number;
  /** Replica entries up to this one (in walk order) are copied. */
  copiedThrough: string | null;
  /** Records up to this seq are undone during the undo phase. */
  upperSeq: number;
  /** Where multiply-linked inodes were copied (so a resumed hydration keeps hard links). */
  links?: [string, string[]][];
}

interface RollbackState {
  format: 1;
  pointId: string;
  pointSeq: number;
  upperSeq: number;
}

const progressEvery = 256;

export function hydrateProgressPath(destination: string): string {
  return `${destination.replace(/\/+$/, "")}.ksr-hydrate.json`;
}

export function rollbackProgressPath(journal: UndoJournal): string {
  return join(journal.directory, "rollback.json");
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, "utf8")) as T;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new JournalUsageError(
      `progress file ${path} is unreadable (${(error as Error).message}); delete it to start over`,
    );
  }
}

/** Walk order of a tree: depth first, names sorted; compared component by component ("" is the root, first). */
export function walkOrder(a: string, b: string): number {
  const left = a.split("/");
  const right = b.split("/");
  for (let index = 0; index < Math.min(left.length, right.length); index++) {
    const x = left[index] ?? "";
    const y = right[index] ?? "";
    if (x !== y) return x < y ? -1 : 1;
  }
  return left.length - right.length;
}

/**
 * Undoes the groups in (point, upperSeq] newest first. The cursor (every group above it is undone)
 * is made durable after each group: an undo step is only safe to repeat right after itself, never
 * after older groups were undone, so a resumed run must start exactly where the last one stopped.
 */
async function undoGroups(
  journal: UndoJournal,
  point: RecoveryPoint,
  applier: UndoApplier,
  upperSeq: number,
  cursor: DurableCounter,
  afterGroup: () => Promise<void>,
  progress: MaterialiseProgress,
): Promise<boolean> {
  const groups = journal.groupsBetween(point.seq, Math.min(upperSeq, cursor.value)).reverse();
  let done = 0;
  for (const group of groups) {
    if (progress.stopAfterGroups !== undefined && done >= progress.stopAfterGroups) return false;
    await applier.undoGroup(await journal.readGroup(group));
    await applier.flush();
    await afterGroup();
    await cursor.set(group.seq - 1);
    if (++done % progressEvery === 0) progress.onProgress?.(`undone ${done}/${groups.length} changes`);
  }
  await cursor.set(point.seq);
  return true;
}

/** Runs work with the durable undo cursor stored at `path`, closing it afterwards. */
async function withCursor<T>(path: string, work: (cursor: DurableCounter) => Promise<T>): Promise<T> {
  const cursor = await DurableCounter.open(path);
  try {
    return await work(cursor);
  } finally {
    await cursor.close();
  }
}

// ------------------------------------------------------------------------------------ hydrate

/** A hydration must never write into the replica or the journal it reads. */
function assertOutside(destination: string, readOnly: readonly string[]): void {
  const target = resolve(destination);
  for (const tree of readOnly.map((path) => resolve(path)))
    if (target === tree || target.startsWith(`${tree}/`) || tree.startsWith(`${target}/`))
      throw new JournalUsageError(`destination ${destination} overlaps ${tree}, which hydration only reads`);
}

/**
 * Writes the content of `point` into `destination` (a new directory, or a new image file for a
 * block replica). The replica and the journal are only read. Returns false when stopped early.
 */
export async function hydrate(
  journal: UndoJournal,
  replicaRoot: string,
  point: RecoveryPoint,
  destination: string,
  progress: MaterialiseProgress = {},
): Promise<boolean> {
  await journal.assertReplica(replicaRoot);
  assertOutside(destination, [replicaRoot, journal.directory]);
  if (journal.pendingRollback !== undefined)
    throw new JournalUsageError(
      `the replica is being rolled back to point "${journal.pendingRollback}"; hydrate after it`,
    );
  const unpin = journal.pin(point);
  try {
    const progressPath = hydrateProgressPath(destination);
    const cursorPath = `${progressPath}.cursor`;
    const state = await startOrResumeHydrate(journal, point, destination, progressPath);
    const links = LinkMap.fromJSON(state.links);
    const save = () => writeFileAtomic(progressPath, JSON.stringify({ ...state, links }));
    const notKept: string[] = [];
    const noteNotKept: Unsupported = (path, what) => notKept.push(`${path}: ${what}`);
    const finished = await withCursor(cursorPath, async (cursor) => {
      const resumingUndo = state.phase === "undo";
      if (state.phase === "copy") {
        await copyReplica(journal, replicaRoot, destination, state, links, save, progress, noteNotKept);
        state.phase = "undo";
        state.upperSeq = journal.lastRecordedSeq;
        await cursor.set(state.upperSeq);
        await save();
      }
      const applier = new UndoApplier(destination, (object) => journal.objectPath(object), "copy", links);
      if (!resumingUndo) {
        // The copy becomes durable in one parallel flush, so each undone group then flushes little.
        applier.touch(await listTree(destination));
        await applier.flush();
      }
      let savedLinks = links.version;
      const saveChangedLinks = async (): Promise<void> => {
        if (links.version === savedLinks) return;
        await save();
        savedLinks = links.version;
      };
      const undone = await undoGroups(journal, point, applier, state.upperSeq, cursor, saveChangedLinks, progress);
      notKept.push(...applier.notKept);
      return undone;
    });
    reportNotKept(notKept, destination, progress);
    if (!finished) return false;
    await rm(progressPath, { force: true });
    await rm(cursorPath, { force: true });
    progress.onProgress?.(`point ${point.id} hydrated into ${destination}`);
    return true;
  } finally {
    unpin();
  }
}

async function startOrResumeHydrate(
  journal: UndoJournal,
  point: RecoveryPoint,
  destination: string,
  progressPath: string,
): Promise<HydrateState> {
  const saved = await readJson<HydrateState>(progressPath);
  if (saved !== undefined) {
    if (saved.pointId !== point.id || saved.pointSeq !== point.seq)
      throw new JournalUsageError(
        `${destination} holds an interrupted hydration of point "${saved.pointId}", not "${point.id}"; remove it and ${progressPath} to start over`,
      );
    if (saved.phase === "copy" && (await namespaceChangedSince(journal, saved.copyStartSeq))) {
      await rm(destination, { recursive: true, force: true });
      return startFreshHydrate(journal, point, progressPath);
    }
    return saved;
  }
  const existing = await lstat(destination).catch(() => undefined);
  if (existing !== undefined && !(existing.isDirectory() && (await readdir(destination)).length === 0))
    throw new JournalUsageError(`destination ${destination} already exists and is not an empty directory`);
  await mkdir(dirname(destination), { recursive: true });
  return startFreshHydrate(journal, point, progressPath);
}

/** Saved before anything is copied, so an interruption at any moment leaves a resumable copy. */
async function startFreshHydrate(
  journal: UndoJournal,
  point: RecoveryPoint,
  progressPath: string,
): Promise<HydrateState> {
  const state: HydrateState = {
    format: 1,
    pointId: point.id,
    pointSeq: point.seq,
    phase: "copy",
    copyStartSeq: journal.lastRecordedSeq,
    copiedThrough: null,
    upperSeq: 0,
  };
  await writeFileAtomic(progressPath, JSON.stringify(state));
  return state;
}

/** A rename or a replaced entry since the copy began: entries copied before it may be stale in place. */
async function namespaceChangedSince(journal: UndoJournal, seq: number): Promise<boolean> {
  for (const group of journal.groupsBetween(seq, journal.lastRecordedSeq))
    if ((await journal.readGroup(group)).some((record) => record.type === "moved" || record.type === "renamed"))
      return true;
  return false;
}

/**
 * Copies the replica while namespace changes wait. Block writes, truncates and mode changes go on
 * meanwhile; whatever of them the copy caught is undone with the other records after the point.
 */
async function copyReplica(
  journal: UndoJournal,
  replicaRoot: string,
  destination: string,
  state: HydrateState,
  links: LinkMap,
  save: () => Promise<void>,
  progress: MaterialiseProgress,
  unsupported: Unsupported,
): Promise<void> {
  const release = await journal.holdNamespace();
  try {
    const rootStats = await lstat(replicaRoot);
    if (!rootStats.isDirectory()) {
      await copyEntry(replicaRoot, destination, links, unsupported);
      return;
    }
    await mkdir(destination, { recursive: true });
    let copied = 0;
    for await (const path of walk(replicaRoot, "")) {
      const source = join(replicaRoot, path);
      if (state.copiedThrough !== null && walkOrder(path, state.copiedThrough) <= 0) {
        continue; // copied before the interruption; its links are in the saved map
      }
      await removeStaleCopy(join(destination, path));
      await copyEntry(source, join(destination, path), links, unsupported);
      state.copiedThrough = path;
      if (++copied % progressEvery === 0) {
        await save();
        progress.onProgress?.(`copied ${copied} entries`);
      }
    }
    // Directory mtimes last, as rsync does: every entry copied into a directory moved its mtime.
    for await (const path of walk(replicaRoot, ""))
      if ((await lstat(join(replicaRoot, path))).isDirectory())
        await copyAttributes(join(replicaRoot, path), join(destination, path), unsupported);
    await copyAttributes(replicaRoot, destination, unsupported);
  } finally {
    release();
  }
}

/** Says what the destination could not keep (never silently): the count and the first few paths. */
function reportNotKept(notKept: readonly string[], destination: string, progress: MaterialiseProgress): void {
  if (notKept.length === 0) return;
  const shown = notKept.slice(0, 5).join("; ");
  progress.onProgress?.(
    `${destination} could not keep ${notKept.length} attribute(s): ${shown}${notKept.length > 5 ? "; ..." : ""}`,
  );
}

/** Every path under root (root included), for flushing a fresh copy. */
async function listTree(root: string): Promise<string[]> {
  const stats = await lstat(root).catch(() => undefined);
  if (stats?.isDirectory() !== true) return stats === undefined ? [] : [root];
  const paths = [root];
  for await (const path of walk(root, "")) paths.push(join(root, path));
  return paths;
}

/** An entry copied after the last saved progress may exist already; files and links are copied again. */
async function removeStaleCopy(path: string): Promise<void> {
  const stats = await lstat(path).catch(() => undefined);
  if (stats !== undefined && !stats.isDirectory()) await rm(path, { force: true });
}

/** Every path under root in walk order (the root itself not included). */
export async function* walk(root: string, prefix: string): AsyncGenerator<string> {
  // The entry types come with the listing: no lstat per entry (callers that need stats take their own).
  const entries = await readdir(join(root, prefix), { withFileTypes: true });
  for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const path = prefix === "" ? entry.name : `${prefix}/${entry.name}`;
    yield path;
    if (entry.isDirectory()) yield* walk(root, path);
  }
}

// ------------------------------------------------------------------------------------ rollback

/**
 * Turns the replica into `point` in place: every record newer than the point is undone on the
 * replica (entries moved into the journal move back, nothing is copied), then the history after
 * the point is dropped. The master target must not apply changes meanwhile.
 */
export async function rollback(
  journal: UndoJournal,
  replicaRoot: string,
  point: RecoveryPoint,
  progress: MaterialiseProgress = {},
): Promise<boolean> {
  return journal.alone(async () => {
    await journal.assertReplica(replicaRoot);
    const progressPath = rollbackProgressPath(journal);
    const cursorPath = `${progressPath}.cursor`;
    const finished = await withCursor(cursorPath, async (cursor) => {
      const state =
        (await startOrResumeRollback(journal, point, progressPath)) ??
        (await beginRollback(journal, point, cursor, progressPath));
      journal.blockChangesForRollback(point);
      const applier = new UndoApplier(replicaRoot, (object) => journal.objectPath(object), "move");
      const undone = await undoGroups(journal, point, applier, state.upperSeq, cursor, noop, progress);
      reportNotKept(applier.notKept, replicaRoot, progress);
      return undone;
    });
    if (!finished) return false;
    await journal.truncateAfter(point);
    await rm(progressPath, { force: true });
    await rm(cursorPath, { force: true });
    progress.onProgress?.(`replica rolled back to point ${point.id}`);
    return true;
  });
}

const noop = (): Promise<void> => Promise.resolve();

async function startOrResumeRollback(
  journal: UndoJournal,
  point: RecoveryPoint,
  progressPath: string,
): Promise<RollbackState | undefined> {
  const saved = await readJson<RollbackState>(progressPath);
  if (saved !== undefined) {
    if (saved.pointId !== point.id || saved.pointSeq !== point.seq)
      throw new JournalUsageError(
        `an interrupted rollback to point "${saved.pointId}" must finish first (run rollback to "${saved.pointId}" again)`,
      );
    return saved;
  }
  journal.requireRetained(point);
  if (journal.hasPins) throw new JournalUsageError("a hydration is reading the journal; roll back after it finished");
  return undefined;
}

/** A fresh rollback: the cursor is durable before the progress file that makes it count. */
async function beginRollback(
  journal: UndoJournal,
  point: RecoveryPoint,
  cursor: DurableCounter,
  progressPath: string,
): Promise<RollbackState> {
  const state: RollbackState = { format: 1, pointId: point.id, pointSeq: point.seq, upperSeq: journal.lastRecordedSeq };
  await cursor.set(state.upperSeq);
  await writeFileAtomic(progressPath, JSON.stringify(state));
  return state;
}
