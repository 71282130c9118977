// Consistency groups: one barrier cuts every member's stream at the same logical moment. Every
// member is held first (its writes stop reaching the stream), then each places the same marker,
// then all are released. The group point is committed to the group log only when every member
// has its marker durable; anything less is aborted and never listed as a group point.
import { open, readFile } from "node:fs/promises";
import { crc32 } from "node:zlib";
import type { MarkerOp } from "./change.js";
import { JournalCorruptError } from "./errors.js";
import { consistencyToWire, weakestConsistency, type PointConsistency, type RecoveryPoint } from "./point.js";

export interface GroupMember {
  readonly machineId: string;
  /** Stops the machine's writes reaching its stream (an IO hold, or an app quiesce); resolves once held. */
  hold(cutId: string): Promise<void>;
  /** Places the marker in the stream; resolves once the master target has it durable. */
  mark(marker: MarkerOp): Promise<{ seq: number; consistency: PointConsistency }>;
  release(cutId: string): Promise<void>;
}

export interface GroupPoint {
  group: string;
  id: string;
  timeUnixMs: number;
  consistency: PointConsistency;
  /** machine id → seq of the member's marker. */
  members: Record<string, number>;
}

export type GroupCutResult = { ok: true; point: GroupPoint } | { ok: false; id: string; reason: string };

/** Where committed group points are recorded before a cut reports success. */
export interface GroupPointSink {
  append(point: GroupPoint): Promise<void>;
}

/** Committed group points, one checksummed JSON line each, fsynced before a cut reports success. */
export class GroupPointLog implements GroupPointSink {
  constructor(readonly path: string) {}

  async append(point: GroupPoint): Promise<void> {
    const json = JSON.stringify(point);
    const handle = await open(this.path, "a", 0o600);
    try {
      await handle.write(`${crc32(json).toString(16).padStart(8, "0")} ${json}\n`);
      await handle.datasync();
    } finally {
      await handle.close();
    }
  }

  /** Every committed point; a torn last line (a crash mid-append) is ignored, damage elsewhere is reported. */
  async list(): Promise<GroupPoint[]> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw error;
    }
    // The piece after the last newline is empty, or a line a crash cut short.
    return text
      .split("\n")
      .slice(0, -1)
      .map((line, index) => parseLine(line, `${this.path} line ${index + 1}`));
  }
}

function parseLine(line: string, where: string): GroupPoint {
  const json = line.slice(9);
  if (line.length < 10 || line[8] !== " " || crc32(json).toString(16).padStart(8, "0") !== line.slice(0, 8))
    throw new JournalCorruptError(where, "group point checksum mismatch");
  return JSON.parse(json) as GroupPoint;
}

function withTimeout<T>(work: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`${what} did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
  });
  return Promise.race([work, timeout]).finally(() => {
    clearTimeout(timer);
  });
}

export interface BarrierOptions {
  /** Each phase (hold, mark) must finish within this time for every member. */
  phaseTimeoutMs: number;
  now?: () => number;
}

export class BarrierCoordinator {
  private cuts = 0;

  constructor(
    private readonly log: GroupPointSink,
    private readonly options: BarrierOptions,
  ) {}

  /** Cuts every member at one moment; the point exists only if every member reached it. */
  async cut(
    group: string,
    members: readonly GroupMember[],
    requested: PointConsistency,
    idPrefix = group,
  ): Promise<GroupCutResult> {
    const timeUnixMs = (this.options.now ?? Date.now)();
    const id = `${idPrefix}-${timeUnixMs}-${++this.cuts}`;
    if (members.length === 0) return { ok: false, id, reason: "the group has no members" };
    const holds = new Map<GroupMember, Promise<void>>();
    try {
      await this.phase(members, "hold", (member) => {
        const hold = member.hold(id);
        holds.set(member, hold);
        return hold;
      });
      const marker: MarkerOp = { id, consistency: consistencyToWire(requested), timeUnixMs, consistencyGroup: group };
      const reached: Record<string, number> = {};
      const consistencies: PointConsistency[] = [requested];
      await this.phase(members, "mark", async (member) => {
        const result = await member.mark(marker);
        reached[member.machineId] = result.seq;
        consistencies.push(result.consistency);
      });
      const point: GroupPoint = {
        group,
        id,
        timeUnixMs,
        consistency: weakestConsistency(consistencies),
        members: reached,
      };
      await this.log.append(point);
      return { ok: true, point };
    } catch (error) {
      return { ok: false, id, reason: (error as Error).message };
    } finally {
      // A hold that answers after its timeout is released as soon as it does.
      const releases = Promise.allSettled([...holds].map(([member, hold]) => hold.then(() => member.release(id))));
      await withTimeout(releases, this.options.phaseTimeoutMs, "release").catch(() => undefined);
    }
  }

  private async phase(
    members: readonly GroupMember[],
    name: string,
    step: (member: GroupMember) => Promise<void>,
  ): Promise<void> {
    const results = await Promise.allSettled(
      members.map((member) => withTimeout(step(member), this.options.phaseTimeoutMs, `${name} of ${member.machineId}`)),
    );
    const failures = results.flatMap((result) =>
      result.status === "rejected" ? [(result.reason as Error).message] : [],
    );
    if (failures.length > 0) throw new Error(`${name} failed: ${failures.join("; ")}`);
  }
}

/** Group points whose every member still retains its marker (retention may have dropped some). */
export function retainedGroupPoints(
  points: readonly GroupPoint[],
  retained: (machineId: string) => readonly RecoveryPoint[],
): GroupPoint[] {
  return points.filter((point) =>
    Object.entries(point.members).every(([machineId, seq]) =>
      retained(machineId).some((member) => member.id === point.id && member.seq === seq),
    ),
  );
}
