import { strict as assert } from "node:assert";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import type { JournalOp, MarkerOp } from "../../src/replicator/journal/change.js";
import {
  BarrierCoordinator,
  GroupPointLog,
  retainedGroupPoints,
  type GroupMember,
  type GroupPoint,
} from "../../src/replicator/journal/consistency-group.js";
import { hydrate } from "../../src/replicator/journal/materialise.js";
import { consistencyFromWire, type PointConsistency } from "../../src/replicator/journal/point.js";
import type { UndoJournal } from "../../src/replicator/journal/undo-journal.js";
import { makeSite, openJournal, removeSite, type JournalSite } from "../fixture/journal-harness.js";
import { TestReplica } from "../fixture/journal-replica.js";

/** Released by `open()`; `wait()` resolves once open. */
class Latch {
  private opened: Promise<void> = Promise.resolve();
  private release: () => void = () => undefined;
  close(): void {
    this.opened = new Promise((resolve) => (this.release = resolve));
  }
  open(): void {
    this.release();
  }
  wait(): Promise<void> {
    return this.opened;
  }
}

/** One protected machine: its replica and journal at the master target, and an IO hold for cuts. */
class Machine {
  private seq = 0;
  private readonly io = new Latch();
  private inFlight: Promise<void> = Promise.resolve();

  constructor(
    readonly machineId: string,
    readonly site: JournalSite,
    readonly journal: UndoJournal,
    private readonly replica: TestReplica,
  ) {}

  private async apply(op: JournalOp): Promise<number> {
    const seq = ++this.seq;
    await this.replica.apply({ seq, op });
    await this.replica.sync();
    return seq;
  }

  /** A write of the application: it waits while the machine's IO is held. */
  async write(counter: number): Promise<void> {
    await this.io.wait();
    this.inFlight = this.apply({
      $case: "write",
      value: { path: "counter", offset: 0, data: Buffer.from(String(counter).padStart(8, "0")) },
    }).then(() => undefined);
    await this.inFlight;
  }

  async start(): Promise<void> {
    await this.apply({ $case: "make", value: { path: "counter", kind: 1, mode: 0o644, rdevMajor: 0, rdevMinor: 0 } });
  }

  async holdIo(): Promise<void> {
    this.io.close();
    await this.inFlight; // a write already issued completes before the cut
  }

  releaseIo(): void {
    this.io.open();
  }

  async close(): Promise<void> {
    await this.replica.close();
    await this.journal.close();
  }

  async mark(marker: MarkerOp): Promise<{ seq: number; consistency: PointConsistency }> {
    const seq = await this.apply({ $case: "marker", value: marker });
    return { seq, consistency: consistencyFromWire(marker.consistency) };
  }

  async counterAt(pointId: string): Promise<number> {
    const destination = join(this.site.base, `group-${pointId}`);
    await hydrate(this.journal, this.site.replicaRoot, this.journal.point(pointId), destination);
    const value = Number(await readFile(join(destination, "counter"), "utf8"));
    await rm(destination, { recursive: true });
    return value;
  }
}

/** Writes the same counter to every machine, in order, one iteration at a time. */
class CounterWriter {
  private readonly boundary = new Latch();
  private pausedAt: (() => void) | undefined;
  private pauseRequested: Promise<void> | undefined;
  counter = 0;
  private stopped = false;

  constructor(private readonly machines: readonly Machine[]) {}

  /** Writes until stopped (so every cut lands while it writes, however fast the machine is). */
  async run(): Promise<void> {
    while (!this.stopped) {
      if (this.pauseRequested !== undefined) {
        this.pausedAt?.();
        await this.boundary.wait();
      }
      this.counter++;
      for (const machine of this.machines) await machine.write(this.counter);
      await new Promise((resolve) => setImmediate(resolve));
    }
    this.pausedAt?.();
  }

  /** App quiesce: resolves once the writer stands between two iterations. */
  quiesce(): Promise<void> {
    this.pauseRequested ??= new Promise<void>((resolve) => {
      this.boundary.close();
      this.pausedAt = resolve;
    });
    return this.pauseRequested;
  }

  stop(): void {
    this.stopped = true;
  }

  resume(): void {
    this.pauseRequested = undefined;
    this.pausedAt = undefined;
    this.boundary.open();
  }
}

function member(machine: Machine, hold: () => Promise<void>, release: () => void): GroupMember {
  return {
    machineId: machine.machineId,
    hold,
    mark: (marker) => machine.mark(marker),
    release: () => {
      release();
      return Promise.resolve();
    },
  };
}

