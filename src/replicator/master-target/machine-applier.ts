// One machine's replica at the master target: opens sealed frames, checks them completely,
// applies the changes not yet applied in sequence order and persists the applied seq only
// after the replica (and its journal) are durable.
import type { ChangeBatch, Change, Frame } from "../../gen/ksr/replication/v1/replication.js";
import { DurableCounter } from "../durable-counter.js";
import type { FrameSealer } from "../frame-sealer.js";
import { changesContentOnly } from "../journal/change.js";
import { decodeChangeBatch } from "../wire-reader.js";
import { ApplyError, needsBarrier, type Replica } from "./replica.js";
import type { ChangeJournal } from "./change-journal.js";

export const batchFormatVersion = 1;
const maxChangesPerFrame = 1_000_000;

export class FrameRejected extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FrameRejected";
  }
}

/** Decides, under the applier's lock, whether frames may be applied now (recovery points use it). */
export interface FrameAdmission {
  /** Throws to refuse the frames before any of them is opened. */
  admit(frames: readonly Frame[]): void;
  /** The frames were applied and made durable. */
  committed(frames: readonly Frame[]): Promise<void>;
}

const admitAll: FrameAdmission = { admit: () => undefined, committed: () => Promise.resolve() };

export class MachineApplier {
  private lock: Promise<unknown> = Promise.resolve();

  constructor(
    readonly machineId: string,
    readonly replica: Replica,
    private readonly journal: ChangeJournal,
    private readonly applied: DurableCounter,
    private readonly sealer: FrameSealer,
    private readonly admission: FrameAdmission = admitAll,
  ) {}

  get appliedSeq(): number {
    return this.applied.value;
  }

  /** Runs work alone on this machine (applies, manifests and shutdown never interleave). */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    const result = this.lock.then(work, work);
    this.lock = result.catch(() => undefined);
    return result;
  }

  /** Applies frames (already received, in order) and makes them durable once for all of them. */
  applyFrames(frames: readonly Frame[]): Promise<number> {
    return this.exclusive(async () => {
      this.admission.admit(frames);
      const opened = this.startOpening(frames);
      try {
        for (const [index, frame] of frames.entries()) await this.applyFrame(frame, opened[index]);
      } catch (error) {
        this.pendingSeq = this.applied.value; // what was applied of a failed frame is replayed next time
        throw error;
      }
      await this.commit(this.pendingSeq);
      await this.admission.committed(frames);
      return this.applied.value;
    });
  }

  private pendingSeq = 0;

  /**
   * Starts opening every frame that holds something not applied yet, so later frames are decrypted
   * and decompressed (by the sealer's workers) while earlier ones are applied. A frame whose header
   * is invalid is not opened: applyFrame rejects it in its turn.
   */
  private startOpening(frames: readonly Frame[]): (Promise<Buffer> | undefined)[] {
    const applied = Math.max(this.applied.value, this.pendingSeq);
    return frames.map((frame) => {
      if (this.headerProblem(frame) !== undefined || frame.lastSeq <= applied) return undefined;
      const opening = this.sealer.open(frame);
      opening.catch(() => undefined); // awaited in order; a failure before it leaves it unawaited
      return opening;
    });
  }

  private headerProblem(frame: Frame): string | undefined {
    const { firstSeq, lastSeq } = frame;
    if (frame.machineId !== this.machineId)
      return `frame for machine "${frame.machineId}" sent on the stream of "${this.machineId}"`;
    if (
      !Number.isSafeInteger(firstSeq) ||
      firstSeq < 1 ||
      lastSeq < firstSeq ||
      lastSeq - firstSeq >= maxChangesPerFrame
    )
      return `frame has an invalid sequence range ${firstSeq}..${lastSeq}`;
    return undefined;
  }

  private async applyFrame(frame: Frame, opening: Promise<Buffer> | undefined): Promise<void> {
    const applied = Math.max(this.applied.value, this.pendingSeq);
    const changes = await this.openFrame(frame, applied, opening);
    if (changes === undefined) return;
    for (const change of changes) this.replica.validate(change);
    let preparedUntil = 0;
    for (const [index, change] of changes.entries()) {
      if (change.seq <= applied) continue;
      if (index >= preparedUntil && changesContentOnly(change.op)) {
        preparedUntil = contentRunEnd(changes, index);
        await this.journal.prepare?.(changes.slice(index, preparedUntil), this.replica.root);
      }
      if (needsBarrier(change)) {
        await this.commit(change.seq - 1);
        await this.replica.apply(change);
        await this.commit(change.seq);
      } else {
        await this.replica.apply(change);
      }
      this.pendingSeq = change.seq;
    }
  }

  /** Returns the frame's changes, or undefined when all of them were applied already. */
  private async openFrame(
    frame: Frame,
    applied: number,
    opening: Promise<Buffer> | undefined,
  ): Promise<Change[] | undefined> {
    const { firstSeq, lastSeq } = frame;
    const problem = this.headerProblem(frame);
    if (problem !== undefined) throw new FrameRejected(problem);
    if (lastSeq <= applied) return undefined;
    if (firstSeq > applied + 1 && !frame.afterGap)
      throw new FrameRejected(
        `out of order: frame starts at seq ${firstSeq}, the replica needs seq ${applied + 1} next`,
      );
    let batch: ChangeBatch;
    try {
      batch = decodeChangeBatch(await (opening ?? this.sealer.open(frame)));
    } catch (error) {
      throw new FrameRejected(`frame ${firstSeq}..${lastSeq} is unreadable: ${(error as Error).message}`);
    }
    if (batch.formatVersion !== batchFormatVersion)
      throw new FrameRejected(
        `batch format ${batch.formatVersion} is not supported (this master target reads ${batchFormatVersion})`,
      );
    if (batch.machineId !== this.machineId) throw new FrameRejected(`batch names machine "${batch.machineId}"`);
    if (batch.changes.length !== lastSeq - firstSeq + 1)
      throw new FrameRejected(`frame ${firstSeq}..${lastSeq} holds ${batch.changes.length} changes`);
    batch.changes.forEach((change, index) => {
      if (change.seq !== firstSeq + index)
        throw new FrameRejected(`change ${index} of frame ${firstSeq}..${lastSeq} has seq ${change.seq}`);
    });
    if (firstSeq > applied + 1) this.pendingSeq = firstSeq - 1; // the gap was ordered by a resync
    return batch.changes;
  }

  private async commit(seq: number): Promise<void> {
    await this.replica.sync();
    await this.journal.sync();
    if (seq > this.applied.value) await this.applied.set(seq);
    this.pendingSeq = this.applied.value;
  }

  close(): Promise<void> {
    return this.exclusive(async () => {
      await this.replica.close();
      await this.applied.close();
    });
  }
}

/** Where the run of content-only changes starting at `from` ends (exclusive). */
function contentRunEnd(changes: readonly Change[], from: number): number {
  let end = from;
  while (end < changes.length && changesContentOnly(changes[end]?.op)) end++;
  return end;
}

export function isRejection(error: unknown): boolean {
  return error instanceof FrameRejected || error instanceof ApplyError;
}