describe("journal: consistency groups", () => {
  let sites: JournalSite[];
  let machines: Machine[];
  let log: GroupPointLog;

  beforeEach(async () => {
    sites = [await makeSite("group-a"), await makeSite("group-b")];
    machines = [];
    for (const [index, site] of sites.entries()) {
      const journal = await openJournal(site);
      const machine = new Machine(`m${index}`, site, journal, new TestReplica(site.replicaRoot, journal));
      await machine.start();
      machines.push(machine);
    }
    log = new GroupPointLog(join(sites[0]?.base ?? "", "group-points"));
  });
  afterEach(async () => {
    for (const machine of machines) await machine.close();
    for (const site of sites) await removeSite(site);
  });

  async function cutWhileWriting(
    writer: CounterWriter,
    members: GroupMember[],
    consistency: PointConsistency,
  ): Promise<GroupPoint[]> {
    const coordinator = new BarrierCoordinator(log, { phaseTimeoutMs: 10_000 });
    const writing = writer.run();
    const points: GroupPoint[] = [];
    for (let cut = 0; cut < 12; cut++) {
      // Every cut lands after the writer moved on, however slow the machine is.
      const before = writer.counter;
      while (writer.counter < before + 2) await new Promise((resolve) => setTimeout(resolve, 2));
      const result = await coordinator.cut("shop", members, consistency);
      assert.ok(result.ok, result.ok ? "" : result.reason);
      points.push(result.point);
    }
    writer.stop();
    await writing;
    return points;
  }

  it("an app-consistent group point never shows the members disagree", async () => {
    const writer = new CounterWriter(machines);
    const members = machines.map((machine) =>
      member(
        machine,
        () => writer.quiesce(),
        () => {
          writer.resume();
        },
      ),
    );
    const points = await cutWhileWriting(writer, members, "app");
    const counters = new Set<number>();
    for (const point of points) {
      const [a, b] = await Promise.all(machines.map((machine) => machine.counterAt(point.id)));
      assert.equal(a, b, `group point ${point.id}: m0 has ${a}, m1 has ${b}`);
      assert.equal(point.consistency, "app");
      counters.add(a ?? -1);
    }
    assert.equal(counters.size, points.length, "every cut lands at a different moment of the writer");
    assert.deepEqual(
      (await log.list()).map((point) => point.id),
      points.map((point) => point.id),
    );
  });

  it("a crash-consistent group point never shows a later write without the earlier one", async () => {
    const writer = new CounterWriter(machines);
    const members = machines.map((machine) =>
      member(
        machine,
        () => machine.holdIo(),
        () => {
          machine.releaseIo();
        },
      ),
    );
    const points = await cutWhileWriting(writer, members, "crash");
    for (const point of points) {
      const [first = 0, second = 0] = await Promise.all(machines.map((machine) => machine.counterAt(point.id)));
      // m0 is written before m1 in every iteration: a cut may fall between the two writes.
      assert.ok(first === second || first === second + 1, `group point ${point.id}: m0 ${first}, m1 ${second}`);
    }
  });

  it("records no group point when a member does not reach the barrier", async () => {
    const [first, second] = machines;
    assert.ok(first !== undefined && second !== undefined);
    const broken: GroupMember = {
      machineId: "m-broken",
      hold: () => Promise.resolve(),
      mark: () => Promise.reject(new Error("master target unreachable")),
      release: () => Promise.resolve(),
    };
    const stuck: GroupMember = { ...broken, machineId: "m-stuck", hold: () => new Promise(() => undefined) };
    const coordinator = new BarrierCoordinator(log, { phaseTimeoutMs: 200 });
    const noHold = () => Promise.resolve();
    const members = [member(first, noHold, () => undefined), member(second, noHold, () => undefined)];
    const failedMark = await coordinator.cut("shop", [...members, broken], "crash");
    assert.ok(!failedMark.ok);
    assert.match(failedMark.reason, /mark failed: master target unreachable/);
    const failedHold = await coordinator.cut("shop", [...members, stuck], "crash");
    assert.match(failedHold.ok ? "" : failedHold.reason, /hold of m-stuck did not finish within 200 ms/);
    const good = await coordinator.cut("shop", members, "crash");
    assert.ok(good.ok);
    const committed = await log.list();
    assert.deepEqual(
      committed.map((point) => point.id),
      [good.point.id],
    );
    // The aborted cut left a marker on the members that reached it, but it is no group point.
    assert.ok(first.journal.points().some((point) => point.id === failedMark.id));
    const retained = retainedGroupPoints(
      committed,
      (machineId) => machines.find((m) => m.machineId === machineId)?.journal.points() ?? [],
    );
    assert.deepEqual(
      retained.map((point) => point.id),
      [good.point.id],
    );
  });

  it("lists a group point only while every member retains it", async () => {
    const coordinator = new BarrierCoordinator(log, { phaseTimeoutMs: 1000, now: () => 1_000 });
    const members = machines.map((machine) =>
      member(
        machine,
        () => Promise.resolve(),
        () => undefined,
      ),
    );
    const old = await coordinator.cut("shop", members, "crash");
    const later = new BarrierCoordinator(log, { phaseTimeoutMs: 1000, now: () => 50_000 });
    const recent = await later.cut("shop", members, "crash");
    assert.ok(old.ok && recent.ok);
    await machines[0]?.journal.prune(10_000, 55_000);
    const retained = retainedGroupPoints(
      await log.list(),
      (machineId) => machines.find((m) => m.machineId === machineId)?.journal.points() ?? [],
    );
    assert.deepEqual(
      retained.map((point) => point.id),
      [recent.point.id],
    );
  });
});
